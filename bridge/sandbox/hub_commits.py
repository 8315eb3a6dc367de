"""Commits on the Hub emulator: the preupload and commit routes, PRs opened by a commit, README metadata checks.

`HubCommits` is a mixin of `HubEmulator` (hub.py). `_after_commit` and `_open_pr` are the write paths the HTTP
routes and the seeding helpers share, so a commit or PR made either way updates PR timelines and fires the same
webhooks. Who may commit where is decided in `_commit_target`: writers anywhere, any reader opening a PR, and a
PR's author on its own `refs/pr/N`.
"""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import unquote

import yaml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.sandbox.hub_http import URL_PREFIX, HubHTTPError, flag, header_safe
from bridge.sandbox.hub_store import EntryNotFound, HubStore, Repo, RevisionNotFound, branch_ref


SPLIT_NAME = re.compile(r"^\w+(\.\w+)*$")


def front_matter(text: str) -> dict | None:
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


def config_errors(card: dict) -> list[str]:
    """What the Hub rejects in a dataset card's `configs`: a config without a name, a split name outside
    `^\\w+(\\.\\w+)*$` (the dataset viewer's rule)."""
    configs = card.get("configs")
    if configs is None:
        return []
    if not isinstance(configs, list):
        return ['"configs" must be an array']
    errors = []
    for i, config in enumerate(configs):
        if not isinstance(config, dict) or not config.get("config_name"):
            errors.append(f'"configs[{i}].config_name" is required')
            continue
        files = config.get("data_files")
        for j, entry in enumerate(files if isinstance(files, list) else []):
            split = entry.get("split") if isinstance(entry, dict) else None
            if split is not None and not SPLIT_NAME.match(str(split)):
                errors.append(f'"configs[{i}].data_files[{j}].split" with value "{split}" fails to match the '
                              f'required pattern: /^\\w+(\\.\\w+)*$/')
    return errors


class HubCommits:
    """Commit and PR write paths and routes; `HubEmulator` provides `store`, the other mixins auth and webhooks."""

    store: HubStore

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

    # ================= routes =================

    async def validate_yaml(self, request: Request) -> Response:
        body = await self._json(request)
        try:
            card = front_matter(str(body.get("content", "")))
        except (yaml.YAMLError, ValueError) as exc:
            errors = [f"Invalid YAML in README.md metadata: {exc}"]
        else:
            errors = config_errors(card or {}) if body.get("repoType") in (None, "dataset") else []
        if errors:
            return JSONResponse({"errors": [{"message": m} for m in errors], "warnings": []}, 400,
                                headers={"X-Error-Message": header_safe(errors[0])})
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
        found, _ = self._commit_target(request, type, repo, unquote(rest), flag(request, "create_pr"))
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
        revision, create_pr = unquote(rest), flag(request, "create_pr")
        found, user = self._commit_target(request, type, repo, revision, create_pr)
        try:
            header, additions, deletions, folders = self._parse_ndjson(await request.body())
        except (ValueError, KeyError, TypeError) as exc:
            raise HubHTTPError(400, f"Invalid commit payload: {exc}") from exc
        if found.type == "model":
            self._check_eval_results(additions)
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
