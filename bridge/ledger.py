"""The export ledger: what is buffered for each dataset repo, what each repo already holds, recent rows.

Rows wait here (durably, in the state dir's SQLite) between the `export` job that maps them and the `flush` job
that commits them. Exactly once rests on three rules, each enforced inside one transaction:
- a run is buffered only if the repo does not already hold it (`exported`), and at most once (UNIQUE);
- a batch read for a commit never contains a run the repo already holds;
- a landed commit is recorded with the repo's new head last (the runs now exported and the buffer emptied of
  them first, a few hundred per transaction), so a crash before the head is recorded leaves a head the ledger does
  not know: the next flush reads the commit's shards from the repo (`flows.exports.sync_repo`), which records their
  runs as exported whatever part of them was recorded before.
After a wiped state dir `exported` is rebuilt from the repo's own `runs` shards before anything is committed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import msgspec
import zstandard

from .formats.runs import feedback_fingerprint

ZSTD_FRAME = b"\x28\xb5\x2f\xfd"  # how every zstd frame starts (JSON never does)
RECORD_CHUNK = 500  # runs recorded per transaction when a commit lands (`record_commit`)
RECENT_KEPT = 500  # recently committed runs kept per repo for the Review page
_encoder = msgspec.json.Encoder(enc_hook=str)  # what JSON has no type for (UUIDs, Decimals) as text, like default=str


def iso_time(value: Any) -> str | None:
    """One text form for end times (from rows and from parquet), so MAX() in SQL orders them by time."""
    if value is None or value == "":
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat()


def encode_rows(per_preset: dict[str, list[dict]]) -> tuple[bytes, int]:
    """One run's rows (preset -> rows) as `export_buffer.rows` holds them, and the size of their JSON: a zstd frame
    of JSON, times as ISO strings with a zone (`run_row` makes every time UTC-aware), so `training.to_table` parses
    them column by column. Compressed, a run's rows are about a fifth of their JSON (four presets repeat its
    messages): a flush deleting 5,000 of them held the write lock, which deliveries wait for, for 200 ms
    uncompressed. The size counts toward a commit's `max_bytes_per_commit`."""
    data = _json_bytes(per_preset)
    return _zstd.compressor.compress(data), len(data)


def _json_bytes(value: Any) -> bytes:
    """JSON, by msgspec. A lone surrogate (half an emoji from a stream) has no UTF-8 form: such a value is written
    with JSON escapes by the json module instead."""
    try:
        return _encoder.encode(value)
    except UnicodeEncodeError:
        return json.dumps(value, default=str).encode()


def _json_text(value: Any) -> str:
    return _json_bytes(value).decode()


def decode_rows(data: str | bytes) -> dict[str, list[dict]]:
    """The rows of one buffered run, preset -> rows: every reader of `export_buffer.rows` goes through here. What
    older versions wrote reads the same: uncompressed msgspec JSON, and text from `json.dumps`; escapes msgspec does
    not take (a lone surrogate, NaN) fall back to the json module."""
    if isinstance(data, bytes) and data.startswith(ZSTD_FRAME):
        data = _zstd.decompressor.decompress(data)
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return json.loads(data)


class _Zstd(threading.local):
    """zstd contexts are not safe to share between threads: one pair per thread, made on its first use."""

    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor(level=3)
        self.decompressor = zstandard.ZstdDecompressor()


_zstd = _Zstd()


def _same_or_newer(kept: tuple[str | None, float | None] | None, fingerprint: str, read_at: float) -> bool:
    """Whether a row already kept (fingerprint, read time) makes a row of `fingerprint` read at `read_at` useless:
    it holds the same feedback, or feedback read later."""
    return kept is not None and (kept[0] == fingerprint or (kept[1] or 0) >= read_at)


@dataclass(frozen=True)
class RepoState:
    head: str | None  # the commit the ledger last saw on main: a different head means someone else committed
    presets: frozenset[str]  # presets that have at least one shard in the repo (the card lists exactly these)
    card: str | None


