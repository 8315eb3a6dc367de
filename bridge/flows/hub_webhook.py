"""Job kind `hub_webhook`: the bridge keeps its own Hub webhook alive (also run by every reconcile).

The Hub retries a failed delivery a few times, then suspends the webhook and e-mails its owner; a Space that slept
or restarted through a few pushes would then hear nothing more, silently. So, at start and at every reconcile,
through huggingface_hub's webhook API:

- the webhook is found by its URL (`<Runtime.reachable_url>/webhooks/hub`);
- created when missing, watching what the `experiments` rules need (an exact repo as that repo, a glob such as
  `acme/*-evals` as its owner, user or organisation as `whoami` tells), always with `WEBHOOK_SECRET`: a webhook is
  never created without a secret;
- updated when the rules, `hub_webhook.domains` or the secret changed;
- re-enabled when it is disabled (which is how a suspended webhook looks), counted in
  `bridge_hub_webhook_reenabled_total`, and followed at once by a reconcile, so the pushes missed meanwhile are
  uploaded (once: reconcile jobs have the same keys as the pushes').

A token that may not manage webhooks (403: fine-grained tokens need the webhooks permission) is reported on the
Overview and nothing else changes. What was found is recorded in the `hub_webhook_state` table for the UI
(`load_state`); no secret is ever recorded.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from typing import Any

from ..errors import BridgeError, MissingCredential, UpstreamError

log = logging.getLogger("bridge.flows.hub_webhook")

HUB_WEBHOOK = "hub_webhook"
WEBHOOK_PATH = "/webhooks/hub"
GLOB_CHARS = "*?["
NO_PERMISSION = ("The HF token may not manage webhooks (the Hub answered {status}): a fine-grained token needs the "
                 "webhooks permission. Give it that permission, or set the webhook up by hand (README, \"Set up "
                 "the Hub webhook\") and set hub_webhook.manage to false. Everything else keeps working.")

_keeping = threading.Lock()  # a start job and a reconcile must not both create the webhook


# ---------------------------------------------------------------- recorded state
def load_state(runtime: Any) -> dict | None:
    """What the last check found (for the Overview), or None before the first check."""
    with runtime.store.db.read() as conn:
        row = conn.execute("SELECT state FROM hub_webhook_state WHERE id = 1").fetchone()
    return json.loads(row["state"]) if row else None


def save_state(runtime: Any, state: dict) -> None:
    with runtime.store.db.tx() as conn:
        conn.execute("INSERT INTO hub_webhook_state (id, state, updated_at) VALUES (1, ?, ?) ON CONFLICT (id) DO "
                     "UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                     (json.dumps(state), runtime.store.clock()))


# ---------------------------------------------------------------- what to watch
def watched_items(rules: list, account: Any) -> tuple[list[dict], list[str]]:
    """The webhook's watched items for the `experiments` rules, and what cannot be watched, in plain words.
    `account()` is called (once) only when a rule's repo is a glob, to tell a user from an organisation."""
    items, problems, me = [], [], None
    for rule in rules:
        owner = rule.repo.split("/")[0]
        if not any(c in rule.repo for c in GLOB_CHARS):
            items.append({"type": rule.repo_type, "name": rule.repo})
            continue
        if any(c in owner for c in GLOB_CHARS):
            problems.append(f"The rule for {rule.repo!r} has a pattern for its owner: a webhook watches named users,"
                            f" organisations or repos only; add those to the webhook by hand.")
            continue
        me = me or account()
        kind = "user" if owner == me.get("name") else "org" if owner in {
            o.get("name") for o in me.get("orgs") or []} else None
        if kind is None:
            problems.append(f"Cannot tell whether {owner!r} (rule {rule.repo!r}) is a user or an organisation: it is "
                            f"neither the token's own account nor one of its organisations; add it by hand.")
            continue
        items.append({"type": kind, "name": owner})
    unique = {(i["type"], i["name"]): i for i in items}
    return [unique[k] for k in sorted(unique)], problems


def _same(hook: Any, watched: list[dict], domains: list[str], secret: str) -> bool:
    theirs = sorted((w.type, w.name) for w in hook.watched)
    ours = sorted((w["type"], w["name"]) for w in watched)
    same_secret = hook.secret is not None and hmac.compare_digest(hook.secret.encode(), secret.encode())
    return theirs == ours and sorted(hook.domains) == sorted(domains) and same_secret


# ---------------------------------------------------------------- keeping it
def not_managed_reason(runtime: Any) -> str | None:
    """Why the bridge leaves the webhook to people, or None when it manages it."""
    settings, manage = runtime.settings, runtime.settings.config.hub_webhook.manage
    if manage is False:
        return "hub_webhook.manage is false: the webhook is set up by hand."
    missing = [what for what, ok in (("a public URL (BRIDGE_PUBLIC_URL, a Space, or a share link)",
                                      runtime.reachable_url), ("WEBHOOK_SECRET", settings.webhook_secret)) if not ok]
    if manage is None and missing:
        return f"Set up by hand: managing it needs {' and '.join(missing)}."
    return None


