"""Worker threads: claim due jobs from the store and run the handler registered for their kind.

Every outcome goes back to the store (succeeded, or failed with the error, which the store turns into a retry, a
failure or a dead job); a worker thread never dies of a handler's exception.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import BridgeError
from .jobs import Job, JobStore

log = logging.getLogger("bridge.jobs")


Handler = Callable[[Job, "JobContext"], dict | None]


@dataclass
class JobContext:
    store: JobStore
    job: Job
    services: Any = None
    extra: dict = field(default_factory=dict)

    def progress(self, done: int, total: int, unit: str = "items") -> None:
        self.store.set_progress(self.job.id, done, total, unit)


class WorkerPool:
    """Threads that claim queued jobs and run the handler registered for their kind."""

    def __init__(self, store: JobStore, handlers: dict[str, Handler], *, workers: int = 2, services: Any = None,
                 idle_poll: float = 1.0) -> None:
        self.store, self.handlers, self.services = store, handlers, services
        self.count, self.idle_poll = workers, idle_poll
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> "WorkerPool":
        self.store.recover()
        for i in range(self.count):
            thread = threading.Thread(target=self._loop, name=f"bridge-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def alive(self) -> bool:
        return bool(self._threads) and all(thread.is_alive() for thread in self._threads)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.store.wake()
        for thread in self._threads:
            thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            job = self.store.claim()
            if job is None:
                self._idle()
                continue
            self.run_one(job)

    def _idle(self) -> None:
        due = self.store.next_due()
        wait = self.idle_poll if due is None else min(self.idle_poll, max(0.0, due - self.store.clock()))
        with self.store.wakeup:
            self.store.wakeup.wait(timeout=max(wait, 0.01))

    def run_one(self, job: Job) -> Job:
        handler = self.handlers.get(job.kind)
        if handler is None:
            return self.store.fail(job, BridgeError(f"no handler registered for job kind {job.kind!r}"))
        try:
            result = handler(job, JobContext(self.store, job, self.services))
        except Exception as exc:  # every failure is recorded on the job; a worker thread never dies of one
            if not isinstance(exc, BridgeError):
                log.exception("job %s (%s) raised an unexpected error", job.id, job.kind)
            return self.store.fail(job, exc, getattr(exc, "result", None))
        return self.store.succeed(job, result)
