"""Late feedback: the emulator's feedback bounds on the v2 run query, the client's paged query, where each export
target's projects come from, and the reconcile step that hands the runs whose feedback changed to the rewrite."""

from __future__ import annotations

import time

import pytest
from langsmith import Client
from langsmith import _exceptions as v2_errors
from langsmith._client import Langsmith

from bridge.errors import ConfigError
from bridge.feedback_watch import FeedbackWatch
from bridge.flows import reconcile
from bridge.flows.feedback_sync import MARGIN, NO_V2
from bridge.settings import parse_config
from bridge.smith import ALL_TIME, Smith
from conftest import LS_KEY, run_jobs
from test_flow_exports import REPO, RULE, deliver, read_rows, seed

V2_QUERY = r"/api/v2/runs/query$"
CONFIG = f"""
exports:
  - rule_id: "{RULE}"
    repo: "{REPO}"
    flush_seconds: 0
jobs: {{backoff_seconds: 0.01, max_backoff_seconds: 0.05}}
reconcile_minutes: 30
"""


@pytest.fixture
def v2(smith) -> Langsmith:
    client = Langsmith(api_key=LS_KEY, base_url=smith.url, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def sdk(smith) -> Client:
    return Client(api_url=smith.url, api_key=LS_KEY, auto_batch_tracing=False)


def stamp(smith) -> str:
    return smith.store.now().isoformat()


# ---------------------------------------------------------------- the emulator's feedback bounds


def test_feedback_bounds_need_a_feedback_condition(smith, v2):
    project = smith.create_project("prod")["id"]
    since = stamp(smith)
    for body in ({}, {"filter": 'eq(run_type, "llm")'}):
        with pytest.raises(v2_errors.UnprocessableEntityError) as caught:
            v2.runs.query(project_ids=[project], min_feedback_modified_at=since, min_start_time=ALL_TIME, **body)
        assert "feedback condition" in str(caught.value.body)
    with pytest.raises(v2_errors.UnprocessableEntityError):
        v2.runs.query(project_ids=[project], filter='eq(feedback_key, "x")', max_feedback_modified_at="yesterday")
    # With a feedback condition anywhere in the filter the query is answered.
    assert not list(v2.runs.query(project_ids=[project], filter='and(eq(run_type, "llm"), eq(feedback_key, "x"))',
                                  min_feedback_modified_at=since, min_start_time=ALL_TIME))


def test_feedback_bounds_follow_modified_at_through_updates_and_tokens(smith, v2, sdk):
    ids = seed(smith, 3, feedback=False)
    project = smith.store.session_by_name("prod")["id"]
    rated = smith.add_feedback(ids[0], "user_score", score=0)
    smith.add_feedback(ids[1], "user_score", score=1)
    smith.advance_clock(60)
    since = stamp(smith)

    def changed(low, high=None, key="user_score"):
        found = v2.runs.query(project_ids=[project], filter=f'eq(feedback_key, "{key}")', min_start_time=ALL_TIME,
                              min_feedback_modified_at=low, **({"max_feedback_modified_at": high} if high else {}))
        return sorted(r.id for r in found)

    assert changed(since) == []  # both given before the lower bound
    sdk.update_feedback(rated["id"], score=1)  # PATCH /feedback/{id}: its modified_at moves
    token = sdk.create_presigned_feedback_token(ids[2], "user_score")
    sdk.create_feedback_from_token(token.url, score=1)  # feedback through a presigned link
    assert changed(since) == sorted([ids[0], ids[2]])
    assert changed(since, key="other") == []  # the bounds apply to the filter's feedback condition
    smith.advance_clock(60)
    assert changed(stamp(smith)) == []
    # Before `since` (exclusive) only ids[1]'s feedback was last modified: ids[0]'s moved with its update.
    assert changed(ALL_TIME, since) == [ids[1]]
    assert changed(ALL_TIME, rated["modified_at"]) == []  # exclusive: feedback modified exactly then is left out


# ---------------------------------------------------------------- the client


def test_client_pages_through_changed_runs(smith):
    ids = seed(smith, 5, feedback=False)
    project = smith.store.session_by_name("prod")["id"]
    since = stamp(smith)
    for run_id in ids[:4]:
        smith.add_feedback(run_id, "user_score", score=1)
    smith.add_feedback(ids[4], "other", score=1)
    client = Smith(smith.url, LS_KEY)
    client.page_size = 3
    before = smith.recorder.count("POST", V2_QUERY)
    found, pages = client.feedback_changed([project], ["user_score"], since, "2100-01-01T00:00:00+00:00")
    assert sorted(r["id"] for r in found) == sorted(ids[:4]) and pages == 2
    assert all(r["session_id"] == project and r["start_time"] for r in found)  # enough to read each run again
    assert smith.recorder.count("POST", V2_QUERY) - before == 2
    both, _ = client.feedback_changed([project], ["user_score", 'say "hi"', "other"], since, "2100-01-01T00:00:00Z")
    assert sorted(r["id"] for r in both) == sorted(ids)
    smith.v2_enabled = False  # a server without v2: nothing can be asked
    assert Smith(smith.url, LS_KEY).feedback_changed([project], ["user_score"], since, "2100-01-01T00:00:00Z") is None


# ---------------------------------------------------------------- projects of each target


def test_project_key_validated():
    entry = {"rule_id": RULE, "repo": REPO, "project": "prod"}
    assert parse_config({"exports": [entry]}, "bridge.yaml").exports[0].named_project == "prod"
    managed = {"rule": {"project": "prod"}, "repo": REPO}
    assert parse_config({"exports": [managed]}, "bridge.yaml").exports[0].named_project == "prod"
    with pytest.raises(ConfigError) as caught:
        parse_config({"exports": [{**managed, "project": "prod"}]}, "bridge.yaml")
    assert "project goes with rule_id only" in str(caught.value)
    with pytest.raises(ConfigError):
        parse_config({"exports": [{**entry, "project": ""}]}, "bridge.yaml")


def reconcile_now(runtime, ahead: float) -> dict:
    """One reconcile whose check reaches `ahead` seconds past now: the bridge's clock moved past the margin too."""
    for waiting in runtime.store.list(kind="reconcile"):
        if waiting.state == "queued":
            runtime.store.cancel(waiting.id)  # the periodic one may fall due with the clock moved: one check here
    runtime.store.clock = lambda: time.time() + MARGIN.total_seconds() + ahead
    reconcile.schedule_at_start(runtime)
    jobs = run_jobs(runtime)
    assert all(j.state == "succeeded" for j in jobs), [(j.kind, j.last_error) for j in jobs]
    return [j for j in jobs if j.kind == "reconcile"][-1].result["feedback"]


def by_repo(result: dict) -> dict[str, dict]:
    return {r["repo"]: r for r in result["repos"]}


def test_projects_from_managed_rule_project_key_and_deliveries(smith, hub, make_bridge, sdk):
    for name in ("managed-proj", "named-proj"):
        smith.create_project(name)
    config = f"""
exports:
  - rule: {{project: managed-proj}}
    repo: acme/managed
  - rule_id: "11111111-1111-4111-8111-111111111111"
    project: named-proj
    repo: acme/named
  - rule_id: "{RULE}"
    repo: "{REPO}"
    flush_seconds: 0
  - rule_id: "22222222-2222-4222-8222-222222222222"
    repo: acme/silent
reconcile_minutes: 30
"""
    runtime = make_bridge(config)
    hub.create_repo(REPO)
    ids = seed(smith, 2)
    deliver(runtime, smith.webhook_payload(RULE, ids))
    run_jobs(runtime)
    prod = smith.store.session_by_name("prod")["id"]
    assert FeedbackWatch(runtime.store.db, runtime.store.clock).projects(REPO) == [prod]

    first = by_repo(reconcile_now(runtime, 120))
    assert first["acme/silent"]["note"].startswith("no project known yet")
    assert first["acme/managed"]["note"].startswith("first seen within the last few minutes")
    assert first[REPO]["changed"] == 0 and first[REPO]["projects"] == 1
    smith.advance_clock(300)  # feedback given after the first check (the SDK would stamp it with its own clock)
    smith.add_feedback(ids[0], "helpfulness", score=1)  # a key never used in the project
    second = by_repo(reconcile_now(runtime, 600))
    for repo in ("acme/managed", "acme/named"):  # read by name; no feedback there yet, so nothing to ask
        assert second[repo]["projects"] == 1 and second[repo]["note"] == "no feedback in these projects yet"
        assert second[repo]["requests"] == {"project_reads": 1, "queries": 0, "pages": 0}
    # one query finds the changed runs, one reads them again to rewrite their rows
    assert second[REPO]["requests"] == {"project_reads": 1, "queries": 2, "pages": 1}
    assert second[REPO]["run_ids"] == [ids[0]]


# ---------------------------------------------------------------- the reconcile step


def exported_bridge(smith, hub, make_bridge, n=4):
    runtime = make_bridge(CONFIG)
    hub.create_repo(REPO)
    ids = seed(smith, n + 1)
    deliver(runtime, smith.webhook_payload(RULE, ids[:n]))  # the last run is never delivered
    jobs = run_jobs(runtime)
    assert {j.kind for j in jobs} == {"export", "flush"}
    return runtime, ids


def test_reconcile_finds_exactly_the_runs_whose_feedback_changed(smith, hub, make_bridge, sdk):
    runtime, ids = exported_bridge(smith, hub, make_bridge)
    prod = smith.store.session_by_name("prod")["id"]
    sdk.create_feedback(ids[0], "helpfulness", score=1, session_id=prod)  # added, under a key new to the project
    rated = next(f for f in smith.feedback_for(ids[1]) if f["key"] == "user_score")
    sdk.update_feedback(rated["id"], score=0.5)  # changed
    token = sdk.create_presigned_feedback_token(ids[2], "user_score")
    sdk.create_feedback_from_token(token.url, score=1)  # given through a presigned link
    smith.add_feedback(ids[4], "user_score", score=1)  # a run the repo does not hold
    result = by_repo(reconcile_now(runtime, 120))[REPO]
    assert sorted(result["run_ids"]) == sorted(ids[:3]) and result["changed"] == 3  # ids[3] is unchanged
    assert result["not_in_repo"] == 1
    assert result["requests"] == {"project_reads": 1, "queries": 2, "pages": 1}
    # ... and the flush the reconcile scheduled rewrote their rows with the feedback LangSmith holds now
    rows = {r["run_id"]: r for r in read_rows(hub)}
    assert len(rows) == 4 and rows[ids[3]]["updated_at"] is None
    assert all(rows[i]["updated_at"] is not None for i in ids[:3])
    assert "helpfulness" in {f["key"] for f in rows[ids[0]]["feedback"]}
    assert [f["score"] for f in rows[ids[1]]["feedback"] if f["key"] == "user_score"] == [0.5]

    again = by_repo(reconcile_now(runtime, 240))[REPO]  # the watermark moved: nothing new since
    assert again["changed"] == 0 and again["since"] == result["until"]
    smith.advance_clock(600)  # feedback given after the second check
    smith.add_feedback(ids[3], "user_score", score=1)
    later = by_repo(reconcile_now(runtime, 900))[REPO]
    assert later["run_ids"] == [ids[3]]


def test_a_failed_query_leaves_the_watermark(smith, hub, make_bridge):
    runtime, ids = exported_bridge(smith, hub, make_bridge, n=2)
    smith.add_feedback(ids[1], "user_score", score=0)
    marks = FeedbackWatch(runtime.store.db, runtime.store.clock)
    before = marks.since(REPO)
    smith.recorder.add_fault(V2_QUERY, method="POST", times=1, status=500)
    failed = by_repo(reconcile_now(runtime, 120))[REPO]
    assert "error" in failed and "run_ids" not in failed
    assert marks.since(REPO) == before
    retried = by_repo(reconcile_now(runtime, 240))[REPO]
    assert retried["run_ids"] == [ids[1]] and retried["since"] == before


def test_without_v2_the_result_says_so(smith, hub, make_bridge):
    runtime, ids = exported_bridge(smith, hub, make_bridge, n=1)
    smith.v2_enabled = False
    result = by_repo(reconcile_now(runtime, 120))[REPO]
    assert result["note"] == NO_V2
    assert FeedbackWatch(runtime.store.db, runtime.store.clock).since(REPO) == result["since"]  # not advanced


def test_no_exports_no_requests(make_bridge, smith):
    runtime = make_bridge("reconcile_minutes: 30\n")
    assert reconcile_now(runtime, 120) == {"repos": []}
    assert smith.recorder.count("POST", V2_QUERY) == 0
