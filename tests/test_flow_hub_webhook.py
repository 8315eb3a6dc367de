"""The Hub webhook the bridge keeps for itself (issue 13), with the real huggingface_hub client against the sandbox
Hub: created from the rules, updated when they change, re-enabled after a suspension (and the missed push uploaded
once), a token without the webhooks permission reported, and left alone when not managed."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from huggingface_hub import HfApi

from apps import free_port, launch_in_process
from bridge.flows import hub_webhook
from bridge.flows.reconcile import schedule_at_start
from bridge.sandbox.demo import lm_eval_files
from conftest import HF_TOKEN, run_jobs
from test_flow_experiments import DATASET, MODEL, REPO, lm_eval

SECRET = "hub-webhook-secret-1f9e"
DENIED = "hf_fine_grained_no_webhooks"
PUBLIC = "https://bridge.example.org"
RULES = """
experiments:
  - repo: "acme/llama-evals"
  - repo: "acme/*-evals"
  - repo: "evals-org/*"
    repo_type: model
  - repo: "*/shared-evals"
  - repo: "stranger/*"
jobs: {backoff_seconds: 0.01, max_backoff_seconds: 0.05}
"""
ONE_RULE = """
experiments:
  - repo: "acme/*-evals"
    files: ["**/samples_*.jsonl"]
