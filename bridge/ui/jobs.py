"""The Jobs page: a self-refreshing, filterable table; a job's detail (payload, attempts, result); retry and cancel.

Rendering functions are pure (job in, HTML out) so they can be tested without a browser; `build` wires them.
"""

from __future__ import annotations

import json
import time
from typing import Any

import gradio as gr

from ..formats.pr_comment import counts_line as compared_counts
from ..formats.pr_comment import row_url
from ..globs import unmatched_note
from ..jobs import RETRYABLE_BY_HAND, SHOWN_STATES, TRIGGERS, Job
from .common import clean, locked, on, require, viewer
from .html import badge, code, duration, empty, esc, kv, link, notice, section, table, ts

ALL = "all"
PAGE_SIZE = 50
LINK_LABELS = (("experiment_url", "LangSmith"), ("commit_url", "HF commit"), ("comment_url", "PR comment"))


# ---------------------------------------------------------------- pure rendering
def is_url(value: Any) -> bool:
    """A link, not a note such as "already commented" kept under the same key."""
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def job_links(job: Job) -> list[tuple[str, str]]:
    """(label, url) for what the job produced: LangSmith experiments, the Hub commit, the PR comment."""
    result = job.result or {}
    found = [(label, f[key]) for f in result.get("files") or [] if isinstance(f, dict)
             for key, label in LINK_LABELS if is_url(f.get(key))]
    found += [(label, result[key]) for key, label in LINK_LABELS if is_url(result.get(key))]
    unique = list(dict.fromkeys(found))
    totals = {label: sum(1 for other, _ in unique if other == label) for label, _ in unique}
    seen: dict[str, int] = {}
    named = []
    for label, url in unique:
        seen[label] = seen.get(label, 0) + 1
        named.append((f"{label} {seen[label]}" if totals[label] > 1 else label, url))
    return named


def progress_html(progress: dict | None) -> str:
    if not progress or not progress.get("total"):
        return ""
    done, total = progress.get("done", 0), progress["total"]
    pct = max(0, min(100, round(100 * done / total)))
    return (f'<div class="progress" title="{pct}%"><div style="width:{pct}%"></div></div>'
            f'<span class="muted">{esc(done)} of {esc(total)} {esc(progress.get("unit", "items"))}</span>')


def elapsed(job: Job, now: float) -> float | None:
    if job.started_at is None:
        return None
    return (job.finished_at or now) - job.started_at if job.state != "queued" else None


def state_cell(job: Job, now: float) -> str:
    extra = progress_html(job.progress) if job.state == "running" else ""
    shown = job.shown_state(now)
    if shown == "scheduled":
        extra = f'<span class="muted">{"retry" if job.attempts else "for"} {ts(job.next_attempt_at)}</span>'
    return f'<span class="state">{badge(shown)}</span>{extra}'


def job_row(job: Job, now: float) -> list[str]:
    note = (job.result or {}).get("note") if isinstance(job.result, dict) else None
    links = " ".join(link(url, label, "pill") for label, url in job_links(job)) or \
        (f'<span class="muted">{esc(note)}</span>' if note else '<span class="muted">—</span>')
    error = esc(job.last_error) if job.last_error else ""
    subject = esc(job.subject)
    return [f"<b>#{job.id}</b>", esc(job.kind), f'<span class="subject" title="{subject}">{subject}</span>',
            state_cell(job, now), f"{job.attempt}/{job.attempt_budget}", esc(job.trigger),
            f'<span class="nowrap">{ts(job.created_at)}</span>',
            f'<span class="nowrap">{duration(elapsed(job, now))}</span>', links,
            f'<span class="err" title="{error}">{error}</span>' if error else ""]


def jobs_table(jobs: list[Job], selected: int | None, now: float, filtered: bool, offset: int = 0,
               total: int | None = None) -> str:
    if not jobs:
        return empty("No job matches these filters: choose “all” to see every job." if filtered else
                     "No jobs yet. They appear when a webhook delivery arrives (configure the URLs on the Overview) "
                     "or when you start one on the Run a job page.")
    attrs = [f' data-job="{j.id}" class="job-row{" selected" if j.id == selected else ""}"' for j in jobs]
    headers = ["Job", "Kind", "Subject", "State", "Attempts", "Trigger", "Created", "Duration", "Links", "Error"]
    return table(headers, [job_row(j, now) for j in jobs], "tbl jobs", attrs) + page_line(offset, len(jobs), total)


