"""The export ledger: what is buffered for each dataset repo, what each repo already holds, recent rows.

Rows wait here (durably, in the state dir's SQLite) between the `export` job that maps them and the `flush` job
that commits them. A run id is buffered at most once per repo (UNIQUE) and skipped once exported; after a wiped
state dir, `exported` is rebuilt from the repo's own shards before anything is committed.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS export_buffer (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo TEXT NOT NULL,
    run_id TEXT NOT NULL,
    rows TEXT NOT NULL,
    end_time TEXT,
    job_id INTEGER,
    created_at REAL NOT NULL,
    UNIQUE (repo, run_id)
);
CREATE TABLE IF NOT EXISTS exported (
    repo TEXT NOT NULL,
    run_id TEXT NOT NULL,
    end_time TEXT,
    PRIMARY KEY (repo, run_id)
);
CREATE TABLE IF NOT EXISTS recent_runs (
    repo TEXT NOT NULL,
    run_id TEXT NOT NULL,
    committed_at REAL NOT NULL,
    row TEXT NOT NULL,
    PRIMARY KEY (repo, run_id)
);
CREATE TABLE IF NOT EXISTS export_repos (
    repo TEXT PRIMARY KEY,
    synced_shards TEXT NOT NULL DEFAULT '[]',
    card TEXT
);
"""


def iso_time(value: Any) -> str | None:
    """One text form for end times (from rows and from parquet), so MAX() in SQL orders them by time."""
    if value is None or value == "":
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat()


class Ledger:
    """The export tables: what is buffered, what is already in each repo."""

    def __init__(self, store: Any) -> None:
        self.store, self.db = store, store.db
        self.db.migrate(SCHEMA)

    def known(self, repo: str, run_ids: list[str]) -> set[str]:
        marks = ",".join("?" * len(run_ids))
        with self.db.read() as conn:
            rows = conn.execute(f"SELECT run_id FROM exported WHERE repo = ? AND run_id IN ({marks}) UNION "
                                f"SELECT run_id FROM export_buffer WHERE repo = ? AND run_id IN ({marks})",
                                (repo, *run_ids, repo, *run_ids)).fetchall()
        return {r["run_id"] for r in rows}

    def buffer(self, repo: str, rows: list[tuple[str, dict, str | None]], job_id: int) -> int:
        now = self.store.clock()
        with self.db.tx() as conn:
            before = conn.total_changes
            conn.executemany("INSERT OR IGNORE INTO export_buffer (repo, run_id, rows, end_time, job_id, created_at)"
                             " VALUES (?, ?, ?, ?, ?, ?)",
                             [(repo, rid, json.dumps(r, default=str), iso_time(end), job_id, now)
                              for rid, r, end in rows])
            return conn.total_changes - before

    def buffered(self, repo: str, limit: int) -> list[Any]:
        with self.db.read() as conn:
            return conn.execute("SELECT * FROM export_buffer WHERE repo = ? ORDER BY id LIMIT ?",
                                (repo, limit)).fetchall()

    def pending(self, repo: str) -> int:
        with self.db.read() as conn:
            return conn.execute("SELECT COUNT(*) FROM export_buffer WHERE repo = ?", (repo,)).fetchone()[0]

    def repos_with_buffer(self) -> list[str]:
        with self.db.read() as conn:
            return [r["repo"] for r in conn.execute("SELECT DISTINCT repo FROM export_buffer").fetchall()]

    def mark_exported(self, repo: str, entries: list[tuple[str, str | None]]) -> None:
        with self.db.tx() as conn:
            conn.executemany("INSERT OR IGNORE INTO exported (repo, run_id, end_time) VALUES (?, ?, ?)",
                             [(repo, rid, end) for rid, end in entries])
            conn.executemany("DELETE FROM export_buffer WHERE repo = ? AND run_id = ?",
                             [(repo, rid) for rid, _ in entries])

    def repo_state(self, repo: str) -> tuple[set[str], str | None]:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM export_repos WHERE repo = ?", (repo,)).fetchone()
        return (set(json.loads(row["synced_shards"])), row["card"]) if row else (set(), None)

    def save_repo_state(self, repo: str, shards: set[str], card: str | None) -> None:
        with self.db.tx() as conn:
            conn.execute("INSERT INTO export_repos (repo, synced_shards, card) VALUES (?, ?, ?) ON CONFLICT (repo) "
                         "DO UPDATE SET synced_shards = excluded.synced_shards, card = excluded.card",
                         (repo, json.dumps(sorted(shards)), card))

    def remember_recent(self, repo: str, rows: list[Any], keep: int = 500) -> None:
        """Keeps the `runs` row of recently committed runs for the Review page (inputs, outputs, feedback links)."""
        now = self.store.clock()
        with self.db.tx() as conn:
            conn.executemany("INSERT OR REPLACE INTO recent_runs (repo, run_id, committed_at, row) VALUES (?, ?, ?, ?)",
                             [(repo, r["run_id"], now, json.dumps(json.loads(r["rows"])["runs"][0])) for r in rows])
            conn.execute("DELETE FROM recent_runs WHERE repo = ? AND run_id NOT IN (SELECT run_id FROM recent_runs "
                         "WHERE repo = ? ORDER BY committed_at DESC, rowid DESC LIMIT ?)", (repo, repo, keep))

    def recent(self, limit: int = 50) -> list[dict]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT repo, run_id, committed_at, row FROM recent_runs "
                                "ORDER BY committed_at DESC, rowid DESC LIMIT ?", (limit,)).fetchall()
        return [{"repo": r["repo"], "committed_at": r["committed_at"], **json.loads(r["row"])} for r in rows]

    def newest_end_time(self, repo: str) -> str | None:
        with self.db.read() as conn:
            return conn.execute("SELECT MAX(end_time) FROM exported WHERE repo = ?", (repo,)).fetchone()[0]
