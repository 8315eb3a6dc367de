"""The state dir's SQLite database: one connection per thread, every statement inside `tx()`.

WAL mode lets the webhook handlers write while workers read. `synchronous=NORMAL` in WAL mode keeps every
committed transaction across a process crash (SIGKILL), which is the failure a Space actually sees; only an OS
crash or power loss could drop the last transactions, and a Space's disk does not survive those anyway.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import schema


BUSY_MS = 30_000  # how long a waiting writer lets SQLite retry another process's write lock


class WriteBusy(Exception):
    """`tx(wait=False)` found another thread, or another process (the job process), writing."""


class Database:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        # One writer at a time inside the process: threads queue on this lock in order instead of sleeping in
        # SQLite's busy-retry loop, where some starve for seconds under a burst of webhook deliveries.
        self._write_lock = threading.Lock()
        new = not path.exists() or path.stat().st_size == 0
        with self._write_lock:
            self.version = schema.migrate(self._connection(new_file=new))

    def _connection(self, new_file: bool = False) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_MS / 1000)
            conn.row_factory = sqlite3.Row
            if new_file:
                # Pages freed by retention go back to the file system a few at a time (see `compact`). Settable
                # only before the first write (WAL mode included), so only here: on an existing database the pragma
                # would wait for the write lock, which a delivery must never do on the event loop. An older
                # database is converted by one VACUUM.
                conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    @contextmanager
    def tx(self, wait: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction, IMMEDIATE so two workers never claim the same row. With `wait=False` it raises
        WriteBusy at once instead of queuing behind another thread's transaction."""
        if not self._write_lock.acquire(blocking=wait):
            raise WriteBusy()
        try:
            with self._transaction("BEGIN IMMEDIATE", wait) as conn:
                yield conn
        finally:
            self._write_lock.release()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read-only transaction: a consistent snapshot that never waits for writers (WAL)."""
        with self._transaction("BEGIN") as conn:
            yield conn

    @contextmanager
    def _transaction(self, begin: str, wait: bool = True) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        if wait:
            conn.execute(begin)
        else:
            self._begin_at_once(conn, begin)
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @staticmethod
    def _begin_at_once(conn: sqlite3.Connection, begin: str) -> None:
        """BEGIN without SQLite's busy wait: another process holding the write lock (the job process) would
        otherwise make this thread (the event loop) sleep in SQLite's retry loop."""
        conn.execute("PRAGMA busy_timeout=0")
        try:
            conn.execute(begin)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise WriteBusy() from None
            raise
        finally:
            conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")

    def size_bytes(self) -> int:
        """The database and its WAL and shared-memory files on disk."""
        return sum(p.stat().st_size for p in (self.path, self.path.with_name(self.path.name + "-wal"),
                                               self.path.with_name(self.path.name + "-shm")) if p.exists())

    def compact(self, pages_per_step: int = 256) -> int:
        """Gives pages freed by pruning back to the file system; returns the pages freed. A few pages per write-lock
        hold, so webhook deliveries never wait long behind it. A database made before incremental vacuum was on is
        converted by one full VACUUM (once)."""
        conn, freed = self._connection(), 0
        with self._write_lock:
            if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
                before = conn.execute("PRAGMA page_count").fetchone()[0]
                conn.execute("VACUUM")  # applies auto_vacuum=INCREMENTAL, set on every connection
                return max(0, before - conn.execute("PRAGMA page_count").fetchone()[0])
        while True:
            with self._write_lock:
                free = conn.execute("PRAGMA freelist_count").fetchone()[0]
                if not free:
                    break
                conn.execute(f"PRAGMA incremental_vacuum({min(free, pages_per_step)})").fetchall()
                freed += min(free, pages_per_step)
        with self._write_lock:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return freed

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
