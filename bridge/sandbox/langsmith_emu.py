"""A local LangSmith: the HTTP routes the `langsmith` SDK and the bridge use, over `langsmith_store.Store`.

Every route is served both bare (`/sessions`, what the SDK sends against a bare root) and under `/api/v1` (what token
URLs and the docs use). `x-api-key` is required except on presigned feedback-token submissions and stored-object URLs,
which stand in for S3 presigned URLs. Rate limits follow LangSmith cloud (per API key, sliding window, 429 with
`Retry-After`). The app is wrapped in `server.Recorder`, so tests can count requests and inject faults.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import json
import math
import re
import threading
import time
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from bridge.sandbox.langsmith_store import (DEFAULT_TENANT_ID, ApiError, Store, as_uuid, feedback_stats,
                                            parse_time, public)
from bridge.sandbox.langsmith_web import WebPages
from bridge.sandbox.server import Recorder, ServerHandle

API_PREFIX = "/api/v1"
MAX_LIMIT = 100
SCORE_KEY_MAX = 180
INFO = {"version": "0.10.0", "license_expiration_time": None, "instance_flags": {}}
# (limit, window seconds) per rule; see langsmith.md.
RATE_LIMITS = {"runs_query": (15, 10.0), "run_read": (30, 60.0), "feedback_create": (2000, 10.0),
               "default": (1000, 10.0)}


# ---------------------------------------------------------------- auth and rate limits
class RateLimiter:
    """Sliding-window log per (api key, rule). Only admitted requests count."""

    def __init__(self, *, enabled: bool = True, scale: float = 1.0) -> None:
        self.enabled = enabled
        self.limits = {rule: (max(1, int(limit * scale)), window) for rule, (limit, window) in RATE_LIMITS.items()}
        self._hits: dict[tuple[str, str], collections.deque] = {}
        self._lock = threading.Lock()

    def set(self, rule: str, *, limit: int, window: float) -> None:
        if rule not in self.limits:
            raise ValueError(f"unknown rate-limit rule {rule!r}; known: {sorted(self.limits)}")
        with self._lock:
            self.limits[rule] = (limit, window)

    def check(self, api_key: str, rule: str) -> float | None:
        """None when admitted, else the seconds until a slot frees up."""
        if not self.enabled:
            return None
        now = time.monotonic()
        limit, window = self.limits[rule]
        with self._lock:
            hits = self._hits.setdefault((api_key, rule), collections.deque())
            while hits and hits[0] <= now - window:
                hits.popleft()
            if len(hits) >= limit:
                return hits[0] + window - now
            hits.append(now)
            return None


def rate_rule(method: str, path: str) -> str:
    if method == "POST" and path == "/runs/query":
        return "runs_query"
    if method == "GET" and re.fullmatch(r"/runs/[^/]+", path):
        return "run_read"
    if method == "POST" and path == "/feedback":
        return "feedback_create"
    return "default"


def api_path(path: str) -> str:
    if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
        return path[len(API_PREFIX):] or "/"
    return path


def is_public(method: str, path: str) -> bool:
    """Token submissions and stored objects are reached without an API key, like the real URLs."""
    if path.startswith("/_objects/"):
        return True
    return method in ("GET", "POST") and re.fullmatch(r"/feedback/tokens/[^/]+", path) is not None


class Gate:
    """ASGI middleware in front of the routes: API key check, then rate limit."""

    def __init__(self, app: Any, api_keys: set[str] | None, limiter: RateLimiter) -> None:
        self.app, self.api_keys, self.limiter = app, api_keys, limiter

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: dict) -> Response | None:
        method, path = scope["method"], api_path(scope["path"])
        if is_public(method, path):
            return None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = headers.get("x-api-key", "")
        # The SDK shows this body in its LangSmithAuthError message.
        if not key or (self.api_keys is not None and key not in self.api_keys):
            return JSONResponse({"detail": "Invalid token"}, status_code=401)
        wait = self.limiter.check(key, rate_rule(method, path))
        if wait is None:
            return None
        # urllib3 only parses whole seconds in Retry-After; a fraction makes it raise InvalidHeader.
        return JSONResponse({"detail": "Rate limit exceeded"}, status_code=429,
                            headers={"Retry-After": str(max(1, math.ceil(wait)))})


# ---------------------------------------------------------------- request helpers
async def json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw) if raw else None
    except ValueError as exc:
        raise ApiError(422, f"body: invalid JSON: {exc}") from None


async def json_object(request: Request) -> dict:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ApiError(422, "body: expected a JSON object")
    return body


def parse_limit(value: Any) -> int:
    try:
        limit = int(value) if value is not None else MAX_LIMIT
    except (TypeError, ValueError):
        raise ApiError(422, f"limit: not an integer: {value!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    return limit


def page(items: list, request: Request) -> list:
    """The `limit`/`offset` slice of a list endpoint."""
    limit = parse_limit(request.query_params.get("limit"))
    try:
        offset = int(request.query_params.get("offset") or 0)
    except ValueError:
        raise ApiError(422, "offset: not an integer") from None
    if offset < 0:
        raise ApiError(400, "offset must be >= 0")
    return items[offset:offset + limit]


def query_bool(value: str | None) -> bool | None:
    return None if value is None else value.strip().lower() in ("true", "1", "yes")


def query_uuids(request: Request, name: str) -> list[str]:
    return [as_uuid(v, name) for v in request.query_params.getlist(name)]


def source_type(value: str) -> str:
    # requests sends a plain Enum as its str(): "FeedbackSourceType.API" for FeedbackSourceType.API.
    return value.rsplit(".", 1)[-1].lower()


def base_url(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def decode_cursor(cursor: Any) -> int:
    if not cursor:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(str(cursor).encode()))["offset"]
    except (ValueError, KeyError, TypeError):
        raise ApiError(400, f"invalid cursor: {cursor!r}") from None
    return int(offset)


# ---------------------------------------------------------------- upload-experiment validation (422s)
def _is_time(value: Any) -> bool:
    try:
        parse_time(value)
        return True
    except (ValueError, TypeError):
        return False


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
        return isinstance(value, str)
    except ValueError:
        return False


KINDS = {
    "str": (lambda v: isinstance(v, str), "string_type", "Input should be a valid string"),
    "obj": (lambda v: isinstance(v, dict), "dict_type", "Input should be a valid dictionary"),
    "list": (lambda v: isinstance(v, list), "list_type", "Input should be a valid list"),
    "time": (_is_time, "datetime_parsing", "Input should be a valid datetime"),
    "uuid": (_is_uuid, "uuid_parsing", "Input should be a valid UUID"),
    "number": (lambda v: isinstance(v, (int, float)), "float_type", "Input should be a valid number"),
    "str_or_obj": (lambda v: isinstance(v, (str, dict)), "union_type", "Input should be a string or an object"),
    "value": (lambda v: isinstance(v, (str, int, float, dict)), "union_type", "Input should be a string or number"),
}


class Checker:
    """Collects FastAPI-shaped errors (`{loc, msg, type}`); `loc` names the field, as the real 422s do."""

    def __init__(self) -> None:
        self.errors: list[dict] = []

    def fail(self, loc: list, kind: str, msg: str) -> None:
        self.errors.append({"loc": ["body", *loc], "msg": msg, "type": kind})

    def field(self, obj: dict, key: str, loc: list, kind: str, *, required: bool = False) -> bool:
        """True when the field is present and of the right kind."""
        if obj.get(key) is None:
            if required:
                self.fail([*loc, key], "missing", "Field required")
            return False
        test, error_type, msg = KINDS[kind]
        if not test(obj[key]):
            self.fail([*loc, key], error_type, msg)
            return False
        return True


def validate_upload(body: Any) -> list[dict]:
    check = Checker()
    if not isinstance(body, dict):
        check.fail([], "dict_type", "Input should be a valid dictionary")
        return check.errors
    check.field(body, "experiment_name", [], "str", required=True)
    window = [check.field(body, key, [], "time", required=True)
              for key in ("experiment_start_time", "experiment_end_time")]
    start = parse_time(body["experiment_start_time"]) if window[0] else None
    end = parse_time(body["experiment_end_time"]) if window[1] else None
    if start and end and end < start:
        check.fail(["experiment_end_time"], "value_error", "experiment_end_time is before experiment_start_time")
    if body.get("dataset_id") is None and body.get("dataset_name") is None:
        check.fail(["dataset_id"], "missing", "One of dataset_id or dataset_name is required")
    check.field(body, "dataset_id", [], "uuid")
    for key in ("dataset_name", "experiment_description", "dataset_description"):
        check.field(body, key, [], "str")
    check.field(body, "experiment_metadata", [], "obj")
    if check.field(body, "summary_experiment_scores", [], "list"):
        for i, score in enumerate(body["summary_experiment_scores"]):
            _check_score(check, score, ["summary_experiment_scores", i])
    if check.field(body, "results", [], "list", required=True):
        for i, row in enumerate(body["results"]):
            _check_row(check, row, ["results", i], start, end)
    return check.errors


def _check_row(check: Checker, row: Any, loc: list, start: Any, end: Any) -> None:
    if not isinstance(row, dict):
        check.fail(loc, "dict_type", "Input should be a valid dictionary")
        return
    check.field(row, "row_id", loc, "uuid", required=True)
    check.field(row, "inputs", loc, "obj", required=True)
    for key in ("expected_outputs", "actual_outputs", "run_metadata"):
        check.field(row, key, loc, "obj")
    for key in ("run_name", "error"):
        check.field(row, key, loc, "str")
    times = {key: parse_time(row[key]) for key in ("start_time", "end_time")
             if check.field(row, key, loc, "time", required=True)}
    for key, moment in times.items():
        if start and end and not start <= moment <= end:
            check.fail([*loc, key], "value_error",
                       f"{key} {moment.isoformat()} is outside the experiment's start/end time")
    if len(times) == 2 and times["end_time"] < times["start_time"]:
        check.fail([*loc, "end_time"], "value_error", "end_time is before start_time")
    if check.field(row, "evaluation_scores", loc, "list"):
        for i, score in enumerate(row["evaluation_scores"]):
            _check_score(check, score, [*loc, "evaluation_scores", i])


def _check_score(check: Checker, score: Any, loc: list) -> None:
    if not isinstance(score, dict):
        check.fail(loc, "dict_type", "Input should be a valid dictionary")
        return
    if check.field(score, "key", loc, "str", required=True) and len(score["key"]) > SCORE_KEY_MAX:
        check.fail([*loc, "key"], "string_too_long", f"String should have at most {SCORE_KEY_MAX} characters")
    check.field(score, "score", loc, "number")
    check.field(score, "value", loc, "value")
    check.field(score, "comment", loc, "str")
    check.field(score, "correction", loc, "str_or_obj")
    for key in ("created_at", "modified_at"):
        check.field(score, key, loc, "time")
    if check.field(score, "feedback_source", loc, "obj"):
        check.field(score["feedback_source"], "type", [*loc, "feedback_source"], "str", required=True)
    if check.field(score, "feedback_config", loc, "obj"):
        _check_feedback_config(check, score["feedback_config"], [*loc, "feedback_config"])


def _check_feedback_config(check: Checker, config: dict, loc: list) -> None:
    kinds = ("continuous", "categorical", "freeform")
    if check.field(config, "type", loc, "str", required=True) and config["type"] not in kinds:
        check.fail([*loc, "type"], "enum", f"Input should be {', '.join(repr(k) for k in kinds)}")
    for key in ("min", "max"):
        check.field(config, key, loc, "number")
    if check.field(config, "categories", loc, "list"):
        for i, category in enumerate(config["categories"]):
            if not isinstance(category, dict):
                check.fail([*loc, "categories", i], "dict_type", "Input should be a valid dictionary")
                continue
            check.field(category, "value", [*loc, "categories", i], "number", required=True)
            check.field(category, "label", [*loc, "categories", i], "str")


# ---------------------------------------------------------------- multipart ingestion
def parse_multipart(body: bytes, content_type: str) -> list[tuple[str, str, bytes]]:
    """(name, content type, data) per part; enough for the SDK's /runs/multipart bodies."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise ApiError(400, "multipart body without a boundary")
    parts = []
    for chunk in body.split(b"--" + match.group(1).encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = dict(line.split(":", 1) for line in head.decode("latin-1").split("\r\n") if ":" in line)
        headers = {k.strip().lower(): v.strip() for k, v in headers.items()}
        name = re.search(r'name="([^"]*)"', headers.get("content-disposition", ""))
        if not name:
            raise ApiError(422, "multipart part without a name")
        parts.append((name.group(1), headers.get("content-type", ""), data.removesuffix(b"\r\n")))
    return parts


def ingest_multipart(store: Store, parts: list[tuple[str, str, bytes]]) -> None:
    """Parts are `post.{id}`, `patch.{id}`, `{op}.{id}.{field}`, `feedback.{id}`, `attachment.{id}.{name}`."""
    ops: dict[tuple[str, str], dict] = {}
    feedback = []
    for name, _, data in parts:
        kind, _, rest = name.partition(".")
        if kind == "attachment":
            continue  # attachments are accepted and dropped: nothing in the bridge reads them back
        try:
            value = json.loads(data)
        except ValueError:
            raise ApiError(422, f"part {name}: invalid JSON") from None
        if kind == "feedback":
            feedback.append(value)
        elif kind in ("post", "patch"):
            run_id, _, field = rest.partition(".")
            entry = ops.setdefault((kind, run_id), {"id": run_id})
            entry.update({field: value} if field else value)
        else:
            raise ApiError(422, f"unknown multipart part {name!r}")
    for (kind, run_id), run in sorted(ops.items(), key=lambda item: item[0][0] != "post"):
        if kind == "post":
            store.add_run(run, on_conflict="ignore")
        else:
            store.patch_run(as_uuid(run_id, "id"), run, missing="defer")
    for row in feedback:
        store.add_feedback(row, require_run=False)


def decompress(body: bytes, encoding: str) -> bytes:
    if encoding in ("", "identity"):
        return body
    if encoding == "zstd":
        try:
            import zstandard  # optional: only the SDK's compressed tracing sends zstd
        except ImportError:
            raise ApiError(415, "zstd bodies need the zstandard package") from None
        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    raise ApiError(415, f"unsupported Content-Encoding {encoding!r}")


# ---------------------------------------------------------------- routes
def build_app(store: Store) -> Starlette:
    r = Routes(store)
    routes = [
        Route("/info", r.info, methods=["GET"]),
        Route("/sessions", r.sessions_list, methods=["GET"]),
        Route("/sessions", r.session_create, methods=["POST"]),
        Route("/sessions/{session_id}", r.session_read, methods=["GET"]),
        Route("/sessions/{session_id}", r.session_update, methods=["PATCH"]),
        Route("/datasets", r.datasets_list, methods=["GET"]),
        Route("/datasets", r.dataset_create, methods=["POST"]),
        Route("/datasets/upload-experiment", r.upload_experiment, methods=["POST"]),
        Route("/datasets/{dataset_id}", r.dataset_read, methods=["GET"]),
        Route("/runs/query", r.runs_query, methods=["POST"]),
        Route("/runs/batch", r.runs_batch, methods=["POST"]),
        Route("/runs/multipart", r.runs_multipart, methods=["POST"]),
        Route("/runs", r.run_create, methods=["POST"]),
        Route("/runs/{run_id}", r.run_read, methods=["GET"]),
        Route("/runs/{run_id}", r.run_update, methods=["PATCH"]),
        Route("/feedback/tokens", r.tokens_create, methods=["POST"]),
        Route("/feedback/tokens", r.tokens_list, methods=["GET"]),
        Route("/feedback/tokens/{token_id}", r.token_submit_get, methods=["GET"]),
        Route("/feedback/tokens/{token_id}", r.token_submit_post, methods=["POST"]),
        Route("/feedback", r.feedback_list, methods=["GET"]),
        Route("/feedback", r.feedback_create, methods=["POST"]),
        Route("/feedback/{feedback_id}", r.feedback_read, methods=["GET"]),
        Route("/feedback/{feedback_id}", r.feedback_update, methods=["PATCH"]),
        Route("/feedback/{feedback_id}", r.feedback_delete, methods=["DELETE"]),
        Route("/_objects/{token}", r.object_read, methods=["GET"]),
    ]
    return Starlette(routes=[*routes, Mount(API_PREFIX, routes=routes)],
                     exception_handlers={ApiError: _api_error, HTTPException: _http_error})


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


def accepted() -> Response:
    # Ingestion is asynchronous in the real service; the SDK ignores the body.
    return JSONResponse({"message": "accepted"}, status_code=202)


class Routes:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def info(self, request: Request) -> Response:
        return JSONResponse(INFO)

    # ---- sessions
    async def sessions_list(self, request: Request) -> Response:
        q = request.query_params
        try:
            metadata = json.loads(q["metadata"]) if q.get("metadata") else None
        except ValueError:
            raise ApiError(422, "metadata: invalid JSON") from None
        found = self.store.list_sessions(
            ids=query_uuids(request, "id"), name=q.get("name"), name_contains=q.get("name_contains"),
            reference_datasets=query_uuids(request, "reference_dataset"),
            reference_free=query_bool(q.get("reference_free")), metadata=metadata,
            include_stats=bool(query_bool(q.get("include_stats"))))
        return JSONResponse(page(found, request))

    async def session_create(self, request: Request) -> Response:
        body = await json_object(request)
        if not isinstance(body.get("name"), str) or not body["name"]:
            raise ApiError(422, "name: field required")
        dataset_id = body.get("reference_dataset_id")
        return JSONResponse(self.store.create_session(
            body["name"], session_id=body.get("id"), description=body.get("description"), extra=body.get("extra"),
            reference_dataset_id=as_uuid(dataset_id, "reference_dataset_id") if dataset_id else None,
            start_time=body.get("start_time"), end_time=body.get("end_time"),
            upsert=bool(query_bool(request.query_params.get("upsert")))))

    async def session_read(self, request: Request) -> Response:
        with self.store.lock:
            session = self.store.get_session(as_uuid(request.path_params["session_id"], "session_id"))
            include_stats = bool(query_bool(request.query_params.get("include_stats")))
            return JSONResponse(self.store.session_view(session, include_stats))

    async def session_update(self, request: Request) -> Response:
        session_id = as_uuid(request.path_params["session_id"], "session_id")
        return JSONResponse(self.store.update_session(session_id, await json_object(request)))

    # ---- datasets
    async def datasets_list(self, request: Request) -> Response:
        found = self.store.list_datasets(ids=query_uuids(request, "id"), name=request.query_params.get("name"),
                                         name_contains=request.query_params.get("name_contains"))
        return JSONResponse(page(found, request))

    async def dataset_create(self, request: Request) -> Response:
        body = await json_object(request)
        if not isinstance(body.get("name"), str) or not body["name"]:
            raise ApiError(422, "name: field required")
        metadata = (body.get("extra") or {}).get("metadata") or body.get("metadata")
        return JSONResponse(self.store.create_dataset(
            body["name"], dataset_id=body.get("id"), description=body.get("description"), metadata=metadata,
            data_type=body.get("data_type") or "kv"))

    async def dataset_read(self, request: Request) -> Response:
        with self.store.lock:
            dataset = self.store.get_dataset(as_uuid(request.path_params["dataset_id"], "dataset_id"))
            return JSONResponse(self.store.dataset_view(dataset))

    async def upload_experiment(self, request: Request) -> Response:
        body = await json_body(request)
        errors = validate_upload(body)
        if errors:
            return JSONResponse({"detail": errors}, status_code=422)
        return JSONResponse(self.store.upload_experiment(body))

    # ---- runs
    async def runs_query(self, request: Request) -> Response:
        body = await json_object(request)
        if body.get("select") is not None and not isinstance(body["select"], list):
            raise ApiError(422, "select: expected a list of field names")
        limit = parse_limit(body.get("limit"))
        offset = decode_cursor(body.get("cursor"))
        found = self.store.query_runs(body)
        chosen = found[offset:offset + limit]
        with self.store.lock:
            runs = [self.store.run_view(run, select=body.get("select")) for run in chosen]
        more = offset + limit < len(found)
        return JSONResponse({"runs": runs, "cursors": {"next": encode_cursor(offset + limit) if more else None,
                                                       "prev": None}})

    async def run_read(self, request: Request) -> Response:
        with self.store.lock:
            run = self.store.get_run(as_uuid(request.path_params["run_id"], "run_id"))
            return JSONResponse(self.store.run_view(run))

    async def run_create(self, request: Request) -> Response:
        self.store.add_run(await json_object(request))
        return accepted()

    async def run_update(self, request: Request) -> Response:
        self.store.patch_run(as_uuid(request.path_params["run_id"], "run_id"), await json_object(request))
        return accepted()

    async def runs_batch(self, request: Request) -> Response:
        body = await json_object(request)
        for run in body.get("post") or []:
            self.store.add_run(run, on_conflict="ignore")
        for run in body.get("patch") or []:
            self.store.patch_run(as_uuid(run.get("id"), "id"), run, missing="defer")
        return accepted()

    async def runs_multipart(self, request: Request) -> Response:
        raw = decompress(await request.body(), request.headers.get("content-encoding", "").lower())
        parts = parse_multipart(raw, request.headers.get("content-type", ""))
        with self.store.lock:
            ingest_multipart(self.store, parts)
        return accepted()

    # ---- feedback
    async def feedback_list(self, request: Request) -> Response:
        sources = [source_type(v) for v in request.query_params.getlist("source")]
        found = self.store.list_feedback(run_ids=query_uuids(request, "run"),
                                         keys=request.query_params.getlist("key"), sources=sources,
                                         session_ids=query_uuids(request, "session"))
        return JSONResponse(page(found, request))

    async def feedback_create(self, request: Request) -> Response:
        return JSONResponse(self.store.add_feedback(await json_object(request)))

    async def feedback_read(self, request: Request) -> Response:
        with self.store.lock:
            return JSONResponse(public(self.store.get_feedback(as_uuid(request.path_params["feedback_id"], "id"))))

    async def feedback_update(self, request: Request) -> Response:
        changes = await json_object(request)
        with self.store.lock:
            row = self.store.get_feedback(as_uuid(request.path_params["feedback_id"], "id"))
            row.update({k: changes[k] for k in ("score", "value", "comment", "correction") if k in changes})
            row["modified_at"] = self.store.now().isoformat()
            return JSONResponse(public(row))

    async def feedback_delete(self, request: Request) -> Response:
        with self.store.lock:
            feedback_id = as_uuid(request.path_params["feedback_id"], "id")
            self.store.get_feedback(feedback_id)
            del self.store.feedback[feedback_id]
        return JSONResponse({})

    # ---- presigned feedback tokens
    def token_view(self, token: dict, request: Request) -> dict:
        url = f"{base_url(request)}{API_PREFIX}/feedback/tokens/{token['id']}"
        return {"id": token["id"], "url": url, "expires_at": token["expires_at"],
                "feedback_key": token["feedback_key"], "run_id": token["run_id"]}

    async def tokens_create(self, request: Request) -> Response:
        body = await json_body(request)
        specs = body if isinstance(body, list) else [body]
        with self.store.lock:
            views = [self.token_view(self.store.create_token(spec), request) for spec in specs]
        return JSONResponse(views if isinstance(body, list) else views[0])

    async def tokens_list(self, request: Request) -> Response:
        run_id = request.query_params.get("run_id")
        if not run_id:
            raise ApiError(422, "run_id: field required")
        tokens = self.store.tokens_for_run(as_uuid(run_id, "run_id"))
        return JSONResponse(page([self.token_view(t, request) for t in tokens], request))

    async def token_submit_get(self, request: Request) -> Response:
        q = request.query_params
        data = {"score": query_score(q.get("score")), "value": q.get("value"), "comment": q.get("comment"),
                "correction": q.get("correction")}
        self.store.submit_token(as_uuid(request.path_params["token_id"], "token"), data)
        return JSONResponse({})

    async def token_submit_post(self, request: Request) -> Response:
        body = await json_body(request) or {}
        if not isinstance(body, dict):
            raise ApiError(422, "body: expected a JSON object")
        self.store.submit_token(as_uuid(request.path_params["token_id"], "token"), body)
        return JSONResponse({})

    # ---- stored objects (stand-ins for S3 presigned URLs)
    async def object_read(self, request: Request) -> Response:
        data = self.store.objects.get(request.path_params["token"])
        if data is None:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return Response(data, media_type="application/json")


def query_score(text: str | None) -> Any:
    if text is None or text == "":
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    raise ApiError(422, f"score: not a number: {text!r}")


# ---------------------------------------------------------------- the emulator
class LangSmithEmulator:
    """A LangSmith stand-in on loopback. `api_keys=None` accepts any non-empty key; `rate_limits=False` turns the
    limiter off, `rate_limit_scale` multiplies every limit, `set_rate_limit` overrides one rule; `object_urls`
    chooses absolute or API-root-relative URLs for offloaded run inputs/outputs."""

    def __init__(self, api_keys: set[str] | None = None, *, rate_limits: bool = True,
                 tenant_id: str = DEFAULT_TENANT_ID, rate_limit_scale: float = 1.0,
                 object_urls: str = "absolute") -> None:
        self.store = Store(tenant_id, object_urls=object_urls)
        self.limiter = RateLimiter(enabled=rate_limits, scale=rate_limit_scale)
        self.recorder = Recorder(WebPages(Gate(build_app(self.store), api_keys, self.limiter), self.store))
        self.handle: ServerHandle | None = None

    # ---- serving
    def serve(self) -> ServerHandle:
        if self.handle is None:
            self.handle = ServerHandle(self.recorder).start()
            self.store.base_url = self.handle.url
        return self.handle

    @property
    def url(self) -> str:
        if self.handle is None:
            raise RuntimeError("the emulator is not served yet: call serve()")
        return self.handle.url

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.stop()
            self.handle = None

    # ---- knobs for tests
    def set_rate_limit(self, rule: str, *, limit: int, window: float) -> None:
        """Override one rule: "runs_query", "run_read", "feedback_create" or "default"."""
        self.limiter.set(rule, limit=limit, window=window)

    def advance_clock(self, seconds: float) -> None:
        """Move the emulator's clock (token expiry, timestamps) forward without sleeping."""
        with self.store.lock:
            self.store.clock_offset += dt.timedelta(seconds=seconds)

    # ---- seeding and inspection
    def create_project(self, name: str, *, metadata: dict | None = None, description: str | None = None) -> dict:
        return self.store.create_session(name, description=description,
                                         extra={"metadata": metadata} if metadata else None)

    def create_dataset(self, name: str, *, externally_managed: bool = False, description: str | None = None) -> dict:
        return self.store.create_dataset(name, externally_managed=externally_managed, description=description)

    def add_run(self, run: dict, *, offload: bool = False) -> dict:
        """Store a run dict shaped like the webhook payload's (missing fields are derived). `offload=True` keeps
        inputs/outputs behind `/_objects/...` URLs and nulls them in `webhook_payload`."""
        return self.store.add_run(run, offload=offload)

    def add_feedback(self, run_id: str, key: str, *, score: Any = None, value: Any = None, comment: str | None = None,
                     correction: Any = None, source_type: str = "api") -> dict:
        source = {"type": source_type, "metadata": {}, "user_id": None, "user_name": None}
        return self.store.add_feedback({"run_id": run_id, "key": key, "score": score, "value": value,
                                        "comment": comment, "correction": correction, "feedback_source": source})

    def get_run(self, run_id: str) -> dict:
        with self.store.lock:
            return self.store.run_view(self.store.get_run(as_uuid(run_id, "run_id")))

    def feedback_for(self, run_id: str) -> list[dict]:
        return self.store.list_feedback(run_ids=[as_uuid(run_id, "run_id")], keys=[], sources=[], session_ids=[])

    def experiments(self, dataset_name: str) -> list[dict]:
        return self.store.experiments(dataset_name)

    def webhook_payload(self, rule_id: str, run_ids: list[str]) -> dict:
        """The body LangSmith POSTs for an automation rule's webhook (seed 000)."""
        with self.store.lock:
            unknown = [run_id for run_id in run_ids if as_uuid(run_id, "run_id") not in self.store.runs]
            if unknown:
                raise KeyError(f"no such runs: {unknown}")
            runs = [self.store.runs[as_uuid(run_id, "run_id")] for run_id in run_ids]
            starts = [parse_time(r["start_time"]) for r in runs] or [self.store.now()]
            ends = [parse_time(r["end_time"] or r["start_time"]) for r in runs] or [self.store.now()]
            rows = [f for f in self.store.feedback.values() if f["run_id"] in {r["id"] for r in runs}]
            return {"rule_id": rule_id, "start_time": min(starts).isoformat(), "end_time": max(ends).isoformat(),
                    "runs": [self.store.run_view(r, for_webhook=True) for r in runs],
                    "feedback_stats": feedback_stats(rows)}
