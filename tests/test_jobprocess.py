"""The job workers in their own process (bridge/jobprocess.py, bridge/jobworker.py).

- the real app (`python app.py`): its jobs run in the job process, which /healthz shows; a job process that dies is
  started again and the deliveries after it are exported; the job process dies with the app (SIGKILL included);
  /metrics counts what the job process did;
- `JobProcess` with a stand-in child: wake-ups reach its stdin, a clean stop ends it, a crashing child is restarted;
- `Metrics.write_counters` / `absorb`: another process's counters add to this one's, a restarted process's too.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest
import requests

from bridge.jobprocess import JobProcess
from bridge.jobs import JobStore
from bridge.db import Database
from bridge.metrics import Metrics
from bridge.sandbox.hub_store import RepoNotFound
from conftest import wait_for
from test_crash import LS_SECRET, App, World, config


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child stays a zombie until its parent reaps it; a zombie is not running anything.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def exported(world: World) -> list[dict]:
    """The export repo's rows; none before its first commit created it."""
    try:
        return world.rows()
    except RepoNotFound:
        return []


@pytest.fixture
def app(tmp_path, hub, smith):
    app = App(tmp_path, hub, smith, config(flush_seconds=0.2)).start(tmp_path / "state")
    yield app
    app.stop()


def test_the_apps_jobs_run_in_the_job_process_which_is_restarted_when_it_dies(app, hub, smith):
    world = World(hub, smith)
    bodies = world.langsmith_bodies()
    workers = app.health()["workers"]
    assert workers["mode"] == "process" and workers["alive"] and workers["pid"] != app.proc.pid

    world.deliver_langsmith(app, bodies[:8])
    wait_for(lambda: len({r["run_id"] for r in exported(world)}) == 25, timeout=60, what="the first rows exported")
    os.kill(workers["pid"], signal.SIGKILL)
    wait_for(lambda: app.health()["workers"]["restarts"] == 1 and app.health()["workers"]["alive"], timeout=30,
             what="the job process started again")
    assert app.health()["workers"]["pid"] != workers["pid"]

    world.deliver_langsmith(app, bodies[8:])
    wait_for(lambda: len({r["run_id"] for r in exported(world)}) == 49, timeout=60, what="every row exported")
    assert len(exported(world)) == 49  # and none twice
    assert all(status == 202 for _, status in world.ls_answers)


def test_the_job_process_dies_with_the_app_even_when_the_app_is_killed(app):
    pid = app.health()["workers"]["pid"]
    assert alive(pid)
    app.kill()  # SIGKILL: no shutdown code runs in the app
    wait_for(lambda: not alive(pid), timeout=10, what="the job process gone with the app")


def test_metrics_count_what_the_job_process_did(app, hub, smith):
    world = World(hub, smith)
    world.deliver_langsmith(app, world.langsmith_bodies()[:2])
    wait_for(lambda: len(exported(world)) == 7, timeout=60, what="the rows exported")

    def counted() -> float:
        text = requests.get(app.base + "/metrics", timeout=5).text
        lines = [line for line in text.splitlines() if line.startswith("bridge_rows_exported_total")]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)

    wait_for(lambda: counted() == 7, timeout=15, what="the job process's rows in /metrics")
    text = requests.get(app.base + "/metrics", timeout=5).text
    assert 'bridge_job_transitions_total{kind="export",state="succeeded"}' in text
    assert 'bridge_upstream_requests_total{status="200",target="langsmith"}' in text
    assert LS_SECRET not in text


# ---------------------------------------------------------------- JobProcess with a stand-in child

STAND_IN = textwrap.dedent("""
    import os, sys
    out, mode = sys.argv[1], sys.argv[2]
    if mode == "crash":
        with open(out, "a") as f:
            f.write("started\\n")
        sys.exit(3)
    seen = 0
    while chunk := os.read(0, 4096):
        seen += len(chunk)
        with open(out, "w") as f:
            f.write(str(seen))
    with open(out, "w") as f:
        f.write(f"end after {seen}")
""")


