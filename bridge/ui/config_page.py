"""The Settings page: the effective bridge.yaml, which environment settings are set (secrets never shown), problems."""

from __future__ import annotations

from typing import Any

import gradio as gr
import yaml

from .. import access
from ..settings import DEFAULT_LANGSMITH_ENDPOINT
from .common import locked, viewer
from .html import esc, icon, notice
from .overview import open_endpoints

SECRETS = [("HF_TOKEN", "hf_token"), ("LANGSMITH_API_KEY", "langsmith_api_key"), ("WEBHOOK_SECRET", "webhook_secret"),
           ("LANGSMITH_WEBHOOK_SECRET", "langsmith_webhook_secret"), ("BRIDGE_ADMIN_PASSWORD", "admin_password")]
PLAIN = [("HF_ENDPOINT", "hf_endpoint"), ("LANGSMITH_ENDPOINT", "langsmith_endpoint"),
         ("LANGSMITH_WEB_URL", "langsmith_web_url"), ("LANGSMITH_WORKSPACE_ID", "langsmith_workspace_id"),
         ("BRIDGE_TRACE_PROJECT", "trace_project"), ("BRIDGE_ADMINS", "admins"), ("SPACE_ID", "space_id"),
         ("SPACE_HOST", "space_host"), ("BRIDGE_STATE_DIR", "state_dir"), ("BRIDGE_CONFIG", "config_path")]


NOT_SET = '<span class="muted">not set</span>'
SET = f'<span class="ok-text">{icon("ok")} set (value hidden)</span>'


def config_yaml(settings: Any, scrub: Any) -> str:
    data = settings.config.model_dump(mode="json")
    return scrub(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)) or ""


def env_html(settings: Any, scrub: Any) -> str:
    rows = []
    for name, attr in SECRETS:
        state = SET if getattr(settings, attr) is not None else NOT_SET
        rows.append(f"<tr><td><code>{name}</code></td><td>{state}</td></tr>")
    for name, attr in PLAIN:
        value = getattr(settings, attr)
        value = ", ".join(value) if isinstance(value, tuple) else value
        shown = f"<code>{esc(scrub(str(value)))}</code>" if value not in (None, "", ()) else NOT_SET
        rows.append(f"<tr><td><code>{name}</code></td><td>{shown}</td></tr>")
    return f'<table class="tbl compact"><tbody>{"".join(rows)}</tbody></table>'


def problems(runtime: Any) -> list[tuple[str, str]]:
    """(kind, sentence) for everything worth fixing; bridge.yaml itself was validated at start."""
    settings, config = runtime.settings, runtime.settings.config
    found = [("warn", f"{name} is not set: jobs that need it fail until it is.")
             for name in settings.missing() if name in ("HF_TOKEN", "LANGSMITH_API_KEY")]
    found += [("warn", text) for text in open_endpoints(settings)]
    if settings.langsmith_web_url is None and settings.langsmith_endpoint != DEFAULT_LANGSMITH_ENDPOINT:
        found.append(("info", "LANGSMITH_WEB_URL is not set and LANGSMITH_ENDPOINT is not LangSmith cloud: links to "
                              "experiments and runs may point at the wrong host. Set it to the LangSmith web address."))
    policy = access.current_policy(runtime)
    if policy.mode == access.OAUTH and not policy.admins:
        found.append(("warn", "BRIDGE_ADMINS is empty: nobody can sign in to act on this Space."))
    if policy.mode == access.PASSWORD and not policy.password_set:
        found.append(("warn", "BRIDGE_ADMIN_PASSWORD is not set while the app is reachable from other machines: "
                              "only the Overview works."))
    if not config.experiments:
        found.append(("info", "No experiments rules: Hub pushes are ignored (manual uploads still work)."))
    if not config.exports:
        found.append(("info", "No exports targets: LangSmith rule deliveries are ignored."))
    found += runs_api_notes(runtime.smith.runs_api)
    found += [("info", f"Exports target {t.repo} has no feedback_links: its runs cannot be rated on the Review page.")
              for t in config.exports if t.feedback_links is None]
    return found


def runs_api_notes(runs_api: str | None) -> list[tuple[str, str]]:
    """Which LangSmith runs API this process reads runs through (decided by its first run read)."""
    if runs_api == "v1":
        return [("warn", "This LangSmith server has no v2 runs API (it answered 404 there): runs are read through "
                         "the v1 API, which LangSmith cloud removes after Jan 31, 2027. Self-hosted LangSmith serves "
                         "v2 from version 0.16; upgrade it, then restart the bridge.")]
    if runs_api == "v2":
        return [("info", "Runs are read through LangSmith's v2 runs API (up to 1000 runs per request).")]
    return []


def problems_html(runtime: Any) -> str:
    found = problems(runtime)
    if not found:
        return notice(f"{icon('ok')} No problems found.", "ok", raw=True)
    return "".join(notice(text, kind) for kind, text in found)


def build(runtime: Any) -> dict:
    lock_note = gr.HTML(visible=False)
    with gr.Column(visible=True) as content:
        with gr.Row(equal_height=False):
            with gr.Column(elem_classes="card", scale=1):
                gr.HTML("<h3>Problems</h3>")
                issues = gr.HTML(elem_id="settings-problems")
                gr.HTML("<h3>Environment</h3>")
                env = gr.HTML(elem_id="settings-env")
            with gr.Column(elem_classes="card", scale=1):
                path = gr.HTML(elem_id="settings-path")
                yaml_box = gr.Code(language="yaml", label="Effective configuration", interactive=False,
                                   elem_id="settings-yaml", lines=20)

    def load_settings(request: gr.Request, profile: gr.OAuthProfile | None) -> list:
        who = viewer(runtime, request, profile)
        if not who.allowed:
            return [gr.HTML(locked(who), visible=True), gr.Column(visible=False), gr.skip(), gr.skip(), gr.skip(),
                    gr.skip()]
        settings, scrub = runtime.settings, runtime.store.scrub
        heading = (f'<h3>bridge.yaml</h3><p class="muted"><code>{esc(settings.config_path)}</code> with defaults '
                   'filled in</p>')
        return [gr.HTML(visible=False), gr.Column(visible=True), problems_html(runtime), env_html(settings, scrub),
                heading, config_yaml(settings, scrub)]

    return {"load": (load_settings, [lock_note, content, issues, env, path, yaml_box])}
