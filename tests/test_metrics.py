"""Metrics: counters, store-backed gauges on a real JobStore, and upstream counts from real clients on loopback."""

from __future__ import annotations

import asyncio
import socket
import sqlite3

import httpx2
import pytest
import requests
from fastapi import FastAPI
from huggingface_hub import HfApi
from huggingface_hub.utils import _http, get_session, set_client_factory
from huggingface_hub.utils._http import default_client_factory
from langsmith import Client
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from urllib3.util import Retry

from bridge.db import Database
from bridge.errors import UpstreamError
from bridge.hub import Hub
from bridge.jobs import JobStore
from bridge.metrics import (Metrics, StoreCollector, instrument_httpx_client, instrument_requests_session,
                            metrics_route)
from bridge.sandbox.server import ServerHandle
from bridge.settings import BridgeConfig
from bridge.objects import ObjectFetcher
from bridge.smith import INFO, Smith
from bridge.web import langsmith_endpoint

HF_TOKEN = "hf_metricsSecretToken0123456789"
LS_KEY = "lsv2_pt_metricsSecretKey_0123456789"
METRICS_TOKEN = "metrics-token-Qw77"


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def families(metrics: Metrics) -> dict:
    body, _ = metrics.render()
    return {family.name: family for family in text_string_to_metric_families(body.decode())}


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# ---- counters ----

def test_answers_count_by_source_and_outcome():
    metrics = Metrics()
    for outcome in ("queued", "queued", "duplicate", "ignored", "rejected"):
        metrics.on_answer("hub", outcome, 0.003)
    metrics.on_answer("langsmith", "queued", 0.2)
    assert value(metrics, "bridge_deliveries_total", source="hub", outcome="queued") == 2
    assert value(metrics, "bridge_deliveries_total", source="hub", outcome="rejected") == 1
    assert value(metrics, "bridge_ack_seconds_count", source="hub") == 5
    assert value(metrics, "bridge_ack_seconds_bucket", source="hub", le="0.005") == 5
    assert value(metrics, "bridge_ack_seconds_bucket", source="langsmith", le="0.1") == 0
    assert value(metrics, "bridge_ack_seconds_bucket", source="langsmith", le="0.25") == 1


def test_unknown_outcome_is_other_and_hooks_never_raise():
    metrics = Metrics()
    metrics.on_answer("hub", "surprise", 0.01)
    metrics.on_job(object())  # not a Job: logged, not raised into the store
    metrics.rows_exported("acme/x", -3)
    assert value(metrics, "bridge_deliveries_total", source="hub", outcome="other") == 1
    assert value(metrics, "bridge_rows_exported_total", repo="acme/x") == 0


def test_rows_and_experiments_with_bounded_repos():
    metrics = Metrics(max_repos=3)
    for i in range(5):
        metrics.rows_exported(f"acme/repo-{i}", 10)
    metrics.rows_exported("acme/repo-0", 5)
    metrics.experiment("created")
    metrics.experiment("created")
    metrics.experiment("skipped")
    assert value(metrics, "bridge_rows_exported_total", repo="acme/repo-0") == 15
    assert value(metrics, "bridge_rows_exported_total", repo="other") == 20
    assert value(metrics, "bridge_rows_exported_total", repo="acme/repo-4") == 0
    assert value(metrics, "bridge_experiments_uploaded_total", status="created") == 2
    repos = {s.labels["repo"] for s in families(metrics)["bridge_rows_exported"].samples}
    assert repos == {"acme/repo-0", "acme/repo-1", "acme/repo-2", "other"}


def test_text_parses_and_registries_are_separate():
    first, second = Metrics(), Metrics()
    first.on_answer("hub", "queued", 0.01)
    body, content_type = first.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    names = set(families(first))
    assert {"bridge_deliveries", "bridge_ack_seconds", "bridge_job_transitions", "bridge_upstream_requests",
            "bridge_rows_exported", "bridge_experiments_uploaded"} <= names
    assert value(second, "bridge_deliveries_total", source="hub", outcome="queued") == 0


# ---- the job store ----

