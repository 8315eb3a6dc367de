"""A bridge that runs for months: flush costs that do not grow with the repo, commits of bounded size, pruned state,
and object URLs only from hosts that may serve them. Real clients against both emulators."""

import json

from conftest import run_jobs
from test_flow_exports import REPO, RULE, config, deliver, read_rows, seed


def flush_all(runtime):
    jobs = run_jobs(runtime)
    assert all(j.state == "succeeded" for j in jobs), [(j.kind, j.last_error) for j in jobs]
    return jobs


def test_flushes_list_nothing_while_only_the_bridge_writes(hub, smith, make_bridge):
    runtime = make_bridge(config(presets="[runs, sft]"))
    ids = seed(smith, 12, feedback=False)
    deliver(runtime, smith.webhook_payload(RULE, ids[:4]))
    flush_all(runtime)  # the first flush learns the repo: one listing
    for part in (ids[4:8], ids[8:]):
        hub.recorder.clear()
        deliver(runtime, smith.webhook_payload(RULE, part))
        flush_all(runtime)
        assert hub.recorder.count("GET", r"/tree/") == 0  # no listing, whatever the repo holds
        assert hub.recorder.count("POST", r"/commit/") == 1
    assert sorted(r["run_id"] for r in read_rows(hub)) == sorted(ids)


def test_a_person_committing_to_the_repo_is_noticed_and_nothing_is_lost(hub, smith, make_bridge):
    runtime = make_bridge(config(presets="[runs]"))
    ids = seed(smith, 6, feedback=False)
    deliver(runtime, smith.webhook_payload(RULE, ids[:3]))
    flush_all(runtime)
    hub.commit(REPO, {"NOTES.md": b"a person's notes"}, message="notes", author="acme")
    deliver(runtime, smith.webhook_payload(RULE, ids[3:]))
    flush_all(runtime)
    assert sorted(r["run_id"] for r in read_rows(hub)) == sorted(ids)
    assert "NOTES.md" in hub.list_files(REPO)


def test_a_commit_holds_at_most_max_bytes_of_rows(hub, smith, make_bridge):
    runtime = make_bridge(config(presets="[runs]", extra="    max_bytes_per_commit: 4096\n"))
    ids = seed(smith, 8, feedback=False)
    deliver(runtime, smith.webhook_payload(RULE, ids))
    flush_all(runtime)
    [flush] = runtime.store.list(kind="flush")
    assert flush.result["commits"] > 1 and flush.result["runs_committed"] == 8  # full commits go out one by one
    rows = read_rows(hub)
    assert sorted(r["run_id"] for r in rows) == sorted(ids)


def test_housekeeping_runs_hourly_and_keeps_the_exported_ledger(hub, smith, make_bridge, clock):
    runtime = make_bridge(config(presets="[runs]"))
    runtime.store.clock = clock
    ids = seed(smith, 3, feedback=False)
    deliver(runtime, smith.webhook_payload(RULE, ids))
    flush_all(runtime)
    clock.now += 8 * 86400
    runtime.schedule_startup_jobs()
    jobs = flush_all(runtime)
    [house] = [j for j in jobs if j.kind == "housekeeping"]
    assert house.result["pruned"]["jobs"] >= 2 and house.result["pruned"]["deliveries"] == 1
    assert house.result["state_bytes"] > 0
    [following] = runtime.store.list(kind="housekeeping", state="scheduled")
    assert following.next_attempt_at - clock.now <= 3600
    # The same delivery again after its job and body are gone: the exported ledger still knows every run.
    deliver(runtime, smith.webhook_payload(RULE, ids))
    flush_all(runtime)
    assert sorted(r["run_id"] for r in read_rows(hub)) == sorted(ids)


def test_object_urls_outside_the_allowed_hosts_fall_back_to_the_query(hub, smith, make_bridge):
    runtime = make_bridge(config(presets="[runs]"))
    ids = seed(smith, 2, offload=True, feedback=False)
    body = smith.webhook_payload(RULE, ids)
    body["runs"][0]["inputs_s3_urls"] = {"ROOT": {"presigned_url": "http://169.254.169.254/latest/meta-data/"}}
    deliver(runtime, body)
    [export, _flush] = flush_all(runtime)
    counts = export.result["counts"]
    assert counts["objects_refused"] == {"object host '169.254.169.254' is neither the LangSmith host nor in "
                                         "object_hosts": 1}
    assert counts["runs_queried"] == 1 and counts["objects_fetched"] == 3
    rows = {r["run_id"]: r for r in read_rows(hub)}
    assert "question 0" in rows[ids[0]]["inputs"]  # filled in by the runs query


def test_healthz_reports_scheduled_jobs_and_the_state_size(hub, smith, make_bridge):
    from fastapi.testclient import TestClient
    from fastapi import FastAPI

    from bridge.web import healthz

    runtime = make_bridge(config(flush=3600, presets="[runs]"))
    deliver(runtime, smith.webhook_payload(RULE, seed(smith, 1, feedback=False)))
    run_jobs(runtime)  # the export; its flush waits for the end of the window
    app = FastAPI()
    app.get("/healthz")(healthz(runtime.store, runtime.settings.missing, runtime.ledger.total_pending))
    health = TestClient(app).get("/healthz").json()
    assert health["jobs"]["scheduled"] == 1 and health["jobs"]["queued"] == 0
    assert health["state_bytes"] > 0 and health["buffered_rows"] == 1  # waiting for the flush at the window's end
    assert json.dumps(health)
