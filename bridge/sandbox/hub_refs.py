"""Branches and tags on the Hub emulator: `create_branch` / `delete_branch` / `create_tag` / `delete_tag`.

`HubRefs` is a mixin of `HubEmulator` (hub.py). Wire calls, as huggingface_hub 2.4 makes them:

    POST   /api/{type}s/{id}/branch/{branch}   {startingPoint?}       409 when the branch exists
    DELETE /api/{type}s/{id}/branch/{branch}
    POST   /api/{type}s/{id}/tag/{revision}    {tag, message?}        409 when the tag exists
    DELETE /api/{type}s/{id}/tag/{tag}

A new or deleted ref is announced like any push: `repo.content` with `updatedRefs` (`oldSha` null for a new ref,
`newSha` null for a deleted one).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response

from bridge.sandbox.hub_http import HubHTTPError
from bridge.sandbox.hub_store import HubStore, Repo

_REF_NAME = re.compile(r"^(?!refs/)(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._/-]{0,199}(?<![/.])$")


def _ref_name(raw: str, what: str) -> str:
    name = unquote(raw)
    if not _REF_NAME.match(name):
        raise HubHTTPError(400, f"Invalid {what} name {name!r}")
    return name


class HubRefs:
    """Branch and tag routes; `HubEmulator` provides `store`, the other mixins auth and webhooks."""

    store: HubStore

    def _announce_ref(self, repo: Repo, ref: str, old: str | None, new: str | None, request: Request) -> None:
        self._emit(repo, "repo.content", "update", self._base_of(request),
                   updatedRefs=[{"ref": ref, "oldSha": old, "newSha": new}])

    def _create_ref(self, repo: Repo, ref: str, oid: str, request: Request) -> Response:
        with self.store.lock:
            if ref in repo.refs:
                raise HubHTTPError(409, "Reference already exists")
            self.store.set_ref(repo, ref, oid)
        self._announce_ref(repo, ref, None, oid, request)
        return Response(status_code=200)

    def _delete_ref(self, repo: Repo, ref: str, request: Request) -> Response:
        with self.store.lock:
            old = self.store.delete_ref(repo, ref)
        if old is None:
            raise HubHTTPError(404, f"Invalid rev id: {ref}", "RevisionNotFound")
        self._announce_ref(repo, ref, old, None, request)
        return Response(status_code=200)

    async def branch_route(self, request: Request, type: str, repo: str, name: str) -> Response:
        found, _ = self._writable(request, type, repo)
        branch = _ref_name(name, "branch")
        if request.method == "DELETE":
            if branch == "main":
                raise HubHTTPError(403, "Cannot delete the default branch")
            return self._delete_ref(found, f"refs/heads/{branch}", request)
        body = await self._json(request) if await request.body() else {}
        start = self.store.resolve(found, str(body.get("startingPoint") or "main"))
        return self._create_ref(found, f"refs/heads/{branch}", start, request)

    async def tag_route(self, request: Request, type: str, repo: str, name: str) -> Response:
        found, _ = self._writable(request, type, repo)
        if request.method == "DELETE":
            return self._delete_ref(found, f"refs/tags/{_ref_name(name, 'tag')}", request)
        body = await self._json(request)
        tag = _ref_name(str(body.get("tag") or ""), "tag")
        return self._create_ref(found, f"refs/tags/{tag}", self.store.resolve(found, unquote(name)), request)
