"""The delivery log: every webhook delivery with how it was answered, the jobs it asked for, and (while its jobs may
need it) its body; and the commits the bridge made, so their webhook echoes are recognised.

A part of the job store (`JobStore` is a `DeliveryLog`): a delivery and its jobs are stored in one transaction, so
what is answered 2xx is never lost. Ignored deliveries and re-deliveries keep no body.
"""

from __future__ import annotations

import json
from typing import Any


class DeliveryLog:
    """Mixin of `JobStore`: uses its `db`, `clock`, `_insert`, `_announce`, `_transition` and `get`."""

    def record_delivery(self, source: str, body: str | None, specs: list | None, reason: str | None = None,
                        trigger: str = "webhook", wait: bool = True) -> tuple[str, list[int]]:
        """Stores a delivery and the jobs it asks for in one transaction: what we answer 2xx is never lost.

        Returns (outcome, job ids): outcome is `queued` when any job is new, `duplicate` when every job existed,
        `ignored` when no job was asked for. Job payloads may refer to the stored body by `delivery_id`.
        With `wait=False`, raises `db.WriteBusy` (nothing stored) when another thread is writing.
        """
        with self.db.tx(wait) as conn:
            if not specs or self._all_known(conn, [s.key for s in specs]):
                body = None  # ignored (nothing will read it), or a re-delivery stored with the first one
            cur = conn.execute("INSERT INTO deliveries (source, received_at, status_code, outcome, reason, body)"
                               " VALUES (?, ?, 0, 'pending', ?, ?)", (source, self.clock(), reason, body))
            delivery_id = cur.lastrowid
            results = [self._insert(conn, s.kind, s.key, {**s.payload, "delivery_id": delivery_id}, trigger,
                                    s.subject) for s in specs or []]
            outcome = "ignored" if not results else "queued" if any(new for _, new in results) else "duplicate"
            job_ids = [job.id for job, _ in results]
            conn.execute("UPDATE deliveries SET outcome = ?, status_code = ?, job_ids = ? WHERE id = ?",
                         (outcome, 202 if outcome == "queued" else 200, json.dumps(job_ids), delivery_id))
        self._announce(results)
        return outcome, job_ids

    def record_cancelling_delivery(self, source: str, body: str, key_prefix: str, reason: str,
                                   wait: bool = True) -> list[int]:
        """Stores a delivery that withdraws work (a closed pull request) and cancels, in the same transaction, every
        queued job whose key starts with `key_prefix`; each keeps `reason` as its error. Returns their ids."""
        now = self.clock()
        with self.db.tx(wait) as conn:
            rows = conn.execute("SELECT * FROM jobs WHERE state = 'queued' AND substr(key, 1, ?) = ?",
                                (len(key_prefix), key_prefix)).fetchall()
            ids = [row["id"] for row in rows]
            for job_id in ids:
                conn.execute("UPDATE jobs SET state = 'cancelled', last_error = ?, updated_at = ?, finished_at = ?"
                             " WHERE id = ?", (f"cancelled: {reason}", now, now, job_id))
            conn.execute("INSERT INTO deliveries (source, received_at, status_code, outcome, reason, job_ids, body)"
                         " VALUES (?, ?, 200, 'cancelled', ?, ?, ?)", (source, now, reason, json.dumps(ids), body))
        for job_id in ids:
            self._transition(self.get(job_id), "cancelled", note=reason)
        return ids

    @staticmethod
    def _all_known(conn: Any, keys: list[str]) -> bool:
        marks = ",".join("?" * len(keys))
        found = conn.execute(f"SELECT COUNT(*) FROM jobs WHERE key IN ({marks})", keys).fetchone()[0]
        return found == len(set(keys))

    def delivery(self, delivery_id: int) -> dict:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
        if row is None:
            raise KeyError(f"no delivery with id {delivery_id}")
        return dict(row)

    def deliveries(self, limit: int = 50, source: str | None = None) -> list[dict]:
        where, params = ("WHERE source = ?", (source,)) if source else ("", ())
        with self.db.read() as conn:
            rows = conn.execute("SELECT id, source, received_at, status_code, outcome, reason, job_ids,"
                                f" body IS NOT NULL AS has_body FROM deliveries {where} ORDER BY id DESC LIMIT ?",
                                (*params, limit)).fetchall()
        return [dict(r) for r in rows]

    def remember_commit(self, oid: str, repo: str) -> None:
        with self.db.tx() as conn:
            conn.execute("INSERT OR IGNORE INTO own_commits (oid, repo, created_at) VALUES (?, ?, ?)",
                         (oid, repo, self.clock()))

    def is_own_commit(self, oid: str) -> bool:
        with self.db.read() as conn:
            return conn.execute("SELECT 1 FROM own_commits WHERE oid = ?", (oid,)).fetchone() is not None

    @staticmethod
    def _prune_deliveries(conn: Any, cut: float) -> dict[str, int]:
        """Deliveries received before `cut` none of whose jobs is waiting, running or kept as failed (their bodies go
        with them), and own-commit marks older than `cut` (the echo of a commit arrives within seconds)."""
        deliveries = conn.execute(
            "DELETE FROM deliveries WHERE received_at < ? AND NOT EXISTS (SELECT 1 FROM json_each("
            "deliveries.job_ids) AS je JOIN jobs ON jobs.id = je.value WHERE jobs.state IN "
            "('queued', 'running', 'failed', 'dead'))", (cut,)).rowcount
        commits = conn.execute("DELETE FROM own_commits WHERE created_at < ?", (cut,)).rowcount
        return {"deliveries": deliveries, "own_commits": commits}
