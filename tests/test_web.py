"""The webhook endpoints on the real WebhooksServer app, over HTTP: auth matrix and every kind of answer."""

import json

import pytest
import requests

from apps import webhook_app
from hub_payloads import content_push, discussion_comment, new_pr

HUB_SECRET = "hub-secret-Xq81"
LS_SECRET = "ls-secret-Zk42"
CONFIG = """
experiments:
  - repo: "acme/*-evals"
exports:
  - rule_id: "rule-1"
    repo: "acme/feedback"
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    launched = webhook_app(tmp_path_factory.mktemp("state"), CONFIG, WEBHOOK_SECRET=HUB_SECRET,
                           LANGSMITH_WEBHOOK_SECRET=LS_SECRET)
    yield launched.runtime
    launched.close()


def post(app, path, body, headers=None, params=None, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    return requests.post(app.base + path, data=data, headers=headers or {}, params=params, timeout=10)


HUB_CASES = [
    ({}, None, 401), ({"X-Webhook-Secret": "wrong"}, None, 403), ({"X-Webhook-Secret": HUB_SECRET}, None, 202),
    ({}, {"secret": HUB_SECRET}, 401),
]


@pytest.mark.parametrize("headers, params, status", HUB_CASES,
                         ids=["missing", "wrong", "right", "query-not-accepted-for-hub"])
def test_hub_auth(app, headers, params, status):
    body = content_push(refs=[{"ref": "refs/heads/main", "oldSha": None, "newSha": f"{len(str(headers)):040d}"}])
    assert post(app, "/webhooks/hub", body, headers, params).status_code == status


LS_CASES = [
    ({}, None, 401),
    ({"X-Webhook-Secret": "wrong"}, None, 403),
    ({}, {"secret": "wrong"}, 403),
    ({"X-Webhook-Secret": LS_SECRET}, None, 202),
    ({}, {"secret": LS_SECRET}, 202),
    ({}, [("secret", LS_SECRET), ("secret", "wrong")], 403),
    ({"X-Webhook-Secret": "wrong"}, {"secret": LS_SECRET}, 403),
    ({"X-Webhook-Secret": HUB_SECRET}, None, 403),
]


@pytest.mark.parametrize("headers, params, status", LS_CASES, ids=[
    "missing", "wrong-header", "wrong-query", "right-header", "right-query", "repeated-conflicting-query",
    "header-and-query-conflict", "hub-secret-is-not-langsmith-secret"])
def test_langsmith_auth(app, headers, params, status):
    body = {"rule_id": "rule-1", "runs": [{"id": f"run-{headers}-{params}"}]}
    assert post(app, "/webhooks/langsmith", body, headers, params).status_code == status


def test_authentication_comes_before_parsing(app):
    assert post(app, "/webhooks/hub", None, raw=b"not json").status_code == 401
    assert post(app, "/webhooks/langsmith", None, raw=b"{").status_code == 401


HUB = {"X-Webhook-Secret": HUB_SECRET}
LS = {"X-Webhook-Secret": LS_SECRET}


@pytest.mark.parametrize("path, headers, raw, status, fragment", [
    ("/webhooks/hub", HUB, b"not json", 400, "not JSON"),
    ("/webhooks/hub", HUB, b"\xff\xfe{}", 400, "UTF-8"),
    ("/webhooks/hub", HUB, b"[" * 100_000 + b"]" * 100_000, 400, "nested"),
    ("/webhooks/hub", HUB, b"{}", 422, "event, repo"),
    ("/webhooks/hub", HUB, b'{"event": {}}', 422, "repo"),
    ("/webhooks/langsmith", LS, b'{"runs": []}', 422, "rule_id"),
    ("/webhooks/langsmith", LS, b'{"rule_id": "x"}', 422, "runs"),
    ("/webhooks/langsmith", LS, b"[]", 422, "JSON object"),
    ("/webhooks/langsmith", LS, b"x" * (10 * 1024 * 1024 + 1), 413, "larger than"),
], ids=["hub-not-json", "hub-bad-utf8", "hub-deep-nesting", "hub-empty-object", "hub-no-repo", "ls-no-rule",
        "ls-no-runs", "ls-array", "ls-too-large"])
def test_rejections(app, path, headers, raw, status, fragment):
    before = app.store.counts()
    response = post(app, path, None, headers, raw=raw)
    assert response.status_code == status
    assert fragment in response.json()["error"]
    assert app.store.counts() == before


def test_body_exactly_at_the_limit_is_read(app):
    body = json.dumps({"rule_id": "unknown-rule", "runs": [], "pad": ""}).encode()
    pad = 10 * 1024 * 1024 - len(body)
    body = body.replace(b'"pad": ""', b'"pad": "' + b"x" * pad + b'"')
    response = post(app, "/webhooks/langsmith", None, LS, raw=body)
    assert response.status_code == 200 and response.json()["status"] == "ignored"


def test_queued_then_duplicate(app):
    body = new_pr(7, sha="c" * 40)
    first = post(app, "/webhooks/hub", body, HUB)
    assert first.status_code == 202 and first.json()["status"] == "queued"
    again = post(app, "/webhooks/hub", body, HUB)
    assert again.status_code == 200 and again.json() == {"status": "duplicate", "job_ids": first.json()["job_ids"]}
    job = app.store.get(first.json()["job_ids"][0])
    assert job.state == "queued" and job.kind == "experiment" and job.payload["pr"] == 7


@pytest.mark.parametrize("body, reason", [
    (discussion_comment(), "scope"),
    (content_push(repo="other/repo"), "no experiments rule"),
], ids=["other-scope", "unmatched-repo"])
def test_ignored_hub_events_get_200(app, body, reason):
    response = post(app, "/webhooks/hub", body, HUB)
    assert response.status_code == 200
    assert response.json()["status"] == "ignored" and reason in response.json()["reason"]


def test_langsmith_delivery_is_stored_with_its_body(app):
    body = {"rule_id": "rule-1", "runs": [{"id": "r-a"}, {"id": "r-b"}], "feedback_stats": {}}
    response = post(app, "/webhooks/langsmith", body, params={"secret": LS_SECRET})
    assert response.status_code == 202
    job = app.store.get(response.json()["job_ids"][0])
    delivery = app.store.delivery(job.payload["delivery_id"])
    assert json.loads(delivery["body"]) == body and delivery["outcome"] == "queued"
    unknown = post(app, "/webhooks/langsmith", {"rule_id": "rule-2", "runs": [{"id": "x"}]}, LS)
    assert unknown.status_code == 200 and unknown.json()["status"] == "ignored"


def test_healthz_has_counts_and_no_secrets(app):
    response = requests.get(app.base + "/healthz", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and "queued" in body["jobs"]
    assert HUB_SECRET not in response.text and LS_SECRET not in response.text and "acme" not in response.text
    assert "HF_TOKEN" in body["missing"]


def test_landing_page_is_served(app):
    response = requests.get(app.base + "/", timeout=10)
    assert response.status_code == 200 and "hub-langsmith-bridge" in response.text
    assert HUB_SECRET not in response.text and LS_SECRET not in response.text


def test_metrics_count_deliveries_and_jobs(app):
    post(app, "/webhooks/langsmith", {"rule_id": "rule-1", "runs": [{"id": "metrics-run"}]}, LS)
    post(app, "/webhooks/hub", {"event": {}}, HUB)
    response = requests.get(app.base + "/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'bridge_deliveries_total{outcome="queued",source="langsmith"}' in text
    assert 'bridge_deliveries_total{outcome="rejected",source="hub"}' in text
    assert "bridge_ack_seconds_bucket" in text and "bridge_queue_depth" in text
    assert 'bridge_jobs{kind="export",state="queued"}' in text
    assert HUB_SECRET not in text and LS_SECRET not in text


def test_a_busy_database_delays_only_the_deliveries(app):
    """While a job holds the write transaction, a delivery waits for it in a thread (and is stored), and the event
    loop keeps answering everything else."""
    from concurrent.futures import ThreadPoolExecutor

    body = new_pr(8, sha="d" * 40)
    with ThreadPoolExecutor(1) as pool:
        with app.store.db.tx():
            pending = pool.submit(post, app, "/webhooks/hub", body, HUB)
            assert requests.get(app.base + "/healthz", timeout=10).status_code == 200  # not blocked
            assert not pending.done()
        response = pending.result(timeout=10)
    assert response.status_code == 202 and response.json()["status"] == "queued"
    assert app.store.get(response.json()["job_ids"][0]).payload["pr"] == 8


def test_webhook_routes_are_tried_first_and_the_rest_still_answer():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from bridge.runtime import HUB_PATH, LANGSMITH_PATH, webhooks_first

    app = FastAPI()
    app.get("/config")(lambda: {"page": "config"})
    app.get("/{anything}")(lambda anything: {"page": anything})  # like gradio's catch-alls for GET
    app.post(HUB_PATH)(lambda: {"status": "hub"})
    app.post(LANGSMITH_PATH)(lambda: {"status": "langsmith"})
    webhooks_first(app)
    assert [getattr(r, "path", None) for r in app.router.routes[:2]] == [HUB_PATH, LANGSMITH_PATH]
    client = TestClient(app)
    assert client.post(LANGSMITH_PATH).json() == {"status": "langsmith"}
    assert client.get("/config").json() == {"page": "config"} and client.get("/x").json() == {"page": "x"}
