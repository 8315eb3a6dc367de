"""LangSmith run + its feedback → one row of the `runs` preset (written for every exported run).

Pure: no network, no LangSmith SDK. Input is a run dict as the automation-rule webhook or `/runs/query` sends it
(naive timestamps are UTC) and feedback dicts as `GET /feedback` returns them. Redaction happens before this module
sees the data (`bridge.formats.redact.Redactor.apply_run` / `apply_feedback`), so nothing here looks at content.

Free-form fields (`inputs`, `outputs`, `metadata`, feedback `correction`) are stored as JSON strings: their shapes
differ from run to run and Arrow would otherwise infer a different schema per shard.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import pyarrow as pa

from bridge.errors import FormatError

UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")

FEEDBACK_TYPE = pa.struct([
    ("key", pa.string()),
    ("score", pa.float64()),
    ("value", pa.string()),        # strings as they are, any other value JSON-encoded
    ("comment", pa.string()),
    ("correction", pa.string()),   # JSON
    ("source", pa.string()),       # feedback_source.type: api, app, model, ...
    ("id", pa.string()),
    ("created_at", UTC_TIMESTAMP),
])

FEEDBACK_URL_TYPE = pa.struct([
    ("key", pa.string()),
    ("url", pa.string()),
    ("expires_at", UTC_TIMESTAMP),
])

RUNS_SCHEMA = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("trace_id", pa.string()),
    pa.field("parent_run_id", pa.string()),
    pa.field("dotted_order", pa.string()),
    pa.field("is_root", pa.bool_()),
    pa.field("session_id", pa.string()),
    pa.field("rule_id", pa.string()),
    pa.field("name", pa.string()),
    pa.field("run_type", pa.string()),
    pa.field("status", pa.string()),
    pa.field("error", pa.string()),
    pa.field("start_time", UTC_TIMESTAMP),
    pa.field("end_time", UTC_TIMESTAMP),
    pa.field("latency_ms", pa.float64()),
    pa.field("inputs", pa.string()),
    pa.field("outputs", pa.string()),
    pa.field("metadata", pa.string()),
    pa.field("tags", pa.list_(pa.string())),
    pa.field("model", pa.string()),
    pa.field("prompt_tokens", pa.int64()),
    pa.field("completion_tokens", pa.int64()),
    pa.field("total_tokens", pa.int64()),
    pa.field("total_cost", pa.float64()),
    pa.field("feedback", pa.list_(FEEDBACK_TYPE)),
    pa.field("feedback_urls", pa.list_(FEEDBACK_URL_TYPE)),
    pa.field("run_url", pa.string()),
    pa.field("exported_at", UTC_TIMESTAMP),
    pa.field("updated_at", UTC_TIMESTAMP),
])

_UUID_LENGTH = 36


# --- small value helpers ---------------------------------------------------------------------------------------

def as_dict(value: Any) -> dict:
    """Accept SDK pydantic objects too (the flow may hand over `langsmith.schemas.Run` / `Feedback`)."""
    if hasattr(value, "model_dump"):
        return value.model_dump()
    return dict(value) if isinstance(value, Mapping) else {}


def text_or_none(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "model_dump"):
        return value.model_dump()
    # UUIDs and anything else odd an SDK object may carry: never fail an export over it.
    return str(value)


def to_json(value: Any) -> str | None:
    """JSON text for a free-form value; None stays None (a null column, not the string "null")."""
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False, default=_json_default)


def to_float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def to_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_time(value: Any, *, where: str = "run", field: str | None = None) -> datetime | None:
    """A UTC datetime from an ISO string or datetime; naive values are UTC (LangSmith sends them naive)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise FormatError(where, field, f"expected an ISO 8601 timestamp, got {value!r}") from None
    else:
        raise FormatError(where, field, f"expected an ISO 8601 timestamp, got {type(value).__name__}")
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


# --- tree fields -----------------------------------------------------------------------------------------------

