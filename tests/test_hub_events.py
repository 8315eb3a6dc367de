"""Hub events end to end (issue 13): the sandbox Hub delivers to the running bridge through the webhook the bridge
created for itself, with the real huggingface_hub client making the changes. Branches other than main, pull
requests closed (their queued jobs cancelled) and merged (not commented again)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from huggingface_hub import HfApi

from apps import launch_in_process
from bridge.flows import hub_webhook
from bridge.formats.pr_comment import marker
from bridge.sandbox.demo import QUESTIONS, lm_eval_files
from conftest import HF_TOKEN, run_jobs, wait_for
from test_flow_experiments import DATASET, MODEL, REPO, lm_eval

SECRET = "events-secret-5b1c"
CONFIG = """
experiments:
  - repo: "acme/*-evals"
    files: ["**/samples_*.jsonl"]
    branches: [main, release]
jobs: {backoff_seconds: 0.01, max_backoff_seconds: 0.05}
"""


@pytest.fixture
def live(hub, make_bridge):
    """The bridge app on loopback, its Hub webhook created by the bridge itself (the sandbox's public URL is local)."""
    hub.create_repo(REPO)
    runtime = make_bridge(CONFIG, WEBHOOK_SECRET=SECRET)
    app = launch_in_process(runtime)
    runtime.reachable_url = runtime.settings.reachable_url(None, app.base, sandbox=True)
    hub_webhook.schedule_at_start(runtime)
    [job] = run_jobs(runtime)
    assert job.result["action"] == "created", job.result
    yield runtime
    app.close()


def api(hub) -> HfApi:
    return HfApi(endpoint=hub.base_url, token=HF_TOKEN)


def deliveries_answered(hub, runtime, n: int) -> list[dict]:
    assert hub.wait_for_deliveries(timeout=30)
    return wait_for(lambda: len(runtime.store.deliveries(limit=100, source="hub")) >= n
                    and runtime.store.deliveries(limit=100, source="hub"), what=f"{n} hub deliveries")


def later(day: int, questions=QUESTIONS) -> dict:
    return lm_eval_files(datetime(2026, 11, day, 12, tzinfo=timezone.utc), MODEL, questions)


def test_a_rule_watching_main_and_release(hub, smith, live):
    client = api(hub)
    head = hub.commit(REPO, lm_eval(), message="results on main")
    client.create_branch(REPO, repo_type="dataset", branch="release")           # a new ref: same sha as main
    notes = client.upload_file(path_or_fileobj=b"notes", path_in_repo="notes.txt", repo_id=REPO,
                               repo_type="dataset", revision="release").oid  # no result file changed
    released = hub.commit(REPO, later(2), branch="release", message="release results")
    client.create_branch(REPO, repo_type="dataset", branch="experiment-x")      # not watched
    client.create_tag(REPO, repo_type="dataset", tag="v1", revision=released[:7])  # tags are not watched
    deliveries_answered(hub, live, 6)
    jobs = run_jobs(live)
    refs = sorted((j.payload["ref"], j.payload["sha"]) for j in jobs if j.kind == "experiment")
    assert refs == sorted([("refs/heads/main", head), ("refs/heads/release", head), ("refs/heads/release", notes),
                           ("refs/heads/release", released)])
    assert all(j.state == "succeeded" for j in jobs), [j.last_error for j in jobs]
    reasons = " ".join(d["reason"] or "" for d in live.store.deliveries(limit=100, source="hub"))
    assert "'experiment-x' is not watched" in reasons and "tags are not watched" in reasons
    by_ref = {}
    for e in smith.experiments(DATASET):
        by_ref.setdefault(e["metadata"]["hf_ref"], set()).add(e["metadata"]["hf_revision"])
    assert by_ref == {"refs/heads/main": {head}, "refs/heads/release": {released}}  # head: same files, no re-upload


def test_a_closed_pull_request_cancels_its_queued_jobs(hub, smith, live):
    num, pr_head = hub.open_pr(REPO, lm_eval(), author="acme")
    [opened] = [d for d in deliveries_answered(hub, live, 2) if d["outcome"] == "queued"]
    [queued] = live.store.list(state="queued", kind="experiment")
    assert queued.payload["pr"] == num
    api(hub).change_discussion_status(REPO, num, "closed", repo_type="dataset")
    newest = deliveries_answered(hub, live, 3)[0]
    assert (newest["outcome"], newest["status_code"]) == ("cancelled", 200)
    assert newest["reason"] == f"pull request #{num} of {REPO} was closed"
    job = live.store.get(queued.id)
    assert job.state == "cancelled" and job.last_error == f"cancelled: pull request #{num} of {REPO} was closed"
    assert run_jobs(live) == [] and smith.experiments(DATASET) == []


def test_a_merged_pull_request_is_not_commented_again(hub, smith, live):
    hub.commit(REPO, lm_eval(), message="baseline on main")
    num, first = hub.open_pr(REPO, later(2, [(q, a, a) for q, a, _ in QUESTIONS]), author="acme")
    deliveries_answered(hub, live, 3)
    run_jobs(live)
    assert len([c for c in hub.comments(REPO, num) if marker(first) in c["content"]]) == 1
    # a second revision of the PR is still queued when the PR is merged
    second = hub.commit(REPO, later(3), branch=f"refs/pr/{num}", message="one more")
    api(hub).merge_pull_request(REPO, num, repo_type="dataset")
    assert hub.wait_for_deliveries(timeout=30)
    merged = wait_for(lambda: next((d for d in live.store.deliveries(limit=100, source="hub")
                                    if "was merged" in (d["reason"] or "")), None), what="the merge event")
    assert merged["outcome"] == "ignored" and merged["status_code"] == 200
    jobs = run_jobs(live)
    by_ref = {j.payload["ref"]: j for j in jobs}
    assert by_ref[f"refs/pr/{num}"].result["comment_url"] == "not commented: the pull request is merged"
    assert by_ref["refs/heads/main"].state == "succeeded"  # the merge commit is a push to main
    comments = [c["content"] for c in hub.comments(REPO, num)]
    assert sum(marker(first) in c for c in comments) == 1 and not any(marker(second) in c for c in comments)
