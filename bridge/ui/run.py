"""The Run a job page: the same job kinds the webhooks enqueue, started by hand through `bridge.actions`.

A `FieldError` is shown under the field it names. On success the page switches to Jobs with the new job selected.
Choices that come from the configuration or the store are filled by an authorised load, never built into the page.
"""

from __future__ import annotations

import re
from typing import Any

import gradio as gr

from .. import actions
from ..actions import FieldError
from ..settings import EVAL_FORMATS
from .common import jobs_now, locked, on, require, viewer
from .html import empty, esc, icon, notice, table, ts

FILTER_SHAPE = re.compile(r"^\s*[a-z_]+\(.*\)\s*$", re.DOTALL)


def split_files(text: str | None) -> list[str]:
    return [part.strip() for part in re.split(r"[,\n]", text or "") if part.strip()]


def check_filter(text: str | None) -> None:
    """A quick shape check so an obvious typo is caught here rather than as a failed job; LangSmith parses the rest."""
    if not text or not text.strip():
        return
    if not FILTER_SHAPE.match(text) or text.count("(") != text.count(")"):
        raise FieldError("filter", 'use LangSmith filter syntax, e.g. and(eq(is_root, true), eq(name, "ChatOpenAI"))')
    if text.count('"') % 2:
        raise FieldError("filter", "a quoted value is not closed")


def field_error(elem_id: str) -> gr.HTML:
    return gr.HTML(elem_id=elem_id, elem_classes="field-error", visible=False)


def error_updates(slots: dict[str, gr.HTML], exc: FieldError | None) -> list[gr.HTML]:
    """The message under the field it names (others hidden); an unknown field name shows under the first field."""
    name = exc.field if exc is not None and exc.field in slots else next(iter(slots))
    shown = {key: f"{icon('warn')} {esc(exc)}" for key in slots if exc is not None and key == name}
    return [gr.HTML(shown.get(key, ""), visible=key in shown) for key in slots]


def queued_message(jobs: list) -> str:
    ids = ", ".join(f"#{job.id}" for job in jobs)
    return notice(f"Queued job {ids}. It is selected on the Jobs page.", "ok")


def deliveries_html(deliveries: list[dict], store: Any) -> str:
    """Each delivery with its jobs in their current state: "queued" is what it was told, long ago maybe."""
    if not deliveries:
        return empty("No stored deliveries yet. Each webhook delivery is kept here (except duplicates) so it can be "
                     "replayed after you change bridge.yaml.")
    rows = [[f"<b>#{d['id']}</b>", esc(d["source"]), ts(d["received_at"]), esc(d["outcome"]),
             jobs_now(store, d["job_ids"]) or "—",
             f'<span class="muted">{esc(d["reason"] or "")}</span>'] for d in deliveries]
    return table(["Delivery", "Source", "Received", "Outcome", "Jobs now", "Reason"], rows)


def delivery_label(d: dict) -> tuple[str, int]:
    reason = f" — {d['reason'][:70]}" if d.get("reason") else ""
    return f"#{d['id']} · {d['source']} · {d['outcome']}{reason}", d["id"]


