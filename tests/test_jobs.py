"""The durable job queue: states, retries, idempotency, crash recovery."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from bridge.db import Database
from bridge.errors import BridgeError, FormatError, MissingCredential, UpstreamError
from bridge.jobs import JobStore, RetryPolicy, Scrubber
from bridge.workers import WorkerPool
from conftest import ROOT, wait_for


@pytest.fixture
def store(tmp_path, clock):
    return JobStore(Database(tmp_path / "jobs.sqlite3"), RetryPolicy(max_attempts=3, base_seconds=2, max_seconds=60),
                    Scrubber(["sk-very-secret-value"]), clock=clock)


def run_once(store, handler):
    job = store.claim()
    assert job is not None
    return WorkerPool(store, {"k": handler}).run_one(job)


def raising(exc):
    def handler(job, ctx):
        raise exc
    return handler


def test_enqueue_is_idempotent_by_key(store):
    first, created = store.enqueue("k", "key-1", {"a": 1})
    again, created_again = store.enqueue("k", "key-1", {"a": 2})
    assert created and not created_again
    assert again.id == first.id and again.payload == {"a": 1}


@pytest.mark.parametrize("error, state, retried", [
    (UpstreamError("LangSmith", "busy", status=503, transient=True), "queued", True),
    (UpstreamError("LangSmith", "slow down", status=429, transient=True, retry_after=30), "queued", True),
    (UpstreamError("Hub", "connection reset", transient=True), "queued", True),
    (UpstreamError("LangSmith", "bad body", status=422), "failed", False),
    (UpstreamError("Hub", "forbidden", status=403), "failed", False),
    (MissingCredential("HF_TOKEN is not set"), "failed", False),
    (FormatError("a.jsonl", "line 3", "expected a JSON object"), "failed", False),
    (KeyError("surprise"), "failed", False),
], ids=["503", "429-retry-after", "connection", "422", "403", "missing-token", "format", "bug"])
def test_error_classification(store, error, state, retried):
    store.enqueue("k", "key", {})
    job = run_once(store, raising(error))
    assert job.state == state
    assert (job.next_attempt_at > job.created_at) == retried
    assert job.last_error


def test_bug_is_reported_as_internal_error(store):
    store.enqueue("k", "key", {})
    assert run_once(store, raising(KeyError("surprise"))).last_error == "internal error: KeyError: 'surprise'"


def test_retry_after_is_honoured_and_backoff_grows(store, clock):
    store.enqueue("k", "key", {})
    job = run_once(store, raising(UpstreamError("LangSmith", "slow", status=429, transient=True, retry_after=30)))
    assert job.next_attempt_at - clock.now == pytest.approx(30)
    assert store.claim() is None  # not due yet
    clock.now = job.next_attempt_at
    job = run_once(store, raising(UpstreamError("LangSmith", "busy", status=503, transient=True)))
    assert 2.0 <= job.next_attempt_at - clock.now <= 4.0  # base 2 s doubled, with jitter in [0.5, 1]


def test_transient_errors_end_dead_after_max_attempts(store, clock):
    store.enqueue("k", "key", {})
    for _ in range(3):
        job = run_once(store, raising(UpstreamError("Hub", "busy", status=502, transient=True)))
        clock.now = job.next_attempt_at
    assert job.state == "dead" and job.attempts == 3
    assert [a["outcome"] for a in store.attempts(job.id)] == ["retry", "retry", "dead"]


def test_manual_retry_and_cancel(store):
    store.enqueue("k", "key", {})
    failed = run_once(store, raising(UpstreamError("Hub", "forbidden", status=403)))
    with pytest.raises(ValueError, match="only a queued job"):
        store.cancel(failed.id)
    again = store.retry(failed.id)
    assert again.state == "queued" and again.max_attempts == failed.attempts + 3
    assert (again.attempt, again.attempt_budget) == (0, 3)  # a fresh budget reads "1 of 3" at the next attempt
    assert run_once(store, lambda job, ctx: {"ok": True}).state == "succeeded"
    with pytest.raises(ValueError, match="only failed, dead, cancelled"):
        store.retry(failed.id)
    other, _ = store.enqueue("k", "key-2", {})
    assert store.cancel(other.id).state == "cancelled"
    assert store.claim() is None


def test_recover_requeues_running_jobs(store):
    store.enqueue("k", "key", {})
    running = store.claim()
    assert store.recover() == [running.id]
    job = store.get(running.id)
    assert job.state == "queued" and "stopped during attempt 1" in job.last_error


def test_secrets_are_scrubbed_from_errors_and_results(store):
    store.enqueue("k", "key", {})
    job = run_once(store, raising(BridgeError("upstream said: bad token sk-very-secret-value")))
    assert "sk-very-secret-value" not in job.last_error and "***" in job.last_error


def test_progress_and_result(store):
    store.enqueue("k", "key", {})

    def handler(job, ctx):
        ctx.progress(5, 10, "rows")
        return {"experiment_url": "http://x"}
    job = run_once(store, handler)
    assert job.progress == {"done": 5, "total": 10, "unit": "rows"} and job.result == {"experiment_url": "http://x"}


def test_worker_pool_runs_jobs_in_background(tmp_path):
    store = JobStore(Database(tmp_path / "j.sqlite3"))
    seen = []
    pool = WorkerPool(store, {"k": lambda job, ctx: seen.append(job.id) or {}}, workers=2).start()
    try:
        ids = [store.enqueue("k", f"key-{i}", {})[0].id for i in range(20)]
        wait_for(lambda: store.counts()["succeeded"] == 20, what="20 jobs to succeed")
        assert sorted(seen) == ids
    finally:
        pool.stop()


WORKER = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from bridge.db import Database
    from bridge.jobs import JobStore
    from bridge.workers import WorkerPool
    state = Path({state!r})
    mode = sys.argv[1]
    store = JobStore(Database(state / "jobs.sqlite3"))

    def handler(job, ctx):
        if mode == "hang":
            (state / "started").write_text(str(job.attempts))
            threading.Event().wait()  # mid-job until the test SIGKILLs the process
        with open(state / "done.log", "a") as f:
            f.write(f"{{job.id}}\\n")
        return {{"ok": True}}

    if mode == "hang":
        store.enqueue("k", "only-once", {{}})
    pool = WorkerPool(store, {{"k": handler}}, workers=1).start()
    threading.Event().wait()  # the workers are daemon threads: keep the process up until it is killed
""")


