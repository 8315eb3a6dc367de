"""Exactly once, defect by defect: one regression test per way a run could reach its dataset twice (or never),
each failing on the code before the fix. Real clients against both emulators; the interleavings are forced by hand.
"""

import io
import json
import threading
from datetime import datetime, timedelta, timezone

import pyarrow.parquet as pq
import pytest

from bridge.flows.backfill import _before
from bridge.flows.exports import schedule_flush
from conftest import run_jobs, wait_for
from test_flow_exports import REPO, RULE, chat_run, config, deliver, read_rows, seed

OTHER_RULE = "0b7c1f9e-5d2a-4c6b-9e8f-1a2b3c4d5e6f"


def ls_client(smith):
    from langsmith import Client

    from conftest import LS_KEY

    return Client(api_url=smith.url, api_key=LS_KEY, auto_batch_tracing=False)


def run_ids(hub, preset="runs"):
    return [r["run_id"] for r in read_rows(hub, preset)]


def jobs_of(runtime, kind):
    return runtime.store.list(kind=kind)


# ---------------------------------------------------------------- 1. buffer vs exported


def test_a_slow_export_never_buffers_runs_a_flush_committed_meanwhile(hub, smith, make_bridge):
    """Two deliveries sharing 10 runs: the first export reads `known`, then waits on its feedback listing while the
    second export and its flush commit the shared runs; the first then buffers. The shared runs go out once."""
    runtime = make_bridge(config(presets="[runs]"))
    ids = seed(smith, 30, feedback=False)
    deliver(runtime, smith.webhook_payload(RULE, ids[:20]))
    deliver(runtime, smith.webhook_payload(RULE, ids[10:]))
    first, second = runtime.store.list(kind="export")[::-1]
    gate, waiting = threading.Event(), threading.Event()
    real = runtime.smith.feedback_for

    def slow_feedback(run_ids):  # the real call, after the rest has happened
        if set(run_ids) == set(ids[:20]):
            waiting.set()
            gate.wait(30)
        return real(run_ids)

    runtime.smith.feedback_for = slow_feedback
    from bridge.workers import WorkerPool

    pool = WorkerPool(runtime.store, runtime.handlers, services=runtime)
    claimed = runtime.store.claim()
    assert claimed.id == first.id
    slow = threading.Thread(target=pool.run_one, args=(claimed,))
    slow.start()
    assert waiting.wait(30)
    done = run_jobs(runtime)  # the second export and the flush it schedules
    assert [j.kind for j in done] == ["export", "flush"] and sorted(run_ids(hub)) == sorted(ids[10:])
    gate.set()
    slow.join(30)
    assert runtime.store.get(first.id).result["counts"]["buffered"] == 10  # ids[:10] only
    run_jobs(runtime)
    committed = run_ids(hub)
    assert sorted(committed) == sorted(ids) and len(committed) == len(set(committed))


def test_a_flush_never_commits_a_run_the_ledger_holds_as_exported(hub, smith, make_bridge):
    runtime = make_bridge(config(presets="[runs]"))
    ids = seed(smith, 4, feedback=False)
    deliver(runtime, smith.webhook_payload(RULE, ids))
    run_jobs(runtime)
    # A row slipped into the buffer for a run already exported (a state from an older version): never committed.
    with runtime.store.db.tx() as conn:
        conn.execute("INSERT INTO export_buffer (repo, run_id, rows, created_at) VALUES (?, ?, ?, 0)",
                     (REPO, ids[0], json.dumps({"runs": [{"run_id": ids[0]}]})))
    assert runtime.ledger.batch(REPO, 100, 10**9).rows == []


