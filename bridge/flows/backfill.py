"""Job kind `backfill`: a LangSmith project's runs (a filter, a time window) -> the same writer as the webhooks.

Pages are fetched by hand with `/runs/query` cursors, each page waits for LangSmith's rate limit, and the cursor is
saved after every page, so a back-fill interrupted by a restart resumes where it stopped. Runs already exported are
skipped by the export ledger, so overlapping back-fills and webhook deliveries never duplicate a row.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from ..errors import BridgeError
from .exports import export_runs, new_counts, schedule_flush

BACKFILL = "backfill"


class Cursors:
    """A back-fill's saved place (per job), and the reconcile back-fill's watermark (per repo)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def load(self, job_id: int) -> tuple[str | None, dict | None]:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM backfill_cursors WHERE job_id = ?", (job_id,)).fetchone()
        return (row["cursor"], json.loads(row["counts"])) if row else (None, None)

    def save(self, job_id: int, cursor: str | None, counts: dict) -> None:
        with self.db.tx() as conn:
            conn.execute("INSERT OR REPLACE INTO backfill_cursors (job_id, cursor, counts) VALUES (?, ?, ?)",
                         (job_id, cursor, json.dumps(counts)))

    def watermark(self, repo: str) -> str | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT since FROM backfill_marks WHERE repo = ?", (repo,)).fetchone()
        return row["since"] if row else None

    def save_watermark(self, repo: str, since: str) -> None:
        with self.db.tx() as conn:
            conn.execute("INSERT INTO backfill_marks (repo, since) VALUES (?, ?) ON CONFLICT (repo) DO UPDATE SET "
                         "since = excluded.since", (repo, since))


def as_utc(value: Any) -> datetime | None:
    """A LangSmith time (naive means UTC) or an ISO text with any offset, as an aware UTC datetime."""
    if value is None or value == "":
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _before(run: dict, end_time: str | None) -> bool:
    started, limit = as_utc(run.get("start_time")), as_utc(end_time)
    return started is None or limit is None or started <= limit


class Watermark:
    """What a reconcile back-fill saw, for the next one to start from: the start of the oldest run that was still
    running (exported once it ends), else the start of the newest run seen."""

    def __init__(self, since: str | None) -> None:
        self.newest, self.oldest_open = as_utc(since), None

    def see(self, run: dict) -> bool:
        """Records `run`; True when it is finished (a reconcile back-fill exports finished runs only)."""
        started = as_utc(run.get("start_time"))
        if started is None:
            return bool(run.get("end_time"))
        if not run.get("end_time"):
            self.oldest_open = min(filter(None, (self.oldest_open, started)))
            return False
        self.newest = max(filter(None, (self.newest, started)))
        return True

    def value(self) -> str | None:
        mark = self.oldest_open or self.newest
        return mark.isoformat() if mark else None


def target_for(config: Any, repo: str) -> Any:
    target = config.repo_target(repo)
    if target is not None:
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
    mark = Watermark(p.get("watermark")) if p.get("reconcile") else None
    while True:
        runs, next_cursor = rt.smith.runs_page(project_id, filter=p.get("filter"), start_time=p.get("start_time"),
                                               cursor=cursor)
        runs = [r for r in runs if _before(r, p.get("end_time"))]
        if mark is not None:
            finished = [r for r in runs if mark.see(r)]
            counts["still_running"] = counts.get("still_running", 0) + len(runs) - len(finished)
            runs = finished
        counts["runs"] += len(runs)
        counts["pages"] += 1
        flush_jobs.update(export_runs(rt, target.current_rule_id, runs, [target], job, counts, schedule=False))
        cursor = next_cursor
        cursors.save(job.id, cursor, counts)
        ctx.progress(counts["runs"], counts["runs"] + (100 if cursor else 0), "runs")
        if not cursor:
            break
    flush_id = schedule_flush(rt, target, job.trigger)
    if flush_id is not None:
        flush_jobs.add(flush_id)
    if mark is not None and mark.value():
        cursors.save_watermark(target.repo, mark.value())
    return {"repo": target.repo, "project": p["project"], "counts": counts, "flush_jobs": sorted(flush_jobs)}
