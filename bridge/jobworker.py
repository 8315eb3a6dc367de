"""`python -m bridge.jobworker`: the job workers' process, started and watched by `jobprocess.JobProcess`.

It builds the same runtime as app.py (settings from the environment and `--config`), without the web server or the
UI, and runs the worker threads until its stdin ends. See jobprocess.py for why it exists and how the two talk.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from .jobprocess import METRICS_FILE
from .settings import Settings

log = logging.getLogger("bridge.jobs")

NICENESS = 5  # below the web process, whose acknowledgements must not wait behind a mapping batch
METRICS_SECONDS = 2.0
PR_SET_PDEATHSIG = 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The bridge's job workers (started by app.py).")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--reachable-url", default=None)
    parser.add_argument("--public-url", default=None)
    parser.add_argument("--parent-pid", type=int, required=True)
    return parser.parse_args(argv)


def die_with_parent(parent_pid: int) -> None:
    """On Linux the kernel kills this process when its parent dies; elsewhere stdin's end of file stops it."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            log.warning("could not ask to be stopped with the web process; relying on stdin")
    if os.getppid() != parent_pid:  # the parent died before the request above took effect
        sys.exit(0)


def publish_metrics(runtime, path: Path, stop: threading.Event) -> None:
    """Every few seconds (and once more at the end) the counters go where the web process's /metrics reads them."""
    while True:
        stopping = stop.wait(METRICS_SECONDS)
        try:
            runtime.metrics.write_counters(path)
        except OSError:
            log.warning("could not write the job process's metrics to %s", path, exc_info=True)
        if stopping:
            return


def wait_for_end_of_input(store) -> None:
    """Each byte on stdin is a wake-up (a job was stored); end of file means the web process is gone or stopping."""
    while True:
        try:
            chunk = os.read(0, 4096)
        except InterruptedError:
            continue
        if not chunk:
            return
        store.wake()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from .runtime import build_runtime, configure_logging
    from .workers import WorkerPool

    configure_logging()
    # Ctrl-C in a terminal reaches the whole process group; the web process stops this one through its stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(args.parent_pid)
    settings = Settings.from_env(dict(os.environ), args.config)
    runtime = build_runtime(settings)
    runtime.reachable_url, runtime.public_url, runtime.url_known = args.reachable_url, args.public_url, True
    os.nice(NICENESS)
    gc.collect()
    gc.freeze()  # what was built lives as long as the process (as in app.py)
    runtime.pool = WorkerPool(runtime.store, runtime.handlers, workers=settings.config.jobs.workers,
                              services=runtime).start()
    stop = threading.Event()
    publisher = threading.Thread(target=publish_metrics, name="bridge-jobworker-metrics", daemon=True,
                                 args=(runtime, settings.state_dir / METRICS_FILE, stop))
    publisher.start()
    try:
        wait_for_end_of_input(runtime.store)
    finally:
        runtime.stop()  # the workers finish what they run
        stop.set()
        publisher.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