def page_line(offset: int, shown: int, total: int | None) -> str:
    total = offset + shown if total is None else total
    return (f'<p class="muted page-line">Jobs {offset + 1}–{offset + shown} of {total}, newest first '
            f'({PAGE_SIZE} a page).</p>')


def export_summary(payload: dict, store: Any) -> dict:
    """An export job refers to its stored delivery, which can hold megabytes of runs: show what it is about (the
    run count and the first run ids), not the runs themselves."""
    summary = {k: v for k, v in payload.items() if k != "runs"}
    summary["runs"] = f"{payload.get('runs', 0)} run(s)"
    if payload.get("delivery_id") is None:
        return summary
    try:
        delivery = store.delivery(payload["delivery_id"])
    except KeyError:
        summary["delivery"] = "no longer stored"
        return summary
    summary["delivery"] = {"id": delivery["id"], "source": delivery["source"], "outcome": delivery["outcome"],
                           "received_at": delivery["received_at"],
                           "stored_body": f"{len(delivery['body'] or '')} characters (not shown)"}
    summary["run_ids"] = _first_run_ids(delivery["body"])
    return summary


def _first_run_ids(body: str | None, limit: int = 10) -> list[str]:
    try:
        runs = json.loads(body or "{}").get("runs") or []
    except (ValueError, RecursionError, AttributeError):
        return []
    ids = [str(r.get("id")) for r in runs[:limit] if isinstance(r, dict)]
    return ids + (["…"] if len(runs) > limit else [])


def payload_view(job: Job, store: Any) -> Any:
    payload = dict(job.payload or {})
    if job.kind == "export":
        payload = export_summary(payload, store)
    if job.kind == "feedback" and payload.get("url"):
        payload["url"] = "(the run's presigned feedback link: hidden, it lets anyone rate the run)"
    return clean(payload, store.scrub)


def files_table(files: list[dict]) -> str:
    rows = []
    for f in files:
        scores = ", ".join(f"{esc(k)} {v:.3g}" if isinstance(v, (int, float)) else f"{esc(k)} {esc(v)}"
                           for k, v in (f.get("scores") or {}).items())
        experiment = link(f.get("experiment_url"), f.get("experiment") or "experiment") if f.get("experiment_url") \
            else esc(f.get("experiment") or "")
        rows.append([f'<code>{esc(f.get("file"))}</code>', badge(f.get("status")), experiment,
                     esc(f.get("rows") if f.get("rows") is not None else ""), scores,
                     f'<span class="err">{esc(f.get("error") or f.get("reason") or "")}</span>'])
    return table(["File", "Status", "Experiment", "Rows", "Scores", "Error or reason"], rows)


def _changed_rows(rows: list[dict], compare_url: str | None) -> str:
    body = [[link(row_url(compare_url, r.get("row_id", "")), f"row {i}") if compare_url else f"row {i}",
             esc(r.get("input")), esc(r.get("expected")), esc(r.get("main_output")), esc(r.get("pr_output")),
             esc(", ".join(r.get("keys") or []))] for i, r in enumerate(rows, 1)]
    return table(["Example", "Input", "Expected", "Main", "This PR", "Scores"], body)


def comparison_html(files: list[dict]) -> str:
    """A PR job's row-by-row comparison with the baseline, the same the PR comment shows."""
    parts = []
    for f in files:
        found = f.get("comparison") if isinstance(f, dict) else None
        if not isinstance(found, dict):
            continue
        base = f.get("baseline") or {}
        against = link(base.get("url"), base.get("experiment") or "main")
        head = f'<h4>{esc(f.get("task"))} <span class="muted">against {against}</span></h4>'
        if found.get("error"):
            parts.append(head + notice(found["error"], "warn"))
            continue
        parts.append(head + f"<p><b>{esc(compared_counts(found))}</b></p>")
        if found.get("regressed_rows"):
            parts.append("<p>Regressed rows</p>" + _changed_rows(found["regressed_rows"], f.get("compare_url")))
        if found.get("fixed_rows"):
            parts.append(f"<details><summary>{esc(found.get('fixed'))} fixed row(s)</summary>"
                         f"{_changed_rows(found['fixed_rows'], f.get('compare_url'))}</details>")
    return "".join(parts)


def counts_line(counts: dict) -> str:
    shown = {k: v for k, v in counts.items() if isinstance(v, (int, float)) and v}
    return ", ".join(f"{esc(k.replace('_', ' '))}: <b>{esc(v)}</b>" for k, v in shown.items()) or "nothing to do"


