"""The Hub emulator's HTTP layer: who may do what, and how requests are routed and errors answered.

`HubHTTP` is a mixin of `HubEmulator` (hub.py), kept apart from the route handlers so each route group reads as
what it does, not how auth and errors work. It holds the auth checks every route starts with (token -> user, repo
visibility, write rights, the Hub's 401-versus-404 answer for repos a caller cannot read), the dispatcher that
matches the raw path against the route table and turns `HubHTTPError` / `StoreError` into the Hub's status codes
and `X-Error-Code` headers (which `hf_raise_for_status` maps to typed errors), and the request and answer helpers
all route groups share (JSON bodies, `Link` pagination).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Awaitable, Callable
from urllib.parse import quote, unquote, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.sandbox.hub_store import (EntryNotFound, HubStore, InvalidName, ParentMismatch, Repo, RepoExists,
                                      RevisionNotFound, StoreError)

log = logging.getLogger("bridge.sandbox.hub")  # the emulator's one logger, named as before hub.py was split

URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
READ_ONLY_TOKEN = re.compile(r"(^|[_-])read([_-]|$)", re.IGNORECASE)
COMMIT_CONFLICT = "A commit has happened since. Please refresh and try again."

_UNENCODED_REF = re.compile(r"(pr/\d+|heads/[^/]+|tags/[^/]+|convert/[^/]+)(?:/(.*))?$")


def split_revision(rest: str) -> tuple[str, str]:
    """`refs%2Fpr%2F1/a/b.txt` (how the client quotes it) or `refs/pr/1/a/b.txt` -> ("refs/pr/1", "a/b.txt")."""
    head, _, tail = rest.partition("/")
    revision = unquote(head)
    if revision == "refs":
        match = _UNENCODED_REF.match(tail)
        if match:
            revision, tail = f"refs/{match[1]}", match[2] or ""
    return revision, unquote(tail)


RouteTable = list[tuple[set[str], re.Pattern, Callable[..., Awaitable[Response]]]]


class HubHTTPError(Exception):
    """An error answer: JSON `{"error": message}` plus the `X-Error-Code` / `X-Error-Message` headers."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}

    def response(self) -> Response:
        headers = {"X-Error-Message": header_safe(self.message), **self.headers}
        if self.code:
            headers["X-Error-Code"] = self.code
        return JSONResponse({"error": self.message}, self.status, headers=headers)


def header_safe(text: str) -> str:
    """Header values must be one latin-1 line (YAML errors span several)."""
    return " ".join(text.split()).encode("latin-1", "replace").decode("latin-1")


def flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true")


class HubHTTP:
    """Auth and request plumbing for the route groups; `HubEmulator` provides the attributes annotated here."""

    store: HubStore
    tokens: dict[str, str]
    orgs: dict[str, list[str]]
    _routes: RouteTable

    # ================= auth =================

    def _user(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        if not header:
            return None
        user = self.tokens.get(header.removeprefix("Bearer").strip())
        if user is None:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        return user

    @staticmethod
    def _token(request: Request) -> str:
        return request.headers.get("authorization", "").removeprefix("Bearer").strip()

    def _member(self, user: str | None, namespace: str) -> bool:
        return user is not None and (user == namespace or user in self.orgs.get(namespace, ()))

    def _can_read(self, user: str | None, repo: Repo) -> bool:
        return not repo.private or self._member(user, repo.namespace)

    @staticmethod
    def _repo_not_found(user: str | None) -> HubHTTPError:
        # hf_raise_for_status turns a bare 401 on repo routes into RepositoryNotFoundError only for https:// URLs;
        # the explicit code gives the same error class on this http:// emulator.
        if user is None:
            return HubHTTPError(401, "Invalid username or password.", "RepoNotFound")
        return HubHTTPError(404, "Repository not found", "RepoNotFound")

    def _readable(self, request: Request, type: str, repo: str) -> tuple[Repo, str | None]:
        user = self._user(request)
        found = self.store.repos.get((type.removesuffix("s"), unquote(repo)))
        if found is None or not self._can_read(user, found):
            raise self._repo_not_found(user)
        return found, user

    def _writable(self, request: Request, type: str, repo: str) -> tuple[Repo, str]:
        found, user = self._readable(request, type, repo)
        if user is None:
            raise self._repo_not_found(None)
        if not self._member(user, found.namespace) or READ_ONLY_TOKEN.search(self._token(request)):
            raise HubHTTPError(403, f"You don't have the rights to write to {found.type} {found.id}")
        return found, user

    def _authenticated(self, request: Request, type: str, repo: str) -> tuple[Repo, str]:
        """Discussions, comments and PRs: any valid token that can read the repo."""
        found, user = self._readable(request, type, repo)
        if user is None:
            raise self._repo_not_found(None)
        return found, user

    # ================= HTTP plumbing =================

    async def _asgi(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = await self._dispatch(request)
        await response(scope, receive, send)

    async def _dispatch(self, request: Request) -> Response:
        # Match on the raw path: revisions arrive URL-quoted (`refs%2Fpr%2F1`) and must stay one segment.
        raw = (request.scope.get("raw_path") or quote(request.url.path).encode()).decode("latin-1").split("?")[0]
        allowed: set[str] = set()
        for methods, pattern, handler in self._routes:
            match = pattern.fullmatch(raw)
            if match is None:
                continue
            if request.method not in methods:
                allowed |= methods
                continue
            try:
                return await handler(request, **match.groupdict())
            except HubHTTPError as exc:
                return exc.response()
            except StoreError as exc:
                return self._store_error(exc).response()
            except Exception:
                log.exception("hub emulator: %s %s failed", request.method, raw)
                return HubHTTPError(500, "Internal Error - the sandbox Hub crashed, see its log").response()
        if allowed:
            allow = {"Allow": ", ".join(sorted(allowed))}
            return HubHTTPError(405, f"Method {request.method} not allowed", headers=allow).response()
        return HubHTTPError(404, "Sorry, we can't find the page you are looking for.").response()

    @staticmethod
    def _store_error(exc: StoreError) -> HubHTTPError:
        if isinstance(exc, RevisionNotFound):
            return HubHTTPError(404, f"Invalid rev id: {exc}", "RevisionNotFound")
        if isinstance(exc, EntryNotFound):
            return HubHTTPError(404, f"Entry not found: {exc}", "EntryNotFound")
        if isinstance(exc, ParentMismatch):
            return HubHTTPError(412, COMMIT_CONFLICT)
        if isinstance(exc, (InvalidName, RepoExists)):
            return HubHTTPError(400, str(exc))
        return HubHTTPError(404, str(exc))

    @staticmethod
    async def _json(request: Request) -> dict:
        try:
            body = await request.json()
        except ValueError as exc:
            raise HubHTTPError(400, f"Invalid JSON body: {exc}") from exc
        if not isinstance(body, dict):
            raise HubHTTPError(400, "Expected a JSON object")
        return body

    @staticmethod
    def _base_of(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def _paginate(self, request: Request, items: list, size: int,
                  render: Callable[[list], list] = lambda page: page) -> Response:
        """One page of `items`, with a `Link: <...>; rel="next"` header while more remain (as the Hub does)."""
        try:
            start = int(request.query_params.get("cursor") or 0)
        except ValueError:
            raise HubHTTPError(400, "Invalid cursor") from None
        headers = {}
        if start + size < len(items):
            query = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
            raw = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
            next_url = f"{self._base_of(request)}{raw}?{urlencode(query + [('cursor', str(start + size))])}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        return JSONResponse(render(items[start:start + size]), headers=headers)
