"""Hub -> LangSmith: real huggingface_hub and langsmith clients against both emulators."""

import json
import shutil
from datetime import datetime, timezone


from bridge.formats.pr_comment import marker
from bridge.routing import experiment_spec
from bridge.sandbox.demo import QUESTIONS, lm_eval_files
from conftest import run_jobs, wait_for

REPO = "acme/llama-evals"
MODEL = "acme/llama-3-8b"
CONFIG = """
experiments:
  - repo: "acme/*-evals"
    files: ["**/samples_*.jsonl", "**/*.csv"]
jobs: {backoff_seconds: 0.01, max_backoff_seconds: 0.05}
"""
DATASET = "llama-evals/demo_qa"


def push(hub, files, repo=REPO):
    hub.create_repo(repo)
    old = hub.head(repo)
    return old, hub.commit(repo, files, message="results")


def enqueue(runtime, sha, old, ref="refs/heads/main", pr=None, repo=REPO):
    spec = experiment_spec(repo, "dataset", ref, sha, old, pr)
    return runtime.store.enqueue(spec.kind, spec.key, spec.payload)[0]


def lm_eval(day=None, questions=QUESTIONS):
    return lm_eval_files(day or datetime(2026, 11, 1, 12, tzinfo=timezone.utc), MODEL, questions)


def test_push_becomes_one_experiment(hub, smith, make_bridge):
    runtime = make_bridge(CONFIG)
    old, sha = push(hub, lm_eval())
    enqueue(runtime, sha, old)
    [job] = run_jobs(runtime)
    assert job.state == "succeeded", job.last_error
    [experiment] = smith.experiments(DATASET)
    assert experiment["name"] == f"{MODEL}@{sha[:7]} · demo_qa"
    meta = experiment["metadata"]
    assert (meta["hf_repo"], meta["hf_revision"], meta["hf_ref"], meta["format"], meta["model"]) == (
        REPO, sha, "refs/heads/main", "lm-eval", MODEL)
    assert meta["hf_file"].endswith(".jsonl") and meta["hf_commit_url"].endswith(f"/commit/{sha}")
    assert meta["bridge_scores"] == {"exact_match": round(4 / 6, 6)}
    rows = experiment["rows"]
    assert len(rows) == len(QUESTIONS)
    first = next(r for r in rows if r["example"]["inputs"]["doc"]["question"] == QUESTIONS[0][0])
    assert first["example"]["outputs"] == {"target": "Paris"} or "Paris" in json.dumps(first["example"]["outputs"])
    [uploaded] = [f for f in job.result["files"] if f["status"] == "uploaded"]
    assert uploaded["experiment_url"].startswith(smith.url) and uploaded["rows"] == len(QUESTIONS)
    assert not [f for f in job.result["files"] if "results_" in f["file"]]  # the sidecar is not a result file


def test_redelivery_and_wiped_state_never_make_a_second_experiment(hub, smith, make_bridge, tmp_path):
    runtime = make_bridge(CONFIG, state=tmp_path / "first")
    old, sha = push(hub, lm_eval())
    enqueue(runtime, sha, old)
    run_jobs(runtime)
    spec = experiment_spec(REPO, "dataset", "refs/heads/main", sha, old, None)
    assert runtime.store.enqueue(spec.kind, spec.key, spec.payload)[1] is False  # same delivery: same job
    shutil.rmtree(tmp_path / "first")
    wiped = make_bridge(CONFIG, state=tmp_path / "first")
    enqueue(wiped, sha, old)
    [job] = run_jobs(wiped)
    assert job.state == "succeeded" and [f["status"] for f in job.result["files"]] == ["exists"]
    assert len(smith.experiments(DATASET)) == 1


def test_two_pushes_share_row_ids(hub, smith, make_bridge):
    runtime = make_bridge(CONFIG)
    old, first = push(hub, lm_eval(datetime(2026, 11, 1, tzinfo=timezone.utc)))
    enqueue(runtime, first, old)
    changed = [(q, a, a) for q, a, _ in QUESTIONS]  # a better model: every answer right
    second = hub.commit(REPO, lm_eval(datetime(2026, 11, 2, tzinfo=timezone.utc), changed))
    enqueue(runtime, second, first)
    assert [j.state for j in run_jobs(runtime)] == ["succeeded", "succeeded"]
    experiments = smith.experiments(DATASET)
    assert len(experiments) == 2
    ids = [sorted(r["row_id"] for r in e["rows"]) for e in experiments]
    assert ids[0] == ids[1] and len(ids[0]) == len(QUESTIONS)


def test_only_changed_files_are_uploaded(hub, smith, make_bridge):
    runtime = make_bridge(CONFIG)
    old, first = push(hub, lm_eval())
    second = hub.commit(REPO, {"notes/table.csv": b"question,answer,prediction,correct\nq1,a,a,1\nq2,b,c,0\n"})
    enqueue(runtime, second, first)
    [job] = run_jobs(runtime)
    assert [f["file"] for f in job.result["files"]] == ["notes/table.csv"]
    assert smith.experiments(DATASET) == []


