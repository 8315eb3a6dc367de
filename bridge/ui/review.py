"""The Review page: recently exported runs with their input and output, and Good / Bad / comment controls.

A rating becomes a `feedback` job that posts to the run's presigned feedback link from the server: neither the link
nor the LangSmith key is sent to the browser. The browser names a run by (repo, run id) only, and the run is looked
up again on the server.
"""

from __future__ import annotations

import time
from typing import Any

import gradio as gr

from .. import actions
from ..actions import FieldError
from .common import locked, on, require, viewer
from ..formats.run_text import cut, parse_json as _parse, readable
from .html import badge, empty, esc, icon, link, notice, ts, when

LIMIT = 30
SCORES = {"up": 1.0, "down": 0.0, "comment": None}
WORDS = {1.0: "Good", 0.0: "Bad"}
MAX_PREVIEW = 1_500

CLICK_JS = """
element.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-act]');
  if (!button) return;
  const card = button.closest('.run-card');
  const key = card.querySelector('select.fb-key');
  const comment = card.querySelector('.fb-comment');
  const text = comment ? comment.value.trim() : '';
  const said = card.querySelector('.fb-sent');
  if (button.dataset.act === 'comment' && !text) {  // refused here: nothing is sent, so nothing says "Sending"
    said.textContent = 'Write a comment first, then press Send comment.';
    if (comment) comment.focus();
    return;
  }
  said.textContent = 'Sending…';
  if (comment) comment.value = '';  // sent: the box is ready for the next comment
  trigger('select', {index: card.dataset.run, value: {repo: card.dataset.repo, act: button.dataset.act,
                     key: key ? key.value : card.dataset.key, comment: text}});
});
"""


def preview(value: Any) -> str:
    text = cut(readable(value), MAX_PREVIEW)
    return f'<pre class="io-text">{esc(text) or "<span class=muted>empty</span>"}</pre>'


def feedback_chips(feedback: list[dict]) -> str:
    chips = []
    for f in feedback or []:
        value = f.get("score") if f.get("score") is not None else f.get("value")
        correction = _parse(f.get("correction"))
        if isinstance(correction, dict):
            correction = correction.get("output", correction)
        note = "".join(f" — {text}" for text in (f.get("comment"), correction) if text)
        shown = esc(value if value is not None else "")
        chips.append(f'<span class="chip">{esc(f.get("key"))} {shown}{esc(note)}</span>')
    return "".join(chips) or '<span class="muted">no feedback yet</span>'


def sent_line(jobs: list) -> str:
    if not jobs:
        return ""
    parts = [f"{WORDS.get(j.payload.get('score'), 'Comment')} #{j.id} {badge(j.state)}" for j in jobs[:3]]
    return "Sent from here: " + " ".join(parts)


def feedback_keys(run: dict, now: float) -> tuple[list[str], bool]:
    """(keys whose link is still valid, whether the run has any link at all)."""
    links = [l for l in run.get("feedback_urls") or [] if isinstance(l, dict) and l.get("key")]
    valid = [l["key"] for l in links if not ((w := when(l.get("expires_at"))) and w.timestamp() <= now)]
    return list(dict.fromkeys(valid)), bool(links)


def controls(run: dict, keys: list[str], any_links: bool) -> str:
    if not any_links:
        return notice(f"No feedback link for this run. To rate runs here, add feedback_links: {{keys: [user_score]}} "
                      f"to the exports target for {run.get('repo')} in bridge.yaml; runs exported after that get one.",
                      "info")
    if not keys:
        return notice("The feedback links of this run have expired (they last feedback_links.expires_hours, "
                      "168 h by default). Rate it in LangSmith instead.", "info")
    options = "".join(f'<option value="{esc(k)}">{esc(k)}</option>' for k in keys)
    picker = (f'<select class="fb-key" aria-label="Feedback key">{options}</select>' if len(keys) > 1
              else f'<span class="chip key">{esc(keys[0])}</span>')
    return (f'<div class="fb-controls">{picker}'
            f'<button class="fb up" data-act="up" title="Good answer: score 1">{icon("up")} Good</button>'
            f'<button class="fb down" data-act="down" title="Bad answer: score 0">{icon("down")} Bad</button>'
            '<input class="fb-comment" type="text" maxlength="2000" placeholder="Comment (optional)">'
            '<button class="fb send" data-act="comment">Send comment</button></div>')


def dataset_line(run: dict, waiting: bool, flush_at: float | None) -> str:
    """Whether the dataset already shows the feedback above, and when it will."""
    repo = esc(run.get("repo"))
    if waiting:
        due = f" (due {ts(flush_at)})" if flush_at else ""
        return (f'<p class="fb-dataset muted">Newer feedback is on its way to <code>{repo}</code>: its rows are '
                f'rewritten by the next commit{due}.</p>')
    if run.get("updated_at"):
        return (f'<p class="fb-dataset muted"><code>{repo}</code> shows this feedback (rows rewritten '
                f'{ts(run.get("updated_at"))}).</p>')
    return f'<p class="fb-dataset muted"><code>{repo}</code> shows this feedback.</p>'