@pytest.fixture
def store(tmp_path, clock):
    return JobStore(Database(tmp_path / "bridge.sqlite3"), clock=clock)


def test_transitions_and_gauges_follow_a_real_store(store, clock):
    metrics = Metrics(clock=clock).watch(store)
    assert value(metrics, "bridge_queue_depth") == 0
    assert value(metrics, "bridge_oldest_queued_age_seconds") == 0
    store.enqueue("export", "e1", {})
    clock.now += 30
    store.enqueue("export", "e2", {})
    store.enqueue("experiment", "x1", {})
    clock.now += 12
    assert value(metrics, "bridge_queue_depth") == 3
    assert value(metrics, "bridge_oldest_queued_age_seconds") == 42
    assert value(metrics, "bridge_jobs", kind="export", state="queued") == 2

    job = store.claim()  # the oldest: e1
    store.succeed(job, {"rows": 1})
    store.cancel(store.find("x1").id)
    assert value(metrics, "bridge_job_transitions_total", kind="export", state="queued") == 2
    assert value(metrics, "bridge_job_transitions_total", kind="export", state="running") == 1
    assert value(metrics, "bridge_job_transitions_total", kind="export", state="succeeded") == 1
    assert value(metrics, "bridge_job_transitions_total", kind="experiment", state="cancelled") == 1
    assert value(metrics, "bridge_jobs", kind="export", state="succeeded") == 1
    assert value(metrics, "bridge_jobs", kind="experiment", state="cancelled") == 1
    assert value(metrics, "bridge_jobs", kind="experiment", state="dead") == 0  # every state is present
    assert value(metrics, "bridge_queue_depth") == 1
    assert value(metrics, "bridge_oldest_queued_age_seconds") == 12  # e2 is now the oldest queued


def test_scheduled_jobs_are_not_waiting_until_due(store, clock):
    """An idle bridge always has its next reconcile scheduled: no queue depth and no age alert for it."""
    metrics = Metrics(clock=clock).watch(store)
    store.enqueue("reconcile", "r1", {}, delay=1800)
    clock.now += 1700
    assert value(metrics, "bridge_queue_depth") == 0
    assert value(metrics, "bridge_oldest_queued_age_seconds") == 0
    assert value(metrics, "bridge_jobs", kind="reconcile", state="scheduled") == 1
    assert value(metrics, "bridge_jobs", kind="reconcile", state="queued") == 0
    clock.now += 100 + 7  # due for 7 s: aged from its due time, not from when it was made
    assert value(metrics, "bridge_queue_depth") == 1
    assert value(metrics, "bridge_oldest_queued_age_seconds") == 7
    assert value(metrics, "bridge_state_bytes") > 0


def test_a_failing_store_leaves_the_other_metrics(store):
    class Broken:
        def snapshot(self):
            raise sqlite3.OperationalError("database is locked")

    metrics = Metrics()
    metrics.registry.register(StoreCollector(Broken()))
    metrics.on_answer("hub", "queued", 0.01)
    names = set(families(metrics))
    assert "bridge_deliveries" in names and "bridge_queue_depth" not in names


def test_fed_by_a_real_webhook_endpoint(store, clock):
    metrics = Metrics(clock=clock).watch(store)
    config = BridgeConfig.model_validate({"exports": [{"rule_id": "rule-1", "repo": "acme/feedback"}]})
    app = FastAPI()
    app.post("/langsmith")(langsmith_endpoint(store, config, SecretStr("s3cret-value"), on_answer=metrics.on_answer))
    handle = ServerHandle(app).start()
    try:
        body = {"rule_id": "rule-1", "runs": [{"id": "r1"}]}
        for secret in ("s3cret-value", "s3cret-value", "wrong"):
            requests.post(handle.url + "/langsmith", json=body, params={"secret": secret}, timeout=5)
    finally:
        handle.stop()
    assert value(metrics, "bridge_deliveries_total", source="langsmith", outcome="queued") == 1
    assert value(metrics, "bridge_deliveries_total", source="langsmith", outcome="duplicate") == 1
    assert value(metrics, "bridge_deliveries_total", source="langsmith", outcome="rejected") == 1
    assert value(metrics, "bridge_ack_seconds_count", source="langsmith") == 3
    assert value(metrics, "bridge_job_transitions_total", kind="export", state="queued") == 1
    assert value(metrics, "bridge_queue_depth") == 1
    assert "s3cret-value" not in metrics.render()[0].decode()


