"""Reconciliation: what webhooks missed is recovered without a person, and never twice."""

import shutil

from conftest import run_jobs
from test_flow_experiments import lm_eval
from test_flow_exports import REPO, RULE, chat_run, read_rows

CONFIG = f"""
experiments:
  - repo: "acme/*-evals"
    files: ["**/samples_*.jsonl"]
exports:
  - rule_id: "{RULE}"
    repo: "{REPO}"
    flush_seconds: 0
    backfill: {{project: prod}}
jobs: {{backoff_seconds: 0.01}}
reconcile_minutes: 30
"""


def test_reconcile_uploads_missed_heads_and_backfills_missed_runs(hub, smith, make_bridge, tmp_path):
    hub.create_repo("acme/llama-evals")
    hub.commit("acme/llama-evals", lm_eval())
    hub.create_repo("acme/unwatched")
    smith.create_project("prod")
    first = [smith.add_run({**chat_run(i), "session_name": "prod"})["id"] for i in range(3)]
    runtime = make_bridge(CONFIG, state=tmp_path / "s")
    runtime.schedule_startup_jobs()  # what start_workers does first; the jobs then run here, one at a time
    jobs = run_jobs(runtime)
    # "scores": a fresh state dir also rebuilds the Experiments page's scores from LangSmith
    assert {j.kind for j in jobs} == {"reconcile", "scores", "experiment", "backfill", "flush", "housekeeping",
                                      "rules"}
    assert all(j.state == "succeeded" for j in jobs), [(j.kind, j.last_error) for j in jobs]
    assert all(j.trigger == "reconcile" for j in jobs)
    assert len(smith.experiments("llama-evals/demo_qa")) == 1
    assert sorted(r["run_id"] for r in read_rows(hub)) == sorted(first)
    next_run = runtime.store.list(kind="reconcile", state="scheduled")
    assert len(next_run) == 1 and next_run[0].next_attempt_at > runtime.store.clock()

    # The Space sleeps and loses its disk; meanwhile LangSmith records two more runs.
    later = [smith.add_run({**chat_run(10 + i), "session_name": "prod"})["id"] for i in range(2)]
    shutil.rmtree(tmp_path / "s")
    restarted = make_bridge(CONFIG, state=tmp_path / "s")
    restarted.schedule_startup_jobs()
    again = run_jobs(restarted)
    assert all(j.state == "succeeded" for j in again), [(j.kind, j.last_error) for j in again]
    rows = read_rows(hub)
    assert sorted(r["run_id"] for r in rows) == sorted(first + later)
    assert len(smith.experiments("llama-evals/demo_qa")) == 1
