"""What the bridge knows about each LangSmith automation rule it takes deliveries from (table `langsmith_rules`).

One row per rule: a managed one (`rule:` in an exports entry, keyed `managed:<repo>`) or one a person named
(`rule_id:`, keyed `rule:<id>`). The rules flow (flows/rules.py) writes it; the Overview's Wiring panel reads it.
For managed rules it also keeps the rule id (so deliveries are routed after a restart before LangSmith is asked
again) and a fingerprint of the webhook secret last set on the rule (LangSmith may not show header values back).
The rule log is read from `log_since` on (the newest application time already read).
"""

from __future__ import annotations

import hashlib
from typing import Any

FIELDS = ("managed", "repos", "rule_id", "name", "project", "enabled", "problem", "secret_fingerprint", "checked_at",
          "log_since", "log_status", "last_applied")


def fingerprint(secret: str) -> str:
    """Tells whether the secret changed without keeping it (the secret is long and random, so no salt is needed)."""
    return hashlib.sha256(f"hub-langsmith-bridge webhook secret\n{secret}".encode()).hexdigest()[:32]


def managed_key(repo: str) -> str:
    return f"managed:{repo}"


def named_key(rule_id: str) -> str:
    return f"rule:{rule_id}"


class RuleStates:
    def __init__(self, db: Any, clock: Any) -> None:
        self.db, self.clock = db, clock

    def get(self, key: str) -> dict | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM langsmith_rules WHERE key = ?", (key,)).fetchone()
        return dict(row) if row else None

    def all(self) -> list[dict]:
        with self.db.read() as conn:
            return [dict(r) for r in conn.execute("SELECT * FROM langsmith_rules ORDER BY managed DESC, key")]

    def save(self, key: str, **values: Any) -> None:
        """Creates or updates the row: only the fields given change (`checked_at` is always now)."""
        values = {k: v for k, v in values.items() if k in FIELDS}
        values["checked_at"] = self.clock()
        insert = {"managed": 0, "repos": "", **values}
        updates = ", ".join(f"{k} = excluded.{k}" for k in values)
        with self.db.tx() as conn:
            conn.execute(f"INSERT INTO langsmith_rules (key, {', '.join(insert)}) VALUES (?{', ?' * len(insert)}) "
                         f"ON CONFLICT (key) DO UPDATE SET {updates}", (key, *insert.values()))

    def last_deliveries(self, rule_ids: list[str]) -> dict[str, float]:
        """When the newest delivery of each rule arrived (its export job's creation), from the job queue."""
        if not rule_ids:
            return {}
        marks = ",".join("?" * len(rule_ids))
        with self.db.read() as conn:
            rows = conn.execute("SELECT json_extract(payload, '$.rule_id') AS rule_id, MAX(created_at) AS at "
                                f"FROM jobs WHERE kind = 'export' AND json_extract(payload, '$.rule_id') IN ({marks}) "
                                "GROUP BY 1", rule_ids).fetchall()
        return {r["rule_id"]: r["at"] for r in rows}

    def add_recovered(self, key: str, n: int) -> None:
        with self.db.tx() as conn:
            conn.execute("UPDATE langsmith_rules SET recovered = recovered + ? WHERE key = ?", (n, key))

    def forget_except(self, keys: set[str]) -> None:
        """Rows of rules no exports entry mentions any more."""
        with self.db.tx() as conn:
            for row in conn.execute("SELECT key FROM langsmith_rules").fetchall():
                if row["key"] not in keys:
                    conn.execute("DELETE FROM langsmith_rules WHERE key = ?", (row["key"],))