@pytest.mark.parametrize("crash_after_chunks", [0, 1, 2], ids=["before-any-chunk", "after-one", "after-all-runs"])
def test_a_crash_while_a_landed_commit_is_recorded_leaves_every_run_exported_once(hub, smith, make_bridge,
                                                                               monkeypatch, crash_after_chunks):
    """record_commit writes its runs RECORD_CHUNK at a time and the new head last: a process dying between two of
    those transactions (here: one raising, as SIGKILL would stop it) is caught up by the next flush."""
    from bridge import ledger as ledger_module
    from bridge.ledger import Ledger

    monkeypatch.setattr(ledger_module, "RECORD_CHUNK", 2)
    runtime = make_bridge(config(presets="[runs]"))
    ids = seed(smith, 5, feedback=False)
    deliver(runtime, smith.webhook_payload(RULE, ids))
    real, calls = Ledger._keep_newer_rows, []

    def dying(conn, repo, run_ids):
        if len(calls) == crash_after_chunks:
            raise SystemExit("the process dies here")  # this chunk's transaction rolls back
        calls.append(run_ids)
        return real(conn, repo, run_ids)

    monkeypatch.setattr(Ledger, "_keep_newer_rows", staticmethod(dying))
    with pytest.raises(SystemExit):
        run_jobs(runtime)
    assert sorted(run_ids(hub)) == sorted(ids)  # the commit landed on the Hub before the crash
    monkeypatch.setattr(Ledger, "_keep_newer_rows", staticmethod(real))
    runtime.store.recover()  # what a restart does with the job left running
    deliver(runtime, smith.webhook_payload(RULE, ids))  # LangSmith delivers the same runs again
    run_jobs(runtime)
    assert sorted(run_ids(hub)) == sorted(ids)  # no run twice
    assert runtime.ledger.total_pending() == 0
    assert runtime.ledger.fingerprints(REPO, ids).keys() == set(ids)


# ---------------------------------------------------------------- 2, 3. scheduling flushes


def test_schedule_flush_with_an_empty_buffer_schedules_nothing(make_bridge):
    runtime = make_bridge(config(presets="[runs]"))
    target = runtime.settings.config.repo_target(REPO)
    assert schedule_flush(runtime, target, "webhook") is None  # no IndexError reading the first buffered row


def test_a_failed_full_flush_does_not_block_later_flushes(hub, smith, make_bridge):
    runtime = make_bridge(config(flush=3600, presets="[runs]", extra="    max_rows_per_commit: 3\n"))
    hub.create_repo(REPO, private=True)
    ids = seed(smith, 3, feedback=False)
    hub.recorder.add_fault(r"/commit/main", method="POST", status=403)
    deliver(runtime, smith.webhook_payload(RULE, ids))
    jobs = run_jobs(runtime)
    assert [(j.kind, j.state) for j in jobs] == [("export", "succeeded"), ("flush", "failed")]
    # Every later request for a flush (a new delivery, a restart's resume) gets a new job, not the failed one.
    target = runtime.settings.config.repo_target(REPO)
    again = schedule_flush(runtime, target, "webhook")
    assert again != jobs[1].id and runtime.store.get(again).state == "queued"
    assert schedule_flush(runtime, target, "webhook") == again  # and only one
    assert [(j.kind, j.state) for j in run_jobs(runtime)] == [("flush", "succeeded")]
    assert sorted(run_ids(hub)) == sorted(ids)


def test_one_queued_flush_per_repo_moved_earlier_when_a_commit_is_full(smith, make_bridge):
    runtime = make_bridge(config(flush=3600, presets="[runs]", extra="    max_rows_per_commit: 4\n"))
    ids = seed(smith, 4, feedback=False)
    deliver(runtime, smith.webhook_payload(RULE, ids[:2]))
    run_jobs(runtime)
    [flush] = jobs_of(runtime, "flush")
    assert flush.shown_state(runtime.store.clock()) == "scheduled"
    deliver(runtime, smith.webhook_payload(RULE, ids[2:]))
    run_jobs(runtime)  # the export fills a commit: the same flush becomes due now, and runs
    [flush_after] = jobs_of(runtime, "flush")
    assert flush_after.id == flush.id and flush_after.state == "succeeded"


# ---------------------------------------------------------------- 4. two entries, one repo


def test_two_exports_entries_writing_to_one_repo_keep_both_presets(hub, smith, make_bridge):
    text = f"""
exports:
  - rule_id: "{RULE}"
    repo: "{REPO}"
    presets: [runs, sft]
    flush_seconds: 0
  - rule_id: "{OTHER_RULE}"
    repo: "{REPO}"
    presets: [runs, kto]
    flush_seconds: 0
jobs: {{backoff_seconds: 0.01}}
"""
    runtime = make_bridge(text)
    ids = seed(smith, 6)
    deliver(runtime, smith.webhook_payload(RULE, ids[:3]))
    deliver(runtime, smith.webhook_payload(OTHER_RULE, ids[3:]))
    assert all(j.state == "succeeded" for j in run_jobs(runtime))
    assert sorted(run_ids(hub)) == sorted(ids)
    assert {r["run_id"] for r in read_rows(hub, "kto")} <= set(ids[3:]) and read_rows(hub, "kto")
    assert {r["run_id"] for r in read_rows(hub, "sft")} <= set(ids[:3])
    card = hub.read_file(REPO, "README.md").decode()
    for preset in ("runs", "sft", "kto"):
        assert f"config_name: {preset}" in card
    assert RULE in card and OTHER_RULE in card


