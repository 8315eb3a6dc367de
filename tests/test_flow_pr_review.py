"""A PR of an eval repo reviewed row by row, end to end: real huggingface_hub and langsmith clients against both
emulators. Also: blob-id reuse of experiments and changed files that no `files` glob matched."""

from __future__ import annotations

import re
import shutil
import time
from datetime import datetime, timezone

import requests

from bridge.actions import submit_experiment
from bridge.formats.pr_comment import SUPERSEDED, marker
from bridge.routing import experiment_spec
from bridge.sandbox.demo import QUESTIONS, lm_eval_files
from bridge.ui.jobs import detail_html, job_row
from conftest import run_jobs

REPO = "acme/llama-evals"
MODEL = "acme/llama-3-8b"
CONFIG = """
experiments:
  - repo: "acme/*-evals"
    files: ["**/samples_*.jsonl", "**/*.csv"]
    max_rows: 5
jobs: {backoff_seconds: 0.01, max_backoff_seconds: 0.05}
"""
DAY = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
# main: 4 of 6 right (Austen and Mars wrong). The PR breaks France and fixes Austen.
PR_ANSWERS = [("What is the capital of France?", "Paris", "Lyon"), *QUESTIONS[1:3],
              ("Who wrote 'Pride and Prejudice'?", "Jane Austen", "Jane Austen"), *QUESTIONS[4:]]


def enqueue(runtime, sha, old, ref="refs/heads/main", pr=None):
    spec = experiment_spec(REPO, "dataset", ref, sha, old, pr)
    return runtime.store.enqueue(spec.kind, spec.key, spec.payload)[0]


def main_and_pr(hub, runtime, answers=PR_ANSWERS):
    hub.create_repo(REPO)
    old = hub.head(REPO)
    main_sha = hub.commit(REPO, lm_eval_files(DAY, MODEL, QUESTIONS), message="results")
    enqueue(runtime, main_sha, old)
    num, pr_sha = hub.open_pr(REPO, lm_eval_files(DAY, MODEL, answers))
    enqueue(runtime, pr_sha, None, ref=f"refs/pr/{num}", pr=num)
    jobs = run_jobs(runtime)
    assert [j.state for j in jobs] == ["succeeded", "succeeded"], [j.last_error for j in jobs]
    return num, pr_sha, jobs[1]


def our_comments(hub, num):
    return [c["content"] for c in hub.comments(REPO, num) if "hub-langsmith-bridge:pr-comment" in c["content"]]


def test_pr_comment_lists_regressed_and_fixed_rows(hub, smith, make_bridge):
    runtime = make_bridge(CONFIG)
    num, pr_sha, job = main_and_pr(hub, runtime)
    [text] = our_comments(hub, num)
    assert text.splitlines()[0] == "⚠️ 1 of 1 task(s) regressed (1 row(s))"
    assert "**▼ 1 regressed · ▲ 1 fixed · 4 unchanged**" in text
    [regressed] = [line for line in text.splitlines() if line.startswith("| [row 1]")][:1]
    assert "What is the capital of France?" in regressed and "| Paris | Paris | Lyon |" in regressed
    assert "&peek=" in regressed and "exact\\_match 1 → 0" in regressed
    page = requests.get(re.search(r"\(<([^>]+)>\)", regressed).group(1), timeout=10)  # that example, both sides
    assert page.status_code == 200 and "Lyon" in page.text and "Paris" in page.text and "Austen" not in page.text
    fixed_block = text.split("<details>")[1]
    assert "Jane Austen" in fixed_block and "Charlotte Brontë" in fixed_block
    # the job detail shows the same comparison
    [outcome] = [f for f in job.result["files"] if f["status"] == "uploaded"]
    assert outcome["comparison"]["regressed"] == 1 and outcome["comparison"]["fixed"] == 1
    assert outcome["baseline"]["experiment"].startswith(f"{MODEL}@")
    html = detail_html(runtime.store.get(job.id), [], runtime.store, time.time())
    assert "1 regressed" in html and "Lyon" in html and "Jane Austen" in html


def test_no_regression_verdict(hub, smith, make_bridge):
    runtime = make_bridge(CONFIG)
    better = [(q, a, a) for q, a, _ in QUESTIONS]
    num, _, _ = main_and_pr(hub, runtime, better)
    [text] = our_comments(hub, num)
    assert text.splitlines()[0] == "✅ no regressions" and "▲ 2 fixed" in text


