"""Manual actions: validation next to the field, and jobs that the same flows run."""

import json

import pytest

from bridge.actions import FieldError, replay_delivery, submit_backfill, submit_experiment, submit_feedback
from conftest import run_jobs
from test_flow_experiments import CONFIG, REPO, lm_eval, push
from test_flow_exports import RULE, config, deliver, seed


@pytest.mark.parametrize("kwargs, field", [
    ({"repo": "not a repo"}, "repo"),
    ({"repo": "a/b", "repo_type": "bucket"}, "repo_type"),
    ({"repo": "a/b", "format": "csv"}, "format"),
    ({"repo": "a/b", "revision": "main; rm -rf"}, "revision"),
], ids=["repo", "repo-type", "format", "revision"])
def test_experiment_form_validation(make_bridge, kwargs, field):
    runtime = make_bridge(CONFIG)
    with pytest.raises(FieldError) as info:
        submit_experiment(runtime.store, **kwargs)
    assert info.value.field == field


@pytest.mark.parametrize("revision", ["main", "short-sha", "full-sha", "pr", "short-sha-of-a-pr"], ids=str)
def test_manual_upload_resolves_any_revision(hub, smith, make_bridge, revision):
    runtime = make_bridge(CONFIG)
    _, sha = push(hub, lm_eval())
    num, pr_sha = hub.open_pr(REPO, {"extra.txt": b"x"})
    given = {"main": "main", "short-sha": sha[:7], "full-sha": sha, "pr": f"#{num}",
             "short-sha-of-a-pr": pr_sha[:8]}[revision]  # the Hub resolves it: not on main's history
    job = submit_experiment(runtime.store, REPO, revision=given)
    [done] = run_jobs(runtime)
    assert done.id == job.id and done.state == "succeeded", done.last_error
    assert done.result["revision"] == (pr_sha if revision.startswith(("pr", "short-sha-of")) else sha)
    assert len(smith.experiments("llama-evals/demo_qa")) == 1


def test_backfill_form_validation(make_bridge):
    runtime = make_bridge(config())
    cfg = runtime.settings.config
    with pytest.raises(FieldError, match="not an exports target") as info:
        submit_backfill(runtime.store, cfg, "acme/other", "prod")
    assert info.value.field == "repo"
    with pytest.raises(FieldError) as info:
        submit_backfill(runtime.store, cfg, "acme/prod-feedback", "prod", start_time="yesterday")
    assert info.value.field == "start_time"
    with pytest.raises(FieldError) as info:
        submit_backfill(runtime.store, cfg, "acme/prod-feedback", "prod", start_time="2026-11-02", end_time="2026-11-01")
    assert info.value.field == "end_time"


def test_feedback_goes_through_the_presigned_link(hub, smith, make_bridge):
    runtime = make_bridge(config(presets="[runs]", extra="    feedback_links: {keys: [user_score]}"),
                          BRIDGE_PUBLIC_URL="https://bridge.example.org")
    [run_id] = seed(smith, 1, feedback=False)
    deliver(runtime, smith.webhook_payload(RULE, [run_id]))
    run_jobs(runtime)
    [recent] = runtime.ledger.recent()
    with pytest.raises(FieldError):
        submit_feedback(runtime.store, recent, "other_key", 1)
    submit_feedback(runtime.store, recent, "user_score", 1.0, "👍 from review")
    [job, flush] = run_jobs(runtime)  # the rating, then the rewrite of the run's rows it scheduled
    assert job.state == "succeeded", job.last_error
    assert flush.kind == "flush" and flush.result["runs_rewritten"] == 1
    assert [(f["score"], f["comment"]) for f in smith.feedback_for(run_id)] == [(1.0, "👍 from review")]


def test_replay_routes_a_stored_delivery_with_the_current_config(hub, smith, make_bridge):
    before = make_bridge(config(presets="[runs]"))
    body = smith.webhook_payload(RULE, seed(smith, 2))
    assert deliver(before, body)[0] == "queued"
    [delivery] = before.store.deliveries()
    after = make_bridge(config(presets="[runs, sft]"), state=before.settings.state_dir)
    jobs = replay_delivery(after.store, after.settings.config, delivery["id"])
    assert [j.kind for j in jobs] == ["export"] and jobs[0].trigger == "manual"
    assert {j.state for j in run_jobs(after)} == {"succeeded"}
    assert json.loads(after.store.delivery(jobs[0].payload["delivery_id"])["body"]) == body


def test_ignored_deliveries_keep_no_body_and_replay_says_why(smith, make_bridge):
    bridge = make_bridge("exports: []\n")
    assert deliver(bridge, smith.webhook_payload(RULE, seed(smith, 1)))[0] == "ignored"
    [delivery] = bridge.store.deliveries()
    assert not delivery["has_body"]
    with pytest.raises(FieldError, match="ignored deliveries keep none"):
        replay_delivery(bridge.store, bridge.settings.config, delivery["id"])