def _problem_for(exc: BridgeError) -> str:
    if isinstance(exc, UpstreamError) and exc.status in (401, 403):
        return NO_PERMISSION.format(status=exc.status)
    return str(exc)


def keep_hub_webhook(runtime: Any) -> dict:
    """Finds, creates, updates or re-enables the webhook; records and returns what it found. Raises only what a
    retry may fix (the Hub unreachable), after recording it."""
    with _keeping:
        previous, reason = load_state(runtime) or {}, not_managed_reason(runtime)
        state: dict = {"checked_at": runtime.store.clock(), "managed": reason is None, "why": reason,
                       "problems": [], "reenabled_at": previous.get("reenabled_at"),
                       "last_action": previous.get("last_action")}
        try:
            state.update(_keep(runtime, state["problems"]))
        except BridgeError as exc:
            state["problems"].append(_problem_for(exc))
            if isinstance(exc, UpstreamError) and exc.transient:
                raise
        finally:
            if state.get("action") == "re-enabled":
                state["reenabled_at"] = state["checked_at"]
            if state.get("action") not in (None, "unchanged"):
                state["last_action"] = {"action": state["action"], "at": state["checked_at"]}
            save_state(runtime, state)
        return state


def _wanted(runtime: Any, problems: list[str]) -> dict:
    """The webhook the rules ask for: url, domains, watched items (what cannot be watched goes to `problems`)."""
    settings = runtime.settings
    if not runtime.reachable_url:
        raise MissingCredential("Nothing outside can reach this bridge: set BRIDGE_PUBLIC_URL to manage the webhook.")
    if settings.webhook_secret is None:
        raise MissingCredential("WEBHOOK_SECRET is not set: the bridge never creates a webhook without a secret.")
    watched, cannot = watched_items(settings.config.experiments, runtime.hub.whoami)
    problems.extend(cannot)
    return {"url": runtime.reachable_url.rstrip("/") + WEBHOOK_PATH, "watched": watched,
            "domains": list(settings.config.hub_webhook.domains)}


def _keep(runtime: Any, problems: list[str]) -> dict:
    if not_managed_reason(runtime):
        return {}
    hub, wanted = runtime.hub, _wanted(runtime, problems)
    url, watched, domains = wanted["url"], wanted["watched"], wanted["domains"]
    hook = next((h for h in hub.webhooks() if (h.url or "").rstrip("/") == url), None)
    if hook is None and not watched:
        problems.append("No experiments rule names a repo or owner to watch: no webhook was created.")
        return wanted
    secret = runtime.settings.webhook_secret.get_secret_value()
    action = "unchanged"
    if hook is None:
        hook, action = hub.create_webhook(url, watched, domains, secret), "created"
    elif watched and not _same(hook, watched, domains, secret):
        hook, action = hub.update_webhook(hook.id, url, watched, domains, secret), "updated"
    if hook.disabled:
        hook, action = _re_enable(runtime, hook), "re-enabled"
    elif action != "unchanged":
        log.info("Hub webhook %s %s, watching %s", hook.id, action, ", ".join(w["name"] for w in watched))
    return {**wanted, "webhook_id": hook.id, "enabled": not hook.disabled, "action": action,
            "watched": [{"type": w.type, "name": w.name} for w in hook.watched]}


def _re_enable(runtime: Any, hook: Any) -> Any:
    """A disabled webhook is how a suspended one looks: turn it back on, count it, say it."""
    enabled = runtime.hub.enable_webhook(hook.id)
    runtime.metrics.hub_webhook_reenabled()
    log.warning("the Hub webhook %s was disabled (suspended after failed deliveries?): re-enabled it", hook.id)
    return enabled


def keep_during_reconcile(runtime: Any) -> dict:
    """For the reconcile job: never fails it (the problem is recorded for the Overview)."""
    try:
        return keep_hub_webhook(runtime)
    except BridgeError as exc:
        return {"problems": [_problem_for(exc)]}


def schedule_at_start(runtime: Any) -> int | None:
    """Once the URL upstreams can reach is known (after launch). A webhook left to people needs no Hub call: that
    is recorded at once, and no job is queued."""
    if not_managed_reason(runtime):
        keep_hub_webhook(runtime)
        return None
    job, _ = runtime.store.enqueue(HUB_WEBHOOK, f"{HUB_WEBHOOK}:start:{runtime.store.clock():.6f}", {},
                                   trigger="reconcile", subject="at start")
    return job.id


def run_hub_webhook(job: Any, ctx: Any) -> dict:
    from .reconcile import RECONCILE

    rt = ctx.services
    state = keep_hub_webhook(rt)
    result = {k: state.get(k) for k in ("managed", "why", "action", "url", "watched", "enabled", "problems")}
    if state.get("action") == "re-enabled":  # catch up at once with what was pushed while it was suspended
        again, _ = rt.store.enqueue(RECONCILE, f"{RECONCILE}:webhook-re-enabled:{rt.store.clock():.6f}", {},
                                    trigger="reconcile", subject="Hub webhook re-enabled")
        result["reconcile_job"] = again.id
    return result
