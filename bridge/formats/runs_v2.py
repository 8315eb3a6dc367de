"""Runs read through LangSmith's v2 runs API, in the shape the rest of the bridge knows (the rule webhook's).

Pure: no network. The v2 API returns only the fields a query selects, names the project `project_id`, writes
`status` in capitals and keeps `metadata` apart from `extra`; the export maps webhook-shaped runs, so each v2 run is
turned back into that shape here, once.
"""

from __future__ import annotations

from typing import Any

# What an export reads from a run (formats/runs.py, training.py, messages.py): nothing more is asked for.
EXPORT_SELECTS = ["ID", "NAME", "RUN_TYPE", "STATUS", "START_TIME", "END_TIME", "INPUTS", "OUTPUTS", "ERROR",
                  "EXTRA", "METADATA", "TAGS", "TRACE_ID", "DOTTED_ORDER", "PARENT_RUN_IDS", "IS_ROOT", "PROJECT_ID",
                  "TOTAL_TOKENS", "PROMPT_TOKENS", "COMPLETION_TOKENS", "TOTAL_COST", "APP_PATH", "THREAD_ID"]
# Completing a run whose inputs/outputs a delivery left out needs only those.
PAYLOAD_SELECTS = ["ID", "INPUTS", "OUTPUTS"]


def webhook_shape(run: dict[str, Any]) -> dict[str, Any]:
    """A v2 run (as selected) -> the webhook's run dict: `session_id`, lower-case `status`, metadata in `extra`."""
    out = dict(run)
    if "project_id" in out:
        out["session_id"] = out.pop("project_id")
    if isinstance(out.get("status"), str):
        out["status"] = out["status"].lower()
    if "metadata" in out:
        metadata = out.pop("metadata")
        extra = dict(out.get("extra") or {})
        if metadata and not extra.get("metadata"):
            extra["metadata"] = metadata
        out["extra"] = extra
    parents = out.get("parent_run_ids")
    if parents is not None and "parent_run_id" not in out:
        out["parent_run_id"] = parents[-1] if parents else None
    return out
