"""The LangSmith emulator's v2 runs API (SmithDB): `POST /api/v2/runs/query` and `GET /api/v2/runs/{run_id}`.

As the SDK's generated client (`langsmith.resources.runs`) sends them and langsmith.md describes: `project_ids` xor
`reference_dataset_id`, `ids`, `filter`, `is_root`, `run_type`, `has_error`, `trace_id`, `min_start_time` (default
now − 1 day), `max_start_time` (default now), `min_feedback_modified_at` / `max_feedback_modified_at` (inclusive /
exclusive bounds on feedback `modified_at`, applied to the feedback conditions of `filter`, so they need one: 422
without), `page_size` 1..1000 (default 100), an opaque `cursor`, and `selects` (upper-case field names; without them
only `id` comes back). Answers `{items, next_cursor}`, newest first. The
cursor is keyset-based (the last run's start time and id), so runs arriving between pages never shift a page.

`Store.v2_enabled = False` makes both routes answer 404, as self-hosted LangSmith before v0.16 does.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.sandbox.langsmith_common import ApiError, as_uuid, parse_time, run_time
from bridge.sandbox.langsmith_filter import FilterEval, parse_filter

MAX_PAGE = 1000
DEFAULT_PAGE = 100
DEFAULT_WINDOW = dt.timedelta(days=1)
# Select name -> how a stored run gives that field (v2 names: project_id, lower-case-able status, metadata apart).
FIELDS: dict[str, Any] = {
    "ID": "id", "NAME": "name", "RUN_TYPE": "run_type", "START_TIME": "start_time", "END_TIME": "end_time",
    "ERROR": "error", "EXTRA": "extra", "EVENTS": "events", "INPUTS": "inputs", "OUTPUTS": "outputs",
    "PARENT_RUN_IDS": "parent_run_ids", "TRACE_ID": "trace_id", "DOTTED_ORDER": "dotted_order",
    "IS_ROOT": "is_root", "REFERENCE_EXAMPLE_ID": "reference_example_id", "TOTAL_TOKENS": "total_tokens",
    "PROMPT_TOKENS": "prompt_tokens", "COMPLETION_TOKENS": "completion_tokens", "TOTAL_COST": "total_cost",
    "PROMPT_COST": "prompt_cost", "COMPLETION_COST": "completion_cost", "TAGS": "tags", "APP_PATH": "app_path",
    "FIRST_TOKEN_TIME": "first_token_time", "LAST_QUEUED_AT": "last_queued_at",
    "PROJECT_ID": lambda run: run["session_id"],
    "STATUS": lambda run: (run.get("status") or "pending").upper(),
    "METADATA": lambda run: (run.get("extra") or {}).get("metadata") or {},
    "THREAD_ID": lambda run: _thread_id(run),
    "IS_IN_DATASET": lambda run: bool(run.get("in_dataset")),
    "ERROR_PREVIEW": lambda run: (run.get("error") or "")[:200] or None,
    "INPUTS_PREVIEW": lambda run: _preview(run.get("inputs")),
    "OUTPUTS_PREVIEW": lambda run: _preview(run.get("outputs")),
    "LATENCY_SECONDS": lambda run: _latency(run),
}
TIME_FIELDS = ("start_time", "end_time", "first_token_time", "last_queued_at")


def _thread_id(run: dict) -> str | None:
    metadata = (run.get("extra") or {}).get("metadata") or {}
    for key in ("thread_id", "session_id", "conversation_id"):
        if metadata.get(key):
            return str(metadata[key])
    return None


def _preview(value: Any) -> str | None:
    return None if value is None else json.dumps(value)[:200]


def _latency(run: dict) -> float | None:
    if not run.get("end_time"):
        return None
    return (parse_time(run["end_time"]) - parse_time(run["start_time"])).total_seconds()


def rfc3339(value: Any) -> Any:
    return parse_time(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value else value


def v2_view(run: dict, selects: list[str]) -> dict:
    view: dict[str, Any] = {"id": run["id"]}
    for name in selects:
        source = FIELDS[name]
        key = name.lower()
        view[key] = source(run) if callable(source) else run.get(source)
        if key in TIME_FIELDS:
            view[key] = rfc3339(view[key])
    return view


def check_selects(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(422, "selects: expected a list of field names")
    unknown = [v for v in value if v not in FIELDS]
    if unknown:
        raise ApiError(422, f"selects: unknown field(s) {unknown}; known: {sorted(FIELDS)}")
    return value


def check_page_size(value: Any) -> int:
    if value is None:
        return DEFAULT_PAGE
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(422, f"page_size: not an integer: {value!r}")
    if not 1 <= value <= MAX_PAGE:
        raise ApiError(400, f"page_size must be between 1 and {MAX_PAGE}, got {value}")
    return value


def time_bound(body: dict, key: str, default: dt.datetime) -> str:
    try:
        return run_time(parse_time(body[key])) if body.get(key) else run_time(default)
    except ValueError as exc:
        raise ApiError(422, f"{key}: {exc}") from None


FEEDBACK_BOUNDS = ("min_feedback_modified_at", "max_feedback_modified_at")


def feedback_window(body: dict, expr: Any) -> Any:
    """A predicate on feedback rows for `min_feedback_modified_at` (inclusive) / `max_feedback_modified_at`
    (exclusive), or None when neither is given. The bounds narrow which feedback the filter's feedback conditions
    see, so they need one; the real API refuses them without (422)."""
    given = [key for key in FEEDBACK_BOUNDS if body.get(key)]
    if not given:
        return None
    if expr is None or not has_feedback_condition(expr):
        raise ApiError(422, f"{' and '.join(given)} need at least one feedback condition in filter, "
                            'for example eq(feedback_key, "correctness")')
    low, high = (_bound(body, key) for key in FEEDBACK_BOUNDS)

    def inside(row: dict) -> bool:
        moment = parse_time(row.get("modified_at") or row["created_at"])
        return (low is None or moment >= low) and (high is None or moment < high)
    return inside


def _bound(body: dict, key: str) -> dt.datetime | None:
    if not body.get(key):
        return None
    try:
        return parse_time(body[key])
    except ValueError as exc:
        raise ApiError(422, f"{key}: {exc}") from None


def has_feedback_condition(expr: Any) -> bool:
    """Whether a parsed filter compares a feedback field (`feedback_key`, `feedback_score`, ...) anywhere."""
    if isinstance(expr, tuple) and expr[0] == "field":
        return str(expr[1]).startswith("feedback_")
    if isinstance(expr, tuple):
        return any(has_feedback_condition(arg) for arg in expr[1])
    return False


def encode_cursor(run: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps([run["start_time"], run["id"]]).encode()).decode()


def decode_cursor(cursor: Any) -> tuple[str, str] | None:
    if not cursor:
        return None
    try:
        start, run_id = json.loads(base64.urlsafe_b64decode(str(cursor).encode()))
        return str(start), str(run_id)
    except (ValueError, TypeError):
        raise ApiError(400, f"invalid cursor: {cursor!r}") from None


class V2Routes:
    def __init__(self, store: Any) -> None:
        self.store = store

    def routes(self) -> list[Route]:
        return [Route("/api/v2/runs/query", self.query, methods=["POST"]),
                Route("/api/v2/runs/{run_id}", self.read, methods=["GET"])]

    def _require_v2(self) -> None:
        if not getattr(self.store, "v2_enabled", True):
            raise ApiError(404, "Not Found")

    async def query(self, request: Request) -> Response:
        self._require_v2()
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise ApiError(422, f"body: invalid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(422, "body: expected a JSON object")
        selects, size = check_selects(body.get("selects")), check_page_size(body.get("page_size"))
        found = self.matching(body)
        after = decode_cursor(body.get("cursor"))
        if after is not None:
            found = [r for r in found if (r["start_time"], r["id"]) < after]
        chosen, more = found[:size], len(found) > size
        with self.store.lock:
            items = [v2_view(run, selects) for run in chosen]
        return JSONResponse({"items": items, "next_cursor": encode_cursor(chosen[-1]) if more else None})

    def sessions(self, body: dict) -> set[str]:
        projects, dataset = body.get("project_ids"), body.get("reference_dataset_id")
        if bool(projects) == bool(dataset):
            raise ApiError(422, "exactly one of project_ids and reference_dataset_id is required")
        if dataset:
            dataset = as_uuid(dataset, "reference_dataset_id")
            return {s["id"] for s in self.store.sessions.values() if s["reference_dataset_id"] == dataset}
        if not isinstance(projects, list):
            raise ApiError(422, "project_ids: expected a list of uuids")
        return {as_uuid(p, "project_ids") for p in projects}

    def matching(self, body: dict) -> list[dict]:
        """Runs of the body's projects inside its start-time window that pass every condition, newest first."""
        now = self.store.now()
        low = time_bound(body, "min_start_time", now - DEFAULT_WINDOW)
        high = time_bound(body, "max_start_time", now)
        ids = {as_uuid(i, "ids") for i in body["ids"]} if body.get("ids") else None
        expr = parse_filter(body["filter"]) if body.get("filter") else None
        modified = feedback_window(body, expr)
        with self.store.lock:
            sessions = self.sessions(body)
            found = []
            for run in self.store.runs.values():
                if run["session_id"] not in sessions or not low <= run["start_time"] <= high:
                    continue
                if (ids is not None and run["id"] not in ids) or not self.structured(run, body):
                    continue
                keys = {f["key"] for f in self.store.feedback.of_runs({run["id"]})
                        if modified is None or modified(f)}
                if expr is not None and not FilterEval(run, keys, self.store.ignored_filters)(expr):
                    continue
                found.append(run)
        found.sort(key=lambda r: (r["start_time"], r["id"]), reverse=True)
        return found

    @staticmethod
    def structured(run: dict, body: dict) -> bool:
        if body.get("is_root") is not None and run["is_root"] != bool(body["is_root"]):
            return False
        if body.get("run_type") and run["run_type"] != body["run_type"]:
            return False
        if body.get("has_error") is not None and bool(run["error"]) != bool(body["has_error"]):
            return False
        return not body.get("trace_id") or run["trace_id"] == as_uuid(body["trace_id"], "trace_id")

    async def read(self, request: Request) -> Response:
        self._require_v2()
        project = request.query_params.get("project_id")
        if not project:
            raise ApiError(422, "project_id: field required")
        selects = check_selects(request.query_params.getlist("selects") or None)
        with self.store.lock:
            run = self.store.runs.get(as_uuid(request.path_params["run_id"], "run_id"))
            if run is None or run["session_id"] != as_uuid(project, "project_id"):
                raise ApiError(404, "Run not found")
            return JSONResponse(v2_view(run, selects))
