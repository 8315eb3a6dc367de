"""What the Overview's charts show, read from the store: deliveries per hour by source and outcome, runs exported per
hour, and webhook acknowledgement latency (p50 / p99) per hour.

Deliveries and flushes are already stored (the `deliveries` table, flush jobs' results). The acknowledgement
latency is measured when the answer leaves, after the delivery's row is written, so it is kept in a table of its
own, `ack_latency`: `AckLog.record` only appends to a list (it runs on the event loop, in the middle of answering
a webhook), and the list is written in one transaction from a short-lived thread once it holds `BATCH` samples or
its oldest is `MAX_WAIT` seconds old, when a chart is read, and when the bridge stops. Samples older than
`KEEP_SECONDS` are deleted as new ones are written.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

log = logging.getLogger("bridge.activity")

HOUR = 3600
WINDOW_HOURS = 48
KEEP_SECONDS = 7 * 24 * HOUR


def hour_of(moment: float) -> float:
    return moment - moment % HOUR


class AckLog:
    """Acknowledgement latency per delivery, written in batches (see the module's docstring)."""

    BATCH = 200
    MAX_WAIT = 10.0

    def __init__(self, db: Any, clock: Any = time.time) -> None:
        self.db, self.clock = db, clock
        self._pending: list[tuple[float, str, float]] = []
        self._lock = threading.Lock()
        self._writing = threading.Lock()

    def record(self, source: str, seconds: float) -> None:
        """Called once per answered delivery, on the event loop: never touches the database itself."""
        now = self.clock()
        with self._lock:
            self._pending.append((now, source, max(0.0, seconds)))
            due = len(self._pending) >= self.BATCH or now - self._pending[0][0] >= self.MAX_WAIT
        if due and not self._writing.locked():
            threading.Thread(target=self.flush, name="ack-latency", daemon=True).start()

    def flush(self) -> None:
        with self._writing:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                with self.db.tx() as conn:
                    conn.executemany("INSERT INTO ack_latency (at, source, seconds) VALUES (?, ?, ?)", batch)
                    conn.execute("DELETE FROM ack_latency WHERE at < ?", (self.clock() - KEEP_SECONDS,))
            except Exception:  # a chart's data is not worth failing a webhook answer or a page for
                log.exception("could not store %d acknowledgement time(s)", len(batch))

    def per_hour(self, since: float) -> list[dict]:
        """[{hour, source, p50, p99, deliveries}] for each hour since `since` that had deliveries (seconds)."""
        self.flush()
        with self.db.read() as conn:
            rows = conn.execute("SELECT at, source, seconds FROM ack_latency WHERE at >= ? ORDER BY at",
                                (since,)).fetchall()
        groups: dict[tuple[float, str], list[float]] = {}
        for row in rows:
            groups.setdefault((hour_of(row["at"]), row["source"]), []).append(row["seconds"])
        return [{"hour": hour, "source": source, "p50": percentile(values, 50), "p99": percentile(values, 99),
                 "deliveries": len(values)} for (hour, source), values in sorted(groups.items())]


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile: the smallest value with at least `pct`% of the values at or below it."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def deliveries_per_hour(db: Any, since: float) -> list[dict]:
    """[{hour, source, outcome, deliveries}] from the `deliveries` table."""
    with db.read() as conn:
        rows = conn.execute(
            "SELECT CAST(received_at / ? AS INTEGER) * ? AS hour, source, outcome, COUNT(*) AS n FROM deliveries "
            "WHERE received_at >= ? GROUP BY hour, source, outcome ORDER BY hour", (HOUR, HOUR, since)).fetchall()
    return [{"hour": float(r["hour"]), "source": r["source"], "outcome": r["outcome"], "deliveries": r["n"]}
            for r in rows]


def runs_exported_per_hour(db: Any, since: float) -> list[dict]:
    """[{hour, repo, runs}] from the results of the flush jobs that finished since `since`."""
    with db.read() as conn:
        rows = conn.execute("SELECT finished_at, result FROM jobs WHERE kind = 'flush' AND finished_at >= ? "
                            "AND result IS NOT NULL", (since,)).fetchall()
    totals: dict[tuple[float, str], int] = {}
    for row in rows:
        try:
            result = json.loads(row["result"])
            runs, repo = int(result.get("runs_committed") or 0), str(result.get("repo") or "")
        except (ValueError, TypeError, AttributeError):
            continue
        if runs:
            key = (hour_of(row["finished_at"]), repo)
            totals[key] = totals.get(key, 0) + runs
    return [{"hour": hour, "repo": repo, "runs": n} for (hour, repo), n in sorted(totals.items())]
