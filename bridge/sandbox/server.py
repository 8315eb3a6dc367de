"""What both emulators share: serving an ASGI app on loopback, recording requests, injecting faults.

Each emulator wraps its Starlette app in `Recorder`, which:
- records every request (method, path, query, status, body size) so tests can count upstream calls;
- applies injected faults: a status for the next N matching requests (optionally with `Retry-After`),
  a delay, or a dropped connection (the response is cut off mid-body, which clients see as a broken
  connection);
- adds a global latency to every request (used by the benchmarks to emulate a real network);
- serves a small admin API under `/_admin/` that is never recorded and never faulted:
    GET    /_admin/requests            -> {"requests": [...]}
    DELETE /_admin/requests            -> clears the log
    POST   /_admin/faults  {method?, path (regex, searched), status?, times?, retry_after?, delay?, drop?, after?}
    DELETE /_admin/faults              -> clears faults
    POST   /_admin/latency {seconds}
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import logging

import uvicorn

ADMIN_PREFIX = "/_admin/"


class _InjectedDropFilter(logging.Filter):
    """Keeps uvicorn from printing a traceback for every connection we drop on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, InjectedDrop)


class InjectedDrop(ConnectionAbortedError):
    pass


logging.getLogger("uvicorn.error").addFilter(_InjectedDropFilter())


@dataclass
class Fault:
    path: str
    method: str | None = None
    status: int | None = None
    times: int = 1
    retry_after: float | None = None
    delay: float = 0.0
    drop: bool = False
    body: str | None = None
    after: bool = False  # let the emulator do the work first, then fail the answer (a lost response)

    def __post_init__(self) -> None:
        if self.status is None and not self.drop and not self.delay:
            raise ValueError(f"a fault needs a status, a delay or drop=True, got {self!r}")
        if self.times < 1:
            raise ValueError(f"times must be >= 1, got {self.times!r}")
        self._pattern = re.compile(self.path)

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method) and bool(self._pattern.search(path))


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    status: int
    body_bytes: int
    at: float
    headers: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "query": self.query, "status": self.status,
                "body_bytes": self.body_bytes, "at": self.at, "headers": self.headers}


class Recorder:
    """ASGI middleware: request log, fault injection and latency for one emulator."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.latency = 0.0
        self._lock = threading.Lock()

    # ---- programmatic API (tests in the same process) ----
    def add_fault(self, path: str, **kwargs: Any) -> Fault:
        fault = Fault(path=path, **kwargs)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self.faults.clear()
            self.latency = 0.0

    def count(self, method: str | None = None, path: str = "", status: int | None = None) -> int:
        """Number of recorded requests whose path matches the regex `path` (and method/status if given)."""
        pattern = re.compile(path)
        with self._lock:
            return sum(
                1 for r in self.requests
                if (method is None or r.method == method.upper()) and pattern.search(r.path)
                and (status is None or r.status == status)
            )

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    # ---- ASGI ----
    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path.startswith(ADMIN_PREFIX):
            await self._admin(scope, receive, send)
            return
        method = scope["method"]
        if self.latency:
            await asyncio.sleep(self.latency)
        record = RecordedRequest(method, path, scope.get("query_string", b"").decode("latin-1"), 0, 0, time.time(),
                                 _headers(scope))
        with self._lock:
            self.requests.append(record)
        receive = _counting_receive(receive, record)
        fault = self._take_fault(method, path)
        if fault is not None and fault.after:
            await self.app(scope, receive, _discarding_send)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.drop:
                record.status = -1
                await _drop(send)
                return
            if fault.status is not None:
                record.status = fault.status
                await _fault_response(send, fault)
                return

        async def recording_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)

        await self.app(scope, receive, recording_send)

    async def _admin(self, scope: dict, receive: Any, send: Any) -> None:
        method, path = scope["method"], scope["path"][len(ADMIN_PREFIX):].strip("/")
        body = await _read_body(receive)
        try:
            payload = json.loads(body) if body else {}
            result = self._admin_action(method, path, payload)
        except (ValueError, TypeError) as exc:
            await _json(send, 400, {"error": str(exc)})
            return
        if result is None:
            await _json(send, 404, {"error": f"no admin route {method} /_admin/{path}"})
            return
        await _json(send, 200, result)

    def _admin_action(self, method: str, path: str, payload: dict) -> dict | None:
        if path == "requests" and method == "GET":
            with self._lock:
                return {"requests": [r.as_dict() for r in self.requests]}
        if path == "requests" and method == "DELETE":
            with self._lock:
                self.requests.clear()
            return {"ok": True}
        if path == "faults" and method == "POST":
            if "path" not in payload:
                raise ValueError("a fault needs 'path' (a regex searched in the request path)")
            self.add_fault(**payload)
            return {"ok": True}
        if path == "faults" and method == "DELETE":
            with self._lock:
                self.faults.clear()
            return {"ok": True}
        if path == "latency" and method == "POST":
            self.latency = float(payload.get("seconds", 0))
            return {"ok": True}
        return None


CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "x-webhook-secret", "cookie"})


def _headers(scope: dict) -> dict[str, str]:
    """Request headers as recorded: credentials show as '***' so a test can see one was sent, never its value."""
    headers = {}
    for key, value in scope["headers"]:
        name = key.decode("latin-1").lower()
        headers[name] = "***" if name in CREDENTIAL_HEADERS else value.decode("latin-1")
    return headers


async def _discarding_send(message: dict) -> None:
    """Swallows the emulator's real answer when a fault replaces it after the work was done."""


def _counting_receive(receive: Any, record: RecordedRequest) -> Any:
    async def wrapped() -> dict:
        message = await receive()
        record.body_bytes += len(message.get("body", b""))
        return message
    return wrapped


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _json(send: Any, status: int, payload: Any, headers: list | None = None) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


async def _fault_response(send: Any, fault: Fault) -> None:
    headers = []
    if fault.retry_after is not None:
        # urllib3 only accepts whole seconds in Retry-After
        headers.append((b"retry-after", str(math.ceil(fault.retry_after)).encode()))
    message = fault.body or f"injected fault: {fault.status}"
    await _json(send, fault.status or 500, {"error": message, "detail": message}, headers)


async def _drop(send: Any) -> None:
    # Promise a body and cut it short: the client sees the connection break mid-response.
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")]})
    await send({"type": "http.response.body", "body": b"{", "more_body": True})
    raise InjectedDrop("injected dropped connection")


class ServerHandle:
    """An ASGI app served by uvicorn in a daemon thread on a loopback port."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets that say so, and without it every answer
        # waits ~40 ms for a delayed ACK.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_keep_alive=30)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name=f"emulator:{self.port}")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> "ServerHandle":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"emulator on {self.url} did not start within {timeout}s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
