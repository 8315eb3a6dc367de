"""Tiny stand-ins for the Hub web pages the bridge and its sandbox panel link to: a repo and a discussion / PR.

The bridge links to a repo, a commit and a PR comment on huggingface.co; in the sandbox those pages would not exist,
so a person following a link would land on a JSON error. These pages show what the real ones would: the files on
`main`, the latest commits, the discussions, and a discussion's comments (markdown rendered, raw HTML escaped).

Unlike the real Hub, private repos are shown without a login: the sandbox listens on loopback for one person, and
a browser there has no token to send. `HubWeb` is a mixin of `HubEmulator`; its routes come last in the table.
"""

from __future__ import annotations

import html
import re
from typing import Any

from markdown_it import MarkdownIt
from starlette.requests import Request
from starlette.responses import HTMLResponse

from bridge.sandbox.hub_store import HubStore, StoreError

STYLE = """body{font:15px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1000px;padding:0 16px;color:#1f2937}
h1{font-size:1.35rem;margin:0 0 4px} h2{font-size:1.05rem;margin:20px 0 6px} .muted{color:#6b7280}
table{border-collapse:collapse;width:100%;margin:8px 0} th,td{border-bottom:1px solid #e5e7eb;padding:5px 8px;
text-align:left;font-size:.9rem;vertical-align:top} code{font-size:.85rem} a{color:#2563eb}
.comment{border:1px solid #e5e7eb;border-radius:10px;margin:12px 0;padding:8px 14px}
.comment header{font-size:.85rem;color:#6b7280;border-bottom:1px solid #f3f4f6;padding-bottom:4px;margin-bottom:6px}
.pill{border-radius:999px;background:#eef2ff;padding:1px 8px;font-size:.8rem}
.site{border-bottom:1px solid #e5e7eb;margin-bottom:16px;padding-bottom:8px}"""
PREFIX = {"datasets": "dataset", "spaces": "space", None: "model"}
HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)  # hidden on the Hub's pages (the bridge's marker is one)
MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")


def esc(value: Any) -> str:
    return "" if value is None else html.escape(str(value), quote=True)


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)} · Hub sandbox</title>"
                        f"<style>{STYLE}</style></head><body><div class='site muted'>Hugging Face Hub (sandbox "
                        f"emulator)</div>{body}</body></html>", status_code=status)


def repo_path(type: str | None, repo: str) -> str:
    return f"/{type}/{repo}" if type else f"/{repo}"


class HubWeb:
    """Web pages of the Hub emulator; `HubEmulator` provides `store`."""

    store: HubStore

    def _web_routes(self) -> list[tuple[str, str, Any]]:
        repo = r"/(?:(?P<type>datasets|spaces)/)?(?!api/)(?P<repo>[^/]+/[^/]+)"
        return [("GET", repo, self.repo_page),
                ("GET", repo + r"/discussions/(?P<num>\d+)", self.discussion_page)]

    async def repo_page(self, request: Request, type: str | None, repo: str) -> HTMLResponse:
        try:
            found = self.store.get(PREFIX[type], repo)
            head = self.store.resolve(found, "main")
            files = sorted(self.store.files(found, head))
            history = self.store.history(found, head)[:10]
        except StoreError:
            return page("Not found", f"<h1>Not found</h1><p class='muted'>No repo {esc(repo)} here.</p>", 404)
        base = repo_path(type, repo)
        file_rows = "".join(f"<tr><td><code>{esc(p)}</code></td></tr>" for p in files)
        commit_rows = "".join(f"<tr><td><code>{esc(c['oid'][:7])}</code></td><td>{esc(c['title'])}</td>"
                              f"<td class='muted'>{esc(c['author'])} · {esc(c['date'])}</td></tr>" for c in history)
        talks = "".join(
            f"<tr><td><a href='{esc(base)}/discussions/{n}'>#{n} {esc(d['title'])}</a></td>"
            f"<td><span class='pill'>{'pull request' if d['isPullRequest'] else 'discussion'} · "
            f"{esc(d['status'])}</span></td><td class='muted'>{len(d['events'])} event(s)</td></tr>"
            for n, d in sorted(found.discussions.items(), reverse=True))
        body = (f"<h1>{esc(repo)}</h1><p class='muted'>{PREFIX[type]} · {'private' if found.private else 'public'}"
                f"</p><h2>Discussions and pull requests</h2>"
                f"{'<table>' + talks + '</table>' if talks else '<p class=muted>None yet.</p>'}"
                f"<h2>Files on main</h2><table>{file_rows}</table><h2>Latest commits</h2><table>{commit_rows}</table>")
        return page(repo, body)

    async def discussion_page(self, request: Request, type: str | None, repo: str, num: str) -> HTMLResponse:
        try:
            discussion = self.store.get_discussion(self.store.get(PREFIX[type], repo), int(num))
        except StoreError:
            return page("Not found", f"<h1>Not found</h1><p class='muted'>No discussion #{esc(num)} in "
                                     f"{esc(repo)}.</p>", 404)
        events = "".join(self._event_html(e) for e in discussion["events"])
        kind = "Pull request" if discussion["isPullRequest"] else "Discussion"
        body = (f"<p><a href='{esc(repo_path(type, repo))}'>{esc(repo)}</a></p>"
                f"<h1>#{discussion['num']} {esc(discussion['title'])}</h1>"
                f"<p class='muted'>{kind} · {esc(discussion['status'])} · opened by {esc(discussion['author'])}</p>"
                f"{events}")
        return page(discussion["title"], body)

    @staticmethod
    def _event_html(event: dict) -> str:
        head = f"<header>{esc(event['author'])} · {esc(event['createdAt'])}</header>"
        if event["type"] == "comment":
            return (f"<article class='comment' id='{esc(event['id'])}'>{head}"
                    f"{MARKDOWN.render(HTML_COMMENT.sub('', event['data']['latest']['raw']))}</article>")
        if event["type"] == "commit":
            return f"<p class='muted'>{esc(event['author'])} pushed {esc(event['data'].get('subject'))}</p>"
        return f"<p class='muted'>{esc(event['author'])}: {esc(event['type'])}</p>"
