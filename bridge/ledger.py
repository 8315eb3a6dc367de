"""The export ledger: what is buffered for each dataset repo, what each repo already holds, recent rows.

Rows wait here (durably, in the state dir's SQLite) between the `export` job that maps them and the `flush` job
that commits them. Exactly once rests on three rules, each enforced inside one transaction:
- a run is buffered only if the repo does not already hold it (`exported`), and at most once (UNIQUE);
- a batch read for a commit never contains a run the repo already holds;
- a landed commit is recorded (its shards, the repo's new head, the runs now exported, the buffer emptied of them)
  all at once, so a crash leaves either nothing recorded (the next flush finds the shards in the repo, see
  `flows.exports.sync_repo`) or everything.
After a wiped state dir `exported` is rebuilt from the repo's own `runs` shards before anything is committed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import msgspec

_encoder = msgspec.json.Encoder(enc_hook=str)  # what JSON has no type for (UUIDs, Decimals) as text, like default=str


def iso_time(value: Any) -> str | None:
    """One text form for end times (from rows and from parquet), so MAX() in SQL orders them by time."""
    if value is None or value == "":
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat()


def encode_rows(per_preset: dict[str, list[dict]]) -> str:
    """One run's rows (preset -> rows) as the text `export_buffer.rows` holds: JSON, times as ISO strings with a zone
    (`run_row` makes every time UTC-aware), so `training.to_table` parses them column by column."""
    return _json_text(per_preset)


def _json_text(value: Any) -> str:
    """JSON text, by msgspec. A lone surrogate (half an emoji from a stream) has no UTF-8 form: such a value is
    written with JSON escapes by the json module instead."""
    try:
        return _encoder.encode(value).decode()
    except UnicodeEncodeError:
        return json.dumps(value, default=str)


def decode_rows(text: str) -> dict[str, list[dict]]:
    """The rows of one buffered run, preset -> rows: every reader of `export_buffer.rows` goes through here. Text
    written by older versions (`json.dumps`) reads the same; escapes msgspec does not take (a lone surrogate, NaN)
    fall back to the json module."""
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return json.loads(text)


@dataclass(frozen=True)
class RepoState:
    head: str | None  # the commit the ledger last saw on main: a different head means someone else committed
    presets: frozenset[str]  # presets that have at least one shard in the repo (the card lists exactly these)
    card: str | None


@dataclass(frozen=True)
class Batch:
    rows: list[Any]  # export_buffer rows, oldest first
    bytes: int
    full: bool  # cut by the row or byte cap: more may wait


def _chunks(items: list, size: int = 500) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Ledger:
    """The export tables: what is buffered, what is already in each repo."""

    def __init__(self, store: Any) -> None:
        self.store, self.db = store, store.db

    # ---- buffering (export jobs) ----
    def known(self, repo: str, run_ids: list[str]) -> set[str]:
        """Runs buffered for or already in `repo`: an export skips them before fetching anything."""
        found: set[str] = set()
        with self.db.read() as conn:
            for part in _chunks(run_ids):
                marks = ",".join("?" * len(part))
                rows = conn.execute(f"SELECT run_id FROM exported WHERE repo = ? AND run_id IN ({marks}) UNION "
                                    f"SELECT run_id FROM export_buffer WHERE repo = ? AND run_id IN ({marks})",
                                    (repo, *part, repo, *part)).fetchall()
                found.update(r["run_id"] for r in rows)
        return found

    def buffer(self, repo: str, rows: list[tuple[str, dict, str | None]], job_id: int) -> int:
        """Buffers the rows of runs the repo does not hold yet; returns how many were new. The check and the insert
        are one statement in one transaction: a flush that commits a run meanwhile cannot be overtaken."""
        now = self.store.clock()
        encoded = [(rid, encode_rows(r), iso_time(end)) for rid, r, end in rows]
        with self.db.tx() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO export_buffer (repo, run_id, rows, end_time, job_id, created_at, bytes)"
                " SELECT ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS"
                " (SELECT 1 FROM exported WHERE repo = ? AND run_id = ?)",
                [(repo, rid, text, end, job_id, now, len(text), repo, rid) for rid, text, end in encoded])
            return conn.total_changes - before

    # ---- committing (flush jobs) ----
    def batch(self, repo: str, max_rows: int, max_bytes: int) -> Batch:
        """The oldest buffered rows, at most `max_rows` and `max_bytes` of row data (always at least one row), none
        of a run the repo already holds."""
        rows, size, full = [], 0, False
        with self.db.read() as conn:
            cursor = conn.execute(
                "SELECT b.* FROM export_buffer b WHERE b.repo = ? AND NOT EXISTS"
                " (SELECT 1 FROM exported e WHERE e.repo = b.repo AND e.run_id = b.run_id) ORDER BY b.id LIMIT ?",
                (repo, max_rows))
            for row in cursor:
                if rows and size + row["bytes"] > max_bytes:
                    full = True
                    break
                rows.append(row)
                size += row["bytes"]
        return Batch(rows, size, full or len(rows) >= max_rows)

    def pending(self, repo: str) -> int:
        with self.db.read() as conn:
            return conn.execute("SELECT COUNT(*) FROM export_buffer WHERE repo = ?", (repo,)).fetchone()[0]

    def total_pending(self) -> int:
        """Rows buffered for every repo, waiting for a flush."""
        with self.db.read() as conn:
            return conn.execute("SELECT COUNT(*) FROM export_buffer").fetchone()[0]

    def repos_with_buffer(self) -> list[str]:
        with self.db.read() as conn:
            return [r["repo"] for r in conn.execute("SELECT DISTINCT repo FROM export_buffer").fetchall()]

    def repo_state(self, repo: str) -> RepoState:
        with self.db.read() as conn:
            row = conn.execute("SELECT head, presets, card FROM export_repos WHERE repo = ?", (repo,)).fetchone()
        if row is None:
            return RepoState(None, frozenset(), None)
        return RepoState(row["head"], frozenset(json.loads(row["presets"])), row["card"])

    def unknown_shards(self, repo: str, paths: list[str]) -> list[str]:
        """The shard paths the ledger has not read yet."""
        known: set[str] = set()
        with self.db.read() as conn:
            for part in _chunks(paths):
                marks = ",".join("?" * len(part))
                known.update(r["path"] for r in conn.execute(
                    f"SELECT path FROM repo_shards WHERE repo = ? AND path IN ({marks})", (repo, *part)))
        return [p for p in paths if p not in known]

    def learn_shard(self, repo: str, path: str, entries: list[tuple[str, str | None]]) -> None:
        """A `runs` shard found in the repo (after a wipe, a lost commit answer, or another writer): its runs are
        exported and leave the buffer, in the same transaction that remembers the shard as read."""
        with self.db.tx() as conn:
            self._mark_exported(conn, repo, entries)
            conn.execute("INSERT OR IGNORE INTO repo_shards (repo, path) VALUES (?, ?)", (repo, path))

    def set_head(self, repo: str, head: str | None, presets: set[str]) -> None:
        """The head the ledger has caught up with, and the presets found in the repo at that head."""
        with self.db.tx() as conn:
            self._upsert_repo(conn, repo, head, presets, None)

    def record_commit(self, repo: str, head: str, shard_paths: list[str], presets: set[str], card: str,
                      rows: list[Any]) -> None:
        """Everything a landed commit changes, in one transaction (see the module docstring)."""
        now = self.store.clock()
        with self.db.tx() as conn:
            conn.executemany("INSERT OR IGNORE INTO repo_shards (repo, path) VALUES (?, ?)",
                             [(repo, p) for p in shard_paths])
            self._upsert_repo(conn, repo, head, presets, card)
            self._mark_exported(conn, repo, [(r["run_id"], r["end_time"]) for r in rows])
            self._remember_recent(conn, repo, rows, now)

    @staticmethod
    def _upsert_repo(conn: Any, repo: str, head: str | None, presets: set[str], card: str | None) -> None:
        old = conn.execute("SELECT presets, card FROM export_repos WHERE repo = ?", (repo,)).fetchone()
        known = set(json.loads(old["presets"])) if old else set()
        conn.execute("INSERT INTO export_repos (repo, head, presets, card) VALUES (?, ?, ?, ?) ON CONFLICT (repo) DO "
                     "UPDATE SET head = excluded.head, presets = excluded.presets, card = excluded.card",
                     (repo, head, json.dumps(sorted(known | presets)), card if card is not None else
                      (old["card"] if old else None)))

    @staticmethod
    def _mark_exported(conn: Any, repo: str, entries: list[tuple[str, str | None]]) -> None:
        conn.executemany("INSERT OR IGNORE INTO exported (repo, run_id, end_time) VALUES (?, ?, ?)",
                         [(repo, rid, iso_time(end)) for rid, end in entries])
        conn.executemany("DELETE FROM export_buffer WHERE repo = ? AND run_id = ?", [(repo, rid) for rid, _ in entries])

    # ---- the Review page ----
    def remember_recent(self, repo: str, rows: list[Any]) -> None:
        with self.db.tx() as conn:
            self._remember_recent(conn, repo, rows, self.store.clock())

    @staticmethod
    def _remember_recent(conn: Any, repo: str, rows: list[Any], now: float, keep: int = 500) -> None:
        """Keeps the `runs` row of recently committed runs for the Review page (inputs, outputs, feedback links)."""
        conn.executemany("INSERT OR REPLACE INTO recent_runs (repo, run_id, committed_at, row) VALUES (?, ?, ?, ?)",
                         [(repo, r["run_id"], now, _json_text(decode_rows(r["rows"])["runs"][0]))
                          for r in rows])
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

    # ---- presigned feedback links: one per run and key, reused until it expires ----
    def feedback_links(self, run_ids: list[str], keys: list[str], valid_until: str) -> dict[tuple[str, str], dict]:
        """Stored links of `run_ids` × `keys` still valid at `valid_until` (an ISO time)."""
        found: dict[tuple[str, str], dict] = {}
        with self.db.read() as conn:
            for part in _chunks(run_ids):
                marks = ",".join("?" * len(part))
                for r in conn.execute(f"SELECT * FROM feedback_links WHERE run_id IN ({marks}) AND expires_at > ?",
                                      (*part, valid_until)):
                    if r["feedback_key"] in keys:
                        found[(r["run_id"], r["feedback_key"])] = {"run_id": r["run_id"], "feedback_key":
                                                                   r["feedback_key"], "url": r["url"],
                                                                   "expires_at": r["expires_at"],
                                                                   "id": r["token_id"]}
        return found

    def save_feedback_links(self, tokens: list[dict]) -> None:
        """`tokens` as LangSmith answered them (`id`, `url`, `expires_at`) with their run, key and `preview` (the
        JSON text the bridge's feedback page shows)."""
        with self.db.tx() as conn:
            conn.executemany("INSERT OR REPLACE INTO feedback_links (run_id, feedback_key, url, expires_at, token_id, "
                             "preview) VALUES (?, ?, ?, ?, ?, ?)",
                             [(t["run_id"], t["feedback_key"], t["url"], iso_time(t["expires_at"]), str(t["id"]),
                               t.get("preview")) for t in tokens])

    def feedback_token(self, token_id: str) -> dict | None:
        """The stored link behind the bridge's page /feedback/<token_id> (None once unknown or pruned)."""
        with self.db.read() as conn:
            row = conn.execute("SELECT run_id, feedback_key, url, expires_at, token_id, preview FROM feedback_links "
                               "WHERE token_id = ?", (token_id,)).fetchone()
        return dict(row) if row else None

    # ---- retention ----
    def prune(self) -> dict[str, int]:
        """Drops links that expired. `exported` and `repo_shards` are kept: exactly once needs them."""
        now = datetime.fromtimestamp(self.store.clock(), timezone.utc).isoformat()
        with self.db.tx() as conn:
            links = conn.execute("DELETE FROM feedback_links WHERE expires_at <= ?", (now,)).rowcount
        return {"feedback_links": links}