def run_card(run: dict, sent: list, now: float, waiting: bool = False, flush_at: float | None = None) -> str:
    keys, any_links = feedback_keys(run, now)
    meta = " · ".join(esc(x) for x in (run.get("run_type"), run.get("model"), run.get("repo")) if x)
    return (f'<article class="run-card" data-run="{esc(run.get("run_id"))}" data-repo="{esc(run.get("repo"))}" '
            f'data-key="{esc(keys[0] if keys else "")}">'
            f'<header><b>{esc(run.get("name") or "run")}</b> <span class="muted">{meta}</span>'
            f'<span class="grow"></span>{ts(run.get("start_time"))} '
            f'{link(run.get("run_url"), "LangSmith", "pill")}</header>'
            f'<div class="io"><div><h4>Input</h4>{preview(run.get("inputs"))}</div>'
            f'<div><h4>Output</h4>{preview(run.get("outputs"))}</div></div>'
            f'<div class="fb-existing">{feedback_chips(run.get("feedback"))}</div>'
            f'{dataset_line(run, waiting, flush_at)}{controls(run, keys, any_links)}<div class="fb-sent">{sent_line(sent)}</div></article>')


def review_html(runs: list[dict], sent: dict[str, list], now: float, waiting: set[tuple[str, str]] = frozenset(),
                flushes: dict[str, float] | None = None) -> str:
    if not runs:
        return empty("No exported runs yet. They appear once a LangSmith rule delivery or a back-fill has been "
                     "committed to a Hub dataset (see Run a job → Back-fill an export).")
    return "".join(run_card(r, sent.get(str(r.get("run_id")), []), now, (r.get("repo"), r.get("run_id")) in waiting,
                            (flushes or {}).get(r.get("repo"))) for r in runs)


def next_flushes(store: Any) -> dict[str, float]:
    """When each repo's next flush is due (one is queued per repo: due now, or scheduled for its window's end)."""
    jobs = [*store.list(state="queued", kind="flush", limit=100), *store.list(state="scheduled", kind="flush", limit=100)]
    return {job.subject: job.next_attempt_at for job in jobs}


def sent_by_run(store: Any) -> dict[str, list]:
    found: dict[str, list] = {}
    for job in store.list(kind="feedback", limit=200):
        found.setdefault(str(job.payload.get("run_id")), []).append(job)
    return found


def build(runtime: Any) -> dict:
    store, ledger = runtime.store, runtime.ledger
    with gr.Row(elem_classes="toolbar"):
        gr.HTML('<p class="muted">Recently exported runs, newest first, with the feedback the bridge last read from '
                'LangSmith. <b>Good</b> and <b>Bad</b> send a score of 1 or 0 for the run’s feedback key through its '
                'presigned link; the run’s dataset rows follow at the next commit.</p>')
        refresh = gr.Button("Refresh", elem_id="review-refresh", scale=0, min_width=100)
    status = gr.HTML(elem_id="review-status")
    runs_html = gr.HTML(elem_id="review-list", js_on_load=CLICK_JS)

    def render() -> str:
        runs = ledger.recent(LIMIT)
        waiting = ledger.waiting([str(r["run_id"]) for r in runs])
        return review_html(runs, sent_by_run(store), time.time(), waiting, next_flushes(store))

    def list_runs(request: gr.Request, profile: gr.OAuthProfile | None) -> str:
        who = viewer(runtime, request, profile)
        return render() if who.allowed else locked(who)

    def rate_run(event: gr.SelectData, request: gr.Request, profile: gr.OAuthProfile | None) -> tuple:
        require(runtime, request, profile, "feedback on a run")
        choice = event.value if isinstance(event.value, dict) else {}
        act, run_id = str(choice.get("act") or ""), str(event.index or "")
        run = next((r for r in ledger.recent(500) if str(r["run_id"]) == run_id and r["repo"] == choice.get("repo")),
                   None)
        if run is None or act not in SCORES:
            return notice("This run is no longer in the recent list: press Refresh.", "warn"), render()
        comment = str(choice.get("comment") or "").strip()
        if act == "comment" and not comment:
            return notice("Write a comment first, then press Send comment.", "warn"), gr.skip()
        try:
            job = actions.submit_feedback(store, run, str(choice.get("key") or ""), SCORES[act], comment)
        except FieldError as exc:
            return notice(f"Not sent: {exc}.", "error"), render()
        what = WORDS.get(SCORES[act], "Comment")
        return notice(f"{what} on “{run.get('name')}” (run {run_id[:8]}) queued as job #{job.id}; it goes out "
                      "through the run’s feedback link, then the run’s rows in the dataset are rewritten with the "
                      "next commit. Press Refresh to see it here.", "ok"), render()

    on(refresh.click, list_runs, None, runs_html)
    on(runs_html.select, rate_run, None, [status, runs_html], show_progress="hidden")
    return {"load": (list_runs, [runs_html])}
