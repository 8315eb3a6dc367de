"""The Overview's Wiring panel, "LangSmith rules" part: each rule the bridge takes deliveries from, managed or
named, from what the rules flow recorded (rule_state.py) and the export jobs in the store. Never calls LangSmith."""

from __future__ import annotations

from typing import Any

from ..rule_state import managed_key, named_key
from .html import enabled_text, esc, icon, ts

NOT_CHECKED = "not checked yet (the check runs at start and at every reconcile)"


def configured_rules(config: Any) -> list[dict]:
    """One entry per rule bridge.yaml mentions, in its order; a named rule feeding several repos appears once."""
    found: dict[str, dict] = {}
    for target in config.exports:
        if target.rule is not None:
            found[managed_key(target.repo)] = {"managed": True, "repos": [target.repo], "name": target.rule_name,
                                               "project": target.rule.project}
        elif target.rule_id != "*":
            entry = found.setdefault(named_key(target.rule_id), {"managed": False, "repos": [], "name": None,
                                                                 "project": None, "rule_id": target.rule_id})
            entry["repos"].append(target.repo)
    return [{"key": key, **entry} for key, entry in found.items()]


def _when(value: Any) -> str:
    return ts(value, empty="never")


def _row(entry: dict, state: dict, last_delivery: float | None) -> str:
    kind = "managed by the bridge" if entry["managed"] else "named in bridge.yaml"
    rule_id = state.get("rule_id") or entry.get("rule_id")
    title = esc(entry["name"] or state.get("name") or "rule")
    ident = f'<div class="muted"><code>{esc(rule_id)}</code></div>' if rule_id else ""
    project = entry["project"] or state.get("project")
    where = f'<div class="muted">project {esc(project)}</div>' if project else ""
    problem = state.get("problem") or ("" if state else NOT_CHECKED)
    log_status = state.get("log_status")
    if log_status and log_status != "read":
        problem = "; ".join(filter(None, (problem, log_status)))
    problem_html = f'<span class="warn-text">{icon("warn")} {esc(problem)}</span>' if problem else "—"
    return (f"<tr><td><b>{title}</b>{ident}{where}<div class=\"muted\">{kind}</div></td>"
            f"<td>{esc(', '.join(entry['repos']))}</td><td class=\"nowrap\">{enabled_text(state.get('enabled'))}</td>"
            f"<td class=\"nowrap\">{_when(last_delivery)}</td><td class=\"nowrap\">{_when(state.get('last_applied'))}</td>"
            f"<td>{int(state.get('recovered') or 0)}</td><td>{problem_html}</td></tr>")


def langsmith_rules_html(runtime: Any, detailed: bool = True) -> str:
    """The "LangSmith rules" section. Without `detailed` (a visitor who may not act), only how many rules there
    are and how many have a problem."""
    entries = configured_rules(runtime.settings.config)
    states = {row["key"]: row for row in runtime.rule_states.all()}
    head = "<h4>LangSmith rules</h4>"
    if not entries:
        return head + ('<p class="muted">No LangSmith rule yet: add an <code>exports</code> entry with '
                       '<code>rule:</code> (the bridge creates and keeps the rule) or <code>rule_id:</code>.</p>')
    troubled = sum(1 for e in entries if (states.get(e["key"]) or {}).get("problem"))
    if not detailed:
        return head + f'<p>{len(entries)} rule(s), {troubled} with a problem. Sign in to see them.</p>'
    ids = [(states.get(e["key"]) or {}).get("rule_id") or e.get("rule_id") for e in entries]
    deliveries = runtime.rule_states.last_deliveries([i for i in ids if i])
    rows = "".join(_row(e, states.get(e["key"]) or {}, deliveries.get(i)) for e, i in zip(entries, ids))
    return (head + '<table class="tbl compact"><thead><tr><th>Rule</th><th>Dataset</th><th>State</th>'
            "<th>Last delivery received</th><th>Last application in LangSmith's log</th>"
            f"<th>Recovered from the log</th><th>Problem</th></tr></thead><tbody>{rows}</tbody></table>")