def dotted_order_ids(dotted_order: str | None) -> list[str]:
    """Run ids along a dotted order, root first: each segment is `<%Y%m%dT%H%M%S%fZ><uuid>`."""
    if not dotted_order:
        return []
    ids = []
    for segment in dotted_order.split("."):
        try:
            ids.append(str(UUID(segment[-_UUID_LENGTH:])))
        except ValueError:
            return []  # a malformed order says nothing reliable about the tree
    return ids


def parent_run_id(run: Mapping) -> str | None:
    """Explicit `parent_run_id`, else the dotted order (authoritative), else the last of `parent_run_ids`."""
    if run.get("parent_run_id"):
        return str(run["parent_run_id"])
    ids = dotted_order_ids(run.get("dotted_order"))
    if len(ids) > 1:
        return ids[-2]
    ancestors = run.get("parent_run_ids") or []
    return str(ancestors[-1]) if ancestors else None


def trace_id(run: Mapping) -> str | None:
    if run.get("trace_id"):
        return str(run["trace_id"])
    ids = dotted_order_ids(run.get("dotted_order"))
    return ids[0] if ids else None


# --- model, usage ----------------------------------------------------------------------------------------------

def _get(value: Any, *path: str | int) -> Any:
    for step in path:
        if isinstance(step, int):
            if not isinstance(value, list) or len(value) <= step:
                return None
        elif not isinstance(value, Mapping):
            return None
        value = value[step] if isinstance(step, int) else value.get(step)
    return value


def _generation_message(outputs: Any) -> Any:
    """The first generation's message kwargs of a LangChain chat-model run (usage and model name live there)."""
    message = _get(outputs, "generations", 0, 0, "message")
    return _get(message, "kwargs") or _get(message, "data") or message


def run_model(run: Mapping) -> str | None:
    """Model name: LangSmith's `ls_model_name`, then invocation params, then Dify-style / provider fields."""
    extra, outputs, inputs = run.get("extra"), run.get("outputs"), run.get("inputs")
    candidates = (
        _get(extra, "metadata", "ls_model_name"),
        _get(extra, "invocation_params", "model"),
        _get(extra, "invocation_params", "model_name"),
        _get(extra, "invocation_params", "model_id"),
        _get(extra, "metadata", "model_name"),
        _get(extra, "metadata", "model_id"),
        _get(extra, "metadata", "model"),
        _get(_generation_message(outputs), "response_metadata", "model_name"),
        _get(outputs, "llm_output", "model_name"),
        _get(outputs, "model"),
        _get(inputs, "model"),
    )
    return next((c for c in candidates if isinstance(c, str) and c), None)


def _usage_candidates(run: Mapping) -> Iterable[Any]:
    extra, outputs, inputs = run.get("extra"), run.get("outputs"), run.get("inputs")
    yield run.get("usage_metadata")
    yield {k: run.get(k) for k in ("input_tokens", "output_tokens", "total_tokens")}  # Dify sends these top-level
    yield _get(outputs, "usage_metadata")
    yield _get(_generation_message(outputs), "usage_metadata")
    yield _get(outputs, "llm_output", "token_usage")
    yield _get(outputs, "usage")
    yield _get(extra, "metadata", "usage_metadata")
    yield _get(inputs, "usage_metadata")  # Dify copies the usage into inputs as well


def _usage(run: Mapping) -> tuple[int | None, int | None, int | None]:
    for usage in _usage_candidates(run):
        if not isinstance(usage, Mapping):
            continue
        prompt = to_int(usage.get("prompt_tokens", usage.get("input_tokens")))
        completion = to_int(usage.get("completion_tokens", usage.get("output_tokens")))
        total = to_int(usage.get("total_tokens"))
        if prompt or completion or total:
            if total is None and prompt is not None and completion is not None:
                total = prompt + completion
            return prompt, completion, total
    return None, None, None


def run_tokens(run: Mapping) -> tuple[int | None, int | None, int | None]:
    """(prompt, completion, total): LangSmith's own counts, each filled from usage data when missing or zero."""
    own = [to_int(run.get(k)) for k in ("prompt_tokens", "completion_tokens", "total_tokens")]
    if all(own):
        return own[0], own[1], own[2]
    found = _usage(run)
    merged = [mine if mine or other is None else other for mine, other in zip(own, found)]
    return merged[0], merged[1], merged[2]