def build(runtime: Any, tabs: gr.Tabs, job_id: gr.Number) -> dict:
    store, config = runtime.store, runtime.settings.config
    demo = runtime.extras.get("sandbox") or {}  # in the sandbox the forms start filled with the demo repo and project
    lock_note = gr.HTML(visible=False)
    with gr.Column(visible=True) as content:
        with gr.Row(equal_height=False):
            with gr.Column(elem_classes="card"):
                gr.HTML('<h3>Upload an experiment</h3><p class="muted">Eval result files at one revision of a '
                        'Hub repo become LangSmith experiments (one per file), like a push to a watched repo.</p>')
                repo = gr.Textbox(demo.get("eval_repo", ""), label="Repo", placeholder="owner/name",
                                  elem_id="exp-repo")
                repo_err = field_error("exp-repo-error")
                with gr.Row():
                    repo_type = gr.Dropdown(list(actions.REPO_TYPES), value="dataset", label="Repo type",
                                            elem_id="exp-type")
                    fmt = gr.Dropdown(list(EVAL_FORMATS), value="auto", label="Format", elem_id="exp-format")
                type_err, fmt_err = field_error("exp-type-error"), field_error("exp-format-error")
                revision = gr.Textbox(value="main", label="Revision", elem_id="exp-revision",
                                      info="A branch, a full or short commit sha, or a PR number (3 or #3).")
                revision_err = field_error("exp-revision-error")
                files = gr.Textbox(label="Files (optional)", lines=2, elem_id="exp-files",
                                   placeholder="org__model/samples_task_2026-01-01.jsonl, results.csv",
                                   info="Exact paths, separated by commas or new lines. Empty: every result file "
                                        "matching the experiments rule.")
                files_err = field_error("exp-files-error")
                exp_btn = gr.Button("Upload to LangSmith", variant="primary", elem_id="exp-submit")
                exp_status = gr.HTML(elem_id="exp-status")
            with gr.Column(elem_classes="card"):
                gr.HTML('<h3>Back-fill an export</h3><p class="muted">Runs already in a LangSmith project go '
                        'through the same export as rule deliveries; runs already exported are skipped.</p>')
                # Choices arrive with the authorised page load; the handler checks the value, not the dropdown.
                target = gr.Dropdown([], label="Export target (from bridge.yaml)", elem_id="bf-target",
                                     allow_custom_value=True)
                target_err = field_error("bf-target-error")
                project = gr.Textbox(demo.get("project", ""), label="LangSmith project", elem_id="bf-project",
                                     placeholder="my-chatbot")
                project_err = field_error("bf-project-error")
                run_filter = gr.Textbox(label="Filter (optional)", elem_id="bf-filter",
                                        placeholder='and(eq(is_root, true), eq(name, "ChatOpenAI"))',
                                        info="LangSmith filter syntax; empty means every run of the project.")
                filter_err = field_error("bf-filter-error")
                with gr.Row():
                    start = gr.Textbox(label="From (optional)", placeholder="2026-11-01T00:00:00Z", elem_id="bf-start")
                    end = gr.Textbox(label="Until (optional)", placeholder="2026-11-21T00:00:00Z", elem_id="bf-end")
                start_err, end_err = field_error("bf-start-error"), field_error("bf-end-error")
                bf_btn = gr.Button("Start back-fill", variant="primary", elem_id="bf-submit")
                bf_status = gr.HTML(elem_id="bf-status")
        with gr.Column(elem_classes="card"):
            gr.HTML('<h3>Replay a stored delivery</h3><p class="muted">Routes a delivery again with the current '
                    'configuration, e.g. after adding the rule it needed.</p>')
            deliveries = gr.HTML(elem_id="deliveries")
            with gr.Row():
                pick = gr.Dropdown([], label="Delivery", elem_id="replay-pick", scale=4, allow_custom_value=True)
                replay_btn = gr.Button("Replay", variant="primary", elem_id="replay-submit", scale=1)
            pick_err = field_error("replay-error")
            replay_status = gr.HTML(elem_id="replay-status")

    exp_slots = {"repo": repo_err, "repo_type": type_err, "revision": revision_err, "format": fmt_err,
                 "files": files_err}
    bf_slots = {"repo": target_err, "project": project_err, "filter": filter_err, "start_time": start_err,
                "end_time": end_err}

    def done(slots: dict, status_text: str, jobs: list | None = None) -> list:
        moved = [gr.Tabs(selected="jobs"), jobs[0].id] if jobs else [gr.skip(), gr.skip()]
        return [*error_updates(slots, None), status_text, *moved]

    def refused(slots: dict, exc: FieldError) -> list:
        return [*error_updates(slots, exc), notice("Nothing was queued: fix the field marked above.", "warn"),
                gr.skip(), gr.skip()]

    def submit_experiment(repo_value: str, type_value: str, revision_value: str, format_value: str,
                          files_value: str, request: gr.Request, profile: gr.OAuthProfile | None) -> list:
        require(runtime, request, profile, f"experiment upload of {repo_value!r}")
        try:
            job = actions.submit_experiment(store, repo_value, type_value, revision_value,
                                            split_files(files_value), format_value or "auto")
        except FieldError as exc:
            return refused(exp_slots, exc)
        return done(exp_slots, queued_message([job]), [job])

    def submit_backfill(target_value: str, project_value: str, filter_value: str, start_value: str,
                        end_value: str, request: gr.Request, profile: gr.OAuthProfile | None) -> list:
        require(runtime, request, profile, f"back-fill of {project_value!r} into {target_value!r}")
        try:
            check_filter(filter_value)
            job = actions.submit_backfill(store, config, target_value, project_value, filter_value, start_value,
                                          end_value)
        except FieldError as exc:
            return refused(bf_slots, exc)
        return done(bf_slots, queued_message([job]), [job])

    def replay(delivery_value: Any, request: gr.Request, profile: gr.OAuthProfile | None) -> list:
        require(runtime, request, profile, f"replay of delivery {delivery_value}")
        slots = {"delivery": pick_err}
        try:
            if not delivery_value:
                raise FieldError("delivery", "pick a delivery to replay")
            jobs = actions.replay_delivery(store, config, int(delivery_value))
        except KeyError:
            return refused(slots, FieldError("delivery", f"delivery {delivery_value} is no longer stored"))
        except FieldError as exc:
            return refused(slots, exc)
        return done(slots, queued_message(jobs), jobs)

    def load_choices(request: gr.Request, profile: gr.OAuthProfile | None) -> list:
        who = viewer(runtime, request, profile)
        if not who.allowed:
            return [gr.HTML(locked(who), visible=True), gr.Column(visible=False), gr.skip(), gr.skip(), gr.skip()]
        targets = [t.repo for t in config.exports]
        stored = [d for d in store.deliveries(limit=50) if d["has_body"]]
        target_update = gr.Dropdown(choices=targets, value=targets[0] if targets else None,
                                    info=None if targets else "No exports target in bridge.yaml: add one under "
                                                              "`exports:` (rule_id, repo) to back-fill into it.")
        return [gr.HTML(visible=False), gr.Column(visible=True), target_update, deliveries_html(stored[:20], store),
                gr.Dropdown(choices=[delivery_label(d) for d in stored], value=None)]

    def refresh_deliveries(request: gr.Request, profile: gr.OAuthProfile | None) -> list:
        """On every visit of the page: new deliveries may have arrived; the form fields keep what was typed, the
        messages about the last submission are cleared."""
        if not viewer(runtime, request, profile).allowed:
            return [gr.skip()] * 5
        stored = [d for d in store.deliveries(limit=50) if d["has_body"]]
        return [deliveries_html(stored[:20], store), gr.Dropdown(choices=[delivery_label(d) for d in stored]),
                "", "", ""]

    def prefill(target_value: str, request: gr.Request, profile: gr.OAuthProfile | None) -> list:
        """Fills project and filter from the target's `backfill:` entry in bridge.yaml, when it has one."""
        if not viewer(runtime, request, profile).allowed:
            return [gr.skip(), gr.skip()]
        entry = next((t.backfill for t in config.exports if t.repo == target_value and t.backfill), None)
        return [entry.project, entry.filter or ""] if entry else [gr.skip(), gr.skip()]

    moved = [tabs, job_id]
    on(exp_btn.click, submit_experiment, [repo, repo_type, revision, fmt, files],
       [*exp_slots.values(), exp_status, *moved])
    on(bf_btn.click, submit_backfill, [target, project, run_filter, start, end],
       [*bf_slots.values(), bf_status, *moved])
    on(replay_btn.click, replay, pick, [pick_err, replay_status, *moved])
    on(target.change, prefill, target, [project, run_filter])
    return {"load": (load_choices, [lock_note, content, target, deliveries, pick]),
            "visit": (refresh_deliveries, [deliveries, pick, exp_status, bf_status, replay_status])}
