"""`python app.py --sandbox --no-share` as a user runs it: a subprocess, no account, no network."""

import json

import pytest
import requests

from apps import AppProcess
from bridge.settings import load_config
from conftest import ROOT, wait_for
from hub_payloads import content_push


@pytest.fixture(scope="module")
def sandbox_app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sandbox")
    app = AppProcess(folder, ["--sandbox"])
    try:
        app.start(folder / "state")
        yield app.base, app.state, json.loads((app.state / "sandbox-credentials.json").read_text())
    finally:
        app.stop()


def jobs(base):
    return requests.get(base + "/healthz", timeout=5).json()["jobs"]


def test_landing_page_and_demo_jobs(sandbox_app):
    base, state, creds = sandbox_app
    page = requests.get(base + "/", timeout=10)
    assert page.status_code == 200 and "hub-langsmith-bridge" in page.text
    # the demo push, the demo rule delivery, their flush, and the start-up reconcile all finish
    wait_for(lambda: jobs(base)["succeeded"] >= 4 and jobs(base)["queued"] + jobs(base)["running"] <= 1, timeout=60,
             what="the demo jobs to finish")
    assert jobs(base)["failed"] == 0 and jobs(base)["dead"] == 0
    for secret in creds.values():
        if "127.0.0.1" not in secret:
            assert secret not in page.text


def test_demo_pull_request_comment_shows_a_regressed_row(sandbox_app):
    from huggingface_hub import HfApi

    _, _, creds = sandbox_app
    api = HfApi(endpoint=creds["HF_ENDPOINT"], token=creds["HF_TOKEN"])

    def comment() -> str | None:
        if not list(api.get_repo_discussions("sandbox-user/demo-evals", repo_type="dataset")):
            return None
        details = api.get_discussion_details("sandbox-user/demo-evals", 1, repo_type="dataset")
        return next((e.content for e in details.events if e.type == "comment" and "pr-comment" in e.content), None)

    text = wait_for(comment, timeout=90, what="the demo PR's comment")
    assert text.startswith("⚠️ 1 of 1 task(s) regressed (1 row(s))")
    assert "How many legs does a spider have?" in text and "6 &lt;legs&gt; \\| \\*\\*bold\\*\\*" in text
    [pr] = wait_for(lambda: list(api.get_repo_discussions("demo-org/tiny-chat-1b", repo_type="model")), timeout=30,
                    what="the model repo's eval results PR")
    assert pr.title.endswith("Eval results from sandbox-user/demo-evals")


def test_signed_deliveries_on_both_endpoints(sandbox_app):
    base, _, creds = sandbox_app
    hub = requests.post(base + "/webhooks/hub", json=content_push(repo="sandbox-user/other"), timeout=10,
                        headers={"X-Webhook-Secret": creds["WEBHOOK_SECRET"]})
    assert hub.status_code == 200 and hub.json()["status"] == "ignored"
    unsigned = requests.post(base + "/webhooks/hub", json=content_push(), timeout=10)
    assert unsigned.status_code == 401
    # the demo's rule is one the bridge created in the sandbox LangSmith: its id is LangSmith's
    rules = wait_for(lambda: requests.get(creds["LANGSMITH_ENDPOINT"] + "/api/v1/runs/rules", timeout=5,
                                          headers={"x-api-key": creds["LANGSMITH_API_KEY"]}).json(), timeout=30,
                     what="the bridge's rule in the sandbox LangSmith")
    body = {"rule_id": rules[0]["id"], "runs": [{"id": "4f0c4d6e-1111-4000-8000-000000000001",
            "name": "x", "run_type": "llm", "start_time": "2026-11-20T10:00:00", "end_time": "2026-11-20T10:00:01",
            "inputs": {"input": "hi"}, "outputs": {"output": "hello"}}]}
    ls = requests.post(base + "/webhooks/langsmith", json=body, timeout=10,
                       params={"secret": creds["LANGSMITH_WEBHOOK_SECRET"]})
    assert ls.status_code == 202 and ls.json()["status"] == "queued"


def test_example_config_is_valid():
    load_config(ROOT / "bridge.yaml.example")