# --- feedback --------------------------------------------------------------------------------------------------

def group_feedback(feedback: Iterable[Any]) -> dict[str, list[dict]]:
    """Feedback by `run_id` (never by position). Repeated ids (offset paging overlaps) keep the last copy."""
    by_id: dict[str, dict] = {}
    anonymous: list[dict] = []
    for item in feedback:
        item = as_dict(item)
        if item.get("id") is None:
            anonymous.append(item)
        else:
            by_id[str(item["id"])] = item
    grouped: dict[str, list[dict]] = {}
    for item in [*by_id.values(), *anonymous]:
        if item.get("run_id") is not None:  # project-level feedback has no run to land on
            grouped.setdefault(str(item["run_id"]), []).append(item)
    return grouped


def _feedback_order(item: Mapping) -> tuple:
    created = item.get("created_at")
    return (str(created) if created is not None else "", str(item.get("id") or ""))


def sorted_feedback(feedback: Iterable[Any]) -> list[dict]:
    """Oldest first, so rows are deterministic and 'the latest correction' is the last one."""
    return sorted((as_dict(f) for f in feedback), key=_feedback_order)


FINGERPRINTED = ("id", "key", "score", "value", "comment", "correction")


def feedback_fingerprint(entries: Iterable[Mapping]) -> str:
    """A short digest of a run's feedback in row form (`feedback_entry`, as the `runs` row holds it): it differs
    exactly when the run's rows would, so a row is rewritten only when its feedback changed. Computed the same way
    from fresh feedback and from a shard read back from the repo."""
    items = sorted(json.dumps([to_json(e.get(k)) for k in FINGERPRINTED]) for e in entries)
    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:24]


def feedback_score(item: Mapping) -> float | None:
    score = item.get("score")
    if isinstance(score, bool):
        return 1.0 if score else 0.0
    return to_float(score)