def stand_in(tmp_path: Path, mode: str) -> tuple[JobProcess, Path]:
    script, out = tmp_path / "child.py", tmp_path / "out.txt"
    script.write_text(STAND_IN)
    # The stand-in takes `--parent-pid N` (appended by JobProcess) as extra argv and ignores it.
    return JobProcess([sys.executable, str(script), str(out), mode], dict(os.environ)), out


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_wake_ups_reach_the_child_and_a_stop_ends_it(tmp_path):
    process, out = stand_in(tmp_path, "serve")
    process.start()
    wait_for(lambda: process.status()["alive"], what="the child started")
    for _ in range(3):
        process.wake()
    wait_for(lambda: read(out) == "3", what="three wake-ups read by the child")
    pid = process.status()["pid"]
    process.stop(timeout=10)
    assert read(out) == "end after 3"  # it saw the end of its input and finished by itself
    assert not alive(pid) and process.status() == {"mode": "process", "alive": False, "pid": None, "restarts": 0}
    process.wake()  # after the stop: nothing to wake, and no error


def test_a_child_that_exits_is_started_again(tmp_path):
    process, out = stand_in(tmp_path, "crash")
    process.start()
    try:
        wait_for(lambda: read(out).count("started") >= 2, timeout=10, what="the child started a second time")
        wait_for(lambda: process.restarts >= 2, what="both exits counted")
    finally:
        process.stop(timeout=10)


def test_a_store_tells_its_wake_hooks_when_a_job_is_stored(tmp_path):
    store, woken = JobStore(Database(tmp_path / "db.sqlite3")), []
    store.on_wake.append(lambda: woken.append(1))
    store.enqueue("k", "key-1", {})
    assert woken


# ---------------------------------------------------------------- counters from another process

def render(metrics: Metrics) -> str:
    return metrics.render()[0].decode()


def test_another_processes_counters_add_to_this_ones_and_survive_its_restart(tmp_path):
    path = tmp_path / "counters.json"
    path.write_text('{"pid": 1, "counters": [["bridge_rows_exported", {"repo": "a/b"}, 1000.0]]}')
    web = Metrics().follow(path)  # a file of an earlier run is not counted
    web.rows_exported("a/b", 1)
    worker = Metrics()
    worker.rows_exported("a/b", 5)
    worker.upstream("langsmith", 200)
    worker.hub_webhook_reenabled()
    worker.write_counters(path)
    assert 'bridge_rows_exported_total{repo="a/b"} 6.0' in render(web)
    assert 'bridge_rows_exported_total{repo="a/b"} 6.0' in render(web)  # a second scrape adds nothing new
    assert 'bridge_upstream_requests_total{status="200",target="langsmith"} 1.0' in render(web)
    assert "bridge_hub_webhook_reenabled_total 1.0" in render(web)

    worker.rows_exported("a/b", 2)
    worker.write_counters(path)
    assert 'bridge_rows_exported_total{repo="a/b"} 8.0' in render(web)
    # A restarted worker counts from zero under a new pid: its counts add to the earlier ones.
    path.write_text('{"pid": -5, "counters": [["bridge_rows_exported", {"repo": "a/b"}, 3.0]]}')
    assert 'bridge_rows_exported_total{repo="a/b"} 11.0' in render(web)
    path.write_text("{half a fi")  # being replaced: the next scrape reads it
    assert 'bridge_rows_exported_total{repo="a/b"} 11.0' in render(web)


# ---------------------------------------------------------------- the write lock across processes

def test_a_write_lock_held_by_another_process_makes_an_immediate_write_busy_not_wait(tmp_path):
    """Two `Database`s on one file stand for the web and the job process (each has its own in-process lock)."""
    import threading

    from bridge.db import Database, WriteBusy

    web, jobs = Database(tmp_path / "db.sqlite3"), Database(tmp_path / "db.sqlite3")
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with jobs.tx() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    with pytest.raises(WriteBusy):  # at once: SQLite's busy wait would hold the event loop up to 30 s
        with web.tx(wait=False):
            pass
    release.set()
    holder.join(10)
    with web.tx(wait=False) as conn:  # free again, and the busy timeout is back for waiting writers
        conn.execute("INSERT INTO t VALUES (1)")
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
