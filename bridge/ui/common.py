"""What every page shares: the server-side authorisation of handlers, their registration, and payload cleaning.

Gradio serves every registered function over HTTP, even `api_visibility="private"` ones (which only keeps them out
of the API docs and the client libraries). So a handler that reads jobs or acts takes the caller's `gr.Request`
and `gr.OAuthProfile | None` and asks `access` first; `on` registers handlers private and under a stable name.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import gradio as gr

from .. import access
from .html import badge, esc, notice

log = logging.getLogger("bridge.ui")

SECRET_KEY = re.compile(r"secret|token|password|api[_-]?key|authorization|cookie", re.IGNORECASE)
MAX_TEXT = 2_000
MAX_ITEMS = 50


def viewer(runtime: Any, request: gr.Request | None, profile: gr.OAuthProfile | None) -> access.Viewer:
    return access.authorize_request(runtime, request, profile)


def require(runtime: Any, request: gr.Request | None, profile: gr.OAuthProfile | None,
            action: str) -> access.Viewer:
    """For handlers that act: refuses with a visible error (and an API error for direct callers)."""
    who = viewer(runtime, request, profile)
    if not who.allowed:
        log.warning("refused %s: %s", action, who.reason)
        raise gr.Error(who.reason, title="Not allowed")
    log.info("%s by %s", action, who.name)
    return who


def locked(who: access.Viewer) -> str:
    return notice(f"Locked: {who.reason}", "warn")


def jobs_now(store: Any, job_ids: Any) -> str:
    """`job #3 succeeded, job #4 running`: jobs (a list or its JSON text) in their current state, not the state
    they had when a delivery queued them."""
    ids = json.loads(job_ids or "[]") if isinstance(job_ids, str) else list(job_ids or [])
    parts = []
    for job_id in ids:
        try:
            parts.append(f"job #{int(job_id)} {badge(store.get(int(job_id)).state)}")
        except (KeyError, ValueError, TypeError):
            parts.append(f"job #{esc(job_id)} (no longer stored)")
    return ", ".join(parts)


def on(event: Any, fn: Any, inputs: Any = None, outputs: Any = None, **kwargs: Any) -> Any:
    """Registers a handler: private (no API docs, no client libraries) and named after the function."""
    return event(fn, inputs, outputs, api_visibility="private", api_name=fn.__name__, **kwargs)


def clean(value: Any, scrub: Any, depth: int = 0) -> Any:
    """A copy safe to show: secret-looking keys masked, known secret values removed, huge parts cut short."""
    if depth > 12:
        return "…"
    if isinstance(value, dict):
        # Only string values are masked: `total_tokens` is a count, not a credential.
        return {k: "***" if SECRET_KEY.search(str(k)) and isinstance(v, str) and v else clean(v, scrub, depth + 1)
                for k, v in value.items()}
    if isinstance(value, list):
        items = [clean(v, scrub, depth + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"… {len(value) - MAX_ITEMS} more item(s) not shown")
        return items
    if isinstance(value, str):
        text = scrub(value) or ""
        return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"… ({len(text) - MAX_TEXT} more characters)"
    return value


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)
