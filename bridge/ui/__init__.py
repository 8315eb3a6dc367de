"""The operator UI: Overview (open to all), Jobs, Experiments, Run a job, Review and Settings (authorised, see `bridge.access`).

The UI reads the job store and enqueues jobs through `bridge.actions`; the only upstream calls it makes are the
connection checks on the Overview. Nothing secret is built into the page: what needs authorisation is filled in by
handlers that check the caller on the server, because gradio lets anyone call any registered handler over HTTP.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from .. import access
from . import config_page, experiments, jobs, overview, review, run
from .assets import HEAD
from .common import on, viewer
from .html import esc, icon

REFRESH_SECONDS = 3

__all__ = ["build_ui"]


def who_html(who: access.Viewer, policy: access.Policy) -> str:
    if who.allowed:
        name = "this machine" if policy.mode == access.LOCAL else who.name
        sign_out = ' · <a href="/logout">sign out</a>' if policy.mode == access.PASSWORD else ""
        return f'<span class="who ok">{icon("ok")} Signed in: {esc(name)}{sign_out}</span>'
    return f'<span class="who no" title="{esc(who.reason)}">{icon("lock")} Overview only</span>'


def build_ui(runtime: Any) -> gr.Blocks:
    with gr.Blocks(title="hub-langsmith-bridge") as ui:
        timer = gr.Timer(REFRESH_SECONDS)
        with gr.Row(elem_classes="bridge-top", equal_height=True):
            gr.HTML('<div class="bridge-header"><h1>hub-langsmith-bridge</h1>'
                    '<span class="tagline">Hugging Face Hub ⇄ LangSmith, both ways</span></div>', head=HEAD, scale=4)
            who = gr.HTML(elem_id="who", scale=3)
            if runtime.settings.space_id:
                gr.LoginButton(scale=0, min_width=220)  # only on a Space: off one, gradio would fake the login
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("Overview", id="overview"):
                overview_page = overview.build(runtime, timer)
            with gr.Tab("Jobs", id="jobs", elem_id="tab-jobs"):
                jobs_page = jobs.build(runtime, timer)
            with gr.Tab("Experiments", id="experiments", elem_id="tab-experiments") as experiments_tab:
                experiments_page = experiments.build(runtime)
            with gr.Tab("Run a job", id="run", elem_id="tab-run") as run_tab:
                run_page = run.build(runtime, tabs, jobs_page["job_id"])
            with gr.Tab("Review", id="review", elem_id="tab-review") as review_tab:
                review_page = review.build(runtime)
            with gr.Tab("Settings", id="settings", elem_id="tab-settings"):
                settings_page = config_page.build(runtime)

        def who_is_here(request: gr.Request, profile: gr.OAuthProfile | None) -> str:
            return who_html(viewer(runtime, request, profile), access.current_policy(runtime))

        on(ui.load, who_is_here, None, who)
        for page in (overview_page, experiments_page, run_page, review_page, settings_page):
            on(ui.load, page["load"][0], None, page["load"][1])
        on(ui.load, jobs_page["list"], jobs_page["filters"], jobs_page["table"])
        on(run_tab.select, run_page["visit"][0], None, run_page["visit"][1])
        on(review_tab.select, review_page["load"][0], None, review_page["load"][1])
        on(experiments_tab.select, experiments_page["load"][0], None, experiments_page["load"][1])
    return ui
