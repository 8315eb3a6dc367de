"""The "Hub webhook" part of the Overview's wiring: what the bridge last found about its own Hub webhook.

Reads only the store (the state `flows/hub_webhook.py` records at start and at every reconcile, and the newest Hub
delivery); the UI never calls the Hub. Every value is escaped; the secret is never recorded, so never shown.
"""

from __future__ import annotations

from typing import Any

from ..flows.hub_webhook import load_state
from .html import enabled_text, esc, kv, notice, plural, ts, warning

NEVER_CHECKED = "Not checked yet: the bridge looks at its Hub webhook at start and at every reconcile."


def watched_text(items: list[dict] | None) -> str:
    if not items:
        return '<span class="muted">nothing</span>'
    return ", ".join(f'{esc(i.get("type"))} <code>{esc(i.get("name"))}</code>' for i in items)


def last_delivery(runtime: Any) -> str:
    newest = next(iter(runtime.store.deliveries(limit=1, source="hub")), None)
    return ts(newest["received_at"]) if newest else '<span class="muted">none yet</span>'


def hub_webhook_html(runtime: Any, detailed: bool = True) -> str:
    """Managed or not, enabled, watched items, last delivery received, last re-enabled, problems. Repo and owner
    names (watched items, problems) only for people allowed to act: the Overview is open to everybody."""
    state = load_state(runtime)
    if state is None:
        return notice(NEVER_CHECKED) + kv([("Last delivery received", last_delivery(runtime))])
    managed = ("managed by the bridge" if state.get("managed")
               else f"set up by hand — {esc(state.get('why') or '')}")
    pairs = [("Webhook", managed)]
    if state.get("managed"):
        pairs.append(("State", enabled_text(state.get("enabled"))))
        if detailed:
            pairs += [("Watches", watched_text(state.get("watched"))),
                      ("Domains", esc(", ".join(state.get("domains") or [])) or "—")]
    pairs += [("Last delivery received", last_delivery(runtime)), ("Last checked", ts(state.get("checked_at")))]
    if state.get("reenabled_at"):
        pairs.append(("Re-enabled after a suspension", ts(state["reenabled_at"])))
    action = state.get("last_action") or {}
    if action.get("action") not in (None, "re-enabled"):
        pairs.append((f"Last {action['action']}", ts(action.get("at"))))
    problems = state.get("problems") or []
    if not detailed:
        return kv(pairs) + (warning(f"{plural(len(problems), 'problem')}: sign in to see them.") if problems else "")
    return kv(pairs) + "".join(warning(p) for p in problems)
