"""Which jobs a webhook delivery creates. Pure: no I/O, so the web handlers stay fast and this is testable alone.

A delivery becomes a list of `JobSpec`s, `CancelQueued` (a closed pull request withdraws its queued jobs), or
`Ignored` with the reason (answered 200 so the sender never retries an event we simply do not want).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Container
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from .events import HubDelivery, RuleDelivery
from .formats.pr_comment import MARKER_PREFIX
from .settings import BridgeConfig, ExperimentRule

EXPERIMENT = "experiment"
EXPORT = "export"
PR_REF = re.compile(r"^refs/pr/(\d+)$")
OWN = "the bridge's own"  # how an ignored echo of the bridge's own work starts its reason (the Overview reads it)


@dataclass(frozen=True)
class JobSpec:
    kind: str
    key: str
    payload: dict
    subject: str


@dataclass(frozen=True)
class Ignored:
    reason: str


@dataclass(frozen=True)
class CancelQueued:
    """Withdraw work: the queued jobs whose key starts with `key_prefix` are cancelled, showing `reason`."""
    key_prefix: str
    reason: str


def experiment_key(repo_type: str, repo: str, ref: str, sha: str) -> str:
    return f"{EXPERIMENT}:{repo_type}/{repo}:{ref}:{sha}"


def match_rule(config: BridgeConfig, repo: str, repo_type: str) -> ExperimentRule | None:
    """Rules are tried in order and the first match wins, like a routing table."""
    for rule in config.experiments:
        if rule.repo_type == repo_type and fnmatchcase(repo, rule.repo):
            return rule
    return None


def _watched_ref(rule: ExperimentRule, ref: str) -> tuple[bool, int | None, str]:
    """(watched, pr number, reason when not watched)."""
    if ref.startswith("refs/heads/"):
        branch = ref.removeprefix("refs/heads/")
        return (branch in rule.branches, None, f"branch {branch!r} is not watched")
    pr = PR_REF.match(ref)
    if pr:
        return (rule.pull_requests, int(pr.group(1)), "pull requests are not watched")
    if ref.startswith("refs/tags/"):
        return (False, None, "tags are not watched")
    if ref.startswith("refs/convert/"):
        return (False, None, f"{ref} is the Hub's own conversion")
    return (False, None, f"ref {ref!r} is not watched")


def route_pull_request(delivery: HubDelivery, config: BridgeConfig) -> CancelQueued | Ignored:
    """A `discussion` event of a pull request: closing it cancels its queued jobs; merging it asks for nothing (its
    merge commit arrives as a push to the base branch, and a merged PR is not commented again)."""
    pr = delivery.discussion
    if pr is None or not pr.is_pull_request or pr.num is None:
        return Ignored("only pull requests are watched among discussion events")
    repo, repo_type = delivery.repo.name, delivery.repo.type
    rule = match_rule(config, repo, repo_type)
    if rule is None or not rule.pull_requests:
        return Ignored(f"no experiments rule watches the pull requests of {repo_type} {repo!r}")
    if pr.status == "closed":
        return CancelQueued(experiment_key(repo_type, repo, f"refs/pr/{pr.num}", ""),
                            f"pull request #{pr.num} of {repo} was closed")
    if pr.status == "merged":
        return Ignored(f"pull request #{pr.num} was merged: it is not commented again (the merge commit arrives "
                       f"as a push)")
    return Ignored(f"pull request #{pr.num} is {pr.status or 'unchanged'}: nothing to do")


def route_hub(delivery: HubDelivery, config: BridgeConfig,
              own_commits: Container[str] = ()) -> list[JobSpec] | CancelQueued | Ignored:
    scope = delivery.event.scope
    repo, repo_type = delivery.repo.name, delivery.repo.type
    if scope == "discussion":
        return route_pull_request(delivery, config)
    if scope.startswith("discussion.comment") and _is_own_comment(delivery):
        return Ignored(f"{OWN} PR comment on {repo}")
    if scope != "repo.content" and not scope.startswith("repo.content."):
        return Ignored(f"scope {scope!r} is not watched (only repo.content and pull requests closing)")
    rule = match_rule(config, repo, repo_type)
    if rule is None:
        if any(u.new_sha in own_commits for u in delivery.updated_refs if u.new_sha):
            return Ignored(f"{OWN} commit to {repo}")
        if repo_type == "dataset" and repo in config.export_repos():  # the echo can beat the commit's bookkeeping
            return Ignored(f"{OWN} export dataset {repo} changed")
        return Ignored(f"no experiments rule matches {repo_type} {repo!r}")
    specs, reasons = [], []
    for update in delivery.updated_refs:
        if not update.new_sha:
            reasons.append(f"{update.ref} was deleted")
            continue
        watched, pr, reason = _watched_ref(rule, update.ref)
        if not watched:
            reasons.append(reason)
        elif update.new_sha in own_commits:
            reasons.append(f"{update.new_sha[:7]} is a commit the bridge made")
        else:
            specs.append(experiment_spec(repo, repo_type, update.ref, update.new_sha, update.old_sha, pr))
    return specs or Ignored("; ".join(reasons) or "no updated refs")


def experiment_spec(repo: str, repo_type: str, ref: str, sha: str, old_sha: str | None, pr: int | None,
                    files: list[str] | None = None, key_suffix: str = "") -> JobSpec:
    payload = {"repo": repo, "repo_type": repo_type, "ref": ref, "sha": sha, "old_sha": old_sha, "pr": pr}
    if files is not None:
        payload["files"] = files
    where = f"pr-{pr}" if pr is not None else ref.removeprefix("refs/heads/")
    return JobSpec(EXPERIMENT, experiment_key(repo_type, repo, ref, sha) + key_suffix, payload,
                   f"{repo}@{sha[:7]} ({where})")


def run_ids(runs: list) -> list[str]:
    return [str(run["id"]) for run in runs if isinstance(run, dict) and run.get("id")]


def feedback_stats_of(runs: list) -> dict[str, Any]:
    """Each run's `feedback_stats` as delivered (runs without any left out)."""
    return {str(r["id"]): r["feedback_stats"] for r in runs
            if isinstance(r, dict) and r.get("id") and r.get("feedback_stats")}


