"""Job kind `housekeeping`: keeps the state dir from growing for as long as the bridge runs.

Every hour (and at start): retention over jobs, deliveries and expired feedback links (`retention_days`,
`failed_retention_days`), then the freed pages go back to the file system. The exported ledger is never pruned:
exactly once rests on it. No upstream call.
"""

from __future__ import annotations

import math
from typing import Any

HOUSEKEEPING = "housekeeping"
PERIOD_SECONDS = 3600.0
DAY = 86400.0


def schedule_next(runtime: Any, at_start: bool = False) -> int:
    """One per hour; every process asks for the same next one (its key is the hour), so chains never multiply."""
    now = runtime.store.clock()
    window = math.floor(now / PERIOD_SECONDS) + (0 if at_start else 1)
    key = f"{HOUSEKEEPING}:{'start:' if at_start else ''}{window}"
    job, _ = runtime.store.enqueue(HOUSEKEEPING, key, {}, trigger="reconcile", subject="state dir",
                                   delay=0.0 if at_start else window * PERIOD_SECONDS - now, priority=2)
    return job.id


def run_housekeeping(job: Any, ctx: Any) -> dict:
    rt = ctx.services
    config = rt.settings.config
    try:
        before = rt.store.db.size_bytes()
        pruned = rt.store.prune(config.retention_days * DAY, config.failed_retention_days * DAY)
        pruned.update(rt.ledger.prune())
        freed = rt.store.db.compact()
        return {"pruned": pruned, "pages_freed": freed, "state_bytes_before": before,
                "state_bytes": rt.store.db.size_bytes()}
    finally:
        schedule_next(rt)
