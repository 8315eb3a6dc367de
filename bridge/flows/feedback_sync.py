"""Late feedback: which exported runs had their feedback added or changed in LangSmith since the last check.

Part of every reconcile (flows/reconcile.py). For each export repo whose projects are known (a managed `rule:` names
its project, a `rule_id:` entry may name one with `project:`, and the projects its deliveries' runs came from are
remembered when they are exported):
1. each project is read once (`GET /sessions`, with its feedback stats): its id and the feedback keys used in it;
2. one v2 run query (`POST /api/v2/runs/query`, 1000 ids a page) asks for the runs of those projects with feedback
   under one of those keys (or the keys the configuration names) whose `modified_at` lies in [watermark, now − 5
   minutes): feedback added through the API, changed with `update_feedback`, or given through a presigned link;
3. the runs the repo holds (`ledger.known`) go to `exports.refresh_runs`, which reads them again (one v2 query per
   1000) and lists their feedback (one request per 100), and queues a rewrite of the rows whose feedback fingerprint
   changed: the next flush replaces the shards holding them.
The watermark starts when the repo was first seen (not the epoch) and moves only after all of that succeeded, so a
failed query is asked again next time and nothing is missed. The five minutes of margin catch feedback that lands
while the query runs or is stamped a little before it becomes visible (the SDK sends its own `modified_at`); with a
reconcile every 30 minutes they delay nothing. Without the v2 runs API (self-hosted LangSmith before v0.16) nothing
can be asked: the result says so. The result shows, per repo, the runs found, their first ids and the requests it
took.
"""

from __future__ import annotations

import json
import logging
import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from ..errors import MissingCredential, UpstreamError
from ..feedback_watch import FeedbackWatch
from ..settings import ExportTarget
from ..smith import V2_PAGE
from . import exports

log = logging.getLogger("bridge.flows.feedback_sync")

MARGIN = timedelta(minutes=5)  # feedback stamped up to this long before it became visible is still caught
SHOWN = 10  # run ids listed per repo in the job result
NO_V2 = ("not checked: this LangSmith has no v2 runs API (self-hosted before v0.16), and the v1 run query cannot "
         "ask which feedback changed; feedback given on the bridge's Review page still reaches the dataset")
KEY_IN_FILTER = re.compile(r'feedback_key\s*,\s*"((?:[^"\\]|\\.)*)"')


def watch(rt: Any) -> FeedbackWatch:
    return FeedbackWatch(rt.store.db, rt.store.clock)


def configured_keys(entries: list[ExportTarget]) -> set[str]:
    """Feedback keys the configuration names: feedback links, and `feedback_key` conditions of rule filters."""
    keys = {key for t in entries if t.feedback_links for key in t.feedback_links.keys}
    filters = [t.rule.filter for t in entries if t.rule and t.rule.filter]
    filters += [t.backfill.filter for t in entries if t.backfill and t.backfill.filter]
    return keys | {json.loads(f'"{m}"') for f in filters for m in KEY_IN_FILTER.findall(f)}


def read_projects(rt: Any, names: set[str], seen: list[str], requests: dict) -> tuple[list[str], set[str], list]:
    """The projects' ids and the feedback keys used in them; projects LangSmith no longer has are listed apart."""
    ids, keys, missing = [], set(), []
    wanted = [("name", n) for n in sorted(names)] + [("id", p) for p in seen]
    for kind, value in wanted:
        if kind == "id" and value in ids:
            continue  # a named project already read
        requests["project_reads"] += 1
        try:
            pid, used = rt.smith.project_feedback_keys(**({"name": value} if kind == "name" else {"project_id": value}))
        except UpstreamError as exc:
            if exc.status != 404:
                raise
            missing.append(value)
            continue
        ids.append(pid)
        keys.update(used)
    return list(dict.fromkeys(ids)), keys, missing


