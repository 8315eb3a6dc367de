"""Back-fill: pages through a project's runs within the rate limits, resumes after an interruption, no duplicates."""

import json


from conftest import run_jobs
from test_flow_exports import REPO, RULE, chat_run, config, deliver, read_rows


def seed_project(smith, n, project="prod"):
    smith.create_project(project)
    return [smith.add_run({**chat_run(i), "session_name": project})["id"] for i in range(n)]


def backfill(runtime, **payload):
    return runtime.store.enqueue("backfill", f"backfill:{json.dumps(payload, sort_keys=True)}",
                                 {"repo": REPO, "project": "prod", **payload}, trigger="manual")[0]


def test_backfill_pages_through_a_project(hub, smith, make_bridge):
    runtime = make_bridge(config(presets="[runs]"))
    runtime.smith.page_size = 100  # v2 pages hold up to 1000; smaller ones keep this test small
    ids = seed_project(smith, 230)
    backfill(runtime)
    jobs = run_jobs(runtime)
    assert [j.kind for j in jobs] == ["backfill", "flush"] and all(j.state == "succeeded" for j in jobs)
    assert jobs[0].result["counts"]["pages"] == 3
    assert sorted(r["run_id"] for r in read_rows(hub)) == sorted(ids)


def test_backfill_resumes_after_rate_limit_and_never_duplicates(hub, smith, make_bridge):
    runtime = make_bridge(config(presets="[runs]"))
    runtime.smith.page_size = 100
    ids = seed_project(smith, 250)
    smith.limiter.enabled = True
    smith.set_rate_limit("runs_query", limit=1, window=600)  # page 1 passes, page 2 gets 429
    job = backfill(runtime)
    [first] = run_jobs(runtime)[:1]
    assert first.state == "queued" and "429" in first.last_error
    smith.set_rate_limit("runs_query", limit=1000, window=10)
    runtime.store.clock = lambda: 4_000_000_000.0
    run_jobs(runtime)
    assert runtime.store.get(job.id).state == "succeeded"
    # page 1, the refused page 2, then pages 2 and 3 only: the saved cursor was used
    assert smith.recorder.count("POST", r"/runs/query$") == 4
    rows = read_rows(hub)
    assert sorted(r["run_id"] for r in rows) == sorted(ids)


def test_backfill_and_webhook_overlap_without_duplicates(hub, smith, make_bridge):
    runtime = make_bridge(config(presets="[runs]"))
    ids = seed_project(smith, 20)
    deliver(runtime, smith.webhook_payload(RULE, ids[:10]))
    run_jobs(runtime)
    backfill(runtime, filter='eq(run_type, "llm")')
    run_jobs(runtime)
    rows = read_rows(hub)
    assert len(rows) == 20 and len({r["run_id"] for r in rows}) == 20


def test_backfill_needs_an_exports_entry(hub, smith, make_bridge):
    runtime = make_bridge(config(presets="[runs]"))
    seed_project(smith, 1)
    runtime.store.enqueue("backfill", "b", {"repo": "acme/unknown", "project": "prod"}, trigger="manual")
    [job] = run_jobs(runtime)
    assert job.state == "failed" and "no exports entry writes to 'acme/unknown'" in job.last_error


def test_review_keeps_recently_committed_runs(hub, smith, make_bridge):
    runtime = make_bridge(config(presets="[runs]"))
    ids = seed_project(smith, 3)
    deliver(runtime, smith.webhook_payload(RULE, ids))
    run_jobs(runtime)
    recent = runtime.ledger.recent()
    assert sorted(r["run_id"] for r in recent) == sorted(ids) and all(r["repo"] == REPO for r in recent)
    assert "question" in recent[0]["inputs"]