# ---- upstream instrumentation against a loopback server ----

def make_upstream() -> Starlette:
    hits = {"flaky": 0}

    async def whoami(request):
        return JSONResponse({"name": "tester", "type": "user"})

    async def datasets(request):
        return JSONResponse([])

    async def unavailable(request):
        return JSONResponse({"detail": "try later"}, status_code=503)

    async def flaky(request):
        hits["flaky"] += 1
        return JSONResponse({"detail": "busy"}, status_code=503, headers={"Retry-After": "0"})

    async def slow(request):
        await asyncio.sleep(1.0)
        return JSONResponse({})

    async def moved(request):
        return RedirectResponse("/api/whoami-v2", status_code=302)

    async def blob(request):
        return Response(b"object bytes")

    app = Starlette(routes=[Route("/api/whoami-v2", whoami), Route("/datasets", datasets),
                            Route("/unavailable", unavailable), Route("/flaky", flaky), Route("/slow", slow),
                            Route("/moved", moved), Route("/blob", blob)])
    app.state.hits = hits
    return app


@pytest.fixture(scope="module")
def upstream():
    app = make_upstream()
    handle = ServerHandle(app).start()
    handle.hits = app.state.hits
    yield handle
    handle.stop()


@pytest.fixture
def hub_metrics():
    """The shared huggingface_hub client, built the way the bridge builds it, instrumented."""
    metrics = Metrics()
    saved = _http._GLOBAL_CLIENT_FACTORY
    set_client_factory(lambda: instrument_httpx_client(default_client_factory(), "hub", metrics))
    yield metrics
    set_client_factory(saved)


def upstream_counts(metrics: Metrics, target: str) -> dict[str, float]:
    family = families(metrics).get("bridge_upstream_requests")
    samples = family.samples if family else []
    return {s.labels["status"]: s.value for s in samples
            if s.name == "bridge_upstream_requests_total" and s.labels["target"] == target}


def test_hub_client_counts_answers_errors_and_redirect_hops(upstream, hub_metrics):
    assert Hub(upstream.url, HF_TOKEN).check() == "connected as tester"
    assert HfApi(endpoint=upstream.url, token=HF_TOKEN).whoami()["name"] == "tester"
    assert get_session().get(upstream.url + "/unavailable").status_code == 503
    assert get_session().get(upstream.url + "/moved").status_code == 200  # 302 then 200: two hops
    with pytest.raises(UpstreamError):
        Hub(closed_port_url(), HF_TOKEN).check()
    with pytest.raises(httpx2.ReadTimeout):
        get_session().get(upstream.url + "/slow", timeout=0.2)
    assert upstream_counts(hub_metrics, "hub") == {"200": 3, "302": 1, "503": 1, "error": 2}


def test_instrumenting_twice_counts_once(upstream):
    metrics = Metrics()
    client = default_client_factory()
    instrument_httpx_client(client, "hub", metrics)
    instrument_httpx_client(client, "hub", metrics)
    client.get(upstream.url + "/api/whoami-v2")
    session = requests.Session()
    instrument_requests_session(session, "objects", metrics)
    instrument_requests_session(session, "objects", metrics)
    session.get(upstream.url + "/blob", timeout=5)
    assert upstream_counts(metrics, "hub") == {"200": 1}
    assert upstream_counts(metrics, "objects") == {"200": 1}


def test_unknown_target_is_refused():
    with pytest.raises(ValueError, match="target"):
        instrument_requests_session(requests.Session(), "elsewhere", Metrics())


def no_retry_client(url: str, retry: Retry | None = None) -> Client:
    return Client(api_url=url, api_key=LS_KEY, info=INFO, auto_batch_tracing=False,
                  retry_config=retry or Retry(total=0, raise_on_status=False))


