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