# ---------------------------------------------------------------- 5, 9. reconcile back-fills and times


RECONCILE = f"""
exports:
  - rule_id: "{RULE}"
    repo: "{REPO}"
    flush_seconds: 0
    backfill: {{project: prod, lookback_minutes: 0}}
jobs: {{backoff_seconds: 0.01}}
reconcile_minutes: 30
"""


def reconcile(runtime):
    runtime.store.enqueue("reconcile", f"reconcile:test:{runtime.store.clock()}", {}, trigger="reconcile")
    jobs = run_jobs(runtime)
    assert all(j.state == "succeeded" for j in jobs), [(j.kind, j.last_error) for j in jobs]
    return jobs


def project_run(smith, i, **changes):
    return smith.add_run({**chat_run(i), "session_name": "prod", **changes})["id"]


def test_every_reconcile_back_fills_again_even_after_one_found_nothing(hub, smith, make_bridge):
    smith.create_project("prod")
    runtime = make_bridge(RECONCILE)
    first = [project_run(smith, i) for i in range(2)]
    reconcile(runtime)
    quiet = reconcile(runtime)  # nothing new: its back-fill finds nothing
    assert [j.result["counts"]["buffered"] for j in quiet if j.kind == "backfill"] == [0]
    later = project_run(smith, 50)
    found = reconcile(runtime)
    assert [j.result["counts"]["buffered"] for j in found if j.kind == "backfill"] == [1]
    assert sorted(run_ids(hub)) == sorted([*first, later])


def test_a_run_still_running_at_one_reconcile_is_exported_by_a_later_one(hub, smith, make_bridge):
    smith.create_project("prod")
    runtime = make_bridge(RECONCILE)
    done = project_run(smith, 0)
    long_one = project_run(smith, 1, end_time=None, outputs=None)  # started after `done`, still running
    newer = project_run(smith, 30)  # ended long after `long_one` started
    jobs = reconcile(runtime)
    backfill = next(j for j in jobs if j.kind == "backfill")
    assert backfill.result["counts"]["still_running"] == 1
    assert sorted(run_ids(hub)) == sorted([done, newer])
    ls_client(smith).update_run(long_one, end_time=datetime(2026, 11, 20, 12, tzinfo=timezone.utc),
                                outputs={"generations": [[{"text": "done"}]]})
    reconcile(runtime)
    assert sorted(run_ids(hub)) == sorted([done, newer, long_one])


@pytest.mark.parametrize("start, end, before", [
    ("2026-11-20T10:30:00", "2026-11-20T12:00:00+02:00", False),  # 10:30 UTC vs 10:00 UTC: the offset converts
    ("2026-11-20T09:30:00", "2026-11-20T12:00:00+02:00", True),
    ("2026-11-20T10:00:00+00:00", "2026-11-20T10:00:00", True),  # aware vs naive: no TypeError
    ("2026-11-20T08:00:00-05:00", "2026-11-20T12:00:00Z", False),  # 13:00 UTC
    (None, "2026-11-20T12:00:00Z", True),
], ids=["offset-converts", "offset-before", "aware-vs-naive", "negative-offset", "no-start"])
def test_backfill_window_compares_times_in_utc(start, end, before):
    assert _before({"start_time": start}, end) is before


# ---------------------------------------------------------------- 6, 7. rows: exported_at, redaction of text only


def test_every_runs_row_has_exported_at(hub, smith, make_bridge):
    runtime = make_bridge(config(presets="[runs]"))
    deliver(runtime, smith.webhook_payload(RULE, seed(smith, 3, feedback=False)))
    run_jobs(runtime)
    rows = read_rows(hub)
    assert len(rows) == 3 and all(isinstance(r["exported_at"], datetime) for r in rows)