def held_runs(rt: Any, repo: str, ids: list[str]) -> list[str]:
    """The changed runs the repo holds (buffered or committed), learning the repo first if the ledger never has."""
    known = rt.ledger.known(repo, ids) if ids else set()
    if len(known) < len(ids) and rt.ledger.repo_state(repo).head is None:
        with exports.repo_lock(repo):  # a flush of the repo records heads too
            exports.sync_repo(rt, repo)  # a wiped state dir: the repo's own shards say what it holds
        known = rt.ledger.known(repo, ids)
    return [i for i in ids if i in known]


def _moment(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def named_projects(entries: list[ExportTarget]) -> set[str]:
    """Projects the configuration names for a repo's entries: managed rules', `project:` keys, back-fills'."""
    return ({t.named_project for t in entries if t.named_project} |
            {t.backfill.project for t in entries if t.backfill})


def sync_repo_feedback(rt: Any, repo: str, job: Any) -> dict:
    """One repo's check; the watermark advances only when LangSmith answered and the runs were handed on."""
    entries = [t for t in rt.settings.config.exports if t.repo == repo]
    names, seen = named_projects(entries), watch(rt).projects(repo)
    if not names and not seen:
        return {"repo": repo, "note": "no project known yet: it is learnt from the first delivery exported"}
    since = watch(rt).since(repo)
    until = (datetime.fromtimestamp(rt.store.clock(), timezone.utc) - MARGIN).isoformat()
    out: dict = {"repo": repo, "since": since, "until": until,
                 "requests": {"project_reads": 0, "queries": 0, "pages": 0}}
    if _moment(until) <= _moment(since):
        return {**out, "note": "first seen within the last few minutes: checked from the next reconcile on"}
    try:
        out.update(check(rt, repo, entries, names, seen, (since, until), out["requests"], job))
    except UpstreamError as exc:  # the watermark stays: the next reconcile asks for the same span again
        log.warning("checking %s for late feedback failed: %s", repo, exc)
        return {**out, "error": str(exc)}
    if "note" not in out:
        watch(rt).advance(repo, until)
    return out


def check(rt: Any, repo: str, entries: list[ExportTarget], names: set[str], seen: list[str],
          window: tuple[str, str], requests: dict, job: Any) -> dict:
    """Asks LangSmith which runs' feedback changed in `window` and hands the ones the repo holds to the rewrite.
    A result with a `note` asked nothing (no feedback key in use yet, no v2 API): the watermark stays."""
    project_ids, keys, missing = read_projects(rt, names, seen, requests)
    keys |= configured_keys(entries)
    found = {"projects": len(project_ids), **({"missing_projects": missing} if missing else {})}
    if not project_ids or not keys:
        return {**found, "note": "no feedback in these projects yet" if project_ids else "no project found"}
    requests["queries"] += 1
    answer = rt.smith.feedback_changed(project_ids, sorted(keys), *window)
    if answer is None:
        return {**found, "note": NO_V2}
    runs, requests["pages"] = answer
    ids = [str(run["id"]) for run in runs]
    changed = held_runs(rt, repo, ids)
    if not changed:
        return {**found, "changed": 0, "run_ids": [], "not_in_repo": len(ids)}
    counts = exports.new_counts(len(changed))
    held = set(changed)
    jobs = exports.refresh_runs(rt, [rt.settings.config.repo_target(repo)],
                                [run for run in runs if str(run["id"]) in held], job, counts)
    requests["queries"] += math.ceil(len(changed) / V2_PAGE)  # the changed runs read again, 1000 per query
    return {**found, "changed": len(changed), "run_ids": changed[:SHOWN], "not_in_repo": len(ids) - len(changed),
            "counts": counts, "jobs": jobs}


def sync_feedback(rt: Any, job: Any) -> dict:
    """Every export repo checked for late feedback; the requests it took in all (the cost of freshness)."""
    if not rt.settings.config.exports:
        return {"repos": []}
    try:
        repos = [sync_repo_feedback(rt, repo, job) for repo in rt.settings.config.export_repos()]
    except MissingCredential as exc:
        return {"repos": [], "note": str(exc)}
    total = {key: sum(r.get("requests", {}).get(key, 0) for r in repos)
             for key in ("project_reads", "queries", "pages")}
    return {"repos": repos, "requests": total}
