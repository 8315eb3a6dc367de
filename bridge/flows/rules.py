"""Job kind `rules`: the LangSmith automation rules the bridge keeps itself, and gaps recovered from rule logs.

Runs at start (once the public URL is known) and at every reconcile:
- every exports entry with `rule:` gets its rule in LangSmith: found (the id remembered, else display name and
  webhook URL in the project), created when missing, updated when the filter, sampling rate, URL or secret differ.
  The secret travels in the `X-Webhook-Secret` header, never in the URL. A rule someone disabled is reported and left
  alone; without a public URL or without LANGSMITH_WEBHOOK_SECRET nothing is created and the reason is recorded.
  Rules named by `rule_id:` are only read (enabled or not), never changed.
- every rule the bridge knows (managed or named) has its log read since the last check: runs it was applied to that
  no dataset holds yet are read by id (v2, 1000 per request) and exported through the same path as webhook
  deliveries. That needs no configuration and works for any sampling rate. Where LangSmith refuses the log
  (403/404), a `backfill:` section, when configured, covers the gap through reconcile's back-fill; otherwise the gap
  is shown as unknown.
What was found is written to `langsmith_rules` (rule_state.py) for the Overview's Wiring panel.
"""

from __future__ import annotations

import hmac
import logging
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

from ..errors import UpstreamError
from ..feedback_watch import remember_projects
from ..formats.runs_v2 import EXPORT_SELECTS
from ..rule_state import fingerprint, managed_key, named_key
from ..settings import ExportTarget
from .exports import export_runs, new_counts, sync_repo

log = logging.getLogger("bridge.flows.rules")

RULES = "rules"
WEBHOOK_PATH = "/webhooks/langsmith"
SECRET_HEADER = "X-Webhook-Secret"
LOG_OVERLAP = timedelta(minutes=1)  # entries written while the log was read appear with slightly older times
NO_URL = ("no public URL: nothing outside can reach this bridge (set BRIDGE_PUBLIC_URL, run it as a Space, or "
          "allow the share link), so its rule was neither created nor changed")
NO_SECRET = ("no secret: LANGSMITH_WEBHOOK_SECRET is not set, and the bridge does not create a rule that anyone "
             "could imitate; set it and the rule is created at the next check")
DISABLED = "disabled in LangSmith: left as it is (enable it there to receive runs again)"
# What a person may have added to the bridge's rule in LangSmith; an update (the whole rule) carries it over.
KEPT_ON_UPDATE = ("trace_filter", "tree_filter", "group_by", "backfill_from", "add_to_dataset_id",
                  "add_to_annotation_queue_id", "evaluator_id", "extend_only", "transient", "include_extended_stats")


def schedule(runtime: Any, subject: str) -> int | None:
    """A check of the rules the exports entries name or declare; None when there is none to check."""
    if not any(t.rule is not None or t.rule_id not in (None, "*") for t in runtime.settings.config.exports):
        return None
    job, _ = runtime.store.enqueue(RULES, f"{RULES}:{runtime.store.clock():.6f}", {}, trigger="reconcile",
                                   subject=subject)
    return job.id


def restore_rule_ids(runtime: Any) -> None:
    """At build time: managed entries take their remembered rule id, so deliveries route before the first check."""
    for target in runtime.settings.config.exports:
        if target.rule is not None:
            state = runtime.rule_states.get(managed_key(target.repo)) or {}
            target.set_managed_rule_id(state.get("rule_id"))


def refusal(exc: UpstreamError) -> str | None:
    """Plain words for a refusal worth showing (the job goes on with other rules); None for errors to retry."""
    if exc.transient:
        return None
    if exc.status in (401, 403):
        return (f"LangSmith refused the rules API ({exc.status}): the API key needs permission to manage "
                "automation rules")
    return str(exc)


# ---------------------------------------------------------------- managed rules


def desired_rule(target: ExportTarget, project_id: str, hook_url: str, secret: str) -> dict:
    body = {"display_name": target.rule_name, "session_id": project_id, "is_enabled": True,
            "sampling_rate": target.rule.sampling_rate,
            "webhooks": [{"url": hook_url, "headers": {SECRET_HEADER: secret}}]}
    if target.rule.filter:
        body["filter"] = target.rule.filter
    return body


