"""Webhook handlers: authenticate, read, parse, route, store, answer. Never an upstream call.

Every answer is chosen to make the sender do the right thing: a well-formed event we do not want is 200 `ignored`
(a non-2xx makes the Hub retry and eventually suspend the webhook; LangSmith never retries a 4xx), and a 2xx is only
sent once the delivery and its jobs are committed to SQLite.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import anyio
from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import SecretStr

from . import __version__, feedback_page
from .events import PayloadError, parse_hub_delivery, parse_rule_delivery, read_rule_delivery
from .db import WriteBusy
from .jobs import JobStore
from .routing import CancelQueued, Ignored, route_hub, route_rule
from .settings import BridgeConfig

log = logging.getLogger("bridge.web")

MAX_BODY_BYTES = 10 * 1024 * 1024
INLINE_MAX_BYTES = 1024 * 1024  # a full JSON parse of this much takes ~5 ms: the most the event loop may spend
SECRET_HEADER = "x-webhook-secret"
BUSY_PAUSES = (0.0, 0.0005, 0.001, 0.002, 0.004)  # seconds the event loop waits, each time the write lock is held


class Rejection(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message
        super().__init__(message)


def _secrets_match(expected: SecretStr, offered: list[str]) -> bool:
    want = expected.get_secret_value().encode()
    # Every offered value must match: a request carrying a right and a wrong secret is refused.
    results = [hmac.compare_digest(want, value.encode()) for value in offered]
    return all(results)


def check_secret(expected: SecretStr | None, offered: list[str]) -> None:
    """401 when no secret was offered, 403 when one is wrong. An unset secret leaves the endpoint open."""
    if expected is None:
        return
    if not offered:
        raise Rejection(401, "missing webhook secret")
    if not _secrets_match(expected, offered):
        raise Rejection(403, "invalid webhook secret")


def header_secrets(request: Request) -> list[str]:
    return request.headers.getlist(SECRET_HEADER)


def header_or_query_secrets(request: Request) -> list[str]:
    return header_secrets(request) + request.query_params.getlist("secret")


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Rejection(413, f"body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Rejection(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejection(400, "body is not valid UTF-8") from None


def parse_json(text: str) -> object:
    try:
        return json.loads(text)
    except RecursionError:
        raise Rejection(400, "body is nested too deeply") from None
    except ValueError as exc:
        raise Rejection(400, f"body is not JSON: {exc}") from None


@dataclass
class WebhookEndpoint:
    """One webhook source: how to authenticate it, parse it and route it to jobs."""

    source: str
    secret: SecretStr | None
    offered_secrets: Callable[[Request], list[str]]
    parse: Callable[[object], object]
    route: Callable[[object], object]
    store: JobStore
    on_answer: Callable[[str, str, float], None] | None = None
    fast_parse: Callable[[bytes], object | None] | None = None  # None: cannot tell, `parse` decides

    async def __call__(self, request: Request) -> JSONResponse:
        started = anyio.current_time()
        try:
            check_secret(self.secret, self.offered_secrets(request))
            raw = await read_body(request)
            status, body = await self._accept_soon(raw)
        except Rejection as exc:
            status, body = exc.status, {"status": "rejected", "error": exc.message}
        if self.on_answer:
            self.on_answer(self.source, body["status"], anyio.current_time() - started)
        return JSONResponse(body, status_code=status)

    async def _accept_soon(self, raw: bytes) -> tuple[int, dict]:
        """On the event loop when the body is small (about a tenth of a millisecond): a thread hop would cost more
        than the work, and concurrent deliveries would trade the GIL back and forth. While another thread holds the
        database's write lock (a job's or another delivery's transaction, usually well under a millisecond), the
        loop serves other requests and tries again a few times before this delivery takes a thread of its own; a
        big body is parsed in a thread too, so the event loop never waits for a job's transaction or a big parse.
        (One thread for all of them was tried: 32 deliveries then took turns with the jobs for the write lock, 1.2 s
        for the last. Going to a thread at the first busy lock made deliveries at c=32 queue behind each other's
        thread hops.)"""
        if len(raw) > INLINE_MAX_BYTES:
            return await anyio.to_thread.run_sync(self._accept, raw, True)
        prepared = self._guarded(self._prepare, raw)
        for pause in BUSY_PAUSES:
            try:
                return self._guarded(self._record, prepared, False)
            except WriteBusy:
                await anyio.sleep(pause)
        return await anyio.to_thread.run_sync(self._guarded, self._record, prepared, True)

    def _accept(self, raw: bytes, wait: bool) -> tuple[int, dict]:
        return self._guarded(self._store, raw, wait)

    @staticmethod
    def _guarded(step: Callable, *args: Any) -> Any:
        try:
            return step(*args)
        except UnicodeEncodeError:
            raise Rejection(400, "body contains text that is not valid Unicode (an unpaired surrogate escape)") from None
        except RecursionError:
            raise Rejection(400, "body is nested too deeply") from None

    def _store(self, raw: bytes, wait: bool) -> tuple[int, dict]:
        return self._record(self._prepare(raw), wait)

    def _prepare(self, raw: bytes) -> tuple[str, object]:
        """Decoded, parsed and routed: (text, what `route` answered)."""
        text = decode(raw)
        try:
            delivery = (self.fast_parse and self.fast_parse(raw)) or self.parse(parse_json(text))
        except PayloadError as exc:
            raise Rejection(422, str(exc)) from None
        return text, self.route(delivery)

    def _record(self, prepared: tuple[str, object], wait: bool) -> tuple[int, dict]:
        """Stores the delivery and its jobs; with `wait=False`, raises WriteBusy (nothing stored) when another thread
        is writing."""
        text, routed = prepared
        if isinstance(routed, CancelQueued):
            cancelled = self.store.record_cancelling_delivery(self.source, text, routed.key_prefix, routed.reason,
                                                              wait=wait)
            return 200, {"status": "cancelled", "reason": routed.reason, "job_ids": cancelled}
        if isinstance(routed, Ignored):
            self.store.record_delivery(self.source, text, None, routed.reason, wait=wait)
            return 200, {"status": "ignored", "reason": routed.reason}
        outcome, job_ids = self.store.record_delivery(self.source, text, routed, wait=wait)
        return (202 if outcome == "queued" else 200), {"status": outcome, "job_ids": job_ids}


class _OwnCommits:
    def __init__(self, store: JobStore) -> None:
        self.store = store

    def __contains__(self, oid: object) -> bool:
        return isinstance(oid, str) and self.store.is_own_commit(oid)


def hub_endpoint(store: JobStore, config: BridgeConfig, secret: SecretStr | None, **kw) -> WebhookEndpoint:
    own = _OwnCommits(store)
    return WebhookEndpoint("hub", secret, header_secrets, parse_hub_delivery,
                           lambda d: route_hub(d, config, own), store, **kw)


def langsmith_endpoint(store: JobStore, config: BridgeConfig, secret: SecretStr | None, **kw) -> WebhookEndpoint:
    return WebhookEndpoint("langsmith", secret, header_or_query_secrets, parse_rule_delivery,
                           lambda d: route_rule(d, config), store, fast_parse=read_rule_delivery, **kw)


def healthz(store: JobStore, missing: Callable[[], list[str]], buffered: Callable[[], int] = lambda: 0,
            workers: Callable[[], dict] | None = None) -> Callable:
    """Job counts (queued = due now, scheduled = due later), rows waiting in the export buffers, unset credentials,
    the state dir's size and whether the workers are alive: what a monitor or a person needs to tell "idle" from
    "stuck". No names, no secrets."""
    def snapshot() -> dict:
        state = {"jobs": store.counts(), "buffered_rows": buffered(), "state_bytes": store.db.size_bytes()}
        return state | ({"workers": workers()} if workers is not None else {})

    async def handler() -> JSONResponse:
        state = await anyio.to_thread.run_sync(snapshot)
        return JSONResponse({"status": "ok", "version": __version__, **state, "missing": missing()})
    return handler


def feedback_routes(runtime: Any) -> tuple[Callable, Callable]:
    """GET and POST of the bridge's feedback page `/feedback/{token_id}` (see `feedback_page`). The GET only reads;
    the POST stores a `feedback` job (the flow makes the LangSmith call) and redirects to the GET, which follows it."""
    from .actions import enqueue_feedback

    def now() -> datetime:
        return datetime.fromtimestamp(runtime.store.clock(), timezone.utc)

    def own_job(token_id: str, job_id: str | None) -> Any:
        """The submission `job_id` names, only when it is a feedback job for this very token."""
        if not job_id or not job_id.isdigit():
            return None
        try:
            job = runtime.store.get(int(job_id))
        except KeyError:
            return None
        return job if job.kind == "feedback" and job.payload.get("token_id") == token_id else None

    async def show(token_id: str, request: Request) -> HTMLResponse:
        link = await anyio.to_thread.run_sync(runtime.ledger.feedback_token, token_id)
        if link is None:
            return page_response(feedback_page.unknown_page(), 404)
        job = await anyio.to_thread.run_sync(own_job, token_id, request.query_params.get("job"))
        return page_response(feedback_page.feedback_html(link, now(), job=job))

    async def submit(token_id: str, request: Request) -> Response:
        link = await anyio.to_thread.run_sync(runtime.ledger.feedback_token, token_id)
        if link is None:
            return page_response(feedback_page.unknown_page(), 404)
        fields, problem = feedback_page.read_form(dict(await request.form()), token_id)
        if feedback_page.expired(link, now()):
            return page_response(feedback_page.feedback_html(link, now()), 410)
        if problem:
            return page_response(feedback_page.feedback_html(link, now(), problem=problem), 400)
        job = await anyio.to_thread.run_sync(
            lambda: enqueue_feedback(runtime.store, token_id, link["run_id"], link["feedback_key"], **fields))
        # relative to /feedback/: the page again, following the job
        return RedirectResponse(f"{quote(token_id)}?job={job.id}", status_code=303)

    return show, submit


def page_response(text: str, status: int = 200) -> HTMLResponse:
    # no-store: the page shows a run; no-referrer: the token id in the address goes nowhere else.
    return HTMLResponse(text, status_code=status, headers={
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex, nofollow",
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                                   "frame-ancestors 'none'"})