def _feedback_value(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return to_json(value)


def _feedback_source(item: Mapping) -> str | None:
    source = item.get("feedback_source")
    if isinstance(source, Mapping):
        return text_or_none(source.get("type"))
    return text_or_none(source)


def feedback_entry(item: Mapping, *, where: str = "feedback") -> dict:
    return {
        "key": text_or_none(item.get("key")),
        "score": feedback_score(item),
        "value": _feedback_value(item.get("value")),
        "comment": text_or_none(item.get("comment")),
        "correction": to_json(item.get("correction")),
        "source": _feedback_source(item),
        "id": text_or_none(item.get("id")),
        "created_at": parse_time(item.get("created_at"), where=where, field="created_at"),
    }


FEEDBACK_PAGE = "/feedback/"


def feedback_page_url(base: str, token_id: str) -> str:
    """The bridge's own feedback page for a presigned token. Rows carry this, never the token URL: a GET on that one
    records feedback, and link scanners and crawlers follow links."""
    return f"{base.rstrip('/')}{FEEDBACK_PAGE}{token_id}"


def feedback_url_entry(item: Mapping) -> dict:
    """A feedback link: `{key or feedback_key, url, expires_at}`, `url` being the bridge's page for the token."""
    item = as_dict(item)
    return {
        "key": text_or_none(item.get("key") or item.get("feedback_key")),
        "url": text_or_none(item.get("url")),
        "expires_at": parse_time(item.get("expires_at"), where="feedback url", field="expires_at"),
    }


# --- the row ---------------------------------------------------------------------------------------------------

def run_web_url(web_base: str | None, run: Mapping) -> str | None:
    """Link to the run in LangSmith's web app.

    `web_base + app_path` when the run carries `app_path` (what the SDK's `Run.url` does); otherwise the SDK's own
    fallback form `/o/{tenant_id}/projects/p/{session_id}/r/{id}` plus `trace_id`/`start_time` query parameters like
    `app_path` has. None without a web base, or when tenant or session is unknown (no valid link can be built).
    """
    if not web_base:
        return None
    base = web_base.rstrip("/")
    app_path = run.get("app_path")
    if isinstance(app_path, str) and app_path:
        return app_path if app_path.startswith(("http://", "https://")) else f"{base}/{app_path.lstrip('/')}"
    tenant, session, run_id = run.get("tenant_id"), run.get("session_id"), run.get("id")
    if not (tenant and session and run_id):
        return None
    query = {"trace_id": trace_id(run)}
    start = parse_time(run.get("start_time"), where=f"run {run_id}", field="start_time")
    if start is not None:
        query["start_time"] = start.replace(tzinfo=None).isoformat()
    query_text = urlencode({k: v for k, v in query.items() if v})
    return f"{base}/o/{tenant}/projects/p/{session}/r/{run_id}" + (f"?{query_text}" if query_text else "")


def offloaded_payload_urls(run: Mapping) -> dict[str, str]:
    """`{"inputs": url, "outputs": url}` for payload parts LangSmith moved to S3 (`*_s3_urls.ROOT.presigned_url`).

    The export flow fetches these and puts the JSON back into `run["inputs"]` / `run["outputs"]` before mapping.
    Whether the URL is absolute or relative to the API is not confirmed: it is returned as given.
    """
    found = {}
    for part in ("inputs", "outputs"):
        url = _get(run.get(f"{part}_s3_urls"), "ROOT", "presigned_url")
        if run.get(part) is None and isinstance(url, str) and url:
            found[part] = url
    return found


def _status(run: Mapping) -> str | None:
    if run.get("status"):
        return str(run["status"])
    if run.get("error"):
        return "error"
    return "success" if run.get("end_time") else None


def _latency_ms(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds() * 1000.0


def _metadata(run: Mapping) -> Any:
    extra = run.get("extra")
    if isinstance(extra, Mapping) and extra.get("metadata") is not None:
        return extra["metadata"]
    return run.get("metadata")


def run_id_of(run: Mapping) -> str:
    run_id = run.get("id") or run.get("run_id")
    if not run_id:
        raise FormatError("run", None, "run has no 'id'")
    return str(run_id)


def run_row(run: Any, *, rule_id: str | None, feedback: list[dict], feedback_urls: list[dict],
            web_url: str | None, exported_at: datetime | None = None) -> dict:
    """One `runs` row. `web_url` is the run's own link (see `run_web_url`), stored as `run_url`.

    `feedback` must already be this run's feedback (`group_feedback(...)[run_id]`). Raises FormatError for a run
    without an id or with an unreadable timestamp.
    """
    run = as_dict(run)
    run_id = run_id_of(run)
    where = f"run {run_id}"
    start = parse_time(run.get("start_time"), where=where, field="start_time")
    end = parse_time(run.get("end_time"), where=where, field="end_time")
    parent = parent_run_id(run)
    prompt_tokens, completion_tokens, total_tokens = run_tokens(run)
    error = run.get("error")
    return {
        "run_id": run_id,
        "trace_id": trace_id(run),
        "parent_run_id": parent,
        "dotted_order": text_or_none(run.get("dotted_order")),
        "is_root": run["is_root"] if isinstance(run.get("is_root"), bool) else parent is None,
        "session_id": text_or_none(run.get("session_id")),
        "rule_id": text_or_none(rule_id),
        "name": text_or_none(run.get("name")),
        "run_type": text_or_none(run.get("run_type")),
        "status": _status(run),
        "error": error if isinstance(error, str) or error is None else to_json(error),
        "start_time": start,
        "end_time": end,
        "latency_ms": _latency_ms(start, end),
        "inputs": to_json(run.get("inputs")),
        "outputs": to_json(run.get("outputs")),
        "metadata": to_json(_metadata(run)),
        "tags": [str(tag) for tag in run.get("tags") or []],
        "model": run_model(run),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": total_tokens,
        "total_cost": to_float(run.get("total_cost")),
        "feedback": [feedback_entry(f, where=f"feedback on {where}") for f in sorted_feedback(feedback)],
        "feedback_urls": [feedback_url_entry(u) for u in feedback_urls],
        "run_url": web_url,
        "exported_at": parse_time(exported_at, where=where, field="exported_at"),
        "updated_at": None,
    }
