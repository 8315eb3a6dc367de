"""Pages of the jobs table for the Jobs page: one read query beside `JobStore.list`, which has no offset."""

from __future__ import annotations

from typing import Any

from .jobs import Job


def page(store: Any, *, state: str | None = None, kind: str | None = None, trigger: str | None = None,
         offset: int = 0, limit: int = 50) -> tuple[list[Job], int]:
    """(jobs newest first from `offset`, how many jobs match the filters in all)."""
    clauses, params = [], []
    for column, value in (("state", state), ("kind", kind), ("trigger", trigger)):
        if value:
            clauses.append(f"{column} = ?")
            params.append(value)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    with store.db.read() as conn:
        total = conn.execute(f"SELECT COUNT(*) FROM jobs {where}", params).fetchone()[0]
        rows = conn.execute(f"SELECT * FROM jobs {where} ORDER BY id DESC LIMIT ? OFFSET ?",
                            (*params, limit, max(0, offset))).fetchall()
    return [Job.from_row(r) for r in rows], total
