"""The LangSmith emulator's HTTP API: the Starlette app (`build_app`), its route handlers and request helpers.

Every route is served both bare (`/sessions`, what the SDK sends against a bare root) and under `/api/v1`. Handlers
parse and check the request, then call the store; `ApiError` raised anywhere becomes a `{"detail": ...}` answer.
Upload validation is in langsmith_upload.py, multipart ingestion in langsmith_multipart.py.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from bridge.sandbox.langsmith_common import API_PREFIX, ApiError, as_uuid, public
from bridge.sandbox.langsmith_multipart import decompress, ingest_multipart, parse_multipart
from bridge.sandbox.langsmith_store import Store
from bridge.sandbox.langsmith_upload import validate_upload
from bridge.sandbox.langsmith_rules import RuleBook, RuleRoutes
from bridge.sandbox.langsmith_v2 import V2Routes

MAX_LIMIT = 100
INFO = {"version": "0.10.0", "license_expiration_time": None, "instance_flags": {}}


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


def build_app(store: Store) -> Starlette:
    r = Routes(store)
    store.rule_book = RuleBook(store)
    routes = [*RuleRoutes(store.rule_book).routes(),
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
    return Starlette(routes=[*V2Routes(store).routes(), *routes, Mount(API_PREFIX, routes=routes)],
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