jobs: {backoff_seconds: 0.01, max_backoff_seconds: 0.05}
"""


@pytest.fixture
def hub(tmp_path):
    """The sandbox Hub with quick retries, suspension after 2 failed events, and a token lacking the permission."""
    from bridge.sandbox.hub import HubEmulator

    emulator = HubEmulator(tmp_path / "hub", tokens={HF_TOKEN: "acme", DENIED: "acme"},
                           orgs={"evals-org": ["acme"]}, webhook_retry_seconds=(0,), webhook_suspend_after=2,
                           webhook_denied={DENIED})
    handle = emulator.serve()
    yield emulator
    handle.stop()


def api(hub) -> HfApi:
    return HfApi(endpoint=hub.base_url, token=HF_TOKEN)


def bridge(make_bridge, config: str, public: str = PUBLIC, **env: str):
    runtime = make_bridge(config, **{"WEBHOOK_SECRET": SECRET, "BRIDGE_PUBLIC_URL": public, **env})
    runtime.reachable_url = runtime.settings.reachable_url(None, None)  # as app.py does after launch
    return runtime


def keep(runtime) -> dict:
    hub_webhook.schedule_at_start(runtime)
    jobs = run_jobs(runtime)
    assert jobs[0].kind == "hub_webhook" and jobs[0].state == "succeeded", jobs[0].last_error
    return hub_webhook.load_state(runtime)


def watched(hook) -> set:
    return {(w.type, w.name) for w in hook.watched}


def test_created_from_the_rules_with_the_right_watched_items(hub, make_bridge):
    runtime = bridge(make_bridge, RULES)
    state = keep(runtime)
    [hook] = api(hub).list_webhooks()
    assert hook.url == f"{PUBLIC}/webhooks/hub" and hook.secret == SECRET and not hook.disabled
    assert watched(hook) == {("dataset", "acme/llama-evals"), ("user", "acme"), ("org", "evals-org")}
    assert sorted(hook.domains) == ["discussion", "repo"]
    assert (state["managed"], state["action"], state["enabled"]) == (True, "created", True)
    problems = " ".join(state["problems"])
    assert "'*/shared-evals'" in problems and "'stranger'" in problems
    assert SECRET not in str(state)  # the recorded state never holds the secret
    again = keep(runtime)
    assert again["action"] == "unchanged" and len(api(hub).list_webhooks()) == 1


def test_updated_when_a_rule_the_domains_or_the_secret_change(hub, make_bridge, tmp_path):
    keep(bridge(make_bridge, ONE_RULE))
    [before] = api(hub).list_webhooks()
    assert watched(before) == {("user", "acme")}
    changed = ONE_RULE.replace('"acme/*-evals"', '"acme/llama-evals"') + "hub_webhook: {domains: [repo]}\n"
    state = keep(bridge(make_bridge, changed))
    [after] = api(hub).list_webhooks()
    assert after.id == before.id and state["action"] == "updated"
    assert watched(after) == {("dataset", "acme/llama-evals")} and after.domains == ["repo"]
    state = keep(bridge(make_bridge, changed, WEBHOOK_SECRET="a-new-secret-77"))
    [rotated] = api(hub).list_webhooks()
    assert state["action"] == "updated" and rotated.secret == "a-new-secret-77"


def test_suspended_while_down_re_enabled_at_restart_and_the_missed_push_uploaded_once(hub, smith, make_bridge,
                                                                                        tmp_path):
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    keep(bridge(make_bridge, ONE_RULE, public=public))  # then the bridge goes down: nothing listens on `port`
    [hook] = api(hub).list_webhooks()
    hub.create_repo(REPO)
    hub.commit(REPO, lm_eval(), message="results while the bridge is down")
    head = hub.commit(REPO, {"notes.txt": b"more"}, message="another push")
    assert hub.wait_for_deliveries(timeout=30)
    assert api(hub).get_webhook(hook.id).disabled is True  # suspended by the Hub after the failed deliveries
    failed = [d for d in hub.deliveries if d["webhook_id"] == hook.id]
    assert all(d["status"] is None for d in failed) and len(failed) >= 4  # every event retried, none answered

    runtime = bridge(make_bridge, ONE_RULE, public=public)  # the restart, on the same URL and state dir
    app = launch_in_process(runtime, port=port)
    try:
        hub_webhook.schedule_at_start(runtime)
        jobs = run_jobs(runtime)  # the check, the reconcile it asks for at once, and the experiment job
        assert [(j.kind, j.state) for j in jobs] == [("hub_webhook", "succeeded"), ("reconcile", "succeeded"),
                                                     ("experiment", "succeeded")], [j.last_error for j in jobs]
        assert jobs[0].result["action"] == "re-enabled" and jobs[0].result["reconcile_job"] == jobs[1].id
        state = hub_webhook.load_state(runtime)
        assert state["reenabled_at"] and state["last_action"]["action"] == "re-enabled" and state["enabled"]
        assert api(hub).get_webhook(hook.id).disabled is False
        assert "bridge_hub_webhook_reenabled_total 1.0" in runtime.metrics.render()[0].decode()
        experiments = smith.experiments(DATASET)
        assert [e["metadata"]["hf_revision"] for e in experiments] == [head]  # the missed push, once
        later = datetime(2026, 11, 2, 12, tzinfo=timezone.utc)
        hub.commit(REPO, lm_eval_files(later, MODEL, [("2+2?", "4", "4")]), message="heard again")
        assert hub.wait_for_deliveries(timeout=30)
        assert [(j.kind, j.state) for j in run_jobs(runtime)] == [("experiment", "succeeded")]  # delivered again
        schedule_at_start(runtime)  # a later reconcile: the webhook is fine and nothing is uploaded twice
        done = run_jobs(runtime)
        assert done[0].result["hub_webhook"] == "unchanged" and len(smith.experiments(DATASET)) == 2
    finally:
        app.close()


def test_a_token_without_the_webhooks_permission_is_reported_and_the_rest_works(hub, make_bridge):
    runtime = bridge(make_bridge, ONE_RULE, HF_TOKEN=DENIED)
    hub.create_repo(REPO)
    schedule_at_start(runtime)
    jobs = run_jobs(runtime)
    assert jobs[0].kind == "reconcile" and jobs[0].state == "succeeded", jobs[0].last_error
    assert any(j.kind == "experiment" for j in jobs)  # reconciliation went on
    state = hub_webhook.load_state(runtime)
    [problem] = state["problems"]
    assert "may not manage webhooks" in problem and "403" in problem and "permission" in problem
    assert "Error" not in problem and api(hub).list_webhooks() == []


@pytest.mark.parametrize("config, env, why", [
    (ONE_RULE + "hub_webhook: {manage: false}\n", {}, "manage is false"),
    (ONE_RULE, {"WEBHOOK_SECRET": ""}, "needs WEBHOOK_SECRET"),
], ids=["manage-false", "no-secret"])
def test_left_to_people_when_not_managed(hub, make_bridge, config, env, why):
    runtime = bridge(make_bridge, config, **env)
    assert hub_webhook.schedule_at_start(runtime) is None and run_jobs(runtime) == []  # no Hub call at all
    state = hub_webhook.load_state(runtime)
    assert state["managed"] is False and why in state["why"] and api(hub).list_webhooks() == []


def test_manage_true_without_a_secret_never_creates_one(hub, make_bridge):
    state = keep(bridge(make_bridge, ONE_RULE + "hub_webhook: {manage: true}\n", WEBHOOK_SECRET=""))
    assert state["managed"] is True and api(hub).list_webhooks() == []
    assert any("never creates a webhook without a secret" in p for p in state["problems"])