def test_langsmith_client_session_counts_answers_and_errors(upstream):
    metrics = Metrics()
    smith = Smith(upstream.url, LS_KEY)
    instrument_requests_session(smith.client.session, "langsmith", metrics)
    assert smith.check() == "reachable, key accepted"  # the SDK's own GET /datasets
    plain = instrument_requests_session(no_retry_client(upstream.url).session, "langsmith", metrics)
    assert plain.get(upstream.url + "/unavailable", timeout=5).status_code == 503
    with pytest.raises(requests.ConnectionError):
        plain.get(closed_port_url() + "/datasets", timeout=5)
    assert upstream_counts(metrics, "langsmith") == {"200": 1, "503": 1, "error": 1}


def test_a_retrying_adapter_counts_its_final_answer_once(upstream):
    # The bridge's policy (smith.idempotent_retry) without its backoff sleeps: urllib3 retries inside the adapter.
    metrics = Metrics()
    retry = Retry(total=3, status_forcelist=[503], backoff_factor=0, raise_on_status=False,
                  respect_retry_after_header=False)
    session = instrument_requests_session(no_retry_client(upstream.url, retry).session, "langsmith", metrics)
    before = upstream.hits["flaky"]
    assert session.get(upstream.url + "/flaky", timeout=5).status_code == 503
    assert upstream.hits["flaky"] - before == 4
    assert upstream_counts(metrics, "langsmith") == {"503": 1}


def test_object_fetcher_session(upstream):
    metrics = Metrics()
    fetcher = ObjectFetcher(upstream.url, on_status=lambda status: metrics.upstream("objects", status))
    assert fetcher.fetch("/blob") == b"object bytes"
    with pytest.raises(UpstreamError):
        fetcher.fetch("/unavailable")
    with pytest.raises(UpstreamError):
        fetcher.fetch(closed_port_url() + "/blob")
    assert upstream_counts(metrics, "objects") == {"200": 1, "503": 1, "error": 1}


def test_no_secret_or_address_in_the_output(upstream, hub_metrics):
    Hub(upstream.url, HF_TOKEN).check()
    metrics = hub_metrics
    smith = Smith(upstream.url, LS_KEY)
    instrument_requests_session(smith.client.session, "langsmith", metrics)
    smith.check()
    metrics.on_answer("langsmith", "rejected", 0.001)
    body, _ = metrics.render()
    text = body.decode()
    assert upstream_counts(metrics, "hub") == {"200": 1} and upstream_counts(metrics, "langsmith") == {"200": 1}
    for leak in (HF_TOKEN, LS_KEY, HF_TOKEN[:8], LS_KEY[:8], "127.0.0.1", "whoami-v2", "/datasets"):
        assert leak not in text


# ---- the scrape endpoint ----

@pytest.fixture(scope="module")
def scrape():
    metrics = Metrics()
    metrics.on_answer("hub", "queued", 0.01)
    app = FastAPI()  # what gradio's server is: `server.fastapi_app.get("/metrics")(metrics_route(...))`
    app.get("/metrics")(metrics_route(metrics))
    app.get("/private")(metrics_route(metrics, SecretStr(METRICS_TOKEN)))
    handle = ServerHandle(app).start()
    yield handle
    handle.stop()


def test_metrics_route_serves_the_text_format(scrape):
    response = requests.get(scrape.url + "/metrics", timeout=5)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'bridge_deliveries_total{outcome="queued",source="hub"} 1.0' in response.text


@pytest.mark.parametrize("headers, status", [
    ({}, 401), ({"Authorization": "Bearer wrong"}, 401), ({"Authorization": METRICS_TOKEN}, 401),
    ({"Authorization": f"Bearer {METRICS_TOKEN}"}, 200), ({"Authorization": f"bearer {METRICS_TOKEN}"}, 200),
], ids=["missing", "wrong", "no-scheme", "right", "scheme-case"])
def test_metrics_route_with_a_token(scrape, headers, status):
    response = requests.get(scrape.url + "/private", headers=headers, timeout=5)
    assert response.status_code == status
    assert METRICS_TOKEN not in response.text