def find_ours(smith: Any, state: dict, project_id: str, name: str, hook_url: str) -> dict | None:
    if state.get("rule_id"):
        found = [r for r in smith.rules(rule_id=state["rule_id"]) if r.get("id") == state["rule_id"]]
        if found:
            return found[0]
    for rule in smith.rules(session_id=project_id):
        if rule.get("display_name") == name and any(w.get("url") == hook_url for w in rule.get("webhooks") or []):
            return rule
    return None


def is_ours(hook: dict) -> bool:
    """A webhook to some bridge's LangSmith endpoint (this one's, or its URL before it moved)."""
    return urlsplit(str(hook.get("url") or "")).path.rstrip("/").endswith(WEBHOOK_PATH)


def differences(rule: dict, want: dict, secret: str, known_fingerprint: str | None) -> list[str]:
    found = []
    if (rule.get("filter") or None) != want.get("filter"):
        found.append("filter")
    if abs(float(rule.get("sampling_rate") or 0) - want["sampling_rate"]) > 1e-9:
        found.append("sampling rate")
    hooks = [w for w in rule.get("webhooks") or [] if is_ours(w)]
    if [w.get("url") for w in hooks] != [want["webhooks"][0]["url"]]:
        found.append("webhook URL")
    shown = {k.lower(): v for w in hooks for k, v in (w.get("headers") or {}).items()}.get(SECRET_HEADER.lower())
    readable = isinstance(shown, str) and shown and set(shown) != {"*"}
    if (readable and not hmac.compare_digest(shown.encode(), secret.encode())) or \
            known_fingerprint != fingerprint(secret):
        found.append("secret")
    return found


def sync_managed(rt: Any, target: ExportTarget) -> dict:
    """Brings one managed rule in line with its entry; returns what was done, for the job's result."""
    states, key = rt.rule_states, managed_key(target.repo)
    state = states.get(key) or {}
    base = {"managed": 1, "repos": target.repo, "name": target.rule_name, "project": target.rule.project}
    secret = rt.settings.langsmith_webhook_secret
    problem = NO_URL if rt.reachable_url is None else NO_SECRET if secret is None else None
    if problem:
        states.save(key, **base, problem=problem)
        return {"repo": target.repo, "action": "none", "problem": problem}
    hook_url = rt.reachable_url.rstrip("/") + WEBHOOK_PATH
    try:
        project_id = rt.smith.project_id(target.rule.project)
        rule = find_ours(rt.smith, state, project_id, target.rule_name, hook_url)
        action, rule = apply_rule(rt, rule, desired_rule(target, project_id, hook_url, secret.get_secret_value()),
                                  state.get("secret_fingerprint"))
    except UpstreamError as exc:
        problem = refusal(exc)
        if problem is None:
            raise
        if exc.status == 404:
            problem = f"project {target.rule.project!r} not found in LangSmith (the rule's project must exist)"
        states.save(key, **base, problem=problem)
        return {"repo": target.repo, "action": "none", "problem": problem}
    target.set_managed_rule_id(rule["id"])
    enabled = bool(rule.get("is_enabled", True))
    states.save(key, **base, rule_id=rule["id"], enabled=int(enabled), problem=None if enabled else DISABLED,
                secret_fingerprint=fingerprint(secret.get_secret_value()) if action != "left alone"
                else state.get("secret_fingerprint"))
    return {"repo": target.repo, "rule_id": rule["id"], "action": action}


def apply_rule(rt: Any, rule: dict | None, want: dict, known_fingerprint: str | None) -> tuple[str, dict]:
    secret = want["webhooks"][0]["headers"][SECRET_HEADER]
    if rule is None:
        return "created", rt.smith.create_rule(want)
    if not rule.get("is_enabled", True):
        return "left alone", rule
    changed = differences(rule, want, secret, known_fingerprint)
    if not changed:
        return "unchanged", rule
    log.info("updating LangSmith rule %s: %s changed", rule["id"], ", ".join(changed))
    body = {**{k: rule[k] for k in KEPT_ON_UPDATE if rule.get(k) is not None}, **want,
            "webhooks": want["webhooks"] + [w for w in rule.get("webhooks") or [] if not is_ours(w)]}
    return "updated (" + ", ".join(changed) + ")", rt.smith.update_rule(rule["id"], body)


