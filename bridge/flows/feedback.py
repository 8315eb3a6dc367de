"""Job kind `feedback`: a rating given on the Review page or the bridge's feedback page, sent through the
run's presigned feedback URL.

The UI only enqueues; this job makes the call, so the LangSmith key stays on the server and the UI never talks to
an upstream itself.
"""

from __future__ import annotations

from typing import Any

from ..errors import UpstreamError
from .exports import refresh_rated_run

FEEDBACK = "feedback"
REFUSED = (400, 404, 410)  # what LangSmith answers for an expired or unknown token


def run_feedback(job: Any, ctx: Any) -> dict:
    p = job.payload
    fields = {k: p[k] for k in ("score", "value", "comment", "correction") if p.get(k) is not None}
    try:
        ctx.services.smith.create_feedback_from_token(token_url(ctx.services, p), **fields)
    except UpstreamError as exc:
        if exc.transient or exc.status not in REFUSED:
            raise
        raise UpstreamError("LangSmith", f"LangSmith refused this feedback link: it has expired or no longer "
                                         f"exists ({exc}).", status=exc.status, sentence=True) from exc
    refreshed = refresh_rated_run(ctx.services, str(p["run_id"]), job) if p.get("run_id") else {}
    return {"run_id": p.get("run_id"), "key": p.get("key"), **fields, **refreshed}


def token_url(runtime: Any, payload: dict) -> str:
    """The presigned URL behind the job's token id (jobs queued before token ids carry the URL itself)."""
    if payload.get("url"):
        return payload["url"]
    link = runtime.ledger.feedback_token(payload["token_id"])
    if link is None:
        raise UpstreamError("LangSmith", "This feedback link is no longer known to the bridge: it expired and was "
                                         "cleared. Ratings need a link that is still valid.", sentence=True)
    return link["url"]
