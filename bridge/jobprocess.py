"""The job workers in a process of their own (`jobs.process`, the default for `python app.py`).

The web process only stores deliveries and answers; mapping thousands of runs is CPU work that, in the same process,
holds the GIL while acknowledgements wait for it (bench/results.md: the export's threads held it in 43% of the samples
taken while deliveries were acknowledged). The worker process (`python -m bridge.jobworker`) shares nothing with the
web process but the SQLite job store (WAL mode: readers and one writer at a time, across processes) and its stdin:

- a byte on its stdin wakes its workers when a job was stored (they otherwise poll the store once a second);
- end of file on its stdin (the web process stopped, or died) makes it finish what it runs and exit; on Linux the
  kernel also kills it the moment its parent dies (PR_SET_PDEATHSIG), so two workers never run the same job;
- it runs at a lower priority (nice 5), so on a Space's two cores a delivery's acknowledgement goes first;
- it writes its counters to `jobworker-metrics.json` in the state dir, which `/metrics` adds to its own.

If the worker process exits unexpectedly it is started again (1 s, then doubling up to a minute, between tries);
`/healthz` shows whether it is alive and how often it was restarted. Its jobs are crash-safe like any other
(`JobStore.recover` queues again what it was running).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("bridge.jobs")

METRICS_FILE = "jobworker-metrics.json"
FIRST_RESTART_SECONDS = 1.0
MAX_RESTART_SECONDS = 60.0
STOP_SECONDS = 15.0  # a clean stop waits this long for running jobs; then the process is killed (they are retried)


class JobProcess:
    """Starts, wakes, watches and stops the worker process. `command` is the child's argv, `env` its environment; it
    starts in this process's working directory."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.command, self.env = command, env
        self.restarts = 0
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    def start(self) -> "JobProcess":
        # Spawned and awaited by one long-lived thread: PR_SET_PDEATHSIG fires when the thread that spawned the child
        # ends, so it must be this one, which lives until `stop`.
        self._supervisor = threading.Thread(target=self._supervise, name="bridge-jobprocess", daemon=True)
        self._supervisor.start()
        return self

    def wake(self) -> None:
        """A `JobStore.on_wake` hook: tells the workers a job is due. Never blocks; a full pipe is already a wake-up."""
        with self._lock:
            proc = self._proc
        if proc is None or proc.stdin is None or proc.poll() is not None:
            return
        try:
            os.write(proc.stdin.fileno(), b"w")
        except (BlockingIOError, BrokenPipeError, OSError):
            pass

    def status(self) -> dict:
        with self._lock:
            proc = self._proc
        alive = proc is not None and proc.poll() is None
        return {"mode": "process", "alive": alive, "pid": proc.pid if alive else None, "restarts": self.restarts}

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()  # end of file: the child finishes its running jobs and exits
        if self._supervisor is not None:
            self._supervisor.join(timeout)
        if proc is not None and proc.poll() is None:
            log.warning("the job process did not stop within %.0f s; killing it (its running jobs will be retried)",
                        timeout)
            proc.kill()
            proc.wait(5)

    def _supervise(self) -> None:
        delay = FIRST_RESTART_SECONDS
        while not self._stopping.is_set():
            started = time.monotonic()
            proc = self._spawn()
            code = proc.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started > MAX_RESTART_SECONDS:
                delay = FIRST_RESTART_SECONDS  # it ran a good while: a fresh crash, not a crash loop
            self.restarts += 1
            log.error("the job process exited with code %s; starting another in %.0f s", code, delay)
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, MAX_RESTART_SECONDS)

    def _spawn(self) -> subprocess.Popen:
        proc = subprocess.Popen([*self.command, "--parent-pid", str(os.getpid())], env=self.env,
                                stdin=subprocess.PIPE)
        os.set_blocking(proc.stdin.fileno(), False)
        with self._lock:
            self._proc = proc
        log.info("job process started (pid %s)", proc.pid)
        return proc


def worker_command(config_path: Path, reachable_url: str | None, public_url: str | None) -> list[str]:
    """The argv of `python -m bridge.jobworker` for this runtime (URLs are decided at launch, after settings)."""
    command = [sys.executable, "-m", "bridge.jobworker", "--config", str(config_path)]
    if reachable_url:
        command += ["--reachable-url", reachable_url]
    if public_url:
        command += ["--public-url", public_url]
    return command
