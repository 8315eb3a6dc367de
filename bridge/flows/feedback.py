"""Job kind `feedback`: a rating given in the Review page, sent through the run's presigned feedback URL.

The UI only enqueues; this job makes the call, so the LangSmith key stays on the server and the UI never talks to
an upstream itself.
"""

from __future__ import annotations

from typing import Any

FEEDBACK = "feedback"


def run_feedback(job: Any, ctx: Any) -> dict:
    p = job.payload
    fields = {k: p[k] for k in ("score", "value", "comment", "correction") if p.get(k) is not None}
    ctx.services.smith.create_feedback_from_token(p["url"], **fields)
    return {"run_id": p.get("run_id"), "key": p.get("key"), **fields}
