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

The emulator is one class assembled from mixins, one per area, so that no module is too long to read:

    hub.py              HubEmulator: construction, seeding / inspection helpers, route table, repo and file reads
    hub_commits.py      preupload / commit routes, PRs opened by a commit, the write paths helpers share
    hub_discussions.py  discussions, comments, status changes
    hub_webhooks.py     webhook registration, payloads, the delivery thread, /api/settings/webhooks
    hub_web.py          the web pages people open: a repo, a discussion / PR with its comments
    hub_http.py         auth checks, dispatch and error mapping, JSON / pagination helpers
    hub_store.py        the on-disk store (no HTTP)
"""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path
from urllib.parse import parse_qs, unquote

import yaml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.sandbox.hub_commits import HubCommits, front_matter
from bridge.sandbox.hub_discussions import HubDiscussions
from bridge.sandbox.hub_web import HubWeb
from bridge.sandbox.hub_http import READ_ONLY_TOKEN, URL_PREFIX, HubHTTP, HubHTTPError, RouteTable, flag
from bridge.sandbox.hub_store import EntryNotFound, HubStore, Repo, branch_ref, object_id
from bridge.sandbox.hub_webhooks import HubWebhooks
from bridge.sandbox.server import Recorder, ServerHandle

_UNENCODED_REF = re.compile(r"(pr/\d+|heads/[^/]+|tags/[^/]+|convert/[^/]+)(?:/(.*))?$")


def _split_revision(rest: str) -> tuple[str, str]:
    """`refs%2Fpr%2F1/a/b.txt` (how the client quotes it) or `refs/pr/1/a/b.txt` -> ("refs/pr/1", "a/b.txt")."""
    head, _, tail = rest.partition("/")
    revision = unquote(head)
    if revision == "refs":
        match = _UNENCODED_REF.match(tail)
        if match:
            revision, tail = f"refs/{match[1]}", match[2] or ""
    return revision, unquote(tail)


class HubEmulator(HubCommits, HubDiscussions, HubWebhooks, HubWeb, HubHTTP):
    def __init__(self, root: Path, tokens: dict[str, str] | None = None, orgs: dict[str, list[str]] | None = None,
                 tree_page_size: int = 1000) -> None:
        self.store = HubStore(Path(root))
        self.tokens = dict(tokens or {})
        self.orgs = {name: list(members) for name, members in (orgs or {}).items()}
        self.tree_page_size = tree_page_size
        self.base_url: str | None = None  # set by serve(); used for URLs in webhook payloads sent by helpers
        self._init_webhooks()
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

    # ================= routing =================

    def _route_table(self) -> RouteTable:
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
            *self._web_routes(),  # last: their patterns are the loosest
        ]
        return [(set(methods.split()), re.compile(pattern), handler) for methods, pattern, handler in table]

    # ================= routes: account, repos =================

    async def whoami(self, request: Request) -> Response:
        user = self._user(request)
        if user is None:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        base = self._base_of(request)
        orgs = [{"type": "org", "id": object_id(f"account:{org}"), "name": org, "fullname": org, "email": None,
                 "canPay": False, "periodEnd": None, "avatarUrl": f"{base}/avatars/{org}.svg", "roleInOrg": "write",
                 "isEnterprise": False} for org, members in sorted(self.orgs.items()) if user in members]
        role = "read" if READ_ONLY_TOKEN.search(self._token(request)) else "write"
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
        if not self._member(user, namespace) or READ_ONLY_TOKEN.search(self._token(request)):
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
            card = front_matter(self.store.read(repo, oid, "README.md").decode("utf-8", "replace"))
        except (EntryNotFound, ValueError, yaml.YAMLError):
            card = None
        if card:
            info["cardData"] = card
        return info

    async def repo_info(self, request: Request, type: str, repo: str, rest: str | None = None) -> Response:
        found, _ = self._readable(request, type, repo)
        oid = self.store.resolve(found, unquote(rest) if rest else "main")
        info = self._repo_json(found, oid, self._base_of(request), blobs=flag(request, "blobs"))
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
        base, full = self._base_of(request), flag(request, "full")

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
        entries = self.store.tree_entries(found, oid, folder.strip("/"), flag(request, "recursive"))
        if flag(request, "expand"):
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
        if not flag(request, "include_prs"):
            del groups["pullRequests"]
        return JSONResponse(groups)