@dataclass(frozen=True)
class Rewrites:
    groups: dict[str, list[Any]]  # `runs` shard path -> pending rewrites of its runs ([] for an old-format shard)
    orphans: list[Any]  # rewrites of runs no known shard holds
    full: bool  # more groups wait


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

    def buffer(self, repo: str, rows: list[tuple[str, dict, str | None]], job_id: int,
               read_at: float | None = None) -> int:
        """Buffers the rows of runs the repo does not hold yet; returns how many were new. `read_at`: when the
        feedback the rows were mapped from was listed.

        The check and the write are one transaction: a run a flush committed meanwhile is not buffered again (its
        row becomes a rewrite if its feedback differs). A run another export buffered meanwhile keeps the row
        mapped from the feedback read last."""
        return self._put(repo, rows, job_id, read_at)[0]

    def refresh(self, repo: str, rows: list[tuple[str, dict, str | None]], job_id: int,
                read_at: float | None = None) -> int:
        """Newer rows for runs the repo holds or has buffered (their feedback changed); returns how many were taken.
        A run still buffered gets its buffered row replaced; an exported one gets a pending rewrite that the next
        flush applies to the shard holding it. A row mapped from the same feedback, or from feedback read before the
        row already kept, changes nothing (an export that was slow must not bring older feedback back)."""
        return sum(self._put(repo, rows, job_id, read_at))

    def _put(self, repo: str, rows: list[tuple[str, dict, str | None]], job_id: int,
             read_at: float | None) -> tuple[int, int]:
        now = self.store.clock()
        at = now if read_at is None else read_at
        prints = {rid: feedback_fingerprint(per_preset["runs"][0]["feedback"]) for rid, per_preset, _ in rows}
        # Encoded before the write lock is taken (the web process's deliveries wait for it); a run found already
        # held wastes its encoding, which is rare.
        encoded = {rid: (*encode_rows(p), iso_time(end)) for rid, p, end in rows}
        with self.db.tx() as conn:
            exported, kept, recent = self._held(conn, repo, list(prints))
            fresh = [(rid, per_preset, end) for rid, per_preset, end in rows
                     if not _same_or_newer(kept.get(rid) or exported.get(rid), prints[rid], at)]
            # New row ids, so a flush that read the older rows meanwhile can tell (see `record_commit`).
            updates = [(repo, rid, encoded[rid][0], prints[rid], at, job_id, now, encoded[rid][1])
                       for rid, _, _ in fresh if rid in exported]
            buffered = [(repo, rid, encoded[rid][0], encoded[rid][2], prints[rid], at, job_id, now, encoded[rid][1])
                        for rid, _, _ in fresh if rid not in exported]
            for table, entries in (("export_updates", updates), ("export_buffer", buffered)):
                conn.executemany(f"DELETE FROM {table} WHERE repo = ? AND run_id = ?", [e[:2] for e in entries])
            conn.executemany("INSERT INTO export_updates (repo, run_id, rows, feedback_hash, feedback_at, job_id, "
                             "created_at, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", updates)
            conn.executemany("INSERT INTO export_buffer (repo, run_id, rows, end_time, feedback_hash, feedback_at, "
                             "job_id, created_at, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", buffered)
            for rid, per_preset, _ in fresh:  # the Review page shows the feedback the bridge knows, before the dataset
                if rid in recent:
                    self._update_recent(conn, repo, rid, dict(per_preset["runs"][0]), None)
        new = sum(1 for rid, _, _ in fresh if rid not in exported and rid not in kept)
        return new, len(fresh) - new

    @staticmethod
    def _held(conn: Any, repo: str, run_ids: list[str]) -> tuple[dict, dict, set]:
        """For `run_ids`: (exported ones, their buffered row or pending rewrite, those on the Review page), the first
        two as run id -> (fingerprint, read time)."""
        exported, kept, recent = {}, {}, set()
        for part in _chunks(run_ids):
            marks = ",".join("?" * len(part))
            where = f"repo = ? AND run_id IN ({marks})"
            exported.update((r[0], (r[1], r[2])) for r in conn.execute(
                f"SELECT run_id, feedback_hash, feedback_at FROM exported WHERE {where}", (repo, *part)))
            kept.update((r[0], (r[1], r[2])) for r in conn.execute(
                f"SELECT run_id, feedback_hash, feedback_at FROM export_buffer WHERE {where} UNION ALL "
                f"SELECT run_id, feedback_hash, feedback_at FROM export_updates WHERE {where}",
                (repo, *part, repo, *part)))
            recent.update(r[0] for r in conn.execute(f"SELECT run_id FROM recent_runs WHERE {where}", (repo, *part)))
        return exported, kept, recent

    def fingerprints(self, repo: str, run_ids: list[str]) -> dict[str, str | None]:
        """The runs of `run_ids` that `repo` holds or has buffered, with the fingerprint of the feedback their
        newest row was mapped from (None: unknown)."""
        with self.db.read() as conn:
            exported, kept, _ = self._held(conn, repo, run_ids)
        return {rid: fingerprint for rid, (fingerprint, _) in {**exported, **kept}.items()}

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
        """Rows waiting for a flush of `repo`: new runs buffered, and rewrites of exported runs."""
        with self.db.read() as conn:
            return conn.execute("SELECT (SELECT COUNT(*) FROM export_buffer WHERE repo = ?) + "
                                "(SELECT COUNT(*) FROM export_updates WHERE repo = ?)", (repo, repo)).fetchone()[0]

    def total_pending(self) -> int:
        """Rows waiting for a flush in every repo (new runs and rewrites)."""
        with self.db.read() as conn:
            return conn.execute("SELECT (SELECT COUNT(*) FROM export_buffer) + "
                                "(SELECT COUNT(*) FROM export_updates)").fetchone()[0]

    def repos_with_buffer(self) -> list[str]:
        """Repos with rows waiting for a flush, or shards in an older format waiting to be rewritten."""
        with self.db.read() as conn:
            return [r["repo"] for r in conn.execute(
                "SELECT repo FROM export_buffer UNION SELECT repo FROM export_updates "
                "UNION SELECT repo FROM repo_shards WHERE stale = 1").fetchall()]

    # ---- rewriting shards (flush jobs) ----
    def rewrites(self, repo: str, max_groups: int) -> Rewrites:
        """Shard groups to rewrite in the next commit (at most `max_groups`): the `runs` shard of each group with
        the pending rewrites of its runs, then groups written in an older format. Rewrites of runs no known shard
        holds (the shard was deleted by someone else) come back as `orphans`."""
        groups: dict[str, list[Any]] = {}
        orphans: list[Any] = []
        with self.db.read() as conn:
            for row in conn.execute("SELECT u.*, s.path FROM export_updates u LEFT JOIN run_shards s ON "
                                    "s.repo = u.repo AND s.run_id = u.run_id WHERE u.repo = ? ORDER BY u.id",
                                    (repo,)):
                if row["path"] is None:
                    orphans.append(row)
                elif row["path"] in groups or len(groups) < max_groups:
                    groups.setdefault(row["path"], []).append(row)
            full = len(groups) >= max_groups
            for row in conn.execute("SELECT path FROM repo_shards WHERE repo = ? AND stale = 1 AND path LIKE "
                                    "'runs/%' ORDER BY path LIMIT ?", (repo, max_groups + 1)):
                if len(groups) >= max_groups:
                    full = True
                    break
                groups.setdefault(row["path"], [])
        return Rewrites(groups, orphans, full)

    def group_paths(self, repo: str, runs_path: str) -> list[str]:
        """Every shard of the group `runs_path` leads: one per preset, named like it."""
        rest = runs_path.split("/", 1)[1]
        with self.db.read() as conn:
            return [r["path"] for r in conn.execute(
                "SELECT path FROM repo_shards WHERE repo = ? AND substr(path, instr(path, '/') + 1) = ?",
                (repo, rest))]

    def preset_shard_counts(self, repo: str) -> dict[str, int]:
        with self.db.read() as conn:
            return {r["preset"]: r["n"] for r in conn.execute(
                "SELECT substr(path, 1, instr(path, '/') - 1) AS preset, COUNT(*) AS n FROM repo_shards "
                "WHERE repo = ? GROUP BY preset", (repo,))}

    def drop_updates(self, ids: list[int]) -> None:
        with self.db.tx() as conn:
            conn.executemany("DELETE FROM export_updates WHERE id = ?", [(i,) for i in ids])

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

    def learn_shard(self, repo: str, path: str, entries: list[tuple[str, str | None, str | None]],
                    stale: bool = False) -> None:
        """A `runs` shard found in the repo (after a wipe, a lost commit answer, or another writer), with each run's
        (id, end time, feedback fingerprint): its runs are exported and held by this shard, in the same transaction
        that remembers the shard as read. A buffered row of one of its runs leaves the buffer; if it was mapped from
        other feedback than the shard's row (newer feedback seen after a wipe), it stays as a rewrite.
        `stale`: written in an older format, to be rewritten by the next flush."""
        with self.db.tx() as conn:
            conn.executemany("INSERT OR IGNORE INTO exported (repo, run_id, end_time, feedback_hash) "
                             "VALUES (?, ?, ?, ?)", [(repo, rid, iso_time(end), fp) for rid, end, fp in entries])
            conn.executemany("INSERT OR REPLACE INTO export_updates (repo, run_id, rows, feedback_hash, feedback_at, "
                             "job_id, created_at, bytes) SELECT repo, run_id, rows, feedback_hash, feedback_at, "
                             "job_id, created_at, bytes FROM export_buffer WHERE repo = ? AND run_id = ? AND "
                             "feedback_hash IS NOT ?",
                             [(repo, rid, fp) for rid, _, fp in entries])
            conn.executemany("DELETE FROM export_buffer WHERE repo = ? AND run_id = ?",
                             [(repo, rid) for rid, _, _ in entries])
            conn.executemany("INSERT OR REPLACE INTO run_shards (repo, run_id, path) VALUES (?, ?, ?)",
                             [(repo, rid, path) for rid, _, _ in entries])
            conn.execute("INSERT OR REPLACE INTO repo_shards (repo, path, stale) VALUES (?, ?, ?)",
                         (repo, path, int(stale)))

    def learn_paths(self, repo: str, listed: list[str]) -> None:
        """The repo's shard paths as listed at its head: shards deleted by someone else are forgotten (their runs
        stay exported), preset shards are remembered (a rewrite replaces a run's rows in every preset)."""
        with self.db.tx() as conn:
            known = {r["path"] for r in conn.execute("SELECT path FROM repo_shards WHERE repo = ?", (repo,))}
            gone = [(repo, p) for p in known - set(listed)]
            conn.executemany("DELETE FROM repo_shards WHERE repo = ? AND path = ?", gone)
            conn.executemany("DELETE FROM run_shards WHERE repo = ? AND path = ?", gone)
            conn.executemany("INSERT OR IGNORE INTO repo_shards (repo, path) VALUES (?, ?)",
                             [(repo, p) for p in listed if not p.startswith("runs/")])

    def set_head(self, repo: str, head: str | None, presets: set[str]) -> None:
        """The head the ledger has caught up with, and the presets found in the repo at that head."""
        with self.db.tx() as conn:
            self._upsert_repo(conn, repo, head, presets, None)

    def record_commit(self, repo: str, head: str, shard_paths: list[str], presets: set[str], card: str,
                      rows: list[Any], *, deleted: list[str] = (), updates: list[Any] = (),
                      placed: dict[str, list[str]] | None = None) -> None:
        """Everything a landed commit changes (see the module docstring): the shards it added (`shard_paths`) and
        `deleted`, which `runs` shard now holds which runs (`placed`), the buffered `rows` now exported and the
        pending `updates` now applied.

        The runs go RECORD_CHUNK at a time, each chunk a transaction of its own: the write lock they hold is what
        the web process's deliveries wait for, and 5,000 runs in one transaction held it for 60-100 ms. The commit
        itself (the repo's new head and its shards) is recorded last: a crash between two chunks leaves a head the
        ledger does not know, so the next flush's `sync_repo` reads the new shards and their runs are exported and
        out of the buffer as if every chunk had been recorded.

        A buffered row or a rewrite that was replaced while the commit was made (a newer row id) is not the one
        committed: it is kept, as a rewrite, for the next flush."""
        now = self.store.clock()
        # Everything decoded or encoded before the write lock is taken.
        exported = [(repo, r["run_id"], iso_time(r["end_time"]), r["feedback_hash"], r["feedback_at"]) for r in rows]
        shard_of = [(repo, rid, path) for path, ids in (placed or {}).items() for rid in ids]
        recent = self._recent_rows(repo, rows, now)
        rewritten = [(u["run_id"], decode_rows(u["rows"])["runs"][0]) for u in updates]
        for start in range(0, max(len(rows), len(shard_of)), RECORD_CHUNK):
            part = rows[start:start + RECORD_CHUNK]
            with self.db.tx() as conn:
                conn.executemany("INSERT OR REPLACE INTO run_shards (repo, run_id, path) VALUES (?, ?, ?)",
                                 shard_of[start:start + RECORD_CHUNK])
                conn.executemany("INSERT OR IGNORE INTO exported (repo, run_id, end_time, feedback_hash, "
                                 "feedback_at) VALUES (?, ?, ?, ?, ?)", exported[start:start + RECORD_CHUNK])
                conn.executemany("DELETE FROM export_buffer WHERE id = ?", [(r["id"],) for r in part])
                self._keep_newer_rows(conn, repo, [r["run_id"] for r in part])
        with self.db.tx() as conn:
            conn.executemany("DELETE FROM repo_shards WHERE repo = ? AND path = ?", [(repo, p) for p in deleted])
            conn.executemany("INSERT OR REPLACE INTO repo_shards (repo, path, stale) VALUES (?, ?, 0)",
                             [(repo, p) for p in shard_paths])
            self._upsert_repo(conn, repo, head, presets, card)
            conn.executemany("UPDATE exported SET feedback_hash = ?, feedback_at = ? WHERE repo = ? AND run_id = ?",
                             [(u["feedback_hash"], u["feedback_at"], repo, u["run_id"]) for u in updates])
            conn.executemany("DELETE FROM export_updates WHERE id = ?", [(u["id"],) for u in updates])
            self._store_recent(conn, repo, recent)
            self._remember_rewritten(conn, repo, rewritten, now)

    @staticmethod
    def _keep_newer_rows(conn: Any, repo: str, run_ids: list[str]) -> None:
        """Rows buffered for just-exported runs after the flush read its batch become rewrites."""
        for part in _chunks(run_ids):
            marks = ",".join("?" * len(part))
            where = f"repo = ? AND run_id IN ({marks})"
            conn.execute("INSERT OR REPLACE INTO export_updates (repo, run_id, rows, feedback_hash, feedback_at, "
                         "job_id, created_at, bytes) SELECT repo, run_id, rows, feedback_hash, feedback_at, job_id, "
                         f"created_at, bytes FROM export_buffer WHERE {where}", (repo, *part))
            conn.execute(f"DELETE FROM export_buffer WHERE {where}", (repo, *part))

    @staticmethod
    def _upsert_repo(conn: Any, repo: str, head: str | None, presets: set[str], card: str | None) -> None:
        old = conn.execute("SELECT presets, card FROM export_repos WHERE repo = ?", (repo,)).fetchone()
        known = set(json.loads(old["presets"])) if old else set()
        conn.execute("INSERT INTO export_repos (repo, head, presets, card) VALUES (?, ?, ?, ?) ON CONFLICT (repo) DO "
                     "UPDATE SET head = excluded.head, presets = excluded.presets, card = excluded.card",
                     (repo, head, json.dumps(sorted(known | presets)), card if card is not None else
                      (old["card"] if old else None)))

    # ---- the Review page ----
    def remember_recent(self, repo: str, rows: list[Any]) -> None:
        recent = self._recent_rows(repo, rows, self.store.clock())
        with self.db.tx() as conn:
            self._store_recent(conn, repo, recent)

    @staticmethod
    def _recent_rows(repo: str, rows: list[Any], now: float) -> list[tuple]:
        """The `runs` row of recently committed runs, for the Review page (inputs, outputs, feedback links). Only
        the newest RECENT_KEPT of a batch can stay: the others are not decoded at all."""
        return [(repo, r["run_id"], now, _json_text(decode_rows(r["rows"])["runs"][0])) for r in rows[-RECENT_KEPT:]]

    @staticmethod
    def _store_recent(conn: Any, repo: str, recent: list[tuple], keep: int = RECENT_KEPT) -> None:
        conn.executemany("INSERT OR REPLACE INTO recent_runs (repo, run_id, committed_at, row) VALUES (?, ?, ?, ?)",
                         recent)
        conn.execute("DELETE FROM recent_runs WHERE repo = ? AND run_id NOT IN (SELECT run_id FROM recent_runs "
                     "WHERE repo = ? ORDER BY committed_at DESC, rowid DESC LIMIT ?)", (repo, repo, keep))

    @classmethod
    def _remember_rewritten(cls, conn: Any, repo: str, rewritten: list[tuple[str, dict]], now: float) -> None:
        when = datetime.fromtimestamp(now, timezone.utc).isoformat()
        for run_id, row in rewritten:
            cls._update_recent(conn, repo, run_id, row, when)

    @staticmethod
    def _update_recent(conn: Any, repo: str, run_id: str, row: dict, updated_at: str | None) -> None:
        """A recent run's newer row (newer feedback): first exported when it was; `updated_at` once rewritten."""
        old = conn.execute("SELECT row FROM recent_runs WHERE repo = ? AND run_id = ?", (repo, run_id)).fetchone()
        if old is not None:
            before = json.loads(old["row"])
            row = {**row, "exported_at": before.get("exported_at"), "updated_at": updated_at or before.get("updated_at")}
            conn.execute("UPDATE recent_runs SET row = ? WHERE repo = ? AND run_id = ?",
                         (_json_text(row), repo, run_id))

    def recent(self, limit: int = 50) -> list[dict]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT repo, run_id, committed_at, row FROM recent_runs "
                                "ORDER BY committed_at DESC, rowid DESC LIMIT ?", (limit,)).fetchall()
        return [{"repo": r["repo"], "committed_at": r["committed_at"], **json.loads(r["row"])} for r in rows]

    def recent_run(self, run_id: str) -> list[dict]:
        """The recent `runs` rows of `run_id`, one per repo holding it (for refreshing a run just rated)."""
        with self.db.read() as conn:
            rows = conn.execute("SELECT repo, row FROM recent_runs WHERE run_id = ?", (run_id,)).fetchall()
        return [{"repo": r["repo"], **json.loads(r["row"])} for r in rows]

    def waiting(self, run_ids: list[str]) -> set[tuple[str, str]]:
        """(repo, run id) of the runs whose newest rows wait for a flush (new, or a rewrite with newer feedback)."""
        found: set[tuple[str, str]] = set()
        with self.db.read() as conn:
            for part in _chunks(run_ids):
                marks = ",".join("?" * len(part))
                found.update((r["repo"], r["run_id"]) for r in conn.execute(
                    f"SELECT repo, run_id FROM export_buffer WHERE run_id IN ({marks}) UNION "
                    f"SELECT repo, run_id FROM export_updates WHERE run_id IN ({marks})", (*part, *part)))
        return found

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
        """Drops links that expired. `exported`, `repo_shards` and `run_shards` are kept: exactly once and
        rewrites need them."""
        now = datetime.fromtimestamp(self.store.clock(), timezone.utc).isoformat()
        with self.db.tx() as conn:
            links = conn.execute("DELETE FROM feedback_links WHERE expires_at <= ?", (now,)).rowcount
        return {"feedback_links": links}
