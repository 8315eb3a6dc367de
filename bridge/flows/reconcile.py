"""Job kind `reconcile`: recovers what webhooks missed (a sleeping Space, a suspended webhook, a wiped disk).

At start and every `reconcile_minutes`: every branch head of every repo an `experiments` rule watches gets the same
job a push would have created (same idempotency key, so nothing runs twice), and every `exports` entry with a
`backfill` section gets a back-fill of the runs since the newest `end_time` already in its dataset repo.
"""

from __future__ import annotations

import math
from fnmatch import fnmatchcase
from typing import Any

from ..routing import experiment_spec
from . import rules
from .backfill import BACKFILL
from .exports import sync_exported

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
                sha, _ = hub.revision_info(repo, rule.repo_type, branch)
                spec = experiment_spec(repo, rule.repo_type, f"refs/heads/{branch}", sha, None, None)
                job, created = store.enqueue(spec.kind, spec.key, spec.payload, trigger="reconcile",
                                             subject=spec.subject)
                if created:
                    queued.append(job.id)
    return queued


def reconcile_exports(runtime: Any) -> list[int]:
    queued = []
    for target in runtime.settings.config.exports:
        if target.backfill is None:
            continue
        head, tree = runtime.hub.head_and_tree(target.repo)
        sync_exported(runtime, target.repo, head, tree)
        since = runtime.ledger.newest_end_time(target.repo)
        payload = {"repo": target.repo, "project": target.backfill.project, "filter": target.backfill.filter,
                   "start_time": since, "end_time": None}
        job, created = runtime.store.enqueue(BACKFILL, f"{BACKFILL}:reconcile:{target.repo}:{since}", payload,
                                             trigger="reconcile", subject=f"{target.backfill.project} → {target.repo}")
        if created:
            queued.append(job.id)
    return queued


def run_reconcile(job: Any, ctx: Any) -> dict:
    rt = ctx.services
    try:
        return {"experiment_jobs": reconcile_experiments(rt), "backfill_jobs": reconcile_exports(rt),
                "rules_job": rules.schedule(rt, "reconcile")}  # managed rules and gaps from rule logs
    finally:
        schedule_next(rt)
