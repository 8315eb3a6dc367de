"""Prometheus metrics: webhook answers, job transitions, queue state, upstream HTTP calls, exports, experiments.

Each `Metrics` owns its `CollectorRegistry` (never the process-global one), so several apps or tests in one process
never clash. The queue gauges are read from SQLite at scrape time, so they are right even after a restart.

Label values are bounded: fixed vocabularies where one exists, and a cap on distinct values (then "other") where
they come from outside, such as repo names. No label ever carries a URL, header or body, so no secret can leak.

Feeding points (see each docstring): `on_answer` is `WebhookEndpoint.on_answer`, `on_job` a `JobStore.listeners`
entry (`watch(store)` adds it and the gauges), `instrument_httpx_client` / `instrument_requests_session` wrap the
HTTP clients, `rows_exported` / `experiment` are called by the flows.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import requests
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from pydantic import SecretStr
from requests.adapters import BaseAdapter
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from .jobs import SHOWN_STATES, STATES, Job, JobStore

log = logging.getLogger("bridge.metrics")

OTHER = "other"
OUTCOMES = ("queued", "duplicate", "ignored", "cancelled", "rejected")
TARGETS = ("hub", "langsmith", "objects")
# LangSmith drops a webhook that takes more than 5 s; the buckets resolve milliseconds up to that budget.
ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class BoundedLabel:
    """Maps label values to at most `limit` distinct ones; later newcomers (or values outside `allowed`) are "other".

    Unbounded labels make Prometheus keep a series per value forever, so outside input must never pick them freely.
    """

    def __init__(self, limit: int, allowed: tuple[str, ...] | None = None) -> None:
        self.limit, self.allowed = limit, allowed
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, value: object) -> str:
        text = str(value)
        if self.allowed is not None:
            return text if text in self.allowed else OTHER
        with self.lock:
            if text in self.seen or len(self.seen) < self.limit:
                self.seen.add(text)
                return text
        return OTHER


def _never_raises(method: Callable) -> Callable:
    """Metrics are called from the webhook handler and the job store: a metrics bug must not fail a delivery."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            method(*args, **kwargs)
        except Exception:
            log.exception("recording a metric failed in %s", method.__name__)

    return wrapper


