"""Job kind `reconcile`: recovers what webhooks missed (a sleeping Space, a suspended webhook, a wiped disk).

At start and every `reconcile_minutes`: every branch head of every repo an `experiments` rule watches gets the same
job a push would have created (same idempotency key, so nothing runs twice), and every `exports` entry with a
`backfill` section gets a back-fill of the runs since its watermark (see `backfill.Watermark`), rows still
buffered whose flush is gone (failed, cancelled) get a new flush, and LangSmith is asked which exported runs had
their feedback changed since the last check (see `feedback_sync`).
"""

from __future__ import annotations

import math
from datetime import timedelta
from fnmatch import fnmatchcase
from typing import Any

from ..errors import UpstreamError
from ..jobs import ACTIVE
from ..routing import experiment_spec
from . import feedback_sync, rules
from .backfill import BACKFILL, Cursors, as_utc
from .exports import resume, sync_repo
from .hub_webhook import keep_during_reconcile

RECONCILE = "reconcile"


def schedule_next(runtime: Any) -> int | None:
    """One reconcile per period; every process that starts asks for the same next one, so chains never multiply."""
    minutes = runtime.settings.config.reconcile_minutes
    if minutes <= 0:
        return None
    period = minutes * 60
    now = runtime.store.clock()
    window = math.floor(now / period) + 1
    job, _ = runtime.store.enqueue(RECONCILE, f"{RECONCILE}:{window}", {}, trigger="reconcile",
                                   subject="scheduled", delay=window * period - now)
    return job.id


def schedule_at_start(runtime: Any) -> int | None:
    if runtime.settings.config.reconcile_minutes <= 0:
        return None
    job, _ = runtime.store.enqueue(RECONCILE, f"{RECONCILE}:start:{runtime.store.clock():.6f}", {},
                                   trigger="reconcile", subject="at start")
    return job.id


def reconcile_experiments(runtime: Any) -> list[int]:
    hub, store, queued = runtime.hub, runtime.store, []
    for rule in runtime.settings.config.experiments:
        owner = rule.repo.split("/")[0]
        if any(c in owner for c in "*?["):
            continue  # an owner glob cannot be listed; only webhooks cover it
        for repo in hub.list_repos(owner, rule.repo_type):
            if not fnmatchcase(repo, rule.repo):
                continue
            for branch in rule.branches:
                sha = _branch_head(hub, repo, rule.repo_type, branch)
                if sha is None:
                    continue
                spec = experiment_spec(repo, rule.repo_type, f"refs/heads/{branch}", sha, None, None)
                job, created = store.enqueue(spec.kind, spec.key, spec.payload, trigger="reconcile",
                                             subject=spec.subject)
                if created:
                    queued.append(job.id)
    return queued


def _branch_head(hub: Any, repo: str, repo_type: str, branch: str) -> str | None:
    """A watched branch (e.g. `release`) need not exist in every matching repo."""
    try:
        return hub.revision_info(repo, repo_type, branch)[0]
    except UpstreamError as exc:
        if exc.status == 404:
            return None
        raise


def reconcile_exports(runtime: Any) -> list[int]:
    """A back-fill per repo with a `backfill` section, from its watermark (what the last one saw) less the
    lookback. At most one runs at a time per repo; a new one is made every reconcile, whatever the last found."""
    queued = []
    cursors = Cursors(runtime.store.db)
    for repo in runtime.settings.config.export_repos():
        target = runtime.settings.config.repo_target(repo)
        if target.backfill is None:
            continue
        sync_repo(runtime, repo)
        mark = cursors.watermark(repo) or runtime.ledger.newest_end_time(repo)
        since = as_utc(mark) - timedelta(minutes=target.backfill.lookback_minutes) if mark else None
        payload = {"repo": repo, "project": target.backfill.project, "filter": target.backfill.filter,
                   "start_time": since.isoformat() if since else None, "end_time": None, "reconcile": True,
                   "watermark": mark}
        job, created = runtime.store.enqueue_once(BACKFILL, f"{target.backfill.project} → {repo}", payload,
                                                  trigger="reconcile", states=ACTIVE)
        if created:
            queued.append(job.id)
    return queued


def run_reconcile(job: Any, ctx: Any) -> dict:
    rt = ctx.services
    try:
        webhook = keep_during_reconcile(rt)  # first: a re-enabled webhook's missed pushes are caught up just below
        return {"hub_webhook": webhook.get("action") or webhook.get("why") or webhook.get("problems"),
                "experiment_jobs": reconcile_experiments(rt), "backfill_jobs": reconcile_exports(rt),
                "flush_jobs": resume(rt),
                "rules_job": rules.schedule(rt, "reconcile"),  # managed rules and gaps from rule logs
                "feedback": feedback_sync.sync_feedback(rt, job)}  # runs whose feedback changed since last time
    finally:
        schedule_next(rt)