def test_custom_redaction_never_touches_ids_or_times(hub, smith, make_bridge):
    text = config(presets="[runs, sft]").replace("redact: [emails, secrets]", 'redact: [{pattern: "[0-9a-f]{8}"}]')
    runtime = make_bridge(text)
    ids = seed(smith, 2)
    for i, run_id in enumerate(ids):
        ls_client(smith).update_run(run_id, inputs={"messages": [{"role": "user", "content": f"order deadbeef{i}"}]})
    deliver(runtime, smith.webhook_payload(RULE, ids))
    run_jobs(runtime)
    rows = {r["run_id"]: r for r in read_rows(hub)}
    assert sorted(rows) == sorted(ids)  # ids intact, so recovery after a wipe finds them
    for run_id, row in rows.items():
        assert row["trace_id"] and "REDACTED" not in (row["dotted_order"] or "") and row["start_time"]
        assert "deadbeef" not in row["inputs"] and "[REDACTED:custom]" in row["inputs"]


# ---------------------------------------------------------------- 11. feedback links are not minted twice


def test_a_retried_export_reuses_the_feedback_links_it_made(hub, smith, make_bridge):
    text = f"""
exports:
  - rule_id: "{RULE}"
    repo: "{REPO}"
    flush_seconds: 0
    feedback_links: {{keys: [user_score]}}
  - rule_id: "{RULE}"
    repo: acme/second-feedback
    flush_seconds: 0
    feedback_links: {{keys: [user_score, thumbs]}}
jobs: {{backoff_seconds: 0.01, max_backoff_seconds: 0.05}}
"""
    runtime = make_bridge(text, BRIDGE_PUBLIC_URL="https://bridge.example.org")
    ids = seed(smith, 3)
    asked: list[list[tuple[str, str]]] = []
    real = runtime.smith.create_tokens

    def recording(entries):  # the real call; LangSmith answers the second request (the second repo's) with a 503
        asked.append([(e["run_id"], e["feedback_key"]) for e in entries])
        if len(asked) == 2:
            smith.recorder.add_fault(r"/feedback/tokens", method="POST", status=503, times=1)
        return real(entries)

    runtime.smith.create_tokens = recording
    deliver(runtime, smith.webhook_payload(RULE, ids))
    [export] = [j for j in run_jobs(runtime) if j.kind == "export"]
    assert export.state == "queued" and "503" in export.last_error  # transient: retried after a short backoff
    wait_for(lambda: runtime.store.get(export.id).next_attempt_at <= runtime.store.clock(), timeout=5)
    run_jobs(runtime)
    assert runtime.store.get(export.id).state == "succeeded"
    # user_score links were made once per run (the second repo and the retry reused them); thumbs twice, because
    # the answer to the first request was a 503
    made = [pair for request in asked for pair in request]
    assert sorted(p for p in made if p[1] == "user_score") == sorted((i, "user_score") for i in ids)
    assert len([p for p in made if p[1] == "thumbs"]) == 2 * len(ids)
    first = {r["run_id"]: r for r in read_rows(hub)}
    second_path = next(p for p in hub.list_files("acme/second-feedback") if p.startswith("runs/"))
    second = {r["run_id"]: r for r in pq.read_table(io.BytesIO(hub.read_file("acme/second-feedback",
                                                                              second_path))).to_pylist()}
    for run_id in ids:
        first_links = {link["key"]: link["url"] for link in first[run_id]["feedback_urls"]}
        second_links = {link["key"]: link["url"] for link in second[run_id]["feedback_urls"]}
        assert second_links["user_score"] == first_links["user_score"] and "thumbs" in second_links


def test_a_repo_that_moves_on_every_try_gets_its_flush_retried_not_failed(hub, smith, make_bridge):
    """Three commit conflicts in a row (someone keeps committing): the flush is retried later by the queue, and its
    rows go out once."""
    runtime = make_bridge(config(presets="[runs]"))
    hub.create_repo(REPO, private=True)
    ids = seed(smith, 2, feedback=False)
    hub.recorder.add_fault(r"/commit/main", method="POST", status=412, times=3)
    deliver(runtime, smith.webhook_payload(RULE, ids))
    [_, flush] = run_jobs(runtime)
    assert flush.state == "queued" and "tried again later" in flush.last_error  # retried with backoff, not failed
    wait_for(lambda: not run_jobs(runtime) and runtime.store.get(flush.id).state == "succeeded", timeout=10,
             what="the retried flush")
    assert sorted(run_ids(hub)) == sorted(ids)