class Metrics:
    """Every bridge metric, on a registry of its own. Recording methods never raise (errors are logged)."""

    def __init__(self, *, max_repos: int = 100, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.clock = clock
        reg = self.registry
        self.deliveries = Counter("bridge_deliveries", "Webhook deliveries answered, by source and outcome.",
                                  ["source", "outcome"], registry=reg)
        self.ack_seconds = Histogram("bridge_ack_seconds", "Time from receiving a webhook to answering it.",
                                     ["source"], buckets=ACK_BUCKETS, registry=reg)
        self.job_transitions = Counter("bridge_job_transitions", "Jobs entering a state, by kind and state.",
                                       ["kind", "state"], registry=reg)
        self.upstream_requests = Counter("bridge_upstream_requests",
                                         "HTTP requests to upstream services, by HTTP status or 'error'.",
                                         ["target", "status"], registry=reg)
        self.rows = Counter("bridge_rows_exported", "Rows appended to Hub datasets, by repo.", ["repo"],
                            registry=reg)
        self.experiments = Counter("bridge_experiments_uploaded", "Experiment uploads to LangSmith, by status.",
                                   ["status"], registry=reg)
        self.webhook_reenabled = Counter("bridge_hub_webhook_reenabled",
                                         "Times the bridge turned its Hub webhook back on after the Hub suspended "
                                         "it.", registry=reg)
        self._source = BoundedLabel(10)
        self._target = BoundedLabel(len(TARGETS), TARGETS)
        self._outcome = BoundedLabel(len(OUTCOMES), OUTCOMES)
        self._kind = BoundedLabel(20)
        self._state = BoundedLabel(len(STATES), STATES)
        self._repo = BoundedLabel(max_repos)
        self._experiment_status = BoundedLabel(20)
        self._followed: Path | None = None  # another process's counters, added at each scrape (`follow`)
        self._absorbed: dict[tuple, float] = {}  # (pid, metric, labels) -> its value already added
        self._absorb_lock = threading.Lock()

    # ---- feeding ----
    @_never_raises
    def on_answer(self, source: str, outcome: str, seconds: float) -> None:
        """Matches `WebhookEndpoint.on_answer`: one call per answered delivery."""
        source = self._source(source)
        self.deliveries.labels(source, self._outcome(outcome)).inc()
        self.ack_seconds.labels(source).observe(max(0.0, seconds))

    @_never_raises
    def on_job(self, job: Job) -> None:
        """A `JobStore.listeners` entry: the job as it is after a transition."""
        self.job_transitions.labels(self._kind(job.kind), self._state(job.state)).inc()

    @_never_raises
    def upstream(self, target: str, status: int | str) -> None:
        """One upstream HTTP answer (its status code) or failure to get one (`"error"`)."""
        self.upstream_requests.labels(self._target(target), str(status)).inc()

    @_never_raises
    def rows_exported(self, repo: str, n: int) -> None:
        """`n` rows committed to the dataset `repo` (the first `max_repos` repos get their own label)."""
        if n < 0:
            log.warning("rows_exported called with a negative count (%s) for %s; ignored", n, repo)
            return
        self.rows.labels(self._repo(repo)).inc(n)

    @_never_raises
    def experiment(self, status: str) -> None:
        """One file's outcome in an experiment job: uploaded, exists, skipped or failed."""
        self.experiments.labels(self._experiment_status(status)).inc()

    @_never_raises
    def hub_webhook_reenabled(self) -> None:
        self.webhook_reenabled.inc()

    def session_hook(self, session: requests.Session, target: str) -> None:
        """For clients that accept an `on_session` callback (LangSmith's session, the object fetcher's)."""
        instrument_requests_session(session, target, self)

    def watch(self, store: JobStore) -> "Metrics":
        """Counts the store's transitions and adds the scrape-time queue gauges. Call once per store."""
        store.listeners.append(self.on_job)
        self.registry.register(StoreCollector(JobStats(store), self.clock))
        return self

    # ---- another process's counters (the job process, see jobprocess.py) ----
    def _counters(self) -> dict[str, Counter]:
        return {c._name: c for c in (self.job_transitions, self.upstream_requests, self.rows, self.experiments,
                                     self.webhook_reenabled)}

    def write_counters(self, path: Path) -> None:
        """This process's counter values, written atomically to `path` for the process that serves /metrics."""
        values = [[family.name, sample.labels, sample.value] for family in self.registry.collect()
                  if family.type == "counter" and family.name in self._counters()
                  for sample in family.samples if sample.name.endswith("_total")]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "counters": values}))
        os.replace(tmp, path)

    def follow(self, path: Path) -> "Metrics":
        """Adds the counters another process writes to `path` (`write_counters`) to these, at every scrape."""
        path.unlink(missing_ok=True)  # a previous run's process: its counts belonged to that run
        self._followed = path
        return self

    def absorb(self) -> None:
        """Adds what the followed process counted since the last scrape. A new pid (a restarted process) starts
        from zero, so its counts add to what the earlier one had, as counters must."""
        if self._followed is None:
            return
        try:
            data = json.loads(self._followed.read_text())
        except (OSError, ValueError):
            return  # not written yet, or being replaced: the next scrape reads it
        counters = self._counters()
        with self._absorb_lock:
            for name, labels, value in data.get("counters", []):
                counter = counters.get(name)
                key = (data.get("pid"), name, tuple(sorted(labels.items())))
                delta = value - self._absorbed.get(key, 0.0)
                if counter is None or delta <= 0:
                    continue
                self._absorbed[key] = value
                (counter.labels(**labels) if labels else counter).inc(delta)

    # ---- exposing ----
    def render(self) -> tuple[bytes, str]:
        """(body, content type) in the Prometheus text format 0.0.4, which every Prometheus version reads."""
        self.absorb()
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4


@dataclass(frozen=True)
class QueueSnapshot:
    counts: dict[tuple[str, str], int]  # (kind, shown state) -> jobs; `scheduled` = queued, due later
    oldest_due_at: float | None  # when the longest-waiting due job became due
    state_bytes: int = 0  # the state dir's database on disk