def test_pull_request_gets_preview_experiment_and_one_comment(hub, smith, make_bridge, tmp_path):
    runtime = make_bridge(CONFIG, state=tmp_path / "pr-state")
    old, main_sha = push(hub, lm_eval())
    enqueue(runtime, main_sha, old)
    better = [(q, a, a) for q, a, _ in QUESTIONS]
    num, pr_sha = hub.open_pr(REPO, lm_eval(datetime(2026, 11, 1, 12, tzinfo=timezone.utc), better))
    enqueue(runtime, pr_sha, None, ref=f"refs/pr/{num}", pr=num)
    jobs = run_jobs(runtime)
    assert [j.state for j in jobs] == ["succeeded", "succeeded"], [j.last_error for j in jobs]
    names = sorted(e["name"] for e in smith.experiments(DATASET))
    assert any(f"pr-{num}" in n for n in names) and len(names) == 2
    comments = [c["content"] for c in hub.comments(REPO, num)]
    [comment] = [c for c in comments if marker(pr_sha) in c]
    assert "| exact\\_match | 1 | 0.6667 | ▲ +0.3333 |" in comment
    assert "compare" in comment and jobs[1].result["comment_url"]
    shutil.rmtree(tmp_path / "pr-state")  # a Space restart, then the Hub re-delivers the PR event
    wiped = make_bridge(CONFIG, state=tmp_path / "pr-state")
    enqueue(wiped, pr_sha, None, ref=f"refs/pr/{num}", pr=num)
    assert run_jobs(wiped)[0].result["comment_url"] == "already commented"
    assert len([c for c in hub.comments(REPO, num) if marker(pr_sha) in c["content"]]) == 1


def test_pr_without_baseline_says_so(hub, smith, make_bridge):
    runtime = make_bridge(CONFIG)
    hub.create_repo(REPO)
    num, pr_sha = hub.open_pr(REPO, lm_eval())
    enqueue(runtime, pr_sha, None, ref=f"refs/pr/{num}", pr=num)
    [job] = run_jobs(runtime)
    assert job.state == "succeeded", job.last_error
    [comment] = [c["content"] for c in hub.comments(REPO, num) if marker(pr_sha) in c["content"]]
    assert "No baseline yet" in comment


def test_langsmith_503_three_times_still_one_experiment(hub, smith, make_bridge):
    runtime = make_bridge(CONFIG)
    old, sha = push(hub, lm_eval())
    smith.recorder.add_fault("upload-experiment", status=503, times=3)
    job = enqueue(runtime, sha, old)
    for _ in range(10):
        run_jobs(runtime)
        if runtime.store.get(job.id).state in ("succeeded", "failed", "dead"):
            break
        wait_for(lambda: runtime.store.next_due() <= runtime.store.clock(), timeout=5, what="the retry to be due")
    job = runtime.store.get(job.id)
    assert job.state == "succeeded" and job.attempts == 4
    assert len(smith.experiments(DATASET)) == 1
    assert smith.recorder.count("POST", "upload-experiment") == 4


def test_422_fails_at_once_with_langsmiths_message(hub, smith, make_bridge):
    runtime = make_bridge(CONFIG)
    old, sha = push(hub, lm_eval())
    smith.recorder.add_fault("upload-experiment", status=422, body="experiment_start_time: field required")
    enqueue(runtime, sha, old)
    [job] = run_jobs(runtime)
    assert job.state == "failed" and job.attempts == 1
    assert "experiment_start_time: field required" in job.last_error


def test_broken_file_fails_alone_and_is_named(hub, smith, make_bridge):
    runtime = make_bridge(CONFIG)
    files = lm_eval()
    good_line = next(v for k, v in files.items() if k.endswith(".jsonl")).splitlines()[0]
    files["other/samples_broken_2026-11-01T00-00-00.000000.jsonl"] = good_line + b"\nnot json\n"
    old, sha = push(hub, files)
    enqueue(runtime, sha, old)
    [job] = run_jobs(runtime)
    assert job.state == "failed"
    statuses = {f["file"].split("/")[0]: f["status"] for f in job.result["files"]}
    assert statuses == {"acme__llama-3-8b": "uploaded", "other": "failed"}
    assert "samples_broken" in job.last_error and "line" in job.last_error
    assert len(smith.experiments(DATASET)) == 1


def test_missing_langsmith_key_fails_with_its_name(hub, smith, make_bridge):
    runtime = make_bridge(CONFIG, LANGSMITH_API_KEY="")
    old, sha = push(hub, lm_eval())
    enqueue(runtime, sha, old)
    [job] = run_jobs(runtime)
    assert job.state == "failed" and "LANGSMITH_API_KEY is not set" in job.last_error


def test_two_files_of_one_task_at_one_revision_are_two_experiments(hub, smith, make_bridge, tmp_path):
    runtime = make_bridge(CONFIG, state=tmp_path / "two")
    files = {**lm_eval(datetime(2026, 11, 1, tzinfo=timezone.utc)), **lm_eval(datetime(2026, 11, 2, tzinfo=timezone.utc))}
    old, sha = push(hub, files)
    enqueue(runtime, sha, old)
    [job] = run_jobs(runtime)
    assert [f["status"] for f in job.result["files"]] == ["uploaded", "uploaded"]
    experiments = smith.experiments(DATASET)
    assert len(experiments) == 2 and len({e["name"] for e in experiments}) == 2
    assert {e["metadata"]["hf_file"] for e in experiments} == {f["file"] for f in job.result["files"]}
    shutil.rmtree(tmp_path / "two")
    again = make_bridge(CONFIG, state=tmp_path / "two")
    enqueue(again, sha, old)
    assert [f["status"] for f in run_jobs(again)[0].result["files"]] == ["exists", "exists"]
    assert len(smith.experiments(DATASET)) == 2
