"""The bridge's own feedback page, `/feedback/<token id>`: the HTML only (pure: no I/O, no clock of its own).

Rows in the dataset link here instead of to LangSmith's presigned token URL, because a GET on that URL records
feedback and link scanners (mail, chat, Slack) and crawlers of dataset pages follow links. Opening this page records
nothing; the form POSTs back to the bridge, which sends the feedback to LangSmith from the server (a `feedback` job).
The token is the authorisation: no login, no LangSmith key. Every text from a run or a person is escaped.
"""

from __future__ import annotations

import html
import json
from datetime import datetime
from typing import Any

MAX_TEXT = 10_000  # characters of a comment or a correction
RATINGS = {"good": 1.0, "bad": 0.0, "none": None}

STYLE = """
*{box-sizing:border-box}body{font:16px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;
background:#f6f7f9;color:#1f2328}main{max-width:46rem;margin:0 auto;padding:1rem}h1{font-size:1.3rem;margin:.2rem 0 1rem}
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:.8rem 1rem;margin:0 0 1rem}
h2{font-size:1rem;margin:0 0 .4rem;color:#57606a}pre{white-space:pre-wrap;word-break:break-word;margin:0;
font:14px/1.4 ui-monospace,Menlo,Consolas,monospace;max-height:24rem;overflow:auto}
label{display:block;font-weight:600;margin:.6rem 0 .2rem}textarea{width:100%;min-height:5rem;font:inherit;
padding:.5rem;border:1px solid #d0d7de;border-radius:6px}.buttons{display:flex;flex-wrap:wrap;gap:.6rem;margin-top:1rem}
button{font:inherit;font-weight:600;padding:.8rem 1.4rem;border-radius:8px;border:1px solid #d0d7de;background:#fff;
flex:1 1 8rem;cursor:pointer}button.good{background:#1a7f37;color:#fff;border-color:#1a7f37}
button.bad{background:#cf222e;color:#fff;border-color:#cf222e}.note{padding:.8rem 1rem;border-radius:8px;margin:0 0 1rem}
.info{background:#ddf4ff}.ok{background:#dafbe1}.error{background:#ffebe9}.muted{color:#57606a;font-size:.9rem}
"""


def esc(value: Any) -> str:
    return "" if value is None else html.escape(str(value), quote=True)


def document(title: str, body: str, refresh: bool = False) -> str:
    """A whole page: phone-sized, kept out of search engines, and with nothing that loads from elsewhere."""
    again = '<meta http-equiv="refresh" content="3">' if refresh else ""
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width, initial-scale=1">'
            f'<meta name=robots content="noindex, nofollow">{again}<title>{esc(title)}</title>'
            f"<style>{STYLE}</style></head><body><main>{body}</main></body></html>")


def note(text: str, kind: str = "info") -> str:
    return f'<p class="note {kind}" role="status">{esc(text)}</p>'


def unknown_page() -> str:
    return document("Feedback link not found", "<h1>Feedback link not found</h1>" + note(
        "This feedback link is not known here. It may have expired and been cleared, or it was copied incompletely.",
        "error"))


def expired(link: dict, now: datetime) -> bool:
    return datetime.fromisoformat(link["expires_at"]) <= now


def run_sections(link: dict) -> str:
    shown = json.loads(link.get("preview") or "{}")
    name = f' <span class="muted">({esc(shown["name"])})</span>' if shown.get("name") else ""
    return (f'<section><h2>Input{name}</h2><pre id="run-input">{esc(shown.get("inputs")) or "(not kept)"}</pre>'
            f'</section><section><h2>Output</h2><pre id="run-output">{esc(shown.get("outputs")) or "(not kept)"}</pre>'
            "</section>")


def form(token_id: str, key: str) -> str:
    """Posts back to this page (a relative address, so a bridge behind a path prefix works); the token id travels in
    the path and in a field, and the two must match."""
    return (f'<form method="post" action="{esc(token_id)}"><input type="hidden" name="token" '
            f'value="{esc(token_id)}"><label for="comment">Comment (optional)</label>'
            '<textarea id="comment" name="comment" maxlength="10000"></textarea>'
            '<label for="correction">Correction: what the answer should have been (optional)</label>'
            '<textarea id="correction" name="correction" maxlength="10000"></textarea>'
            '<div class="buttons"><button class="good" name="rating" value="good">Good</button>'
            '<button class="bad" name="rating" value="bad">Bad</button>'
            '<button name="rating" value="none">Send without a rating</button></div>'
            f'<p class="muted">Recorded in LangSmith as feedback “{esc(key)}” (Good = 1, Bad = 0).</p></form>')


def read_form(form: dict, token_id: str) -> tuple[dict, str | None]:
    """The feedback fields of a submitted form, or a sentence saying what is wrong with it. The form must name the
    same token as the address it was posted to (a form copied onto another page cannot aim elsewhere)."""
    if form.get("token") != token_id:
        return {}, "This form does not belong to this feedback link. Open the link again and send from there."
    rating = form.get("rating") or "none"
    if rating not in RATINGS:
        return {}, "Choose Good or Bad, or send without a rating."
    comment, correction = (str(form.get(k) or "").strip() for k in ("comment", "correction"))
    if max(len(comment), len(correction)) > MAX_TEXT:
        return {}, f"A comment or a correction can be at most {MAX_TEXT} characters long."
    if RATINGS[rating] is None and not comment and not correction:
        return {}, "Nothing to send: choose Good or Bad, or write a comment or a correction."
    fields = {"score": RATINGS[rating], "comment": comment or None,
              # the shape the training configs read as the assistant's corrected reply
              "correction": {"role": "assistant", "content": correction} if correction else None}
    return {k: v for k, v in fields.items() if v is not None}, None


def job_note(job: Any) -> tuple[str, bool]:
    """What became of a submission (a `feedback` job), and whether the page should look again shortly."""
    if job.state == "succeeded":
        return note("Thank you: your feedback is recorded in LangSmith.", "ok"), False
    if job.state in ("failed", "dead", "cancelled"):
        return note(f"Your feedback could not be recorded: {job.last_error or 'it was cancelled'}", "error"), False
    return note("Sending your feedback to LangSmith…"), True


def feedback_html(link: dict, now: datetime, *, job: Any = None, problem: str | None = None) -> str:
    """The page for a known token: the run, then the form, or the reason no form is shown."""
    refresh, status = False, ""
    if problem:
        status = note(problem, "error")
    elif job is not None:
        status, refresh = job_note(job)
    if expired(link, now):
        when = datetime.fromisoformat(link["expires_at"]).strftime("%Y-%m-%d %H:%M UTC")
        status += note(f"This feedback link expired on {when}. Feedback can no longer be given through it.", "error")
        controls = ""
    else:
        controls = f"<section>{form(link['token_id'], link['feedback_key'])}</section>"
    body = f"<h1>How was this answer?</h1>{status}{run_sections(link)}{controls}"
    return document("Feedback on a run", body, refresh=refresh)
