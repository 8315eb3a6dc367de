"""The v2 runs API: the emulator's routes driven by the SDK's generated client, the bridge's reads through it
(paging, selects, request counts), the v1 fallback against a server without v2, and the v2 fault table."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import pyarrow.parquet as pq
import pytest
from langsmith import _exceptions as v2_errors
from langsmith._client import Langsmith

from bridge.errors import UpstreamError
from bridge.smith import Smith
from conftest import LS_KEY, run_jobs
from test_flow_backfill import backfill, seed_project
from test_flow_exports import REPO, RULE, chat_run, config, deliver, read_rows

V2_QUERY = r"/api/v2/runs/query$"
V1_QUERY = r"^(/api/v1)?/runs/query$"


@pytest.fixture
def v2(smith) -> Langsmith:
    client = Langsmith(api_key=LS_KEY, base_url=smith.url, max_retries=0)
    yield client
    client.close()


def project_with_runs(smith, n: int, name: str = "prod") -> tuple[str, list[str]]:
    ids = seed_project(smith, n, name)
    return smith.store.session_by_name(name)["id"], ids


def test_query_pages_with_cursor_and_selects(smith, v2):
    project, ids = project_with_runs(smith, 25)
    since = "2026-11-01T00:00:00Z"
    page = v2.runs.query(project_ids=[project], min_start_time=since, page_size=10, selects=["NAME", "INPUTS"])
    assert len(page.items) == 10 and page.next_cursor
    first = page.items[0].model_dump(exclude_unset=True)
    assert set(first) == {"id", "name", "inputs"} and first["name"] == "ChatOpenAI"
    every = [r.id for r in page]
    assert sorted(every) == sorted(ids) and len(every) == 25  # auto-paging follows next_cursor to the end
    assert smith.recorder.count("POST", V2_QUERY) == 3
    bare = v2.runs.query(project_ids=[project], min_start_time=since, page_size=1)
    assert bare.items[0].model_dump(exclude_unset=True).keys() == {"id"}  # without selects: the id only


def test_query_by_ids_filter_and_window(smith, v2):
    project, ids = project_with_runs(smith, 6)
    page = v2.runs.query(project_ids=[project], ids=ids[:4], min_start_time="2026-11-20T10:01:00Z",
                         max_start_time="2026-11-20T10:03:00Z", selects=["START_TIME", "PROJECT_ID", "STATUS"])
    assert sorted(r.id for r in page.items) == sorted(ids[1:4])  # ids inside the window only
    assert {r.project_id for r in page.items} == {project} and {r.status for r in page.items} == {"SUCCESS"}
    assert [r.start_time for r in page.items] == sorted((r.start_time for r in page.items), reverse=True)
    assert not list(v2.runs.query(project_ids=[project], ids=ids))  # default window: the last day only
    smith.add_feedback(ids[0], "user_score", score=1)
    scored = v2.runs.query(project_ids=[project], filter='has(feedback_key, "user_score")',
                           min_start_time="2026-11-01T00:00:00Z")
    assert [r.id for r in scored.items] == [ids[0]]


def test_query_by_reference_dataset_and_single_run(smith, v2):
    project, ids = project_with_runs(smith, 2)
    dataset = smith.create_dataset("qa")
    smith.store.sessions[project]["reference_dataset_id"] = dataset["id"]
    page = v2.runs.query(reference_dataset_id=dataset["id"], min_start_time="2026-11-01T00:00:00Z")
    assert sorted(r.id for r in page.items) == sorted(ids)
    run = v2.runs.retrieve(ids[0], project_id=project, selects=["OUTPUTS", "TRACE_ID"])
    assert run.trace_id == ids[0] and "generations" in run.outputs
    with pytest.raises(v2_errors.NotFoundError):
        v2.runs.retrieve(ids[0], project_id=dataset["id"])


@pytest.mark.parametrize("body, status", [
    ({"page_size": 1001}, 400), ({"page_size": 0}, 400), ({}, 422),
    ({"reference_dataset_id": "00000000-0000-4000-8000-000000000001"}, 422),  # both project_ids and a dataset
    ({"selects": ["NOPE"]}, 422), ({"cursor": "not-a-cursor"}, 400)])
def test_query_rejects_what_langsmith_rejects(smith, v2, body, status):
    project, _ = project_with_runs(smith, 1)
    full = {"project_ids": [project], **body} if body else {}
    with pytest.raises(v2_errors.APIStatusError) as caught:
        v2.post("/api/v2/runs/query", body=full, cast_to=dict)
    assert caught.value.status_code == status


# ---------------------------------------------------------------- the bridge's reads


def test_backfill_of_2500_runs_makes_3_queries(hub, smith, make_bridge):
    """The benchmark's figure on a smaller scale: 1000 runs per request (10,000 runs -> at most 11 queries)."""
    runtime = make_bridge(config(presets="[runs]"))
    ids = seed_project(smith, 2500)
    backfill(runtime)
    jobs = run_jobs(runtime)
    assert all(j.state == "succeeded" for j in jobs), [(j.kind, j.last_error) for j in jobs]
    assert smith.recorder.count("POST", V2_QUERY) == 3 and smith.recorder.count("POST", V1_QUERY) == 0
    assert sorted(r["run_id"] for r in read_rows(hub)) == sorted(ids)
    assert runtime.smith.runs_api == "v2"


