"""Self-tracing: with BRIDGE_TRACE_PROJECT set, every job becomes a LangSmith run tree.

The job is the root run (tags for its kind and trigger; metadata: job id, repo, revision, rule id); what it does
(listing, reading, mapping, uploading, committing) are child runs, the way Dify maps its traces onto runs. Flows mark
their steps with `step("name", **inputs)`, a no-op when tracing is off. A tracing failure is logged and never fails
or slows down a job beyond the failed call.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from langsmith.run_trees import RunTree

log = logging.getLogger("bridge.tracing")
_current: contextvars.ContextVar[RunTree | None] = contextvars.ContextVar("bridge_trace", default=None)
# The job's secret scrubber: error texts may echo a token an upstream sent back, and traces leave the bridge.
_scrub: contextvars.ContextVar[Callable[[str], str]] = contextvars.ContextVar("bridge_trace_scrub",
                                                                             default=lambda text: text)
METADATA_KEYS = ("repo", "repo_type", "ref", "sha", "revision", "pr", "rule_id", "project", "delivery_id")


def _safe(action: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:  # tracing is an observer: it must never break the work it observes
        log.warning("tracing: %s failed: %s", action, type(exc).__name__)
        return None


def job_metadata(job: Any) -> dict:
    payload = job.payload or {}
    meta = {"job_id": job.id, "kind": job.kind, "trigger": job.trigger, "attempt": job.attempts}
    meta.update({k: payload[k] for k in METADATA_KEYS if payload.get(k) is not None})
    return meta


class Tracer:
    def __init__(self, client_factory: Callable[[], Any], project: str,
                 scrub: Callable[[str], str | None] | None = None) -> None:
        self.client_factory, self.project = client_factory, project
        self.scrub = (lambda text: scrub(text) or "") if scrub else (lambda text: text)

    @contextmanager
    def job(self, job: Any) -> Iterator[None]:
        root = _safe("start the job run", lambda: self._start(job))
        token, scrub_token = _current.set(root), _scrub.set(self.scrub)
        try:
            yield
        except BaseException as exc:
            error = _error_text(exc)
            _safe("end the job run", lambda: self._end(root, error=error))
            raise
        else:
            _safe("end the job run", lambda: self._end(root))
        finally:
            _current.reset(token)
            _scrub.reset(scrub_token)

    def _start(self, job: Any) -> RunTree:
        root = RunTree(name=f"{job.kind} job #{job.id}", run_type="chain", project_name=self.project,
                       ls_client=self.client_factory(), inputs={"subject": self.scrub(job.subject)},
                       tags=[f"kind:{job.kind}", f"trigger:{job.trigger}", "hub-langsmith-bridge"],
                       extra={"metadata": job_metadata(job)})
        root.post()
        return root

    @staticmethod
    def _end(run: RunTree | None, error: str | None = None, outputs: dict | None = None) -> None:
        if run is not None:
            run.end(error=error, outputs=outputs)
            run.patch()


@contextmanager
def step(name: str, run_type: str = "chain", **inputs: Any) -> Iterator[dict]:
    """A child run of the current job's trace; `outputs` (the yielded dict) may be filled by the caller."""
    parent, outputs = _current.get(), {}
    child = _safe(f"start {name}", lambda: _child(parent, name, run_type, inputs)) if parent else None
    token = _current.set(child) if child else None
    try:
        yield outputs
    except BaseException as exc:
        error = _error_text(exc)
        _safe(f"end {name}", lambda: Tracer._end(child, error=error))
        raise
    else:
        _safe(f"end {name}", lambda: Tracer._end(child, outputs=outputs))
    finally:
        if token is not None:
            _current.reset(token)


def _error_text(exc: BaseException) -> str:
    return _scrub.get()(f"{type(exc).__name__}: {exc}")


def _child(parent: RunTree, name: str, run_type: str, inputs: dict) -> RunTree:
    child = parent.create_child(name=name, run_type=run_type, inputs={k: _scrub.get()(str(v)) for k, v in inputs.items()})
    child.post()
    return child


def traced(handler: Callable) -> Callable:
    """Wraps a job handler so its job is traced when the runtime has a tracer."""

    def run(job: Any, ctx: Any) -> Any:
        tracer = getattr(ctx.services, "tracer", None)
        if tracer is None:
            return handler(job, ctx)
        with tracer.job(job):
            return handler(job, ctx)

    run.__name__ = getattr(handler, "__name__", "handler")
    return run
