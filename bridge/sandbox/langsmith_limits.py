"""Who gets through to the LangSmith emulator's API: the API-key check and LangSmith cloud's rate limits.

`Gate` is ASGI middleware in front of the routes; `RateLimiter` keeps a sliding-window log per (API key, rule) and
`rate_rule` names the rule a request counts against. Token submissions and stored-object URLs need no key, like the
presigned URLs they stand in for.
"""

from __future__ import annotations

import collections
import math
import re
import threading
import time
from typing import Any

from starlette.responses import JSONResponse, Response

from bridge.sandbox.langsmith_common import API_PREFIX

# (limit, window seconds) per rule; see langsmith.md.
RATE_LIMITS = {"runs_query": (15, 10.0), "run_read": (30, 60.0), "feedback_create": (2000, 10.0),
               "default": (1000, 10.0)}


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
    # The v2 routes' limits are not published; they are taken to be the v1 ones they replace.
    if method == "POST" and path in ("/runs/query", "/api/v2/runs/query"):
        return "runs_query"
    if method == "GET" and re.fullmatch(r"(/api/v2)?/runs/[^/]+", path):
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