def test_sigkill_mid_job_then_restart_completes_once(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root=str(ROOT), state=str(tmp_path)))
    first = subprocess.Popen([sys.executable, str(script), "hang"])
    try:
        wait_for(lambda: (tmp_path / "started").exists(), what="the job to start")
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    second = subprocess.Popen([sys.executable, str(script), "finish"])
    try:
        store = JobStore(Database(tmp_path / "jobs.sqlite3"))
        wait_for(lambda: store.counts()["succeeded"] == 1, what="the recovered job to succeed")
    finally:
        second.kill()
        second.wait()
    assert (tmp_path / "done.log").read_text().split() == ["1"]
    job = store.get(1)
    assert job.attempts == 2
    assert [a["outcome"] for a in store.attempts(1)] == ["crashed", "succeeded"]


def test_retry_after_is_capped_by_the_longest_backoff(store, clock):
    store.enqueue("k", "key", {})
    job = run_once(store, raising(UpstreamError("Hub", "slow", status=429, transient=True, retry_after=86400)))
    assert job.next_attempt_at - clock.now == pytest.approx(60)  # max_seconds, not a day


def test_recover_reports_the_state_it_chose(store, caplog):
    caplog.set_level("INFO", logger="bridge.jobs")
    store.enqueue("k", "key", {})
    for _ in range(3):  # every attempt killed the process: the last one is out of attempts
        store.claim()
        store.recover()
    job = store.get(store.list()[0].id)
    assert job.state == "dead"
    recovered = [r.getMessage() for r in caplog.records if '"note": "recovered"' in r.getMessage()]
    assert '"state": "dead"' in recovered[-1] and all('"state": "queued"' in m for m in recovered[:-1])


def test_attempts_read_from_the_last_retry_by_hand(store, clock):
    store.enqueue("k", "key", {})
    failed = run_once(store, raising(UpstreamError("Hub", "forbidden", status=403)))
    assert (failed.attempt, failed.attempt_budget) == (1, 3)
    store.retry(failed.id)
    second = run_once(store, raising(UpstreamError("Hub", "busy", status=503, transient=True)))
    assert (second.attempts, second.attempt, second.attempt_budget) == (2, 1, 3)  # not "2 of 4"


