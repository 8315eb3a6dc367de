"""Eval results on the model page: `.eval_results/*.yaml` written to the model repo through a PR found again by its
marker, checked by the sandbox Hub, read back with huggingface_hub's parser; leaderboard rank in the PR comment."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone

import pytest
import yaml
from huggingface_hub import HfApi, parse_eval_result_entries
from huggingface_hub.errors import HfHubHTTPError

from bridge.routing import experiment_spec
from bridge.sandbox.demo import QUESTIONS, lm_eval_files
from conftest import HF_TOKEN, run_jobs

REPO = "acme/llama-evals"
MODEL = "acme/llama-3-8b"
BENCH = "openai/gsm8k"
CONFIG = """
experiments:
  - repo: "acme/*-evals"
    files: ["**/samples_*.jsonl", "**/*.csv"]
    eval_results:
      pull_request: {pr}
      model_repo: "{{model}}"
      benchmarks:
        "demo_*": {{dataset: openai/gsm8k, task_id: main, score: exact_match}}
jobs: {{backoff_seconds: 0.01, max_backoff_seconds: 0.05}}
"""
DAY = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
EVAL_YAML = b"name: GSM8K\nevaluation_framework: lm-evaluation-harness\ntasks:\n  - id: main\n    config: main\n    split: test\n"
TABLE = {"notes/table.csv": b"question,answer,prediction,correct\nq1,a,a,1\n"}


@pytest.fixture
def benchmark(hub):
    hub.create_repo(BENCH)
    hub.commit(BENCH, {"eval.yaml": EVAL_YAML}, author="openai")
    hub.create_repo(MODEL, repo_type="model")
    hub.create_repo(REPO)


def push(hub, runtime, files, model=MODEL):
    old = hub.head(REPO)
    sha = hub.commit(REPO, files, message="results")
    spec = experiment_spec(REPO, "dataset", "refs/heads/main", sha, old, None)
    runtime.store.enqueue(spec.kind, spec.key, spec.payload)
    [job] = run_jobs(runtime)
    assert job.state == "succeeded", job.last_error
    return sha, job


def entries_at(hub, revision, repo=MODEL):
    data = hub.read_file(repo, ".eval_results/gsm8k.yaml", repo_type="model", revision=revision)
    return parse_eval_result_entries(yaml.safe_load(data))


def open_prs(hub):
    api = HfApi(endpoint=hub.base_url, token=HF_TOKEN)
    return [d for d in api.get_repo_discussions(MODEL, repo_type="model", discussion_type="pull_request")
            if d.status == "open"]


def test_main_upload_opens_one_pr_found_again_and_updated(hub, smith, make_bridge, benchmark, tmp_path):
    runtime = make_bridge(CONFIG.format(pr="true"), state=tmp_path / "s")
    sha, job = push(hub, runtime, {**lm_eval_files(DAY, MODEL, QUESTIONS), **TABLE})
    reports = {r.get("model_repo") or r["task"]: r for r in job.result["eval_results"]}
    assert reports[MODEL]["status"] == "opened" and reports[MODEL]["files"] == [".eval_results/gsm8k.yaml"]
    assert reports["table"]["status"] == "skipped" and "no `benchmarks` mapping" in reports["table"]["reason"]
    [pr] = open_prs(hub)
    [entry] = entries_at(hub, f"refs/pr/{pr.num}")
    experiment = next(f["experiment"] for f in job.result["files"] if "samples_" in f["file"])
    assert (entry.dataset_id, entry.task_id, entry.value) == (BENCH, "main", round(4 / 6, 6))
    assert entry.source_url.endswith(f"/datasets/{REPO}/commit/{sha}") and entry.source_name == f"{REPO}@{sha[:7]}"
    assert entry.notes == experiment and entry.date.startswith("2026-11-01T12:00")
    # a restart with a wiped state dir and the same push re-delivered: the PR is found again, nothing changes
    shutil.rmtree(tmp_path / "s")
    wiped = make_bridge(CONFIG.format(pr="true"), state=tmp_path / "s")
    spec = experiment_spec(REPO, "dataset", "refs/heads/main", sha, hub.commits(REPO)[1]["oid"], None)
    wiped.store.enqueue(spec.kind, spec.key, spec.payload)
    [again] = run_jobs(wiped)
    assert [r["status"] for r in again.result["eval_results"] if r.get("model_repo")] == ["up to date"]
    # a later eval revision before the PR is merged updates the same PR
    better = [(q, a, a) for q, a, _ in QUESTIONS]
    _, later = push(hub, wiped, lm_eval_files(datetime(2026, 11, 2, tzinfo=timezone.utc), MODEL, better))
    [report] = [r for r in later.result["eval_results"] if r.get("model_repo")]
    assert report["status"] == "updated" and report["url"].endswith(f"/discussions/{pr.num}")
    assert [p.num for p in open_prs(hub)] == [pr.num]
    assert entries_at(hub, f"refs/pr/{pr.num}")[0].value == 1.0


def test_model_repo_the_token_cannot_write_is_reported_not_failed(hub, smith, make_bridge, benchmark):
    hub.create_repo("meta/llama-4", repo_type="model")
    runtime = make_bridge(CONFIG.format(pr="false"))
    _, job = push(hub, runtime, lm_eval_files(DAY, "meta/llama-4", QUESTIONS))
    [report] = job.result["eval_results"]
    assert report["model_repo"] == "meta/llama-4" and report["status"] == "failed"
    assert "rights to write" in report["error"]
    assert [f["status"] for f in job.result["files"]] == ["uploaded"]


def test_direct_commit_when_pull_request_is_false(hub, smith, make_bridge, benchmark):
    runtime = make_bridge(CONFIG.format(pr="false"))
    _, job = push(hub, runtime, lm_eval_files(DAY, MODEL, QUESTIONS))
    assert [r["status"] for r in job.result["eval_results"]] == ["committed"]
    assert entries_at(hub, "main")[0].value == round(4 / 6, 6) and open_prs(hub) == []


@pytest.mark.parametrize("text, problem", [
    ("- dataset: {id: openai/gsm8k}\n  value: 0.5\n", "`dataset.task_id` is required"),
    ("- dataset: {id: openai/gsm8k, task_id: nope}\n  value: 0.5\n", "task 'nope' is not in the eval.yaml"),
    ("- dataset: {id: openai/gsm8k, task_id: main}\n", "`value` is required"),
    ("- dataset: {id: openai/gsm8k, task_id: main}\n  value: 0.5\n  date: 2026-01-01\n", "quoted ISO date"),
    ("- dataset: {id: openai/gsm8k, task_id: main}\n  value: 0.5\n  source: {name: x}\n", "`source.url` is required"),
    ("- dataset: {id: acme/not-a-benchmark, task_id: main}\n  value: 0.5\n", "is not a benchmark"),
    ("dataset: x\n", "expected a non-empty list"),
])
def test_sandbox_hub_refuses_bad_eval_results(hub, benchmark, text, problem):
    api = HfApi(endpoint=hub.base_url, token=HF_TOKEN)
    with pytest.raises(HfHubHTTPError) as refused:
        api.upload_file(path_or_fileobj=text.encode(), path_in_repo=".eval_results/gsm8k.yaml", repo_id=MODEL,
                        repo_type="model")
    assert refused.value.response.status_code == 400 and problem in str(refused.value)
    api.upload_file(path_or_fileobj=b"- dataset: {id: openai/gsm8k, task_id: main}\n  value: 0.5\n  date: '2026-01-01'\n",
                    path_in_repo=".eval_results/gsm8k.yaml", repo_id=MODEL, repo_type="model")
    [row] = api.get_dataset_leaderboard(BENCH)
    assert (row.rank, row.model_id, row.value, row.filename) == (1, MODEL, 0.5, "gsm8k.yaml")


def test_pr_comment_says_where_the_score_would_rank(hub, smith, make_bridge, benchmark):
    for name, value in (("other/strong", 0.9), ("other/weak", 0.5)):
        hub.create_repo(name, repo_type="model")
        hub.commit(name, {".eval_results/gsm8k.yaml": f"- dataset: {{id: {BENCH}, task_id: main}}\n  value: {value}\n"
                          .encode()}, repo_type="model", author="other")
    runtime = make_bridge(CONFIG.format(pr="false"))
    push(hub, runtime, lm_eval_files(DAY, MODEL, QUESTIONS))  # main: 4/6, committed to the model repo too
    better = [(q, a, a if q != QUESTIONS[5][0] else p) for q, a, p in QUESTIONS]  # 5/6
    num, pr_sha = hub.open_pr(REPO, lm_eval_files(DAY, MODEL, better))
    spec = experiment_spec(REPO, "dataset", f"refs/pr/{num}", pr_sha, None, num)
    runtime.store.enqueue(spec.kind, spec.key, spec.payload)
    [job] = run_jobs(runtime)
    assert job.state == "succeeded", job.last_error
    [text] = [c["content"] for c in hub.comments(REPO, num) if "pr-comment" in c["content"]]
    assert "exact\\_match 0\\.8333 would rank \\#2 of 4 on the openai/gsm8k leaderboard" in text