def result_html(job: Job, scrub: Any) -> str:
    result = job.result
    if not result:
        return empty("No result yet." if job.state in ("queued", "running") else "This job recorded no result.")
    parts = []
    if result.get("files") is not None:
        parts.append(files_table(result["files"]) if result["files"] else empty(result.get("note") or "No files."))
        compared = comparison_html(result["files"])
        if compared:
            parts.append(f'<div class="comparison"><h3>Rows against main</h3>{compared}</div>')
    if result.get("files") and result.get("unmatched"):
        parts.append(f'<p class="muted">{esc(unmatched_note(result["unmatched"]))}</p>')
    if isinstance(result.get("counts"), dict):
        parts.append(f"<p>{counts_line(result['counts'])}</p>")
    if job.kind == "flush":
        parts.append(f"<p>{esc(result.get('commits', 0))} commit(s), {esc(result.get('runs_committed', 0))} run(s) "
                     f"committed to <code>{esc(result.get('repo'))}</code>; {esc(result.get('pending', 0))} "
                     "waiting.</p>")
    if result.get("flush_jobs"):
        flushes = ", ".join("#" + esc(i) for i in result["flush_jobs"])
        parts.append(f"<p>Rows are committed by flush job(s) {flushes}.</p>")
    links = " ".join(link(url, label, "pill") for label, url in job_links(job))
    if links:
        parts.append(f'<p class="links">{links}</p>')
    raw = f'<details><summary>Raw result</summary>{code(clean(result, scrub))}</details>'
    return "".join(parts) + raw


def attempts_html(attempts: list[dict]) -> str:
    if not attempts:
        return empty("Not attempted yet.")
    rows = [[f"{a['attempt']}", ts(a["started_at"]),
             duration((a["finished_at"] - a["started_at"]) if a.get("finished_at") else None),
             badge(a.get("outcome") or "running"), f'<span class="err">{esc(a.get("error") or "")}</span>']
            for a in attempts]
    return table(["Attempt", "Started", "Took", "Outcome", "Error"], rows)


def detail_html(job: Job, attempts: list[dict], store: Any, now: float) -> str:
    head = (f'<div class="detail-head"><h2>#{job.id} · {esc(job.kind)}</h2>{badge(job.shown_state(now))}'
            f'<span class="subject">{esc(job.subject)}</span></div>')
    meta = kv([("Trigger", esc(job.trigger)), ("Attempts", f"{job.attempt} of {job.attempt_budget}"),
               ("Created", ts(job.created_at)), ("Started", ts(job.started_at)), ("Finished", ts(job.finished_at)),
               ("Duration", duration(elapsed(job, now)))])
    parts = [head, meta]
    if job.state == "running" and job.progress:
        parts.append(f'<div class="prog-line">{progress_html(job.progress)}</div>')
    if job.shown_state(now) == "scheduled":
        why = "to retry after a transient error" if job.attempts else "until its time comes"
        parts.append(notice(f"Scheduled for {ts(job.next_attempt_at)}: waiting {why}.", "info", raw=True))
    if job.last_error:
        parts.append(notice(f"<b>Error:</b> {esc(job.last_error)}", "error", raw=True))
    parts.append(section("Result", result_html(job, store.scrub)))
    parts.append(section("Attempts", attempts_html(attempts)))
    parts.append(section("Payload", code(payload_view(job, store)), "secrets and presigned links removed"))
    return f'<div class="job-detail">{"".join(parts)}</div>'


# ---------------------------------------------------------------- wiring
ROW_CLICK_JS = """
element.addEventListener('click', (event) => {
  if (event.target.closest('a')) return;  // links open LangSmith or the Hub, they do not select the row
  const row = event.target.closest('tr[data-job]');
  if (!row) return;
  element.querySelectorAll('tr.selected').forEach((other) => other.classList.remove('selected'));
  row.classList.add('selected');
  trigger('select', {index: Number(row.dataset.job), value: row.dataset.job});
  window.bridgeShowDetail();
});
"""
# The detail is below a table of up to 50 rows: bring it into view when a job is opened.
SHOW_DETAIL_JS = """() => { window.bridgeShowDetail && window.bridgeShowDetail(); }"""


def job_number_of(text: Any) -> int:
    """`12`, `#12` or ` 12 ` from the Job # field; ValueError otherwise."""
    return int(str(text).strip().lstrip("#"))


def set_live(live: bool) -> gr.Timer:
    """Pauses the refresh of this browser tab (nothing is read, so no authorisation is needed)."""
    return gr.Timer(active=bool(live))


