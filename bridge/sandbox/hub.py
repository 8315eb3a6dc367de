"""A local Hugging Face Hub: the routes huggingface_hub's HfApi / hf_hub_download call, and webhook deliveries.

Answers like the real Hub as seen by huggingface_hub 2.4 (shapes, status codes, `X-Error-Code` headers so
`hf_raise_for_status` raises the same typed errors, `Link` pagination), backed by `HubStore` on disk.

    emulator = HubEmulator(tmp_path, tokens={"hf_sandbox_token": "sandbox-user"}, orgs={"acme": ["sandbox-user"]})
    handle = emulator.serve()
    api = HfApi(endpoint=handle.url, token="hf_sandbox_token")

Auth: `Authorization: Bearer <token>`; a token matching `(^|[_-])read([_-]|$)` (e.g. `hf_read_x`) is read-only.
Public repos are readable anonymously; private ones only by their owner / org members (anonymous callers get
401, others 404, both `X-Error-Code: RepoNotFound`, as on the Hub). Writes need the owner or an org member.
Opening discussions / PRs and commenting need any valid token that can read the repo.

Webhooks (payload version 3) are delivered from one background thread, in order; see `deliveries`.
Every `Link`-paginated listing (tree, commits, repo search) uses `tree_page_size` entries per page
(50 at most for `expand=true` trees, like the Hub).
"""

from __future__ import annotations

import base64
import json
import logging
import mimetypes
import queue
import re
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, quote, unquote, urlencode

import requests
import yaml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.sandbox.hub_store import (HubStore, InvalidName, ParentMismatch, Repo, RepoExists, RevisionNotFound,
                                      EntryNotFound, StoreError, branch_ref, object_id, random_id)
from bridge.sandbox.server import Recorder, ServerHandle

log = logging.getLogger(__name__)

URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_READ_ONLY_TOKEN = re.compile(r"(^|[_-])read([_-]|$)", re.IGNORECASE)
_UNENCODED_REF = re.compile(r"(pr/\d+|heads/[^/]+|tags/[^/]+|convert/[^/]+)(?:/(.*))?$")
DISCUSSIONS_PER_PAGE = 50
DELIVERY_TIMEOUT = 5.0
COMMIT_CONFLICT = "A commit has happened since. Please refresh and try again."


