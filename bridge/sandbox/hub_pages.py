"""Web pages of the Hub emulator, so the links the bridge shows (a commit, a PR comment) open something readable.

`HubPages` is a mixin of `HubEmulator` (hub.py). Plain HTML, no scripts, every value escaped; comments are rendered
from Markdown with raw HTML turned off (it shows as text) and HTML comments dropped (the Hub hides them too):

    /{prefix}{repo}                       the files of main
    /{prefix}{repo}/tree/{rev}[/{folder}] the files of a revision (branch, tag, full or short sha, refs/pr/N)
    /{prefix}{repo}/blob/{rev}/{path}     one file (text shown, binary summarised)
    /{prefix}{repo}/commit/{sha}          a commit: title, message, author, parents and its diff
    /{prefix}{repo}/discussions/{num}     a discussion or pull request with its comments and events

`{prefix}` is `datasets/`, `spaces/` or nothing for models. Pages are shown as `web_user` (the sandbox's signed-in
browser; None is anonymous) unless the request carries a token, so private repos follow the API's rules.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from urllib.parse import quote

from markdown_it import MarkdownIt
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from bridge.sandbox.hub_http import URL_PREFIX, HubHTTPError, split_revision
from bridge.sandbox.hub_store import EntryNotFound, HubStore, Repo, StoreError

PAGE_REPO = r"/(?:(?P<type>datasets|spaces)/)?(?P<repo>(?!api/)[^/]+/[^/]+)"
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
MAX_SHOWN_BYTES = 512 * 1024
STYLE = """body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}
a{color:#2563eb}pre{background:#f6f8fa;padding:1em;overflow:auto}table{border-collapse:collapse}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}.muted{color:#666}.event{border:1px solid #ddd;
border-radius:6px;margin:1em 0;padding:.5em 1em}.add{color:#116329}.del{color:#82071e}"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def markdown(text: str) -> str:
    return _MARKDOWN.render(_HTML_COMMENT.sub("", text))


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(f'<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title>'
                        f"<style>{STYLE}</style></head><body>{body}</body></html>", status)


class HubPages:
    """Page routes; `HubEmulator` provides `store` and `web_user`, `HubHTTP` the auth checks."""

    store: HubStore
    web_user: str | None

    def _page_repo(self, request: Request, type: str | None, repo: str) -> Repo:
        user = self._user(request) if request.headers.get("authorization") else self.web_user
        found = self.store.repos.get(((type or "models").removesuffix("s"), repo))
        if found is None or not self._can_read(user, found):
            raise HubHTTPError(404, "Repository not found")
        return found

    def _web(self, repo: Repo) -> str:
        return f"/{URL_PREFIX[repo.type]}{repo.id}"

    def _header(self, repo: Repo, where: str) -> str:
        return (f'<p class="muted">{esc(repo.type)} <a href="{esc(self._web(repo))}">{esc(repo.id)}</a>'
                f'{" · private" if repo.private else ""}</p><h1>{esc(where)}</h1>')

    @staticmethod
    async def _pages(request: Request, handler: Callable[[], Response]) -> Response:
        """Runs a page handler; what it cannot find is a 404 page (not the API's JSON)."""
        try:
            return handler()
        except (HubHTTPError, StoreError) as exc:
            message = exc.message if isinstance(exc, HubHTTPError) else f"Not found: {exc}"
            return page("Not found", f"<h1>404</h1><p>{esc(message)}</p>", 404)

    async def repo_page(self, request: Request, type: str | None, repo: str) -> Response:
        return await self._pages(request, lambda: self._tree_page(self._page_repo(request, type, repo), "main", ""))

    async def tree_page(self, request: Request, type: str | None, repo: str, rest: str) -> Response:
        revision, folder = split_revision(rest)
        return await self._pages(request, lambda: self._tree_page(self._page_repo(request, type, repo), revision,
                                                                  folder.strip("/")))

    def _tree_page(self, repo: Repo, revision: str, folder: str) -> Response:
        oid = self.store.resolve(repo, revision)
        entries = self.store.tree_entries(repo, oid, folder, recursive=False)
        rev = quote(revision, safe="")
        rows = "".join(
            f'<tr><td>{"📁" if e["type"] == "directory" else "📄"} <a href="{esc(self._web(repo))}/'
            f'{"tree" if e["type"] == "directory" else "blob"}/{rev}/{esc(quote(e["path"]))}">'
            f'{esc(e["path"].rpartition("/")[2])}</a></td><td>{e["size"] if e["type"] == "file" else ""}</td></tr>'
            for e in entries)
        commit = repo.commits[oid]
        body = (self._header(repo, f"{revision}{'/' + folder if folder else ''}") +
                f'<p>Last commit: <a href="{esc(self._web(repo))}/commit/{oid}">{esc(commit["title"])}</a> '
                f'<code>{oid[:7]}</code></p><table><tr><th>name</th><th>bytes</th></tr>{rows}</table>' +
                (self._discussion_list(repo) if not folder else ""))
        return page(f"{repo.id} · {revision}", body)

    async def blob_page(self, request: Request, type: str | None, repo: str, rest: str) -> Response:
        revision, path = split_revision(rest)
        return await self._pages(request, lambda: self._blob_page(self._page_repo(request, type, repo), revision,
                                                                  path))

    def _blob_page(self, repo: Repo, revision: str, path: str) -> Response:
        oid = self.store.resolve(repo, revision)
        data = self.store.read(repo, oid, path)
        try:
            text = data[:MAX_SHOWN_BYTES].decode("utf-8")
            shown = f"<pre>{esc(text)}</pre>" + ("<p class=muted>(truncated)</p>" if len(data) > MAX_SHOWN_BYTES
                                                  else "")
        except UnicodeDecodeError:
            shown = f'<p class="muted">Binary file, {len(data)} bytes.</p>'
        raw = f'{esc(self._web(repo))}/resolve/{quote(revision, safe="")}/{esc(quote(path))}'
        return page(f"{repo.id} · {path}", self._header(repo, path) +
                    f'<p class="muted">at <code>{oid[:7]}</code> · <a href="{raw}">raw</a></p>{shown}')

    async def commit_page(self, request: Request, type: str | None, repo: str, rev: str) -> Response:
        return await self._pages(request, lambda: self._commit_page(self._page_repo(request, type, repo), rev))

    def _commit_page(self, repo: Repo, rev: str) -> Response:
        oid = self.store.resolve(repo, rev)
        commit = repo.commits[oid]
        parents = " ".join(f'<a href="{esc(self._web(repo))}/commit/{p}"><code>{p[:7]}</code></a>'
                           for p in commit["parents"]) or "none"
        diff = self.store.diff(repo, commit["parents"][0], oid) if commit["parents"] else ""
        lines = "".join(f'<span class="{"add" if ln.startswith("+") else "del" if ln.startswith("-") else ""}">'
                        f"{esc(ln)}</span>" for ln in diff.splitlines(True))
        body = (self._header(repo, commit["title"]) +
                f'<p><code>{oid}</code> by {esc(commit["author"])}, {esc(commit["date"])} · parents: {parents} · '
                f'<a href="{esc(self._web(repo))}/tree/{oid}">files</a></p>' +
                (f"<pre>{esc(commit['message'])}</pre>" if commit["message"] else "") + f"<pre>{lines}</pre>")
        return page(f"{repo.id} · {commit['title']}", body)

    async def discussion_page(self, request: Request, type: str | None, repo: str, num: str) -> Response:
        return await self._pages(request, lambda: self._discussion_page(self._page_repo(request, type, repo),
                                                                        int(num)))

    def _discussion_page(self, repo: Repo, num: int) -> Response:
        try:
            discussion = self.store.get_discussion(repo, num)
        except EntryNotFound:
            raise HubHTTPError(404, f"Discussion #{num} not found") from None
        kind = "Pull request" if discussion["isPullRequest"] else "Discussion"
        events = "".join(self._event_html(repo, e) for e in discussion["events"])
        body = (self._header(repo, f"#{num} {discussion['title']}") +
                f'<p>{kind} by {esc(discussion["author"])} · <b>{esc(discussion["status"])}</b></p>{events}')
        return page(f"{repo.id} #{num}", body)

    def _discussion_list(self, repo: Repo) -> str:
        """The repo's discussions and pull requests, newest first, as the Hub's Community tab lists them."""
        items = "".join(
            f'<li><a href="{esc(self._web(repo))}/discussions/{num}">#{num} {esc(d["title"])}</a> '
            f'<span class="muted">{"pull request" if d["isPullRequest"] else "discussion"} · {esc(d["status"])}</span></li>'
            for num, d in sorted(repo.discussions.items(), reverse=True))
        return f'<h2>Community</h2><ul class="discussions">{items}</ul>' if items else ""

    def _event_html(self, repo: Repo, event: dict) -> str:
        who = f'<span class="muted">{esc(event["author"])} · {esc(event["createdAt"])}</span>'
        data = event["data"]
        if event["type"] == "comment":
            content = ('<p class="muted">(hidden)</p>' if data.get("hidden")
                       else markdown(data["latest"]["raw"]))
            edited = " · edited" if data.get("edited") else ""
            return f'<div class="event" id="{esc(event["id"])}">{who}{edited}{content}</div>'
        if event["type"] == "commit":
            return (f'<p>{who} committed <a href="{esc(self._web(repo))}/commit/{esc(data["oid"])}">'
                    f'{esc(data["subject"])}</a></p>')
        return f'<p>{who} changed the status to <b>{esc(data.get("status"))}</b></p>'