def test_scheduled_is_queued_for_later(store, clock):
    store.enqueue("k", "now", {})
    later, _ = store.enqueue("k", "later", {}, delay=600)
    assert store.counts()["queued"] == 1 and store.counts()["scheduled"] == 1
    assert [j.key for j in store.list(state="scheduled")] == ["later"]
    assert [j.key for j in store.list(state="queued")] == ["now"]
    assert later.shown_state(clock.now) == "scheduled"
    clock.now += 600
    assert store.counts()["queued"] == 2 and store.counts()["scheduled"] == 0


def test_enqueue_once_keeps_one_waiting_job_per_subject(store, clock):
    first, created = store.enqueue_once("flush", "acme/x", {}, trigger="webhook", delay=60, advance=True)
    assert created
    again, created = store.enqueue_once("flush", "acme/x", {}, trigger="webhook", delay=60, advance=True)
    assert again.id == first.id and not created
    sooner, _ = store.enqueue_once("flush", "acme/x", {}, trigger="webhook", delay=0, advance=True)
    assert sooner.id == first.id and sooner.next_attempt_at == clock.now  # moved earlier, never later
    later, _ = store.enqueue_once("flush", "acme/x", {}, trigger="webhook", delay=600, advance=True)
    assert later.next_attempt_at == clock.now
    running = store.claim()
    assert running.id == first.id
    successor, created = store.enqueue_once("flush", "acme/x", {}, trigger="webhook", exclude=running.id)
    assert created and successor.id != first.id
    other, created = store.enqueue_once("flush", "acme/y", {}, trigger="webhook")
    assert created


def test_retention_prunes_finished_jobs_and_deliveries_and_keeps_what_is_needed(store, clock):
    from bridge.routing import JobSpec

    day = 86400
    spec = lambda key: [JobSpec("k", key, {}, "s")]  # noqa: E731
    store.record_delivery("hub", '{"old": "done"}', spec("done"))
    store.record_delivery("hub", '{"old": "failed"}', spec("failed"))
    store.record_delivery("hub", '{"old": "waiting"}', spec("waiting"))
    store.record_delivery("hub", '{"ignored": true}', None, reason="no rule")
    ok = run_once(store, lambda job, ctx: {"ok": True})
    bad = run_once(store, raising(UpstreamError("Hub", "forbidden", status=403)))
    store.remember_commit("a" * 40, "acme/x")
    clock.now += 8 * day
    store.record_delivery("hub", '{"new": true}', spec("new"))
    pruned = store.prune(7 * day, 30 * day)
    assert pruned == {"jobs": 1, "deliveries": 2, "own_commits": 1}  # the done job; its delivery; the ignored one
    keys = {j.key for j in store.list()}
    assert keys == {"failed", "waiting", "new"} and ok.id not in {j.id for j in store.list()}
    assert store.attempts(ok.id) == [] and len(store.attempts(bad.id)) == 1
    bodies = [d["has_body"] for d in store.deliveries()]
    assert bodies == [1, 1, 1]  # new, waiting, failed: kept with their bodies
    clock.now += 23 * day  # the failed job is kept 30 days, then goes with its delivery
    store.claim()  # the waiting one runs (and stays running: still kept)
    assert store.prune(7 * day, 30 * day)["jobs"] == 1
    assert {j.key for j in store.list()} == {"waiting", "new"}


def test_compact_gives_pruned_pages_back(tmp_path, clock):
    store = JobStore(Database(tmp_path / "big.sqlite3"), clock=clock)
    from bridge.routing import JobSpec

    for i in range(200):
        store.record_delivery("langsmith", "x" * 20000, [JobSpec("k", f"key-{i}", {}, "s")])
        job = store.claim()
        store.succeed(job, None)
    before = store.db.size_bytes()
    clock.now += 8 * 86400
    assert store.prune(7 * 86400, 30 * 86400)["deliveries"] == 200
    assert store.db.compact() > 0
    assert store.db.size_bytes() < before / 4