class JobStats:
    """Read-only queries over the `jobs` table for the scrape-time gauges (one short transaction per scrape)."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def snapshot(self) -> QueueSnapshot:
        now = self.store.clock()
        with self.store.db.read() as conn:
            rows = conn.execute("SELECT kind, CASE WHEN state = 'queued' AND next_attempt_at > ? THEN 'scheduled' "
                                "ELSE state END AS shown, COUNT(*) AS n FROM jobs GROUP BY kind, shown",
                                (now,)).fetchall()
            oldest = conn.execute("SELECT MIN(next_attempt_at) AS t FROM jobs WHERE state = 'queued' AND "
                                  "next_attempt_at <= ?", (now,)).fetchone()
        return QueueSnapshot({(r["kind"], r["shown"]): r["n"] for r in rows}, oldest["t"], self.store.db.size_bytes())


class StoreCollector:
    """Gauges computed from the store on every scrape (a custom collector, so they never go stale)."""

    def __init__(self, stats: JobStats, clock: Callable[[], float] = time.time) -> None:
        self.stats, self.clock = stats, clock

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (GaugeMetricFamily("bridge_jobs", "Jobs currently in each state, by kind (scheduled: queued for "
                                  "later, e.g. a retry in backoff or a flush waiting for its window).",
                                  labels=["kind", "state"]),
                GaugeMetricFamily("bridge_queue_depth", "Jobs due now and waiting for a worker (scheduled ones "
                                  "are not counted until their time comes)."),
                GaugeMetricFamily("bridge_oldest_queued_age_seconds",
                                  "How long the longest-waiting due job has waited since it became due; 0 when "
                                  "none is due."),
                GaugeMetricFamily("bridge_state_bytes", "Size of the state dir's database on disk (with its WAL)."))

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Lets the registry check names without querying the database at registration.
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs, depth, age, size = self._families()
        try:
            snapshot = self.stats.snapshot()
        except sqlite3.Error:
            # A busy or broken database must not take down the other metrics of the scrape.
            log.warning("could not read the job store for metrics", exc_info=True)
            return
        counts, oldest = snapshot.counts, snapshot.oldest_due_at
        for kind in sorted({kind for kind, _ in counts}):
            for state in SHOWN_STATES:  # every state, so a state emptying shows 0 instead of vanishing
                jobs.add_metric([kind, state], counts.get((kind, state), 0))
        depth.add_metric([], sum(n for (_, state), n in counts.items() if state == "queued"))
        age.add_metric([], max(0.0, self.clock() - oldest) if oldest is not None else 0.0)
        size.add_metric([], snapshot.state_bytes)
        yield from (jobs, depth, age, size)


# ---- upstream HTTP instrumentation ----
# Each request (each redirect hop) counts once: under its status when a status line arrived, else as "error".
# A connection that breaks while the body is being read therefore counts under the status it had already sent.

def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")


class _CountingTransport(httpx2.BaseTransport):
    """Wraps an httpx2 transport to count requests that got no answer (event hooks never see those)."""

    def __init__(self, inner: httpx2.BaseTransport, on_error: Callable[[], None]) -> None:
        self.inner, self.on_error = inner, on_error

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            return self.inner.handle_request(request)
        except Exception:
            self.on_error()
            raise

    def close(self) -> None:
        self.inner.close()


def instrument_httpx_client(client: httpx2.Client, target: str, metrics: Metrics) -> httpx2.Client:
    """Counts every response (a response event hook) and every transport failure (a wrapping transport).

    Calling it again on the same client does nothing, so a client is never counted twice.
    """
    _check_target(target)
    if isinstance(client._transport, _CountingTransport):
        return client
    hooks = client.event_hooks
    client.event_hooks = {"request": hooks["request"],
                          "response": [*hooks["response"], lambda r: metrics.upstream(target, r.status_code)]}

    def on_error() -> None:
        metrics.upstream(target, "error")

    # httpx has no public setter for the transport of an existing client (the transport is its documented
    # extension point, but only at construction); proxies from the environment live in `_mounts`.
    client._transport = _CountingTransport(client._transport, on_error)
    client._mounts = {pattern: None if transport is None else _CountingTransport(transport, on_error)
                      for pattern, transport in client._mounts.items()}
    return client


class _CountingAdapter(BaseAdapter):
    """Wraps a mounted requests adapter (keeping its retry and pool settings) to count requests with no answer."""

    def __init__(self, inner: BaseAdapter, on_error: Callable[[], None]) -> None:
        super().__init__()
        self.inner, self.on_error = inner, on_error

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        try:
            return self.inner.send(request, **kwargs)
        except Exception:
            self.on_error()
            raise

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # Anything else (max_retries, poolmanager, ...) is the wrapped adapter's.
        if name == "inner":  # not set yet (e.g. while unpickling): avoid recursing forever
            raise AttributeError(name)
        return getattr(self.inner, name)


def instrument_requests_session(session: requests.Session, target: str, metrics: Metrics) -> requests.Session:
    """Counts every response (a response hook) and every request that got none (wrapping each mounted adapter).

    Adapters mounted later are not wrapped: call this after the owner (e.g. langsmith's `Client`) mounted its own.
    A retrying adapter (urllib3 `Retry`) retries inside `send`, so only the final answer of its retries is counted.
    """
    _check_target(target)
    if any(isinstance(adapter, _CountingAdapter) for adapter in session.adapters.values()):
        return session

    def on_response(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        metrics.upstream(target, response.status_code)

    def on_error() -> None:
        metrics.upstream(target, "error")

    session.hooks["response"].append(on_response)
    for prefix, adapter in list(session.adapters.items()):
        session.mount(prefix, _CountingAdapter(adapter, on_error))
    return session


# ---- the scrape endpoint ----

def metrics_route(metrics: Metrics, token: SecretStr | None = None) -> Callable:
    """An async handler for `GET /metrics`. With `token`, only `Authorization: Bearer <token>` may read it:
    on a public Space the repo label would otherwise show anyone which datasets the bridge writes to."""

    async def handler(request: Request) -> Response:
        if token is not None and not _bearer_matches(request, token):
            return PlainTextResponse("unauthorized\n", status_code=401, headers={"WWW-Authenticate": "Bearer"})
        body, content_type = await anyio.to_thread.run_sync(metrics.render)  # the store query blocks
        return Response(body, headers={"Content-Type": content_type})

    return handler


def _bearer_matches(request: Request, token: SecretStr) -> bool:
    offered = request.headers.get("authorization", "")
    scheme, _, value = offered.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(),
                                                              token.get_secret_value().encode())