class HubHTTPError(Exception):
    """An error answer: JSON `{"error": message}` plus the `X-Error-Code` / `X-Error-Message` headers."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}

    def response(self) -> Response:
        headers = {"X-Error-Message": _header_safe(self.message), **self.headers}
        if self.code:
            headers["X-Error-Code"] = self.code
        return JSONResponse({"error": self.message}, self.status, headers=headers)


def _header_safe(text: str) -> str:
    """Header values must be one latin-1 line (YAML errors span several)."""
    return " ".join(text.split()).encode("latin-1", "replace").decode("latin-1")


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true")


def _split_revision(rest: str) -> tuple[str, str]:
    """`refs%2Fpr%2F1/a/b.txt` (how the client quotes it) or `refs/pr/1/a/b.txt` -> ("refs/pr/1", "a/b.txt")."""
    head, _, tail = rest.partition("/")
    revision = unquote(head)
    if revision == "refs":
        match = _UNENCODED_REF.match(tail)
        if match:
            revision, tail = f"refs/{match[1]}", match[2] or ""
    return revision, unquote(tail)


def _front_matter(text: str) -> dict | None:
    """The YAML header of a README (None when there is none); raises yaml.YAMLError / ValueError when invalid."""
    if not text.startswith("---"):
        return None
    end = text.find("\n---", 3)
    if end < 0:
        return None
    data = yaml.safe_load(text[3:end]) or {}
    if not isinstance(data, dict):
        raise ValueError("metadata must be a YAML mapping")
    return data


class HubEmulator:
    def __init__(self, root: Path, tokens: dict[str, str] | None = None, orgs: dict[str, list[str]] | None = None,
                 tree_page_size: int = 1000) -> None:
        self.store = HubStore(Path(root))
        self.tokens = dict(tokens or {})
        self.orgs = {name: list(members) for name, members in (orgs or {}).items()}
        self.tree_page_size = tree_page_size
        self.base_url: str | None = None  # set by serve(); used for URLs in webhook payloads sent by helpers
        self.deliveries: list[dict] = []
        self._deliveries_lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._pending = 0
        self._idle = threading.Condition()
        self._worker: threading.Thread | None = None
        self._http = requests.Session()
        self._http.trust_env = False  # a proxy from the environment must never see loopback deliveries
        self._routes = self._route_table()
        self.recorder = Recorder(self._asgi)

    def serve(self, port: int = 0) -> ServerHandle:
        handle = ServerHandle(self.recorder, port=port).start()
        self.base_url = handle.url
        return handle

    # ================= seeding / inspection helpers (no HTTP; they fire webhooks) =================

    def create_repo(self, repo_id: str, repo_type: str = "dataset", private: bool = False) -> None:
        """Create the repo (with the Hub's "initial commit"); a no-op when it already exists."""
        if (repo_type, repo_id) in self.store.repos:
            return
        repo = self.store.create_repo(repo_type, repo_id, private)
        self._emit(repo, "repo", "create", self._base())

    def commit(self, repo_id: str, files: dict[str, bytes | None], *, repo_type: str = "dataset",
               message: str = "Sandbox commit", branch: str = "main", author: str = "sandbox-user") -> str:
        """Commit on a branch (created from main if new) or on `refs/pr/N`; a None value deletes the file."""
        repo = self.store.get(repo_type, repo_id)
        ref = branch_ref(branch)
        title, _, description = message.partition("\n")
        old, new = self.store.commit(
            repo, ref, {p: c for p, c in files.items() if c is not None},
            [p for p, c in files.items() if c is None], (), title, description.strip(), author,
            create_ref=ref.startswith("refs/heads/"), base=repo.refs.get("refs/heads/main"))
        self._after_commit(repo, ref, old, new, title, author, self._base())
        return new

    def open_pr(self, repo_id: str, files: dict[str, bytes], *, repo_type: str = "dataset",
                title: str = "Sandbox pull request", author: str = "sandbox-user",
                description: str = "") -> tuple[int, str]:
        """Open a PR from main's head with `files` committed on `refs/pr/N`; returns (N, head sha of refs/pr/N)."""
        repo = self.store.get(repo_type, repo_id)
        num, head = self._open_pr(repo, title, description or title, author, "open", files, [], (), None,
                                  self._base())
        return num, head

    def read_file(self, repo_id: str, path: str, *, repo_type: str = "dataset", revision: str = "main") -> bytes:
        repo = self.store.get(repo_type, repo_id)
        return self.store.read(repo, self.store.resolve(repo, revision), path)

    def list_files(self, repo_id: str, *, repo_type: str = "dataset", revision: str = "main") -> list[str]:
        repo = self.store.get(repo_type, repo_id)
        return sorted(self.store.files(repo, self.store.resolve(repo, revision)))

    def head(self, repo_id: str, *, repo_type: str = "dataset", revision: str = "main") -> str:
        repo = self.store.get(repo_type, repo_id)
        return self.store.resolve(repo, revision)

    def commits(self, repo_id: str, *, repo_type: str = "dataset", branch: str = "main") -> list[dict]:
        """Newest first: {oid, title, message, author, parents, date}."""
        repo = self.store.get(repo_type, repo_id)
        keys = ("oid", "title", "message", "author", "parents", "date")
        return [{k: c[k] for k in keys} for c in self.store.history(repo, self.store.resolve(repo, branch))]

    def comments(self, repo_id: str, num: int, *, repo_type: str = "dataset") -> list[dict]:
        """Comments of discussion `num` (the opening post first): {id, author, content, createdAt, hidden}."""
        discussion = self.store.get_discussion(self.store.get(repo_type, repo_id), num)
        return [{"id": e["id"], "author": e["author"], "content": e["data"]["latest"]["raw"],
                 "createdAt": e["createdAt"], "hidden": e["data"]["hidden"]}
                for e in discussion["events"] if e["type"] == "comment"]

    def post_comment(self, repo_id: str, num: int, text: str, *, repo_type: str = "dataset",
                     author: str = "sandbox-user") -> str:
        """Comment on a discussion as `author` (fires `discussion.comment`); returns the comment id."""
        repo = self.store.get(repo_type, repo_id)
        discussion = self.store.get_discussion(repo, num)
        return self._comment(repo, discussion, text, author, self._base())["id"]

    def add_webhook(self, url: str, *, watched: list[dict], secret: str | None = None,
                    domains: tuple | list = ("repo", "discussion")) -> str:
        return self._add_webhook(url, watched, list(domains), secret, owner=None)["id"]

    def wait_for_deliveries(self, timeout: float = 10.0) -> bool:
        """Block until every queued webhook delivery was attempted; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    # ================= shared write paths (HTTP routes and helpers) =================

    def _after_commit(self, repo: Repo, ref: str, old: str | None, new: str, title: str, author: str,
                      base: str) -> None:
        if ref.startswith("refs/pr/"):
            discussion = repo.discussions.get(int(ref.rsplit("/", 1)[1]))
            if discussion is not None:
                self.store.add_event(repo, discussion, "commit", author, {"subject": title, "oid": new})
        self._emit(repo, "repo.content", "update", base, updatedRefs=[{"ref": ref, "oldSha": old, "newSha": new}])

    def _open_pr(self, repo: Repo, title: str, description: str, author: str, status: str,
                 additions: dict[str, bytes], deletions: list, folders: tuple | list, base_oid: str | None,
                 base: str) -> tuple[int, str]:
        """Open the PR in the store, then announce it: the discussion, and the new `refs/pr/N` (oldSha null)."""
        discussion, opening, head = self.store.open_pr(repo, title, description, author, status, additions,
                                                       deletions, folders, base_oid)
        self._emit_discussion(repo, discussion, "create", base, opening)
        ref = f"refs/pr/{discussion['num']}"
        self._emit(repo, "repo.content", "update", base, updatedRefs=[{"ref": ref, "oldSha": None, "newSha": head}])
        return discussion["num"], head

    def _comment(self, repo: Repo, discussion: dict, text: str, author: str, base: str) -> dict:
        event = self.store.comment(repo, discussion, text, author)
        self._emit_discussion(repo, discussion, "create", base, event, scope="discussion.comment")
        return event

    def _add_webhook(self, url: str, watched: list[dict], domains: list[str], secret: str | None,
                     owner: str | None) -> dict:
        hook = {"id": random_id(), "url": url, "watched": [{"type": w["type"], "name": w["name"]} for w in watched],
                "domains": domains, "secret": secret, "disabled": False, "owner": owner}
        with self.store.lock:
            self.store.webhooks.append(hook)
            self.store.save_webhooks()
        return hook

    # ================= webhook deliveries =================

    def _base(self) -> str:
        return self.base_url or "http://127.0.0.1"

    def _repo_payload(self, repo: Repo, base: str, with_head: bool) -> dict:
        url = {"web": f"{base}/{URL_PREFIX[repo.type]}{repo.id}", "api": f"{base}/api/{repo.type}s/{repo.id}"}
        payload = {"type": repo.type, "name": repo.id, "id": repo.object_id, "private": repo.private, "url": url,
                   "owner": {"id": object_id(f"account:{repo.namespace}")}}
        if with_head:  # the Hub sends headSha (main's sha) on repo* scopes only
            payload["headSha"] = repo.refs.get("refs/heads/main")
        return payload

    def _emit_discussion(self, repo: Repo, discussion: dict, action: str, base: str, comment: dict | None = None,
                         scope: str = "discussion") -> None:
        web = f"{base}/{URL_PREFIX[repo.type]}{repo.id}/discussions/{discussion['num']}"
        body = {"id": discussion["id"], "num": discussion["num"], "title": discussion["title"],
                "url": {"web": web, "api": f"{base}/api/{repo.type}s/{repo.id}/discussions/{discussion['num']}"},
                "status": discussion["status"], "author": {"id": object_id(f"account:{discussion['author']}")},
                "isPullRequest": discussion["isPullRequest"]}
        if discussion["isPullRequest"]:
            body["changes"] = {"base": discussion["base"]}
        extra: dict[str, Any] = {"discussion": body}
        if comment is not None:
            extra["comment"] = {"id": comment["id"], "author": {"id": object_id(f"account:{comment['author']}")},
                                "content": comment["data"]["latest"]["raw"], "hidden": False,
                                "url": {"web": f"{web}#{comment['id']}"}}
        self._emit(repo, scope, action, base, **extra)

    def _emit(self, repo: Repo, scope: str, action: str, base: str, **extra: Any) -> None:
        """Queue a payload-v3 delivery for every enabled webhook watching this repo in this domain."""
        domain = scope.split(".")[0]
        event = {"event": {"action": action, "scope": scope},
                 "repo": self._repo_payload(repo, base, scope.startswith("repo")), **extra}
        for hook in list(self.store.webhooks):
            if hook["disabled"] or domain not in hook["domains"] or not self._watches(hook, repo):
                continue
            if hook["owner"] is not None and not self._can_read(hook["owner"], repo):
                continue
            self._enqueue(hook, {**event, "webhook": {"id": hook["id"], "version": 3}})

    @staticmethod
    def _watches(hook: dict, repo: Repo) -> bool:
        for item in hook["watched"]:
            if item["type"] in ("user", "org") and item["name"] == repo.namespace:
                return True
            if item["type"] == repo.type and item["name"] == repo.id:
                return True
        return False

    def _enqueue(self, hook: dict, payload: dict) -> None:
        with self._idle:  # queue and count together, so an idle worker never exits with work queued
            self._pending += 1
            self._queue.put((hook, payload))
            if self._worker is None:
                self._worker = threading.Thread(target=self._deliver_loop, daemon=True, name="hub-webhooks")
                self._worker.start()

    def _deliver_loop(self) -> None:
        while True:
            try:
                hook, payload = self._queue.get(timeout=1.0)
            except queue.Empty:
                with self._idle:  # idle: let the thread go; the next delivery starts a new one
                    if self._pending == 0:
                        self._worker = None
                        return
                continue
            try:
                self._deliver(hook, payload)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _deliver(self, hook: dict, payload: dict) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "hub-sandbox-webhooks/1.0"}
        if hook["secret"]:
            headers["X-Webhook-Secret"] = hook["secret"]
        record = {"webhook_id": hook["id"], "url": hook["url"], "scope": payload["event"]["scope"],
                  "action": payload["event"]["action"], "repo": payload["repo"]["name"], "payload": payload,
                  "status": None, "error": None, "at": time.time()}
        try:
            answer = self._http.post(hook["url"], data=json.dumps(payload), headers=headers, timeout=DELIVERY_TIMEOUT)
            record["status"] = answer.status_code
            if not answer.ok:
                log.warning("webhook %s to %s answered %s", hook["id"], hook["url"], answer.status_code)
        except requests.RequestException as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
            log.warning("webhook %s to %s failed: %s", hook["id"], hook["url"], exc)
        with self._deliveries_lock:
            self.deliveries.append(record)

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
        if not self._member(user, found.namespace) or _READ_ONLY_TOKEN.search(self._token(request)):
            raise HubHTTPError(403, f"You don't have the rights to write to {found.type} {found.id}")
        return found, user

    def _authenticated(self, request: Request, type: str, repo: str) -> tuple[Repo, str]:
        """Discussions, comments and PRs: any valid token that can read the repo."""
        found, user = self._readable(request, type, repo)
        if user is None:
            raise self._repo_not_found(None)
        return found, user

    # ================= HTTP plumbing =================

    def _route_table(self) -> list[tuple[set[str], re.Pattern, Callable[..., Awaitable[Response]]]]:
        repo = r"/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"
        table = [
            ("GET", r"/api/whoami-v2", self.whoami),
            ("POST", r"/api/repos/create", self.create_repo_route),
            ("DELETE POST", r"/api/repos/delete", self.delete_repo_route),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            ("GET POST", r"/api/settings/webhooks", self.webhooks_route),
            ("GET DELETE", r"/api/settings/webhooks/(?P<hook>[^/]+)", self.webhook_route),
            ("GET", r"/api/(?P<type>models|datasets|spaces)", self.list_repos),
            ("GET", repo, self.repo_info),
            ("GET", repo + r"/revision/(?P<rest>.+)", self.repo_info),
            ("GET", repo + r"/tree/(?P<rest>.+)", self.tree),
            ("POST", repo + r"/paths-info/(?P<rest>.+)", self.paths_info),
            ("GET", repo + r"/commits/(?P<rest>.+)", self.list_commits),
            ("GET", repo + r"/refs", self.refs),
            ("POST", repo + r"/preupload/(?P<rest>.+)", self.preupload),
            ("POST", repo + r"/commit/(?P<rest>.+)", self.commit_route),
            ("GET POST", repo + r"/discussions", self.discussions_route),
            ("GET", repo + r"/discussions/(?P<num>\d+)", self.discussion_details),
            ("POST", repo + r"/discussions/(?P<num>\d+)/comment", self.comment_route),
            ("POST", repo + r"/discussions/(?P<num>\d+)/status", self.status_route),
            ("GET HEAD", r"/(?:(?P<type>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rest>.+)",
             self.resolve_file),
        ]
        return [(set(methods.split()), re.compile(pattern), handler) for methods, pattern, handler in table]

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

    def _user_json(self, name: str, base: str) -> dict:
        return {"_id": object_id(f"account:{name}"), "name": name, "fullname": name, "type": "user",
                "avatarUrl": f"{base}/avatars/{name}.svg", "isPro": False, "isHf": False, "isMod": False}

    # ================= routes: account, repos =================

    async def whoami(self, request: Request) -> Response:
        user = self._user(request)
        if user is None:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        base = self._base_of(request)
        orgs = [{"type": "org", "id": object_id(f"account:{org}"), "name": org, "fullname": org, "email": None,
                 "canPay": False, "periodEnd": None, "avatarUrl": f"{base}/avatars/{org}.svg", "roleInOrg": "write",
                 "isEnterprise": False} for org, members in sorted(self.orgs.items()) if user in members]
        role = "read" if _READ_ONLY_TOKEN.search(self._token(request)) else "write"
        return JSONResponse({
            "type": "user", "id": object_id(f"account:{user}"), "name": user, "fullname": user,
            "email": f"{user}@sandbox.invalid", "emailVerified": True, "canPay": False, "periodEnd": None,
            "isPro": False, "avatarUrl": f"{base}/avatars/{user}.svg", "orgs": orgs,
            "auth": {"type": "access_token", "accessToken": {"displayName": "sandbox", "role": role,
                                                             "createdAt": "2024-01-01T00:00:00.000Z"}}})

    async def create_repo_route(self, request: Request) -> Response:
        user = self._user(request)
        if user is None:
            raise HubHTTPError(401, "You must be authenticated to create a repo")
        body = await self._json(request)
        repo_type = body.get("type") or "model"
        namespace = body.get("organization") or user
        repo_id = f"{namespace}/{body.get('name', '')}"
        if repo_type not in URL_PREFIX:
            raise HubHTTPError(400, f"Invalid repo type {repo_type!r}")
        url = f"{self._base_of(request)}/{URL_PREFIX[repo_type]}{repo_id}"
        if not self._member(user, namespace) or _READ_ONLY_TOKEN.search(self._token(request)):
            raise HubHTTPError(403, f"You don't have the rights to create a {repo_type} under the namespace "
                                    f'"{namespace}"')
        if (repo_type, repo_id) in self.store.repos:
            return JSONResponse({"error": f"You already created this {repo_type} repo", "url": url}, 409,
                                headers={"X-Error-Message": f"You already created this {repo_type} repo"})
        private = body.get("visibility", "private" if body.get("private") else "public") != "public"
        repo = self.store.create_repo(repo_type, repo_id, private)
        self._emit(repo, "repo", "create", self._base_of(request))
        return JSONResponse({"url": url, "name": repo_id, "id": repo.object_id})

    async def delete_repo_route(self, request: Request) -> Response:
        body = await self._json(request)
        user = self._user(request)
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or user}/{body.get('name', '')}"
        repo, _ = self._writable(request, f"{repo_type}s", repo_id)
        self._emit(repo, "repo", "delete", self._base_of(request))
        self.store.delete_repo(repo)
        return Response(status_code=200)

    def _repo_json(self, repo: Repo, oid: str, base: str, blobs: bool = False) -> dict:
        commit = repo.commits[oid]
        siblings = [{"rfilename": p, **({"size": s, "blobId": o} if blobs else {})}
                    for p, (o, s) in sorted(commit["files"].items())]
        info = {"_id": repo.object_id, "id": repo.id, "author": repo.namespace, "sha": oid,
                "lastModified": commit["date"], "createdAt": repo.created_at, "private": repo.private,
                "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
                "usedStorage": sum(s for _, s in commit["files"].values())}
        if repo.type == "model":
            info["modelId"] = repo.id
        try:
            card = _front_matter(self.store.read(repo, oid, "README.md").decode("utf-8", "replace"))
        except (EntryNotFound, ValueError, yaml.YAMLError):
            card = None
        if card:
            info["cardData"] = card
        return info

    async def repo_info(self, request: Request, type: str, repo: str, rest: str | None = None) -> Response:
        found, _ = self._readable(request, type, repo)
        oid = self.store.resolve(found, unquote(rest) if rest else "main")
        info = self._repo_json(found, oid, self._base_of(request), blobs=_flag(request, "blobs"))
        expand = request.query_params.getlist("expand")
        if expand:  # `expand=` asks for these properties only
            info = {k: v for k, v in info.items() if k in expand or k in ("_id", "id")}
        return JSONResponse(info)

    async def list_repos(self, request: Request, type: str) -> Response:
        user = self._user(request)
        author = request.query_params.get("author")
        searches = [s.lower() for s in request.query_params.getlist("search")]
        with self.store.lock:  # helpers may add repos from another thread
            repos = sorted(self.store.repos.items())
        found = [r for (t, _), r in repos if t == type.removesuffix("s")
                 and self._can_read(user, r) and (not author or r.namespace == author)
                 and all(s in r.id.lower() for s in searches)]
        size = self.tree_page_size
        if request.query_params.get("limit", "").isdigit():
            size = max(1, min(size, int(request.query_params["limit"])))
        base, full = self._base_of(request), _flag(request, "full")

        def render(page: list[Repo]) -> list[dict]:
            items = [self._repo_json(r, r.refs["refs/heads/main"], base) for r in page]
            return items if full else [{k: v for k, v in i.items() if k != "siblings"} for i in items]
        return self._paginate(request, found, size, render)

    # ================= routes: trees, files, commits, refs =================

    def _with_last_commit(self, repo: Repo, head: str, entries: list[dict]) -> list[dict]:
        for entry in entries:
            commit = self.store.last_commit(repo, head, entry["path"], entry["type"] == "directory")
            entry["lastCommit"] = {"id": commit["oid"], "title": commit["title"], "date": commit["date"]}
        return entries

    async def tree(self, request: Request, type: str, repo: str, rest: str) -> Response:
        found, _ = self._readable(request, type, repo)
        revision, folder = _split_revision(rest)
        oid = self.store.resolve(found, revision)
        entries = self.store.tree_entries(found, oid, folder.strip("/"), _flag(request, "recursive"))
        if _flag(request, "expand"):
            return self._paginate(request, entries, min(self.tree_page_size, 50),
                                  lambda page: self._with_last_commit(found, oid, page))
        return self._paginate(request, entries, self.tree_page_size)

    async def paths_info(self, request: Request, type: str, repo: str, rest: str) -> Response:
        found, _ = self._readable(request, type, repo)
        oid = self.store.resolve(found, unquote(rest))
        form = parse_qs((await request.body()).decode(), keep_blank_values=True)
        paths = {p.strip("/") for p in form.get("paths", [])}
        entries = [e for e in self.store.tree_entries(found, oid, "", True) if e["path"] in paths]
        if form.get("expand", ["false"])[0].lower() == "true":
            entries = self._with_last_commit(found, oid, entries)
        return JSONResponse(entries)

    async def resolve_file(self, request: Request, type: str | None, repo: str, rest: str) -> Response:
        found, _ = self._readable(request, type or "models", repo)
        revision, path = _split_revision(rest)
        oid = self.store.resolve(found, revision)
        entry = self.store.files(found, oid).get(path)
        if entry is None:  # X-Repo-Commit lets the client cache the miss, like on the Hub
            raise HubHTTPError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": oid})
        blob, size = entry
        headers = {"X-Repo-Commit": oid, "ETag": f'"{blob}"', "Accept-Ranges": "bytes",
                   "Content-Type": mimetypes.guess_type(path)[0] or "application/octet-stream"}
        if request.method == "HEAD":
            return Response(b"", headers={**headers, "Content-Length": str(size)})
        data = self.store.blob(blob)
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("range", ""))
        if match and int(match[1]) < size:  # resumed downloads ask for the tail
            start, end = int(match[1]), min(int(match[2] or size - 1), size - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            return Response(data[start:end + 1], 206, headers=headers)
        return Response(data, headers=headers)

    async def list_commits(self, request: Request, type: str, repo: str, rest: str) -> Response:
        found, _ = self._readable(request, type, repo)
        oid = self.store.resolve(found, unquote(rest))
        base = self._base_of(request)
        items = [{"id": c["oid"], "title": c["title"], "message": c["message"], "date": c["date"],
                  "authors": [{"user": c["author"], "avatar": f"{base}/avatars/{c['author']}.svg"}]}
                 for c in self.store.history(found, oid)]
        return self._paginate(request, items, self.tree_page_size)

    async def refs(self, request: Request, type: str, repo: str) -> Response:
        found, _ = self._readable(request, type, repo)
        groups: dict[str, list] = {"branches": [], "tags": [], "converts": [], "pullRequests": []}
        kinds = {"heads": "branches", "tags": "tags", "convert": "converts", "pr": "pullRequests"}
        for ref, oid in sorted(found.refs.items()):
            kind, name = ref.split("/", 2)[1:]
            groups[kinds[kind]].append({"name": name, "ref": ref, "targetCommit": oid})
        if not _flag(request, "include_prs"):
            del groups["pullRequests"]
        return JSONResponse(groups)

    # ================= routes: writing =================

    async def validate_yaml(self, request: Request) -> Response:
        body = await self._json(request)
        try:
            _front_matter(str(body.get("content", "")))
        except (yaml.YAMLError, ValueError) as exc:
            message = f"Invalid YAML in README.md metadata: {exc}"
            return JSONResponse({"errors": [{"message": message}], "warnings": []}, 400,
                                headers={"X-Error-Message": _header_safe(message)})
        return JSONResponse({"errors": [], "warnings": []})

    def _commit_target(self, request: Request, type: str, repo: str, revision: str,
                       create_pr: bool) -> tuple[Repo, str]:
        """Who may commit where: writers anywhere, any reader opening a PR, a PR's author on its refs/pr/N."""
        if not create_pr and not revision.startswith("refs/pr/"):
            return self._writable(request, type, repo)
        found, user = self._authenticated(request, type, repo)
        pr = re.fullmatch(r"refs/pr/(\d+)", revision)
        if pr and not self._member(user, found.namespace):
            discussion = found.discussions.get(int(pr[1]))
            if discussion is None or discussion["author"] != user:
                raise HubHTTPError(403, f"You don't have the rights to push to {revision}")
        return found, user

    async def preupload(self, request: Request, type: str, repo: str, rest: str) -> Response:
        found, _ = self._commit_target(request, type, repo, unquote(rest), _flag(request, "create_pr"))
        oid = self.store.resolve(found, unquote(rest))
        files = self.store.files(found, oid)
        body = await self._json(request)
        # "regular" for everything: contents then travel base64 in the commit call, no LFS / Xet transfer.
        # `oid` (git sha1 of the current file) lets the client drop unchanged files from the commit.
        answer = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                   "oid": files[f["path"]][0] if f["path"] in files else None} for f in body.get("files", [])]
        return JSONResponse({"files": answer, "commitOid": oid})

    @staticmethod
    def _parse_ndjson(raw: bytes) -> tuple[dict, dict[str, bytes], list[str], list[str]]:
        header: dict = {}
        additions: dict[str, bytes] = {}
        deletions: list[str] = []
        folders: list[str] = []
        for line in raw.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value") or {}
            if key == "header":
                header = value
            elif key == "file":
                additions[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                deletions.append(value["path"])
            elif key == "deletedFolder":
                folders.append(value["path"])
            elif key == "lfsFile":
                raise HubHTTPError(400, "LFS files are not supported by the sandbox Hub (preupload answers 'regular')")
            else:
                raise HubHTTPError(400, f"Unknown commit operation {key!r}")
        if not header.get("summary"):
            raise HubHTTPError(400, "A commit needs a header line with a summary")
        return header, additions, deletions, folders

    async def commit_route(self, request: Request, type: str, repo: str, rest: str) -> Response:
        revision, create_pr = unquote(rest), _flag(request, "create_pr")
        found, user = self._commit_target(request, type, repo, revision, create_pr)
        try:
            header, additions, deletions, folders = self._parse_ndjson(await request.body())
        except (ValueError, KeyError, TypeError) as exc:
            raise HubHTTPError(400, f"Invalid commit payload: {exc}") from exc
        base, summary, description = self._base_of(request), header["summary"], header.get("description", "")
        parent = header.get("parentCommit")
        web = f"{base}/{URL_PREFIX[found.type]}{found.id}"
        try:
            if create_pr:
                start = self._pr_start(found, revision, parent)
                num, oid = self._open_pr(found, summary, description or summary, user, "open", additions,
                                         deletions, folders, start, base)
                return JSONResponse({"commitUrl": f"{web}/commit/{oid}", "commitOid": oid,
                                     "pullRequestUrl": f"{web}/discussions/{num}"})
            ref = branch_ref(revision)
            old, oid = self.store.commit(found, ref, additions, deletions, folders, summary, description, user,
                                         parent_commit=parent)
        except EntryNotFound as exc:
            raise HubHTTPError(404, f"A file with this name doesn't exist: {exc}", "EntryNotFound") from exc
        self._after_commit(found, ref, old, oid, summary, user, base)
        return JSONResponse({"commitUrl": f"{web}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None})

    def _pr_start(self, repo: Repo, revision: str, parent: str | None) -> str:
        """The commit a `create_pr=1` commit starts from: the branch head, or `parentCommit` when given."""
        ref = branch_ref(revision)
        if not ref.startswith("refs/heads/") or ref not in repo.refs:
            raise RevisionNotFound(revision)
        if parent is None:
            return repo.refs[ref]
        with self.store.lock:
            matches = [oid for oid in repo.commits if oid.startswith(parent.lower())]
        if len(matches) != 1:
            raise RevisionNotFound(parent)
        return matches[0]

    # ================= routes: discussions =================

    def _discussion_json(self, repo: Repo, discussion: dict, base: str) -> dict:
        return {"num": discussion["num"], "title": discussion["title"], "status": discussion["status"],
                "createdAt": discussion["createdAt"], "author": self._user_json(discussion["author"], base),
                "repo": {"name": repo.id, "type": repo.type}, "isPullRequest": discussion["isPullRequest"],
                "numComments": sum(e["type"] == "comment" for e in discussion["events"]), "pinned": False,
                "topReactions": []}

    def _event_json(self, event: dict, base: str) -> dict:
        return {**event, "author": self._user_json(event["author"], base)}

    async def discussions_route(self, request: Request, type: str, repo: str) -> Response:
        if request.method == "POST":
            return await self._create_discussion(request, type, repo)
        found, _ = self._readable(request, type, repo)
        kind, status = request.query_params.get("type", "all"), request.query_params.get("status", "all")
        author = request.query_params.get("author")
        with self.store.lock:
            everything = sorted(found.discussions.items(), reverse=True)
        chosen = [d for _, d in everything
                  if (kind == "all" or d["isPullRequest"] == (kind == "pull_request"))
                  and (status == "all" or d["status"] == status) and (not author or d["author"] == author)]
        start = int(request.query_params.get("p", "0") or 0) * DISCUSSIONS_PER_PAGE
        base = self._base_of(request)
        page = [self._discussion_json(found, d, base) for d in chosen[start:start + DISCUSSIONS_PER_PAGE]]
        closed = sum(d["status"] != "open" for d in chosen)
        return JSONResponse({"discussions": page, "count": len(chosen), "start": start,
                             "numClosedDiscussions": closed})

    async def _create_discussion(self, request: Request, type: str, repo: str) -> Response:
        found, user = self._authenticated(request, type, repo)
        body = await self._json(request)
        title, description = str(body.get("title", "")).strip(), str(body.get("description") or "")
        if not 3 <= len(title) <= 200:
            raise HubHTTPError(400, "Title must be between 3 and 200 characters")
        base = self._base_of(request)
        if body.get("pullRequest"):  # programmatic PRs start as drafts, on main's head
            num, _ = self._open_pr(found, title, description, user, "draft", {}, [], (), None, base)
        else:
            discussion = self.store.new_discussion(found, title, user, False, "open")
            opening = self.store.comment(found, discussion, description, user)
            self._emit_discussion(found, discussion, "create", base, opening)
            num = discussion["num"]
        return JSONResponse(self._discussion_json(found, found.discussions[num], base))

    async def discussion_details(self, request: Request, type: str, repo: str, num: str) -> Response:
        found, _ = self._readable(request, type, repo)
        discussion = self._discussion(found, num)
        base = self._base_of(request)
        details = {**self._discussion_json(found, discussion, base), "id": discussion["id"], "locked": False,
                   "events": [self._event_json(e, base) for e in discussion["events"]]}
        if discussion["isPullRequest"]:
            details.update(changes={"base": discussion["base"], **({"mergeCommitId": discussion["mergeCommitId"]}
                                                                   if discussion.get("mergeCommitId") else {})},
                           filesWithConflicts=[])
            if _flag(request, "diff"):
                head = found.refs[f"refs/pr/{discussion['num']}"]
                details["diff"] = self.store.diff(found, discussion["baseOid"], head)
        return JSONResponse(details)

    @staticmethod
    def _discussion(repo: Repo, num: str) -> dict:
        discussion = repo.discussions.get(int(num))
        if discussion is None:
            raise HubHTTPError(404, "Discussion not found")
        return discussion

    async def comment_route(self, request: Request, type: str, repo: str, num: str) -> Response:
        found, user = self._authenticated(request, type, repo)
        discussion = self._discussion(found, num)
        text = str((await self._json(request)).get("comment") or "").strip()
        if not text:
            raise HubHTTPError(400, "Comment cannot be empty")
        event = self._comment(found, discussion, text, user, self._base_of(request))
        return JSONResponse({"newMessage": self._event_json(event, self._base_of(request))})

    async def status_route(self, request: Request, type: str, repo: str, num: str) -> Response:
        found, user = self._authenticated(request, type, repo)
        discussion = self._discussion(found, num)
        if user != discussion["author"] and not self._member(user, found.namespace):
            raise HubHTTPError(403, "Only the author or a repo member can change the status")
        body = await self._json(request)
        if body.get("status") not in ("open", "closed"):
            raise HubHTTPError(400, "status must be 'open' or 'closed'")
        base = self._base_of(request)
        if body.get("comment"):
            self._comment(found, discussion, str(body["comment"]), user, base)
        discussion["status"] = body["status"]
        event = self.store.add_event(found, discussion, "status-change", user, {"status": body["status"]})
        self._emit_discussion(found, discussion, "update", base)
        return JSONResponse({"newStatus": self._event_json(event, base)})

    # ================= routes: webhooks =================

    @staticmethod
    def _webhook_json(hook: dict) -> dict:
        return {k: hook[k] for k in ("id", "url", "watched", "domains", "secret", "disabled")}

    def _signed_in(self, request: Request) -> str:
        user = self._user(request)
        if user is None:
            raise HubHTTPError(401, "You must be authenticated to manage webhooks")
        return user

    async def webhooks_route(self, request: Request) -> Response:
        user = self._signed_in(request)
        if request.method == "GET":
            return JSONResponse([self._webhook_json(h) for h in self.store.webhooks if h["owner"] in (None, user)])
        body = await self._json(request)
        if not body.get("url") or not body.get("watched"):
            raise HubHTTPError(400, "A webhook needs a url and at least one watched item")
        domains = body.get("domains") or ["repo", "discussion"]
        hook = self._add_webhook(body["url"], body["watched"], domains, body.get("secret"), owner=user)
        return JSONResponse({"webhook": self._webhook_json(hook)})

    async def webhook_route(self, request: Request, hook: str) -> Response:
        user = self._signed_in(request)
        found = next((h for h in self.store.webhooks if h["id"] == hook and h["owner"] in (None, user)), None)
        if found is None:
            raise HubHTTPError(404, "Webhook not found")
        if request.method == "DELETE":
            with self.store.lock:
                self.store.webhooks.remove(found)
                self.store.save_webhooks()
            return Response(status_code=200)
        return JSONResponse({"webhook": self._webhook_json(found)})
