"""Job kind `scores`: rebuilds the Experiments page's table (`bridge.scores`) from LangSmith after the state dir
was lost: one listing of the workspace's experiments, keeping those the bridge uploaded (their metadata says so).
No runs are read."""

from __future__ import annotations

from typing import Any

from .. import scores

SCORES = "scores"


def run_recover(job: Any, ctx: Any) -> dict:
    rt = ctx.services
    found = []
    for session in rt.smith.all_experiments():
        meta = (session.extra or {}).get("metadata") or {}
        if not meta.get("bridge_version") or session.reference_dataset_id is None:
            continue
        url = rt.smith.compare_url(str(session.reference_dataset_id), [str(session.id)])
        score = scores.from_metadata(str(session.id), session.name, meta, session.start_time, url)
        if score is not None:
            found.append(score)
    return {"counts": {"experiments_recovered": rt.scores.add(found)}}


def schedule_at_start(runtime: Any) -> int | None:
    """After a wipe (no scores and no experiment job stored) with experiments rules and a key: recover once."""
    settings = runtime.settings
    if (runtime.scores is None or not settings.config.experiments or settings.langsmith_api_key is None
            or not runtime.scores.empty() or runtime.store.list(kind="experiment", limit=1)):
        return None
    job, _ = runtime.store.enqueue(SCORES, f"{SCORES}:start:{runtime.store.clock():.6f}", {}, trigger="reconcile",
                                   subject="experiment scores from LangSmith")
    return job.id