def check_named(rt: Any, rule_id: str, targets: list[ExportTarget]) -> None:
    """A rule a person manages: read only, to show whether it exists and is enabled."""
    key, repos = named_key(rule_id), ", ".join(t.repo for t in targets)
    try:
        found = [r for r in rt.smith.rules(rule_id=rule_id) if r.get("id") == rule_id]
    except UpstreamError as exc:
        problem = refusal(exc)
        if problem is None:
            raise
        rt.rule_states.save(key, managed=0, repos=repos, rule_id=rule_id, problem=problem)
        return
    if not found:
        rt.rule_states.save(key, managed=0, repos=repos, rule_id=rule_id, enabled=None,
                            problem="no rule with this id in LangSmith (check rule_id in bridge.yaml)")
        return
    rule = found[0]
    enabled = bool(rule.get("is_enabled", True))
    rt.rule_states.save(key, managed=0, repos=repos, rule_id=rule_id, name=rule.get("display_name"),
                        project=rule.get("session_name"), enabled=int(enabled),
                        problem=None if enabled else "disabled in LangSmith: no runs are delivered")


# ---------------------------------------------------------------- gaps from the rule log


def log_start(since: str | None) -> str | None:
    if not since:
        return None
    moment = datetime.fromisoformat(since.replace("Z", "+00:00"))
    moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return (moment - LOG_OVERLAP).isoformat()


def missing_runs(rt: Any, entries: list[dict], targets: list[ExportTarget]) -> list[dict]:
    """Runs the log says were applied that some target's dataset does not hold (read from the repo first)."""
    runs = {str(e["run_id"]): {"id": str(e["run_id"]), "session_id": e.get("run_session_id"),
                               "start_time": e.get("start_time")} for e in entries if e.get("run_id")}
    ids, missing = list(runs), set()
    for target in targets:
        unknown = set(ids) - rt.ledger.known(target.repo, ids) if ids else set()
        if unknown:  # the state dir may be newer than the repo: learn what it holds before reading runs again
            sync_repo(rt, target.repo)
            unknown = set(ids) - rt.ledger.known(target.repo, ids)
        missing |= unknown
    return [runs[i] for i in ids if i in missing]


def recover(rt: Any, key: str, rule_id: str, targets: list[ExportTarget], job: Any) -> dict:
    states = rt.rule_states
    state = states.get(key) or {}
    try:
        entries = rt.smith.rule_log(rule_id, log_start(state.get("log_since")))
    except UpstreamError as exc:
        if exc.status not in (403, 404):
            raise
        covered = any(t.backfill for t in targets)
        status = (f"log unavailable ({exc.status}): " +
                  ("gaps are covered by the back-fill filter" if covered else "gaps cannot be known"))
        states.save(key, log_status=status)
        return {"rule_id": rule_id, "log": status}
    newest = max((str(e["application_time"]) for e in entries if e.get("application_time")), default=None)
    wanted = missing_runs(rt, entries, targets)
    counts = new_counts(len(wanted))
    if wanted:
        runs = rt.smith.runs_by_id(wanted, selects=EXPORT_SELECTS)
        remember_projects(rt.store, [t.repo for t in targets], runs)
        export_runs(rt, rule_id, runs, targets, job, counts)
        states.add_recovered(key, counts["buffered"])
    last = max(filter(None, (newest, state.get("last_applied"))), default=None)
    states.save(key, log_since=newest or state.get("log_since"), log_status="read", last_applied=last)
    return {"rule_id": rule_id, "applied": len(entries), "missing": len(wanted), "recovered": counts["buffered"]}


# ---------------------------------------------------------------- the job


def rules_by_id(config: Any) -> dict[str, tuple[str, list[ExportTarget]]]:
    """rule id -> (state key, the entries it feeds), for every rule with a known id ("*" is not a rule)."""
    found: dict[str, tuple[str, list[ExportTarget]]] = {}
    for target in config.exports:
        rule_id = target.current_rule_id
        if rule_id and rule_id != "*":
            key = managed_key(target.repo) if target.rule is not None else named_key(rule_id)
            found.setdefault(rule_id, (key, []))[1].append(target)
    return found


def run_rules(job: Any, ctx: Any) -> dict:
    rt = ctx.services
    if not rt.url_known:
        return {"note": "the public URL is not known yet; the check at start runs once it is"}
    config = rt.settings.config
    managed = [sync_managed(rt, t) for t in config.exports if t.rule is not None]
    known = rules_by_id(config)
    for rule_id, (key, targets) in known.items():
        if key.startswith("rule:"):
            check_named(rt, rule_id, targets)
    recovered = [recover(rt, key, rule_id, targets, job) for rule_id, (key, targets) in known.items()]
    rt.rule_states.forget_except({managed_key(t.repo) for t in config.exports if t.rule is not None}
                                 | {key for key, _ in known.values()})
    return {"managed": managed, "logs": recovered}
