"""The review a pull request of an eval repo gets: each task's rows compared with the baseline's, row by row, and
one comment per PR revision (the previous revision's comment is edited to say it is superseded).

Both sides are read from the Hub (the PR revision, and the baseline's revision and file named in its experiment's
metadata), never from LangSmith's runs.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import FormatError, UpstreamError
from ..formats.compare import as_dict, compare, index_rows
from ..formats.pr_comment import Side, TaskResult, marker, our_sha, render_comment, supersede
from ..tracing import step
from .eval_results import DONE, leaderboard_note
from .reading import Reader

log = logging.getLogger("bridge.flows.pr_review")


def baseline(runtime: Any, dataset_id: str, branches: list[str]) -> tuple[Side, dict] | None:
    """The newest experiment of a watched branch (not a PR) in the dataset, with its metadata."""
    refs = {f"refs/heads/{b}" for b in branches}
    candidates = []
    for session in runtime.smith.experiments(dataset_id):
        meta = (session.extra or {}).get("metadata", {})
        if meta.get("hf_ref") in refs and meta.get("bridge_scores") is not None:
            candidates.append((session.start_time, session, meta))
    if not candidates:
        return None
    _, session, meta = max(candidates, key=lambda c: c[0])
    side = Side(session.name, runtime.smith.compare_url(dataset_id, [str(session.id)]), meta.get("bridge_rows", 0),
                meta["bridge_scores"], str(session.id))
    return side, meta


def compare_rows(runtime: Any, rule: Any, outcome: dict, base: dict, pr_reader: Reader) -> dict:
    """The row-by-row comparison of one task, or {"error": why} when a side cannot be read."""
    if not (base.get("hf_repo") and base.get("hf_revision") and base.get("hf_file")):
        return {"error": "the baseline experiment does not name its Hub file, so rows cannot be compared"}
    repo, repo_type, revision = base["hf_repo"], base.get("hf_repo_type", "dataset"), base["hf_revision"]
    try:
        tree = runtime.hub.tree(repo, repo_type, revision)
        main_reader = Reader(runtime.hub, repo, repo_type, revision, tree, pr_reader.rule, pr_reader.workdir / "main")
        index = index_rows(outcome["dataset"], main_reader.read(base["hf_file"]).rows)
        found = compare(outcome["dataset"], index, pr_reader.read(outcome["file"]).rows, rule.regression_threshold)
    except FormatError as exc:
        return {"error": f"rows not compared: {exc}"}
    except UpstreamError as exc:
        if exc.transient:
            raise
        return {"error": f"rows not compared: {exc}"}
    return as_dict(found, rule.max_rows)


def task_result(runtime: Any, rule: Any, outcome: dict, pr_reader: Reader) -> TaskResult:
    """One task's section; the comparison is also kept in the outcome for the job's detail page."""
    mine = Side(outcome["experiment"], outcome["experiment_url"], outcome["rows"] or 0, outcome.get("scores") or {},
                outcome["experiment_id"])
    notes = [n for n in [leaderboard_note(runtime, rule, outcome["task"], mine.scores)] if n]
    found = baseline(runtime, outcome["dataset_id"], rule.branches)
    if found is None:
        return TaskResult(outcome["task"], outcome.get("model"), mine, notes=notes)
    base, meta = found
    compare_url = runtime.smith.compare_url(outcome["dataset_id"], [base.id, mine.id])
    with step(f"compare rows of {outcome['task']}", file=outcome["file"]) as out:
        comparison = compare_rows(runtime, rule, outcome, meta, pr_reader)
        out.update({k: v for k, v in comparison.items() if not isinstance(v, list)})
    outcome.update(baseline={"experiment": base.name, "url": base.url, "revision": meta.get("hf_revision")},
                   compare_url=compare_url, comparison=comparison)
    if "error" in comparison:
        return TaskResult(outcome["task"], outcome.get("model"), mine, base, compare_url, notes + [comparison["error"]])
    return TaskResult(outcome["task"], outcome.get("model"), mine, base, compare_url, notes, comparison)


def comment_on_pr(runtime: Any, target: Any, rule: Any, outcomes: list[dict], pr_reader: Reader) -> str | None:
    hub = runtime.hub
    status, earlier = hub.pull_request(target.repo, target.repo_type, target.pr)
    if any(marker(target.sha) in text for _, text in earlier):
        return "already commented"
    if status in ("closed", "merged"):  # a finished PR is not commented again, e.g. by a job queued before it
        return f"not commented: the pull request is {status}"
    results, failures = [], []
    for o in outcomes:
        if o["status"] in DONE:
            results.append(task_result(runtime, rule, o, pr_reader))
        else:
            failures.append(f"{o['file']}: {o.get('error') or o.get('reason')}")
    text = render_comment(target.sha, target.pr, results, failures)
    with step("comment on the pull request", pr=target.pr):
        url = hub.comment(target.repo, target.repo_type, target.pr, text)
    supersede_older(runtime, target, earlier)
    return url


def supersede_older(runtime: Any, target: Any, earlier: list[tuple[str, str]]) -> None:
    """Edits the comments of older revisions to say they are superseded, unless this revision is not the PR's
    head any more (a late job for an old revision must not supersede the newer comment)."""
    hub = runtime.hub
    head, _ = hub.revision_info(target.repo, target.repo_type, target.ref)
    if head != target.sha:
        return
    for comment_id, text in earlier:
        sha = our_sha(text)
        edited = supersede(text, target.sha) if sha and sha != target.sha else None
        if edited is None:
            continue
        try:
            hub.edit_comment(target.repo, target.repo_type, target.pr, comment_id, edited)
        except UpstreamError as exc:
            if exc.transient:
                raise
            log.warning("could not mark the comment for %s superseded: %s", sha[:7], exc)
