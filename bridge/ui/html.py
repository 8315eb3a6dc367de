"""Small HTML builders for the pages. Every text that came from a payload, a file or an upstream goes through `esc`.

Times are sent as `<time class="ts" datetime="...">` with a UTC fallback text; the browser script in `assets.py`
rewrites them into the viewer's local time plus a relative form ("3 min ago").
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlparse

# Small inline SVG icons, always beside a text label: the page must read right on a machine without a colour-emoji
# font (emoji there render as empty boxes). `currentColor` takes the text colour of where they are used.
_PATHS = {
    "ok": '<path d="M3 8.5l3.2 3L13 4.5" fill="none" stroke="currentColor" stroke-width="2"/>',
    "error": '<path d="M4 4l8 8M12 4l-8 8" fill="none" stroke="currentColor" stroke-width="2"/>',
    "warn": '<path d="M8 1.5L15 14H1z" fill="none" stroke="currentColor" stroke-width="1.6"/>'
            '<path d="M8 6v4M8 11.5v1.5" stroke="currentColor" stroke-width="1.6"/>',
    "lock": '<rect x="3" y="7" width="10" height="7" rx="1" fill="currentColor"/>'
            '<path d="M5 7V5a3 3 0 016 0v2" fill="none" stroke="currentColor" stroke-width="1.6"/>',
    "up": '<path d="M2 7h3v7H2zM6 7l3-5c1 0 2 1 1.6 2.4L10 7h3.5a1.3 1.3 0 011.3 1.6l-1.2 4.6A1.3 1.3 0 0112.3 14H6z"'
          ' fill="currentColor"/>',
    "down": '<g transform="rotate(180 8 8)"><path d="M2 7h3v7H2zM6 7l3-5c1 0 2 1 1.6 2.4L10 7h3.5a1.3 1.3 0 '
            '011.3 1.6l-1.2 4.6A1.3 1.3 0 0112.3 14H6z" fill="currentColor"/></g>',
    "comment": '<path d="M2 3h12v8H7l-3 3v-3H2z" fill="none" stroke="currentColor" stroke-width="1.6"/>',
}


def icon(name: str) -> str:
    return (f'<svg class="icon icon-{name}" viewBox="0 0 16 16" width="14" height="14" aria-hidden="true">'
            f'{_PATHS[name]}</svg>')


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 experiments rule`, `2 experiments rules`: `word` is the singular, `many` the plural when not word+s."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


def esc(value: Any) -> str:
    return "" if value is None else html.escape(str(value), quote=True)


def when(value: Any) -> datetime | None:
    """A datetime from epoch seconds or an ISO string (naive means UTC); None when it is neither."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value, timezone.utc)
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def ts(value: Any, empty: str = "—") -> str:
    moment = when(value)
    if moment is None:
        return esc(empty)
    iso = moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return f'<time class="ts" datetime="{esc(iso)}">{esc(moment.strftime("%Y-%m-%d %H:%M UTC"))}</time>'


def safe_url(url: Any) -> str | None:
    """Only http(s) URLs become links: a payload must not be able to plant `javascript:` in the page."""
    if not isinstance(url, str):
        return None
    parsed = urlparse(url.strip())
    return url.strip() if parsed.scheme in ("http", "https") and parsed.netloc else None


def link(url: Any, text: str, cls: str = "ext") -> str:
    href = safe_url(url)
    if href is None:
        return esc(text)
    return f'<a class="{cls}" href="{esc(href)}" target="_blank" rel="noopener noreferrer">{esc(text)} ↗</a>'


def badge(state: Any) -> str:
    state = str(state or "")
    return f'<span class="badge st-{esc(state)}">{esc(state)}</span>'


def duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "—"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:.0f} min"


def table(headers: list[str], rows: list[list[str]], cls: str = "tbl", row_attrs: list[str] | None = None) -> str:
    """Cells are HTML already escaped by the caller; headers are plain text."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    attrs = row_attrs or [""] * len(rows)
    body = "".join(f"<tr{a}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row, a in zip(rows, attrs))
    return (f'<div class="tbl-wrap"><table class="{cls}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{body}</tbody></table></div>')


def code(value: Any, limit: int = 20_000) -> str:
    text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False, default=str)
    if len(text) > limit:
        text = text[:limit] + f"\n… ({len(text) - limit} more characters not shown)"
    return f'<pre class="code">{esc(text)}</pre>'


def enabled_text(enabled: bool | None) -> str:
    """Whether a webhook or rule is on, in words with an icon (never an emoji alone)."""
    if enabled is None:
        return '<span class="muted">unknown</span>'
    return f"{icon('ok')} enabled" if enabled else f'<span class="warn-text">{icon("warn")} disabled</span>'


def warning(text: str) -> str:
    """A warning box for plain text: the icon, then the escaped text."""
    return notice(f"{icon('warn')} {esc(text)}", "warn", raw=True)


def notice(text: str, kind: str = "info", raw: bool = False) -> str:
    """A boxed message; `kind` is info, ok, warn or error. `raw=True` when `text` is HTML built by the caller."""
    return f'<div class="notice {kind}">{text if raw else esc(text)}</div>'


def empty(text: str) -> str:
    return f'<div class="empty">{esc(text)}</div>'


def section(title: str, body: str, hint: str = "") -> str:
    hint_html = f'<span class="hint">{esc(hint)}</span>' if hint else ""
    return f'<section class="sect"><h3>{esc(title)}{hint_html}</h3>{body}</section>'


def kv(pairs: list[tuple[str, str]]) -> str:
    """A definition list; values are HTML already escaped by the caller."""
    items = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in pairs)
    return f'<dl class="kv">{items}</dl>'