def test_new_revision_supersedes_the_older_comment(hub, smith, make_bridge, tmp_path):
    runtime = make_bridge(CONFIG, state=tmp_path / "state-a")
    num, first_sha, _ = main_and_pr(hub, runtime)
    better = [(q, a, a) for q, a, _ in QUESTIONS]
    second_sha = hub.commit(REPO, lm_eval_files(DAY, MODEL, better), branch=f"refs/pr/{num}")
    enqueue(runtime, second_sha, first_sha, ref=f"refs/pr/{num}", pr=num)
    [job] = run_jobs(runtime)
    assert job.state == "succeeded", job.last_error
    first, second = our_comments(hub, num)
    assert marker(first_sha) in first and first.startswith("> ⏭️ Superseded by the results for "
                                                          f"`{second_sha[:7]}`")
    assert first.split("\n\n", 1)[1].startswith("⚠️ 1 of 1 task(s) regressed")  # the rest kept as it was
    assert marker(second_sha) in second and SUPERSEDED not in second and second.startswith("✅ no regressions")
    # a late re-delivery of the first revision (after a wiped state) neither comments again nor supersedes
    shutil.rmtree(tmp_path / "state-a")
    wiped = make_bridge(CONFIG, state=tmp_path / "state-a")
    enqueue(wiped, first_sha, None, ref=f"refs/pr/{num}", pr=num)
    assert run_jobs(wiped)[0].result["comment_url"] == "already commented"
    assert [SUPERSEDED in c for c in our_comments(hub, num)] == [True, False]


def test_same_content_at_a_later_revision_reuses_the_experiment(hub, smith, make_bridge):
    runtime = make_bridge(CONFIG)
    hub.create_repo(REPO)
    old = hub.head(REPO)
    first = hub.commit(REPO, lm_eval_files(DAY, MODEL, QUESTIONS), message="results")
    enqueue(runtime, first, old)
    later = hub.commit(REPO, {"notes/table.csv": b"question,answer,prediction,correct\nq1,a,a,1\n"})
    submit_experiment(runtime.store, REPO, "dataset", later[:7])  # "upload at revision", no files named
    jobs = run_jobs(runtime)
    assert [j.state for j in jobs] == ["succeeded", "succeeded"], [j.last_error for j in jobs]
    by_file = {f["file"]: f for f in jobs[1].result["files"]}
    [samples] = [f for name, f in by_file.items() if "samples_" in name]
    assert samples["status"] == "reused" and samples["reused_from"] == first
    assert samples["note"] == f"same content as at {first[:7]}: reused its experiment"
    assert by_file["notes/table.csv"]["status"] == "uploaded"
    assert len(smith.experiments("llama-evals/demo_qa")) == 1


def test_changed_files_no_glob_matched_are_reported(hub, smith, make_bridge):
    runtime = make_bridge(CONFIG)
    hub.create_repo(REPO)
    first = hub.commit(REPO, lm_eval_files(DAY, MODEL, QUESTIONS), message="results")
    second = hub.commit(REPO, {"my-model/preds.jsonl": b'{"a": 1}\n', "README.md": b"# notes\n"})
    enqueue(runtime, second, first)
    [job] = run_jobs(runtime)
    assert job.state == "succeeded" and job.result["files"] == []
    assert job.result["unmatched"] == ["README.md", "my-model/preds.jsonl"]
    assert job.result["note"] == "2 changed file(s) not matched by `files`: README.md, my-model/preds.jsonl"
    listed = " ".join(job_row(runtime.store.get(job.id), time.time()))  # the Jobs list says it too
    assert "2 changed file(s) not matched by `files`: README.md, my-model/preds.jsonl" in listed


def test_a_merged_pr_file_becomes_a_main_experiment_not_a_reuse(hub, smith, make_bridge):
    runtime = make_bridge(CONFIG)
    num, pr_sha, _ = main_and_pr(hub, runtime)
    before = hub.head(REPO)
    merged = hub.commit(REPO, lm_eval_files(DAY, MODEL, PR_ANSWERS), message="Merge the PR")  # same blobs as the PR
    enqueue(runtime, merged, before)
    [job] = run_jobs(runtime)
    [samples] = [f for f in job.result["files"] if "samples_" in f["file"]]
    assert samples["status"] == "uploaded"
    metas = [e["metadata"] for e in smith.experiments("llama-evals/demo_qa")]
    assert sum(m["hf_ref"] == "refs/heads/main" for m in metas) == 2