def _filter(value: str | None) -> str | None:
    return None if not value or value == ALL else value


def build(runtime: Any, timer: gr.Timer) -> dict:
    store = runtime.store
    kinds = sorted(set(runtime.handlers) | {"experiment", "export", "flush", "backfill", "feedback"})
    with gr.Row(elem_classes="filters"):
        state = gr.Dropdown([ALL, *SHOWN_STATES], value=ALL, label="State", elem_id="filter-state", scale=1)
        kind = gr.Dropdown([ALL, *kinds], value=ALL, label="Kind", elem_id="filter-kind", scale=1)
        trigger = gr.Dropdown([ALL, *TRIGGERS], value=ALL, label="Trigger", elem_id="filter-trigger", scale=1)
        live = gr.Checkbox(value=True, label="Refresh every 3 s", elem_id="jobs-live", scale=1)
    table_html = gr.HTML(elem_id="jobs-table", js_on_load=ROW_CLICK_JS)
    with gr.Row(elem_classes="pager"):
        newer = gr.Button("← Newer", size="sm", elem_id="jobs-newer", scale=0, min_width=110)
        older = gr.Button("Older →", size="sm", elem_id="jobs-older", scale=0, min_width=110)
        page_no = gr.Number(value=1, label="Page", precision=0, minimum=1, elem_id="jobs-page", scale=0,
                            min_width=90, visible=False)
    with gr.Row(elem_classes="job-bar"):
        job_id = gr.Textbox(label="Job #", placeholder="e.g. 12", max_lines=1, elem_id="job-id", scale=0,
                            min_width=140)
        open_btn = gr.Button("Open", elem_id="job-open", scale=0, min_width=90)
        retry_btn = gr.Button("↻ Retry", elem_id="job-retry", interactive=False, scale=0, min_width=110)
        cancel_btn = gr.Button("⊘ Cancel", elem_id="job-cancel", interactive=False, scale=0, min_width=110)
        message = gr.HTML(elem_id="job-message", scale=3)
    detail = gr.HTML(empty("Select a job in the table to see its payload, attempts and result."), elem_id="job-detail")
    seen = gr.State({})

    def buttons(job: Job | None) -> tuple:
        return (gr.Button(interactive=bool(job and job.state in RETRYABLE_BY_HAND)),
                gr.Button(interactive=bool(job and job.state == "queued")))

    def render_detail(job_number: Any) -> tuple[str, Job | None]:
        if not str(job_number or "").strip():
            return empty("Select a job in the table to see its payload, attempts and result."), None
        try:
            job = store.get(job_number_of(job_number))
        except (KeyError, ValueError, OverflowError):
            return notice(f"There is no job {job_number}. Pick one from the table or type its number.",
                          "warn"), None
        return detail_html(job, store.attempts(job.id), store, time.time()), job

    def render_table(state_value, kind_value, trigger_value, selected, page_value=1) -> str:
        filters = {"state": _filter(state_value), "kind": _filter(kind_value), "trigger": _filter(trigger_value)}
        offset = (max(1, int(page_value or 1)) - 1) * PAGE_SIZE
        total = store.count(**filters)
        if offset >= total:  # the page emptied (jobs pruned, a filter changed): show the last one there is
            offset = max(0, (total - 1) // PAGE_SIZE) * PAGE_SIZE
        jobs = store.list(**filters, offset=offset, limit=PAGE_SIZE)
        try:
            chosen = job_number_of(selected) if str(selected or "").strip() else None
        except ValueError:
            chosen = None
        return jobs_table(jobs, chosen, time.time(), any(filters.values()), offset, total)

    def list_jobs(state_value: str, kind_value: str, trigger_value: str, selected: Any, page_value: Any,
                  request: gr.Request, profile: gr.OAuthProfile | None):
        who = viewer(runtime, request, profile)
        if not who.allowed:
            return locked(who)
        return render_table(state_value, kind_value, trigger_value, selected, page_value)

    def filter_jobs(state_value: str, kind_value: str, trigger_value: str, selected: Any, request: gr.Request,
                    profile: gr.OAuthProfile | None):
        """A filter changed: back to the first page, and the last action's message is cleared."""
        return list_jobs(state_value, kind_value, trigger_value, selected, 1, request, profile), 1, ""

    def turn(step: int):
        def turn_page(state_value: str, kind_value: str, trigger_value: str, selected: Any, page_value: Any,
                      request: gr.Request, profile: gr.OAuthProfile | None):
            total = store.count(state=_filter(state_value), kind=_filter(kind_value), trigger=_filter(trigger_value))
            last = max(1, -(-total // PAGE_SIZE))
            number = min(last, max(1, int(page_value or 1) + step))
            return list_jobs(state_value, kind_value, trigger_value, selected, number, request, profile), number
        turn_page.__name__ = "older_jobs" if step > 0 else "newer_jobs"
        return turn_page

    def show_job(job_number: Any, request: gr.Request, profile: gr.OAuthProfile | None):
        """Opens a job; the message about the previous action is cleared."""
        who = viewer(runtime, request, profile)
        if not who.allowed:
            return (locked(who), *buttons(None), "")
        html_text, job = render_detail(job_number)
        return (html_text, *buttons(job), "")

    def pick_job(event: gr.SelectData, request: gr.Request, profile: gr.OAuthProfile | None):
        return (event.index, *show_job(event.index, request, profile))

    def tick(state_value: str, kind_value: str, trigger_value: str, selected: Any, page_value: Any, last: dict,
             request: gr.Request, profile: gr.OAuthProfile | None):
        """Re-renders only what changed, so an open section or a scrolled table is not reset every 3 s."""
        who = viewer(runtime, request, profile)
        if not who.allowed:
            text = locked(who)
            return (text if hash(text) != last.get("table") else gr.skip()), gr.skip(), gr.skip(), gr.skip(), \
                {"table": hash(text)}
        table_text = render_table(state_value, kind_value, trigger_value, selected, page_value)
        selected = str(selected or "").strip()
        detail_text, job = render_detail(selected) if selected else (None, None)
        fresh = {"table": hash(table_text), "detail": hash(detail_text)}
        out_table = table_text if fresh["table"] != last.get("table") else gr.skip()
        out_detail = detail_text if selected and fresh["detail"] != last.get("detail") else gr.skip()
        retry_update, cancel_update = buttons(job) if selected else (gr.skip(), gr.skip())
        return out_table, out_detail, retry_update, cancel_update, fresh

    def retry_job(job_number: Any, request: gr.Request, profile: gr.OAuthProfile | None):
        require(runtime, request, profile, f"retry of job {job_number}")
        return _change(job_number, store.retry, "queued again with a fresh set of attempts")

    def cancel_job(job_number: Any, request: gr.Request, profile: gr.OAuthProfile | None):
        require(runtime, request, profile, f"cancel of job {job_number}")
        return _change(job_number, store.cancel, "cancelled; it will not run")

    def _change(job_number: Any, change: Any, done: str):
        if not str(job_number or "").strip():
            return (notice("Select a job first.", "warn"), gr.skip(), gr.skip(), gr.skip())
        try:
            number = job_number_of(job_number)
        except ValueError:
            return (notice(f"{job_number} is not a job number.", "warn"), gr.skip(), gr.skip(), gr.skip())
        try:
            job = change(number)
        except KeyError:
            return (notice(f"There is no job {job_number}.", "error"), gr.skip(), gr.skip(), gr.skip())
        except ValueError as exc:
            return (notice(f"{exc}.", "warn"), gr.skip(), gr.skip(), gr.skip())
        html_text, job = render_detail(job.id)
        return (notice(f"Job #{job.id} {done}.", "ok"), html_text, *buttons(job))

    filters = [state, kind, trigger, job_id]
    detail_outputs = [detail, retry_btn, cancel_btn]
    on(table_html.select, pick_job, None, [job_id, *detail_outputs, message], show_progress="hidden")
    for event in (open_btn.click, job_id.submit):
        on(event, show_job, job_id, [*detail_outputs, message]).then(None, js=SHOW_DETAIL_JS,
                                                                    api_visibility="private")
    for dropdown in (state, kind, trigger):
        on(dropdown.change, filter_jobs, filters, [table_html, page_no, message], show_progress="hidden")
    for button, step in ((newer, -1), (older, 1)):
        on(button.click, turn(step), [*filters, page_no], [table_html, page_no], show_progress="hidden")
    on(timer.tick, tick, [*filters, page_no, seen], [table_html, *detail_outputs, seen], show_progress="hidden")
    on(retry_btn.click, retry_job, job_id, [message, *detail_outputs])
    on(cancel_btn.click, cancel_job, job_id, [message, *detail_outputs])
    on(live.change, set_live, live, timer)
    return {"table": table_html, "filters": [*filters, page_no], "list": list_jobs, "job_id": job_id,
            "message": message}
