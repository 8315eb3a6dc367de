"""Durable job queue on SQLite: explicit states, retries with backoff, idempotency keys, crash recovery.

States: queued -> running -> succeeded | failed | dead (transient errors exhausted the attempts) | cancelled.
A queued job whose time has not come (a retry in backoff, a flush waiting for its window, the next reconcile) is
shown as `scheduled`: `queued` in views and metrics means due now. A job left `running` by a process that died is
queued again at start (its attempt counts, so a job that kills the process every time ends `dead` instead of
looping). Enqueuing an existing idempotency key returns the existing job.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .db import Database
from .deliveries import DeliveryLog
from .errors import BridgeError, UpstreamError

log = logging.getLogger("bridge.jobs")

STATES = ("queued", "running", "succeeded", "failed", "dead", "cancelled")
SHOWN_STATES = ("scheduled", *STATES)  # `scheduled`: queued, due later
ACTIVE = ("queued", "running")
TRIGGERS = ("webhook", "manual", "reconcile")
RETRYABLE_BY_HAND = ("failed", "dead", "cancelled")



@dataclass
class Job:
    id: int
    kind: str
    key: str
    subject: str
    payload: dict
    state: str
    trigger: str
    attempts: int
    max_attempts: int
    next_attempt_at: float
    last_error: str | None
    result: dict | None
    progress: dict | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    priority: int = 1
    attempts_before: int = 0  # attempts made before a person's last retry, which gave a fresh budget

    def shown_state(self, now: float) -> str:
        return "scheduled" if self.state == "queued" and self.next_attempt_at > now else self.state

    @property
    def attempt(self) -> int:
        """The current (or last) attempt, counted from the last retry by hand."""
        return self.attempts - self.attempts_before

    @property
    def attempt_budget(self) -> int:
        return self.max_attempts - self.attempts_before

    @classmethod
    def from_row(cls, row: Any) -> "Job":
        data = dict(row)
        for name in ("payload", "result", "progress"):
            data[name] = json.loads(data[name]) if data[name] else ({} if name == "payload" else None)
        return cls(**data)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_seconds: float = 2.0
    max_seconds: float = 600.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random = random.Random()) -> float:
        """Exponential backoff with jitter; a server's Retry-After is honoured up to `max_seconds` (a header asking
        for a day must not park a job for a day)."""
        backoff = min(self.max_seconds, self.base_seconds * 2 ** max(0, attempt - 1))
        jittered = backoff * rng.uniform(0.5, 1.0)
        return min(self.max_seconds, max(jittered, retry_after or 0.0))


class Scrubber:
    """Removes secret values from any text the store keeps (errors, results), whatever produced the text."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        self.secrets = sorted({s for s in (secrets or []) if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str | None) -> str | None:
        if text is None:
            return None
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


