"""After a watched-branch upload, the mapped tasks' headline scores go to the model repo's `.eval_results/` (the
Hub shows them on the model page and the benchmark's leaderboard); the PR review asks where a PR's score would rank.

One pull request per model repo and eval repo, found again by a marker in its description (so a restart or a wiped
state dir never opens a second one), updated by a commit when a later eval revision lands before it is merged, left
alone when it already holds these files. Nothing here fails the experiment job: a model repo the token cannot write,
or a task without a mapping, is reported in the job's result.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from huggingface_hub import EvalResultEntry

from ..errors import MissingCredential, UpstreamError
from ..formats.eval_results import benchmark_for, git_blob_id, marker, pr_description, pr_title, render_files
from ..formats.upload import iso, name_fields, render
from ..tracing import step
from .exports import repo_lock

log = logging.getLogger("bridge.flows.eval_results")
DONE = ("uploaded", "exists", "reused")  # outcomes that have an experiment


def wanted(rule: Any, target: Any) -> bool:
    return rule.eval_results is not None and target.pr is None and \
        target.ref in {f"refs/heads/{b}" for b in rule.branches}


def plan(rule: Any, target: Any, outcomes: list[dict], commit_url: str,
         commit_time: datetime) -> tuple[dict[str, list[EvalResultEntry]], list[dict]]:
    """({model repo: entries}, [skipped tasks with the reason])."""
    options, entries, skipped = rule.eval_results, {}, []
    for o in outcomes:
        if o["status"] not in DONE:
            continue
        benchmark = benchmark_for(o["task"], options.benchmarks)
        value = (o.get("scores") or {}).get(benchmark.score) if benchmark else None
        model_repo = render(options.model_repo, name_fields(target.repo, target.ref, target.sha, None, o["task"],
                                                            o.get("model")))
        reason = ("no `benchmarks` mapping matches this task" if benchmark is None else
                  f"the task has no score {benchmark.score!r} (it has {', '.join(o.get('scores') or {}) or 'none'})"
                  if value is None else f"{model_repo!r} is not a model repo id" if model_repo.count("/") != 1
                  else None)
        if reason:
            skipped.append({"task": o["task"], "file": o["file"], "status": "skipped", "reason": reason})
            continue
        entries.setdefault(model_repo, []).append(EvalResultEntry(
            dataset_id=benchmark.dataset, task_id=benchmark.task_id, value=value,
            date=o.get("run_date") or iso(commit_time), source_url=commit_url,
            source_name=f"{target.repo}@{target.sha[:7]}", notes=o.get("experiment")))
    return entries, skipped


def publish(runtime: Any, target: Any, rule: Any, outcomes: list[dict], commit_time: datetime) -> list[dict]:
    """One report per model repo (and per skipped task); never raises for an upstream refusal."""
    commit_url = runtime.hub.web_url(target.repo, target.repo_type, f"/commit/{target.sha}")
    entries, reports = plan(rule, target, outcomes, commit_url, commit_time)
    for model_repo, found in entries.items():
        with step(f"eval results to {model_repo}", model_repo=model_repo) as out:
            try:
                report = write(runtime, model_repo, target, render_files(found), commit_url,
                               rule.eval_results.pull_request)
            except (UpstreamError, MissingCredential) as exc:
                report = {"status": "failed", "error": str(exc)}
            out.update(report)
        reports.append({"model_repo": model_repo, "files": sorted(render_files(found)), **report})
    return reports


def write(runtime: Any, model_repo: str, target: Any, files: dict[str, bytes], commit_url: str,
          pull_request: bool) -> dict:
    """One model repo's results at a time: two jobs (two pushes to the eval repo) that both looked for the open PR
    and found none would each open one."""
    with repo_lock(f"model:{model_repo}"):
        return _write(runtime, model_repo, target, files, commit_url, pull_request)


def _write(runtime: Any, model_repo: str, target: Any, files: dict[str, bytes], commit_url: str,
           pull_request: bool) -> dict:
    hub, message = runtime.hub, f"Eval results from {target.repo}@{target.sha[:7]}"
    if not pull_request:
        if holds(hub, model_repo, "main", files):
            return {"status": "up to date"}
        sha, _ = hub.commit_files(model_repo, "model", files, message, commit_url)
        return {"status": "committed", "url": hub.web_url(model_repo, "model", f"/commit/{sha}")}
    num = find_pr(hub, model_repo, target.repo)
    if num is not None:
        url = hub.web_url(model_repo, "model", f"/discussions/{num}")
        if holds(hub, model_repo, f"refs/pr/{num}", files):
            return {"status": "up to date", "url": url}
        hub.commit_files(model_repo, "model", files, message, commit_url, revision=f"refs/pr/{num}")
        return {"status": "updated", "url": url}
    if holds(hub, model_repo, "main", files):
        return {"status": "up to date"}  # the PR was merged already
    _, url = hub.commit_files(model_repo, "model", files, pr_title(target.repo),
                              pr_description(target.repo, target.sha, commit_url), create_pr=True)
    return {"status": "opened", "url": url}


def find_pr(hub: Any, model_repo: str, eval_repo: str) -> int | None:
    """The open PR of ours for this eval repo: its title, then the marker in its description (first comment)."""
    tag = marker(eval_repo)
    for num, title in hub.open_pull_requests(model_repo, "model"):
        if not title.endswith(pr_title(eval_repo)):
            continue
        if any(tag in text for text in hub.comments(model_repo, "model", num)[:1]):
            return num
    return None


def holds(hub: Any, repo: str, revision: str, files: dict[str, bytes]) -> bool:
    tree = hub.tree(repo, "model", revision)
    return all(tree.get(path) == git_blob_id(content) for path, content in files.items())


def leaderboard_note(runtime: Any, rule: Any, task: str, scores: dict) -> str | None:
    """Where the PR's headline score would rank on its benchmark's leaderboard, when the Hub has one."""
    benchmark = benchmark_for(task, rule.eval_results.benchmarks) if rule.eval_results else None
    value = scores.get(benchmark.score) if benchmark else None
    if value is None:
        return None
    try:
        board = [e for e in runtime.hub.leaderboard(benchmark.dataset) if not getattr(e, "pull_request", None)]
    except UpstreamError as exc:
        log.info("no leaderboard for %s: %s", benchmark.dataset, exc)
        return None
    if not board:
        return None
    rank = 1 + sum(1 for e in board if isinstance(e.value, (int, float)) and e.value > value)
    return (f"{benchmark.score} {value:.4g} would rank #{rank} of {len(board) + 1} on the {benchmark.dataset} "
            "leaderboard")