def export_key(rule_id: str, ids: list[str], threads: list | None, stats: dict[str, Any] | None = None) -> str:
    """The same runs delivered again are one job (a retried delivery), unless their feedback changed in between
    (`stats`: each run's `feedback_stats`): then the new delivery refreshes the rows already exported."""
    material = {"runs": sorted(set(ids)), "threads": threads if not ids else None}
    if stats:
        material["feedback"] = stats
    material = json.dumps(material, sort_keys=True, default=str)
    return f"{EXPORT}:{rule_id}:{hashlib.sha256(material.encode()).hexdigest()[:32]}"


def _is_own_comment(delivery: HubDelivery) -> bool:
    comment = delivery.raw.get("comment") if isinstance(delivery.raw, dict) else None
    content = comment.get("content") if isinstance(comment, dict) else None
    return isinstance(content, str) and content.lstrip().startswith(MARKER_PREFIX)


def route_rule(delivery: RuleDelivery, config: BridgeConfig) -> list[JobSpec] | Ignored:
    targets = config.exports_for(delivery.rule_id)
    if not targets:
        return Ignored(f"no exports entry for rule {delivery.rule_id!r}")
    ids = run_ids(delivery.runs)
    if not delivery.runs and not delivery.threads:
        return Ignored("the delivery has no runs")
    subject = f"rule {delivery.rule_id[:8]}: {len(ids)} run(s)"
    if delivery.threads:
        subject += f", {len(delivery.threads)} thread(s)"
    # The job refers to the stored delivery (`delivery_id` is added when it is stored): the body is kept once.
    payload = {"rule_id": delivery.rule_id, "runs": len(ids)}
    key = export_key(delivery.rule_id, ids, delivery.threads, feedback_stats_of(delivery.runs))
    return [JobSpec(EXPORT, key, payload, subject)]
