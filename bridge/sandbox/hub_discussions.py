"""Discussions and pull requests on the Hub emulator: listing, details (with a PR's diff), comments, status.

`HubDiscussions` is a mixin of `HubEmulator` (hub.py). `_comment` is shared with the `post_comment` helper so a
comment made either way fires `discussion.comment`. Opening a PR goes through `HubCommits._open_pr`, because a PR
is also a commit on `refs/pr/N`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.sandbox.hub_http import HubHTTPError, flag
from bridge.sandbox.hub_store import HubStore, Repo, object_id

DISCUSSIONS_PER_PAGE = 50


class HubDiscussions:
    """Discussion routes and JSON shapes; `HubEmulator` provides `store`, the other mixins auth, PRs and webhooks."""

    store: HubStore

    def _comment(self, repo: Repo, discussion: dict, text: str, author: str, base: str) -> dict:
        event = self.store.comment(repo, discussion, text, author)
        self._emit_discussion(repo, discussion, "create", base, event, scope="discussion.comment")
        return event

    def _user_json(self, name: str, base: str) -> dict:
        return {"_id": object_id(f"account:{name}"), "name": name, "fullname": name, "type": "user",
                "avatarUrl": f"{base}/avatars/{name}.svg", "isPro": False, "isHf": False, "isMod": False}

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
            if flag(request, "diff"):
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

    async def edit_comment_route(self, request: Request, type: str, repo: str, num: str, comment: str) -> Response:
        """`edit_discussion_comment`: `{content}` -> `{updatedComment}`; only the comment's author may edit it."""
        found, user = self._authenticated(request, type, repo)
        discussion = self._discussion(found, num)
        event = next((e for e in discussion["events"] if e["id"] == comment and e["type"] == "comment"), None)
        if event is None:
            raise HubHTTPError(404, "Comment not found")
        if event["author"] != user:
            raise HubHTTPError(403, "Only the author of a comment can edit it")
        text = str((await self._json(request)).get("content") or "").strip()
        if not text:
            raise HubHTTPError(400, "Comment cannot be empty")
        self.store.edit_comment(found, discussion, event, text, user)
        self._emit_discussion(found, discussion, "update", self._base_of(request), event, scope="discussion.comment")
        return JSONResponse({"updatedComment": self._event_json(event, self._base_of(request))})