def test_backfilled_rows_equal_delivered_rows(hub, smith, make_bridge, tmp_path):
    """A run read through v2 (selected fields, mapped back to the webhook's shape) makes the same row."""
    ids = seed_project(smith, 1)
    delivered = make_bridge(config(presets="[runs]"), state=tmp_path / "a")
    deliver(delivered, smith.webhook_payload(RULE, ids))
    run_jobs(delivered)
    [by_webhook] = read_rows(hub)
    other = make_bridge(config(presets="[runs]").replace(REPO, "acme/other"), state=tmp_path / "b")
    other.store.enqueue("backfill", "b", {"repo": "acme/other", "project": "prod"}, trigger="manual")
    run_jobs(other)
    [by_query] = [r for p in hub.list_files("acme/other") if p.startswith("runs/")
                  for r in pq.read_table(io.BytesIO(hub.read_file("acme/other", p))).to_pylist()]
    skip = {"exported_at", "rule_id"}
    assert {k: v for k, v in by_query.items() if k not in skip} == {k: v for k, v in by_webhook.items()
                                                                     if k not in skip}


def test_offloaded_inputs_are_completed_with_one_v2_query(hub, smith, make_bridge):
    runtime = make_bridge(config(presets="[runs]"))
    ids = [smith.add_run(chat_run(i))["id"] for i in range(3)]
    body = smith.webhook_payload(RULE, ids)
    for run in body["runs"]:
        run["inputs"] = None
    deliver(runtime, body)
    run_jobs(runtime)
    assert smith.recorder.count("POST", V2_QUERY) == 1
    assert all("question" in r["inputs"] for r in read_rows(hub))


def test_v1_fallback_against_a_server_without_v2(hub, smith, make_bridge):
    """Decided once per process: one 404 on the v2 route, then v1 only; shown on the Settings page."""
    from bridge.ui.config_page import problems

    smith.v2_enabled = False
    runtime = make_bridge(config(presets="[runs]"))
    runtime.smith.page_size = 100
    assert not any("runs API" in text for _, text in problems(runtime))  # nothing decided before a run read
    ids = seed_project(smith, 150)
    backfill(runtime)
    smith.create_project("other")
    body = smith.webhook_payload(RULE, [smith.add_run(chat_run(200, session_name="other"))["id"]])
    body["runs"][0]["inputs"] = None
    deliver(runtime, body)
    jobs = run_jobs(runtime)
    assert all(j.state == "succeeded" for j in jobs), [(j.kind, j.last_error) for j in jobs]
    assert smith.recorder.count("POST", V2_QUERY) == 1 and smith.recorder.count("POST", V2_QUERY, status=404) == 1
    assert smith.recorder.count("POST", V1_QUERY) == 3  # two back-fill pages, one completion query
    assert len(read_rows(hub)) == len(ids) + 1 and runtime.smith.runs_api == "v1"
    assert any("v1" in text and "Jan 31, 2027" in text for _, text in problems(runtime))