class JobStore(DeliveryLog):
    """The queue. Deliveries (what each webhook delivery was answered, and the jobs it asked for) are stored in the
    same transactions as their jobs, so `DeliveryLog` (deliveries.py) is a part of it."""

    def __init__(self, db: Database, policy: RetryPolicy | None = None, scrub: Scrubber | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.db, self.policy, self.scrub, self.clock = db, policy or RetryPolicy(), scrub or Scrubber(), clock
        self.wakeup = threading.Condition()
        self.listeners: list[Callable[[Job], None]] = []
        self.on_wake: list[Callable[[], None]] = []  # workers elsewhere (the job process) to tell a job is due

    # ---- writing ----
    def enqueue(self, kind: str, key: str, payload: dict, *, trigger: str = "webhook", subject: str = "",
                delay: float = 0.0, priority: int = 1) -> tuple[Job, bool]:
        """Returns (job, created). An existing key returns the existing job untouched. Among due jobs a lower
        `priority` runs first (e.g. committing what is buffered goes before mapping more)."""
        if trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}, got {trigger!r}")
        with self.db.tx() as conn:
            job, created = self._insert(conn, kind, key, payload, trigger, subject, delay, priority)
        self._announce([(job, created)])
        return job, created

    def enqueue_once(self, kind: str, subject: str, payload: dict, *, trigger: str, delay: float = 0.0,
                     priority: int = 1, states: tuple[str, ...] = ("queued",), advance: bool = False,
                     exclude: int | None = None) -> tuple[Job, bool]:
        """At most one job of `kind` for `subject` in `states`: returns that one (made due within `delay` when
        `advance`), else a new one. For work that is the same whoever asks (a repo's flush, its back-fill), where an
        idempotency key would return a finished job forever. `exclude` is the asking job itself."""
        if trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}, got {trigger!r}")
        marks = ",".join("?" * len(states))
        with self.db.tx() as conn:
            row = conn.execute(f"SELECT * FROM jobs WHERE kind = ? AND subject = ? AND state IN ({marks}) AND id != ?"
                               " ORDER BY next_attempt_at, id LIMIT 1", (kind, subject, *states, exclude or 0)).fetchone()
            if row is not None:
                due = self.clock() + delay
                if advance and row["state"] == "queued" and row["next_attempt_at"] > due:
                    conn.execute("UPDATE jobs SET next_attempt_at = ?, updated_at = ? WHERE id = ?",
                                 (due, self.clock(), row["id"]))
                    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone()
                return Job.from_row(row), False
            key = f"{kind}:{subject}:{self.clock():.6f}:{secrets.token_hex(4)}"
            job, created = self._insert(conn, kind, key, payload, trigger, subject, delay, priority)
        self._announce([(job, created)])
        return job, created

    def _insert(self, conn: Any, kind: str, key: str, payload: dict, trigger: str, subject: str,
                delay: float = 0.0, priority: int = 1) -> tuple[Job, bool]:
        now = self.clock()
        cur = conn.execute(
            "INSERT INTO jobs (kind, key, subject, payload, state, trigger, priority, max_attempts, next_attempt_at,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
            (kind, key, subject, json.dumps(payload), trigger, priority, self.policy.max_attempts, now + delay, now,
             now))
        row = conn.execute("SELECT * FROM jobs WHERE key = ?", (key,)).fetchone()
        return Job.from_row(row), cur.rowcount == 1

    def _announce(self, results: list[tuple[Job, bool]]) -> None:
        created = [job for job, new in results if new]
        for job in created:
            self._transition(job, "queued")
        if created:
            self.wake()

    def claim(self) -> Job | None:
        now = self.clock()
        with self.db.tx() as conn:
            row = conn.execute("SELECT id FROM jobs WHERE state = 'queued' AND next_attempt_at <= ?"
                               " ORDER BY priority, next_attempt_at, id LIMIT 1", (now,)).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?, updated_at = ?,"
                         " progress = NULL WHERE id = ?", (now, now, row["id"]))
            job = Job.from_row(conn.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone())
            conn.execute("INSERT OR REPLACE INTO attempts (job_id, attempt, started_at) VALUES (?, ?, ?)",
                         (job.id, job.attempts, now))
        self._transition(job, "running")
        return job

    def succeed(self, job: Job, result: dict | None) -> Job:
        return self._finish(job, "succeeded", None, result, next_at=None)

    def fail(self, job: Job, error: BaseException, result: dict | None = None) -> Job:
        """Records a failed attempt: transient errors are retried until the attempts run out (then `dead`)."""
        message = str(error) or type(error).__name__
        if isinstance(error, UpstreamError) and error.transient:
            if job.attempts >= job.max_attempts:
                return self._finish(job, "dead", message, result, next_at=None)
            delay = self.policy.delay(job.attempts, error.retry_after)
            return self._finish(job, "queued", message, result, next_at=self.clock() + delay)
        if not isinstance(error, BridgeError):
            message = f"internal error: {type(error).__name__}: {message}"
        return self._finish(job, "failed", message, result, next_at=None)

    def _finish(self, job: Job, state: str, error: str | None, result: dict | None, next_at: float | None) -> Job:
        now = self.clock()
        error, result_text = self.scrub(error), self.scrub(json.dumps(result)) if result is not None else None
        with self.db.tx() as conn:
            conn.execute(
                "UPDATE jobs SET state = ?, last_error = ?, result = COALESCE(?, result), updated_at = ?,"
                " finished_at = ?, next_attempt_at = COALESCE(?, next_attempt_at) WHERE id = ? AND state = 'running'",
                (state, error, result_text, now, None if state == "queued" else now, next_at, job.id))
            conn.execute("UPDATE attempts SET finished_at = ?, outcome = ?, error = ? WHERE job_id = ? AND attempt = ?",
                         (now, "retry" if state == "queued" else state, error, job.id, job.attempts))
        finished = self.get(job.id)
        self._transition(finished, state, duration=now - (job.started_at or now))
        if state == "queued":
            self.wake()
        return finished

    def set_progress(self, job_id: int, done: int, total: int, unit: str = "items") -> None:
        with self.db.tx() as conn:
            conn.execute("UPDATE jobs SET progress = ?, updated_at = ? WHERE id = ?",
                         (json.dumps({"done": done, "total": total, "unit": unit}), self.clock(), job_id))

    def retry(self, job_id: int) -> Job:
        """A person asks for another go: the job gets a fresh budget of attempts."""
        return self._requeue(job_id, RETRYABLE_BY_HAND, "retry")

    def cancel(self, job_id: int) -> Job:
        now = self.clock()
        with self.db.tx() as conn:
            job = self._get(conn, job_id)
            if job.state != "queued":
                raise ValueError(f"job {job_id} is {job.state}; only a queued job can be cancelled")
            conn.execute("UPDATE jobs SET state = 'cancelled', updated_at = ?, finished_at = ? WHERE id = ?",
                         (now, now, job_id))
        job = self.get(job_id)
        self._transition(job, "cancelled")
        return job

    def _requeue(self, job_id: int, allowed: tuple[str, ...], why: str) -> Job:
        now = self.clock()
        with self.db.tx() as conn:
            job = self._get(conn, job_id)
            if job.state not in allowed:
                raise ValueError(f"job {job_id} is {job.state}; only {', '.join(allowed)} jobs can be retried")
            conn.execute("UPDATE jobs SET state = 'queued', next_attempt_at = ?, attempts_before = attempts,"
                         " max_attempts = attempts + ?, updated_at = ?, finished_at = NULL WHERE id = ?",
                         (now, self.policy.max_attempts, now, job_id))
        job = self.get(job_id)
        self._transition(job, "queued", note=why)
        self.wake()
        return job

    def recover(self) -> list[int]:
        """At start: jobs a dead process left `running` go back to the queue (or `dead` when out of attempts)."""
        now = self.clock()
        with self.db.tx() as conn:
            rows = conn.execute("SELECT * FROM jobs WHERE state = 'running'").fetchall()
            for row in rows:
                state = "dead" if row["attempts"] >= row["max_attempts"] else "queued"
                error = f"the process stopped during attempt {row['attempts']}"
                conn.execute("UPDATE jobs SET state = ?, last_error = ?, next_attempt_at = ?, updated_at = ? "
                             "WHERE id = ?", (state, error, now, now, row["id"]))
                conn.execute("UPDATE attempts SET finished_at = ?, outcome = 'crashed', error = ? "
                             "WHERE job_id = ? AND attempt = ?", (now, error, row["id"], row["attempts"]))
        for row in rows:
            job = self.get(row["id"])
            self._transition(job, job.state, note="recovered")
        return [row["id"] for row in rows]

    # ---- retention ----
    def prune(self, keep_seconds: float, failed_keep_seconds: float) -> dict[str, int]:
        """Drops what a bridge running for months no longer needs: finished jobs older than `keep_seconds` (failed
        and dead ones after `failed_keep_seconds`, so a person can still look and retry), their attempts and
        cursors, deliveries (and their bodies) none of whose jobs is waiting, running or kept as failed, and old
        own-commit marks (the echo of a commit arrives within seconds)."""
        now = self.clock()
        cut, failed_cut = now - keep_seconds, now - failed_keep_seconds
        with self.db.tx() as conn:
            ids = [r[0] for r in conn.execute(
                "SELECT id FROM jobs WHERE (state IN ('succeeded', 'cancelled') AND finished_at < ?) OR "
                "(state IN ('failed', 'dead') AND finished_at < ?)", (cut, failed_cut))]
            for part in range(0, len(ids), 500):
                chunk = ids[part:part + 500]
                marks = ",".join("?" * len(chunk))
                for table, column in (("attempts", "job_id"), ("backfill_cursors", "job_id"), ("jobs", "id")):
                    conn.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", chunk)
            pruned = {"jobs": len(ids), **self._prune_deliveries(conn, cut)}
        return pruned

    # ---- reading ----
    def get(self, job_id: int) -> Job:
        with self.db.read() as conn:
            return self._get(conn, job_id)

    @staticmethod
    def _get(conn: Any, job_id: int) -> Job:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(f"no job with id {job_id}")
        return Job.from_row(row)

    def find(self, key: str) -> Job | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE key = ?", (key,)).fetchone()
        return Job.from_row(row) if row else None

    def _where(self, state: str | None, kind: str | None, trigger: str | None) -> tuple[str, list]:
        clauses, params = [], []
        for column, value in (("state", state), ("kind", kind), ("trigger", trigger)):
            if value:
                clauses.append(f"{column} = ?")
                params.append("queued" if value == "scheduled" else value)
        if state in ("queued", "scheduled"):  # queued: due now; scheduled: queued for later
            clauses.append("next_attempt_at > ?" if state == "scheduled" else "next_attempt_at <= ?")
            params.append(self.clock())
        return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params

    def list(self, *, state: str | None = None, kind: str | None = None, trigger: str | None = None,
             limit: int = 200, offset: int = 0) -> list[Job]:
        """Newest first; `offset` skips that many (the Jobs page shows 50 a page)."""
        where, params = self._where(state, kind, trigger)
        with self.db.read() as conn:
            rows = conn.execute(f"SELECT * FROM jobs {where} ORDER BY id DESC LIMIT ? OFFSET ?",
                                (*params, limit, max(0, offset))).fetchall()
        return [Job.from_row(r) for r in rows]

    def count(self, *, state: str | None = None, kind: str | None = None, trigger: str | None = None) -> int:
        where, params = self._where(state, kind, trigger)
        with self.db.read() as conn:
            return conn.execute(f"SELECT COUNT(*) FROM jobs {where}", params).fetchone()[0]

    def attempts(self, job_id: int) -> list[dict]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM attempts WHERE job_id = ? ORDER BY attempt", (job_id,)).fetchall()
        return [dict(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Jobs per shown state: `queued` are due now, `scheduled` are queued for later."""
        with self.db.read() as conn:
            rows = conn.execute("SELECT CASE WHEN state = 'queued' AND next_attempt_at > ? THEN 'scheduled' "
                                "ELSE state END AS shown, COUNT(*) AS n FROM jobs GROUP BY shown",
                                (self.clock(),)).fetchall()
        return {state: 0 for state in SHOWN_STATES} | {r["shown"]: r["n"] for r in rows}

    def next_due(self) -> float | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT MIN(next_attempt_at) AS t FROM jobs WHERE state = 'queued'").fetchone()
        return row["t"]

    # ---- notifications ----
    def wake(self) -> None:
        with self.wakeup:
            self.wakeup.notify_all()
        for hook in self.on_wake:
            hook()

    def _transition(self, job: Job, state: str, duration: float | None = None, note: str | None = None) -> None:
        fields = {"job_id": job.id, "kind": job.kind, "state": state, "attempt": job.attempts, "trigger": job.trigger}
        if duration is not None:
            fields["duration_s"] = round(duration, 3)
        if note:
            fields["note"] = note
        log.info("job %s", json.dumps(fields))
        for listener in self.listeners:
            try:
                listener(job)
            except Exception:  # an observer (metrics) must never break a state change that is already committed
                log.exception("job listener %r failed", listener)
