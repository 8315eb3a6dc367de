"""Job kind `backfill`: a LangSmith project's runs (a filter, a time window) -> the same writer as the webhooks.

Pages are fetched by hand with `/runs/query` cursors, each page waits for LangSmith's rate limit, and the cursor is
saved after every page, so a back-fill interrupted by a restart resumes where it stopped. Runs already exported are
skipped by the export ledger, so overlapping back-fills and webhook deliveries never duplicate a row.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ..errors import BridgeError
from .exports import export_runs, new_counts, schedule_flush

BACKFILL = "backfill"
SCHEMA = """
CREATE TABLE IF NOT EXISTS backfill_cursors (
    job_id INTEGER PRIMARY KEY,
    cursor TEXT,
    counts TEXT NOT NULL
);
"""


class Cursors:
    def __init__(self, db: Any) -> None:
        self.db = db
        db.migrate(SCHEMA)

    def load(self, job_id: int) -> tuple[str | None, dict | None]:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM backfill_cursors WHERE job_id = ?", (job_id,)).fetchone()
        return (row["cursor"], json.loads(row["counts"])) if row else (None, None)

    def save(self, job_id: int, cursor: str | None, counts: dict) -> None:
        with self.db.tx() as conn:
            conn.execute("INSERT OR REPLACE INTO backfill_cursors (job_id, cursor, counts) VALUES (?, ?, ?)",
                         (job_id, cursor, json.dumps(counts)))


def _before(run: dict, end_time: str | None) -> bool:
    if not end_time or not run.get("start_time"):
        return True
    started = datetime.fromisoformat(str(run["start_time"]).replace("Z", "+00:00"))
    limit = datetime.fromisoformat(end_time.replace("Z", "+00:00"))
    if started.tzinfo is None and limit.tzinfo is not None:
        limit = limit.replace(tzinfo=None)  # LangSmith sends naive UTC times
    return started <= limit


def target_for(config: Any, repo: str) -> Any:
    for target in config.exports:
        if target.repo == repo:
            return target
    raise BridgeError(f"no exports entry writes to {repo!r}; add one to bridge.yaml first")


def run_backfill(job: Any, ctx: Any) -> dict:
    rt, p = ctx.services, job.payload
    target = target_for(rt.settings.config, p["repo"])
    cursors = Cursors(rt.store.db)
    cursor, counts = cursors.load(job.id)
    counts = counts or {**new_counts(), "pages": 0}
    project_id = rt.smith.project_id(p["project"])
    flush_jobs: set[int] = set()
    while True:
        runs, next_cursor = rt.smith.runs_page(project_id, filter=p.get("filter"), start_time=p.get("start_time"),
                                               cursor=cursor)
        runs = [r for r in runs if _before(r, p.get("end_time"))]
        counts["runs"] += len(runs)
        counts["pages"] += 1
        flush_jobs.update(export_runs(rt, target.current_rule_id, runs, [target], job, counts, schedule=False))
        cursor = next_cursor
        cursors.save(job.id, cursor, counts)
        ctx.progress(counts["runs"], counts["runs"] + (100 if cursor else 0), "runs")
        if not cursor:
            break
    if rt.ledger.pending(target.repo):
        flush_jobs.add(schedule_flush(rt, target, job.trigger))
    return {"repo": target.repo, "project": p["project"], "counts": counts, "flush_jobs": sorted(flush_jobs)}
