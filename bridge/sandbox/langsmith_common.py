"""What every part of the LangSmith emulator shares: the API error, ids, timestamps, record copies, feedback stats.

Kept in one module below the store, the routes and the gate so that none of them has to import another for these
small helpers (the store is split in two modules, which would otherwise import each other).
"""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from typing import Any, Iterable

UTC = dt.timezone.utc
DEFAULT_TENANT_ID = "5e1f0b1e-0000-4000-8000-00000000e5a1"
API_PREFIX = "/api/v1"


class ApiError(Exception):
    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


def parse_time(value: Any) -> dt.datetime:
    """An aware UTC datetime from an ISO string or datetime; naive input is taken as UTC. Raises ValueError."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str) and value:
        moment = dt.datetime.fromisoformat(value)
    else:
        raise ValueError(f"not a datetime: {value!r}")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def run_time(moment: dt.datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def as_uuid(value: Any, field: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ApiError(422, f"{field}: not a valid uuid: {value!r}") from None


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float))  # bool counts: the SDK sends True/False scores


def public(record: dict) -> dict:
    """A deep copy without the store's private `_` keys."""
    return {k: copy.deepcopy(v) for k, v in record.items() if not k.startswith("_")}


def feedback_stats(rows: Iterable[dict]) -> dict[str, dict]:
    """Per key `{n, avg, show_feedback_arrow, values}` as in the webhook payload: n/avg over numeric scores,
    values counts string values."""
    stats: dict[str, dict] = {}
    sums: dict[str, float] = {}
    for row in rows:
        entry = stats.setdefault(row["key"], {"n": 0, "avg": None, "show_feedback_arrow": True, "values": {}})
        if is_number(row.get("score")):
            entry["n"] += 1
            sums[row["key"]] = sums.get(row["key"], 0.0) + float(row["score"])
        if isinstance(row.get("value"), str):
            entry["values"][row["value"]] = entry["values"].get(row["value"], 0) + 1
    for key, entry in stats.items():
        entry["avg"] = sums[key] / entry["n"] if entry["n"] else None
    return stats