def test_a_404_after_v2_worked_is_an_error_not_a_fallback(smith):
    project, ids = project_with_runs(smith, 1)
    client = Smith(smith.url, LS_KEY)
    assert client.runs_by_id([{"id": ids[0], "session_id": project}])[0]["id"] == ids[0]
    smith.v2_enabled = False
    with pytest.raises(UpstreamError) as caught:
        client.runs_by_id([{"id": ids[0], "session_id": project}])
    assert caught.value.status == 404 and client.runs_api == "v2"
    client.close()


def test_runs_come_back_in_the_webhook_shape(smith):
    project, [run_id] = project_with_runs(smith, 1)
    client = Smith(smith.url, LS_KEY)
    [run] = client.runs_page(project, filter=None, start_time=None, cursor=None)[0]
    stored = smith.get_run(run_id)
    assert run["session_id"] == project and run["status"] == "success" and run["parent_run_id"] is None
    assert run["extra"]["metadata"]["ls_model_name"] == "gpt-4o-mini" and run["inputs"] == stored["inputs"]
    client.close()


# ---------------------------------------------------------------- v2 fault table

TRANSIENT = [({"status": 429, "retry_after": 3}, 429, 3.0), ({"status": 500}, 500, None),
             ({"status": 502}, 502, None), ({"status": 503}, 503, None), ({"drop": True}, None, None),
             ({"delay": 2.0}, None, None)]
PERMANENT = [400, 401, 403, 404, 422]


def faulty_client(smith, **fault) -> tuple[Smith, str, list[str]]:
    project, ids = project_with_runs(smith, 2)
    client = Smith(smith.url, LS_KEY, timeout=1.0)
    client.runs_api = "v2"  # decided already: these cases are about classifying, not about the fallback
    smith.recorder.add_fault(V2_QUERY, method="POST", times=1, **fault)
    return client, project, ids


@pytest.mark.parametrize("fault, status, retry_after", TRANSIENT,
                         ids=["429", "500", "502", "503", "drop", "timeout"])
def test_v2_transient_faults_are_retried_by_the_job_queue(smith, fault, status, retry_after):
    client, project, _ = faulty_client(smith, **fault)
    with pytest.raises(UpstreamError) as caught:
        client.runs_page(project, filter=None, start_time=None, cursor=None)
    error = caught.value
    assert error.transient and error.status == status and error.retry_after == retry_after, str(error)
    assert smith.recorder.count("POST", V2_QUERY) == 1, "the generated client must not retry on its own"
    assert "Error" not in str(error) and LS_KEY not in str(error)  # plain words, never the key
    assert len(client.runs_page(project, filter=None, start_time=None, cursor=None)[0]) == 2  # the retry works
    client.close()


@pytest.mark.parametrize("status", PERMANENT)
def test_v2_permanent_faults_fail_with_the_upstream_message(smith, status):
    client, project, ids = faulty_client(smith, status=status, body=f"refused with {status}")
    with pytest.raises(UpstreamError) as caught:
        client.runs_by_id([{"id": i, "session_id": project} for i in ids])
    error = caught.value
    assert not error.transient and error.status == status and f"refused with {status}" in str(error)
    assert smith.recorder.count("POST", V2_QUERY) == 1
    client.close()


def test_window_for_runs_without_start_time_is_all_time():
    from bridge.smith import ALL_TIME, start_window

    low, high = start_window([{"id": "a", "start_time": "2026-11-20T10:00:00"}, {"id": "b"}])
    assert low == ALL_TIME
    stamp = datetime(2026, 11, 20, 10, tzinfo=timezone.utc)
    low, high = start_window([{"start_time": stamp.isoformat()}, {"start_time": "2026-11-20T11:00:00Z"}])
    assert low == (stamp - timedelta(seconds=1)).isoformat()
    assert high == (stamp + timedelta(hours=1, seconds=1)).isoformat()
