"""The LangSmith emulator, driven through the real `langsmith.Client` (and plain `requests` where the SDK has no call)."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import pytest
import requests
from langsmith import Client
from langsmith import utils as ls_utils
from langsmith.run_trees import RunTree
from langsmith.schemas import FeedbackSourceType

from bridge.sandbox.langsmith_emu import LangSmithEmulator, rate_rule

KEY = "ls-test-key"
UTC = dt.timezone.utc
T0 = dt.datetime(2024, 8, 3, 0, 12, 38, tzinfo=UTC)

# list_runs/read_run and feedback without session_id warn about deprecations; that is the SDK's business.
pytestmark = pytest.mark.filterwarnings("ignore:.*is deprecated")


@pytest.fixture(autouse=True)
def no_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANGSMITH_TRACING", "false")


@pytest.fixture
def emu():
    emulator = LangSmithEmulator({KEY})
    emulator.serve()
    yield emulator
    emulator.stop()


@pytest.fixture
def client(emu: LangSmithEmulator) -> Client:
    return Client(api_url=emu.url, api_key=KEY, auto_batch_tracing=False)


def headers() -> dict[str, str]:
    return {"x-api-key": KEY}


def at(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).isoformat()


def add_runs(emu: LangSmithEmulator, count: int, project: str = "proj", **fields) -> list[dict]:
    session = emu.create_project(project)
    return [emu.add_run({"name": f"run-{i}", "session_id": session["id"], "start_time": at(i),
                         "end_time": at(i + 0.5), "inputs": {"i": i}, "outputs": {"o": i}, **fields})
            for i in range(count)]


def upload(client: Client, body: dict) -> dict:
    response = client.request_with_retries(
        "POST", "/api/v1/datasets/upload-experiment",
        request_kwargs={"data": json.dumps(body).encode(), "headers": {"Content-Type": "application/json"}})
    return response.json()


def experiment_body(name: str = "exp-1", dataset: str = "ext-ds", rows: int = 2, **overrides) -> dict:
    body = {
        "experiment_name": name, "experiment_description": "uploaded", "dataset_name": dataset,
        "experiment_start_time": at(0), "experiment_end_time": at(60),
        "experiment_metadata": {"revision": "abc123", "model": "m1"},
        "summary_experiment_scores": [{"key": "summary_accuracy", "score": 0.9}],
        "results": [{
            "row_id": str(uuid.UUID(int=i + 1)), "inputs": {"q": f"question {i}"},
            "expected_outputs": {"a": f"answer {i}"}, "actual_outputs": {"a": f"got {i}"},
            "evaluation_scores": [{"key": "accuracy", "score": i % 2, "comment": "ok",
                                   "feedback_config": {"type": "continuous", "min": 0, "max": 1}}],
            "start_time": at(1 + i), "end_time": at(2 + i), "run_name": "Chatbot",
        } for i in range(rows)],
    }
    body.update(overrides)
    return body


# ---------------------------------------------------------------- /info, auth, prefixes
def test_info_is_complete_enough_for_the_sdk(emu: LangSmithEmulator, client: Client) -> None:
    body = requests.get(f"{emu.url}/info", headers=headers(), timeout=5).json()
    assert body["instance_flags"] == {} and "batch_ingest_config" not in body and body["version"]
    assert client.info.version == body["version"]


@pytest.mark.parametrize("sent", [{}, {"x-api-key": "wrong"}], ids=["no-key", "wrong-key"])
@pytest.mark.parametrize("prefix", ["", "/api/v1"], ids=["bare", "api-v1"])
def test_requests_without_a_valid_key_get_401(emu: LangSmithEmulator, sent: dict, prefix: str) -> None:
    response = requests.get(f"{emu.url}{prefix}/sessions", headers=sent, timeout=5)
    assert response.status_code == 401 and response.json() == {"detail": "Invalid token"}


def test_the_sdk_raises_auth_error_on_a_wrong_key(emu: LangSmithEmulator) -> None:
    bad = Client(api_url=emu.url, api_key="wrong", auto_batch_tracing=False)
    with pytest.raises(ls_utils.LangSmithAuthError, match="Invalid token"):
        bad.read_project(project_name="anything")


@pytest.mark.parametrize("prefix", ["", "/api/v1"], ids=["bare-root", "api-v1-root"])
def test_sdk_works_against_both_roots(emu: LangSmithEmulator, prefix: str) -> None:
    client = Client(api_url=emu.url + prefix, api_key=KEY, auto_batch_tracing=False)
    run = add_runs(emu, 1)[0]
    assert client.read_project(project_name="proj").id == uuid.UUID(run["session_id"])
    assert client.read_run(run["id"]).name == "run-0"
    assert [r.name for r in client.list_runs(run_ids=[run["id"]])] == ["run-0"]
    client.create_feedback(run["id"], "thumbs", score=1)
    assert [f.key for f in client.list_feedback(run_ids=[run["id"]])] == ["thumbs"]
    assert client.create_dataset("ds").name == "ds" and client.has_dataset(dataset_name="ds")
    paths = {r.path for r in emu.recorder.requests}
    if prefix:
        assert all(p.startswith("/api/v1/") for p in paths)
    else:
        assert not any(p.startswith("/api/v1") for p in paths)


# ---------------------------------------------------------------- projects and datasets
def test_read_project_by_name_and_id(emu: LangSmithEmulator, client: Client) -> None:
    project = emu.create_project("alpha", metadata={"team": "x"})
    by_name = client.read_project(project_name="alpha")
    by_id = client.read_project(project_id=project["id"], include_stats=True)
    assert by_name.id == by_id.id == uuid.UUID(project["id"])
    assert by_name.tenant_id == uuid.UUID(emu.store.tenant_id) and by_name.reference_dataset_id is None
    assert by_name.metadata == {"team": "x"} and by_id.run_count == 0
    assert not client.has_project("missing")
    with pytest.raises(ls_utils.LangSmithNotFoundError):
        client.read_project(project_id=str(uuid.uuid4()))


def test_list_projects_filters(emu: LangSmithEmulator, client: Client) -> None:
    emu.create_project("plain-a")
    emu.create_project("plain-b")
    result = upload(client, experiment_body("exp-a", dataset="ext"))
    dataset_id = result["dataset"]["id"]
    assert {p.name for p in client.list_projects(name_contains="plain")} == {"plain-a", "plain-b"}
    assert [p.name for p in client.list_projects(name="plain-b")] == ["plain-b"]
    assert {p.name for p in client.list_projects(reference_free=True)} == {"plain-a", "plain-b"}
    [experiment] = client.list_projects(reference_dataset_id=dataset_id)
    assert experiment.name == "exp-a" and experiment.metadata == {"revision": "abc123", "model": "m1"}
    assert [p.name for p in client.list_projects(reference_dataset_name="ext")] == ["exp-a"]


def test_project_names_are_unique_unless_upserted(client: Client) -> None:
    first = client.create_project("dup")
    with pytest.raises(ls_utils.LangSmithConflictError):
        client.create_project("dup")
    assert client.create_project("dup", upsert=True, description="again").id == first.id
    renamed = client.update_project(first.id, name="renamed", metadata={"k": "v"})
    assert renamed.name == "renamed" and client.read_project(project_name="renamed").metadata == {"k": "v"}


def test_datasets_create_read_has(emu: LangSmithEmulator, client: Client) -> None:
    created = client.create_dataset("golden", description="d")
    assert client.read_dataset(dataset_name="golden").id == created.id
    assert client.read_dataset(dataset_id=created.id).description == "d"
    assert client.has_dataset(dataset_name="golden") and client.has_dataset(dataset_id=created.id)
    assert not client.has_dataset(dataset_name="nope") and not client.has_dataset(dataset_id=uuid.uuid4())
    with pytest.raises(ls_utils.LangSmithConflictError):
        client.create_dataset("golden")
    assert emu.store.datasets[str(created.id)]["externally_managed"] is False


# ---------------------------------------------------------------- runs
def test_list_runs_by_id_pages_with_cursor(emu: LangSmithEmulator, client: Client) -> None:
    runs = add_runs(emu, 150)
    listed = list(client.list_runs(run_ids=[r["id"] for r in runs]))
    assert sorted(str(r.id) for r in listed) == sorted(r["id"] for r in runs)
    assert emu.recorder.count("POST", r"/runs/query$") == 2  # 100 + 50, following cursors.next


def test_list_runs_limit_is_sent_per_page(emu: LangSmithEmulator, client: Client) -> None:
    add_runs(emu, 12)
    assert len(list(client.list_runs(project_name="proj", limit=5))) == 5
    assert len(list(client.list_runs(project_name="proj", limit=100))) == 12


QUERY_CASES = [
    ("filter-eq-name", {"filter": 'eq(name, "run-1")'}, ["run-1"]),
    ("filter-has-tag", {"filter": 'has(tags, "blue")'}, ["run-0", "run-2"]),
    ("filter-and-or", {"filter": 'and(has(tags, "blue"), or(eq(name, "run-2"), eq(name, "nope")))'}, ["run-2"]),
    ("filter-feedback-key", {"filter": 'eq(feedback_key, "judge")'}, ["run-1"]),
    ("filter-start-time", {"filter": f'gte(start_time, "{at(2)}")'}, ["run-2"]),
    ("is-root", {"is_root": True}, ["run-0", "run-1", "run-2"]),
    ("start-time-field", {"start_time": at(1)}, ["run-1", "run-2"]),
    ("select-keeps-required-keys", {"select": ["outputs"]}, ["run-0", "run-1", "run-2"]),
]


@pytest.mark.parametrize(("extra", "expected"), [c[1:] for c in QUERY_CASES], ids=[c[0] for c in QUERY_CASES])
def test_runs_query_filters(emu: LangSmithEmulator, extra: dict, expected: list[str]) -> None:
    runs = add_runs(emu, 3)
    for i in (0, 2):
        emu.store.runs[runs[i]["id"]]["tags"] = ["blue"]
    emu.add_feedback(runs[1]["id"], "judge", score=1)
    body = {"session": [runs[0]["session_id"]], **extra}
    response = requests.post(f"{emu.url}/api/v1/runs/query", json=body, headers=headers(), timeout=5)
    assert response.status_code == 200
    names = sorted(r["name"] for r in response.json()["runs"])
    assert names == expected
    if "select" in extra:
        assert set(response.json()["runs"][0]) == {"id", "name", "start_time", "run_type", "trace_id", "outputs"}


def test_runs_query_trace_filter_and_invalid_filter(emu: LangSmithEmulator, client: Client) -> None:
    root = add_runs(emu, 1)[0]
    child = emu.add_run({"name": "child", "parent_run_id": root["id"], "session_id": root["session_id"]})
    assert child["trace_id"] == root["id"] and child["parent_run_ids"] == [root["id"]] and not child["is_root"]
    assert {r.name for r in client.list_runs(trace_id=root["id"])} == {"run-0", "child"}
    response = requests.post(f"{emu.url}/runs/query", json={"filter": "eq(name"}, headers=headers(), timeout=5)
    assert response.status_code == 400


def test_read_run_returns_offloaded_inputs_inline(emu: LangSmithEmulator, client: Client) -> None:
    session = emu.create_project("p")
    stored = emu.add_run({"name": "big", "session_id": session["id"], "inputs": {"doc": "x" * 100},
                          "outputs": {"y": 1}, "end_time": at(1), "start_time": at(0)}, offload=True)
    run = client.read_run(stored["id"])
    assert run.inputs == {"doc": "x" * 100} and run.outputs == {"y": 1} and run.status == "success"
    with pytest.raises(ls_utils.LangSmithNotFoundError):
        client.read_run(uuid.uuid4())


def test_sdk_run_ingestion_routes_are_stored(emu: LangSmithEmulator, client: Client) -> None:
    run_id = uuid.uuid4()
    client.create_run("plain", {"q": 1}, "chain", id=run_id, project_name="traces", start_time=T0)
    client.update_run(run_id, outputs={"a": 2}, end_time=T0 + dt.timedelta(seconds=1))
    root = RunTree(name="root", inputs={"x": 1}, project_name="traces", client=client)
    child = root.create_child(name="child", run_type="llm", inputs={"p": "hi"})
    child.end(outputs={"o": 3})
    root.end(outputs={"y": 2})
    client.multipart_ingest(create=[root._get_dicts_safe(), child._get_dicts_safe()])
    batched = RunTree(name="batched", inputs={"x": 2}, project_name="traces", client=client)
    batched.end(outputs={"y": 5})
    client.batch_ingest_runs(create=[batched._get_dicts_safe()])

    assert emu.get_run(str(run_id))["outputs"] == {"a": 2} and emu.get_run(str(run_id))["status"] == "success"
    assert emu.get_run(str(child.id))["parent_run_id"] == str(root.id)
    assert emu.get_run(str(child.id))["outputs"] == {"o": 3}
    assert emu.get_run(str(batched.id))["inputs"] == {"x": 2}
    assert emu.recorder.count("POST", r"/runs/multipart$", status=202) == 1
    assert emu.recorder.count("POST", r"/runs/batch$", status=202) == 1


# ---------------------------------------------------------------- feedback
def test_list_feedback_pages_by_offset(emu: LangSmithEmulator, client: Client) -> None:
    runs = add_runs(emu, 3)
    for i in range(250):
        emu.add_feedback(runs[i % 3]["id"], f"key-{i % 5}", score=i)
    other = add_runs(emu, 1, project="other")[0]
    emu.add_feedback(other["id"], "key-0", score=1)
    listed = list(client.list_feedback(run_ids=[r["id"] for r in runs]))
    assert len(listed) == 250 and len({f.id for f in listed}) == 250
    queries = [r.query for r in emu.recorder.requests if r.path == "/feedback"]
    assert len(queries) == 3 and all("limit=100" in q for q in queries)
    assert [q.split("offset=")[1] for q in queries] == ["0", "100", "200"]
    assert len(list(client.list_feedback(run_ids=[runs[0]["id"]], feedback_key=["key-1"]))) == 17


def test_create_and_read_feedback(emu: LangSmithEmulator, client: Client) -> None:
    run = add_runs(emu, 1)[0]
    created = client.create_feedback(run["id"], "correctness", score=0.5, comment="meh", correction={"a": 1})
    [stored] = emu.feedback_for(run["id"])
    assert stored["id"] == str(created.id) and stored["trace_id"] == run["trace_id"]
    assert stored["session_id"] == run["session_id"] and stored["feedback_source"]["type"] == "api"
    assert client.read_feedback(created.id).comment == "meh"
    # A plain Enum reaches the wire as "FeedbackSourceType.API" (requests str()s it); both spellings filter.
    for source in ("api", FeedbackSourceType.API):
        assert [f.key for f in client.list_feedback(run_ids=[run["id"]], feedback_source_type=[source])] == [
            "correctness"]
    assert list(client.list_feedback(run_ids=[run["id"]], feedback_source_type=[FeedbackSourceType.MODEL])) == []
    # Unknown runs get a 404 (the SDK's create_feedback retries those for minutes, so ask directly).
    missing = requests.post(f"{emu.url}/feedback", json={"run_id": str(uuid.uuid4()), "key": "k"},
                            headers=headers(), timeout=5)
    assert missing.status_code == 404


# ---------------------------------------------------------------- presigned feedback tokens
def test_presigned_token_round_trip(emu: LangSmithEmulator, client: Client) -> None:
    run = add_runs(emu, 1)[0]
    token = client.create_presigned_feedback_token(run["id"], "thumbs",
                                                   feedback_config={"type": "continuous", "min": 0, "max": 1})
    assert token.url == f"{emu.url}/api/v1/feedback/tokens/{token.id}"
    assert dt.timedelta(hours=2, minutes=59) < token.expires_at - dt.datetime.now(UTC) <= dt.timedelta(hours=3)
    assert [t.id for t in client.list_presigned_feedback_tokens(run["id"])] == [token.id]

    client.create_feedback_from_token(token.url, score=1, comment="sdk", metadata={"via": "sdk"})
    anonymous = requests.get(token.url, params={"score": 0, "comment": "link", "value": "meh"}, timeout=5)
    posted = requests.post(token.url, json={"score": 0.5, "correction": {"fix": 1}}, timeout=5)
    assert anonymous.status_code == posted.status_code == 200
    assert "x-api-key" not in emu.recorder.requests[-1].headers
    rows = emu.feedback_for(run["id"])
    assert [(f["key"], f["score"], f["comment"]) for f in rows] == [
        ("thumbs", 1, "sdk"), ("thumbs", 0, "link"), ("thumbs", 0.5, None)]
    assert rows[0]["feedback_source"]["metadata"] == {"via": "sdk"} and rows[1]["value"] == "meh"


def test_presigned_tokens_batch_and_expiry(emu: LangSmithEmulator, client: Client) -> None:
    run = add_runs(emu, 1)[0]
    tokens = client.create_presigned_feedback_tokens(run["id"], ["up", "down"],
                                                     expiration=dt.timedelta(minutes=10))
    assert sorted(emu.store.tokens[str(t.id)]["feedback_key"] for t in tokens) == ["down", "up"]
    emu.advance_clock(11 * 60)
    expired = requests.get(tokens[0].url, params={"score": 1}, timeout=5)
    assert expired.status_code == 400 and expired.json() == {"detail": "Token expired"}
    unknown = requests.post(f"{emu.url}/api/v1/feedback/tokens/{uuid.uuid4()}", json={"score": 1}, timeout=5)
    assert unknown.status_code == 404
    assert emu.feedback_for(run["id"]) == []
    missing_run = requests.post(f"{emu.url}/feedback/tokens", json={"run_id": str(uuid.uuid4()),
                                                                    "feedback_key": "k"}, headers=headers(), timeout=5)
    assert missing_run.status_code == 404


# ---------------------------------------------------------------- upload-experiment
def test_upload_experiment_creates_dataset_experiment_runs_and_feedback(emu: LangSmithEmulator,
                                                                        client: Client) -> None:
    result = upload(client, experiment_body())
    assert set(result) == {"dataset", "experiment"}
    assert result["dataset"]["name"] == "ext-ds" and result["dataset"]["externally_managed"] is True
    assert result["experiment"]["reference_dataset_id"] == result["dataset"]["id"]
    assert result["experiment"]["name"] == "exp-1" and result["experiment"]["description"] == "uploaded"
    project = client.read_project(project_id=result["experiment"]["id"])
    assert project.metadata == {"revision": "abc123", "model": "m1"}

    [experiment] = emu.experiments("ext-ds")
    assert experiment["metadata"]["revision"] == "abc123" and len(experiment["rows"]) == 2
    row = next(r for r in experiment["rows"] if r["row_id"] == str(uuid.UUID(int=1)))
    assert row["run"]["inputs"] == {"q": "question 0"} and row["run"]["outputs"] == {"a": "got 0"}
    assert row["example"]["outputs"] == {"a": "answer 0"} and row["run"]["name"] == "Chatbot"
    assert [(f["key"], f["score"]) for f in row["feedback"]] == [("accuracy", 0)]
    assert [f["key"] for f in experiment["summary_feedback"]] == ["summary_accuracy"]
    listed = list(client.list_feedback(run_ids=[r["run"]["id"] for r in experiment["rows"]]))
    assert sorted(f.score for f in listed) == [0, 1]


def test_upload_experiment_reuses_examples_by_row_id(emu: LangSmithEmulator, client: Client) -> None:
    upload(client, experiment_body("exp-1", rows=2))
    second = upload(client, experiment_body("exp-2", rows=3))
    assert second["dataset"]["example_count"] == 3 and second["experiment"]["test_run_number"] == 2
    experiments = emu.experiments("ext-ds")
    assert [e["name"] for e in experiments] == ["exp-1", "exp-2"]
    first_examples = {r["row_id"]: r["example"]["id"] for r in experiments[0]["rows"]}
    second_examples = {r["row_id"]: r["example"]["id"] for r in experiments[1]["rows"]}
    assert all(second_examples[row] == example for row, example in first_examples.items())


def test_upload_experiment_into_an_ordinary_dataset_is_refused(emu: LangSmithEmulator, client: Client) -> None:
    client.create_dataset("made-by-hand")
    with pytest.raises(ls_utils.LangSmithError, match="not externally managed"):
        upload(client, experiment_body(dataset="made-by-hand"))
    assert emu.recorder.count("POST", "upload-experiment", status=400) == 1
    assert emu.experiments("made-by-hand") == []


def test_upload_experiment_with_a_taken_name_conflicts(client: Client) -> None:
    upload(client, experiment_body("same"))
    with pytest.raises(ls_utils.LangSmithConflictError, match="Session already exists"):
        upload(client, experiment_body("same"))


def _without(key: str) -> dict:
    body = experiment_body()
    del body[key]
    return body


def _row(**changes) -> dict:
    body = experiment_body(rows=1)
    body["results"][0].update(changes)
    return body


def _score(**changes) -> dict:
    body = experiment_body(rows=1)
    body["results"][0]["evaluation_scores"][0].update(changes)
    return body


INVALID_UPLOADS = [
    ("missing-experiment-name", _without("experiment_name"), "experiment_name"),
    ("missing-start-time", _without("experiment_start_time"), "experiment_start_time"),
    ("missing-results", _without("results"), "results"),
    ("missing-dataset", _without("dataset_name"), "dataset_id"),
    ("bad-dataset-id", experiment_body(dataset_id="not-a-uuid"), "dataset_id"),
    ("row-starts-before-window", _row(start_time=at(-5)), "start_time"),
    ("row-ends-after-window", _row(end_time=at(61)), "end_time"),
    ("row-without-start-time", _row(start_time=None), "start_time"),
    ("bad-row-id", _row(row_id="row-1"), "row_id"),
    ("inputs-not-object", _row(inputs="hello"), "inputs"),
    ("score-key-too-long", _score(key="k" * 181), "key"),
    ("score-without-key", _score(key=None), "key"),
    ("score-not-number", _score(score="high"), "score"),
    ("feedback-config-bad-type", _score(feedback_config={"type": "stars"}), "type"),
    ("category-without-value", _score(feedback_config={"type": "categorical", "categories": [{"label": "x"}]}),
     "value"),
    ("feedback-source-without-type", _score(feedback_source={}), "type"),
]


@pytest.mark.parametrize(("body", "field"), [c[1:] for c in INVALID_UPLOADS], ids=[c[0] for c in INVALID_UPLOADS])
def test_upload_experiment_validation_422(emu: LangSmithEmulator, client: Client, body: dict, field: str) -> None:
    with pytest.raises(ls_utils.LangSmithError, match="422") as caught:
        upload(client, body)
    assert f'"{field}"' in str(caught.value)  # the detail's `loc` names the field
    raw = requests.post(f"{emu.url}/api/v1/datasets/upload-experiment", json=body, headers=headers(), timeout=5)
    assert raw.status_code == 422 and raw.json()["detail"][0]["loc"][-1] == field
    assert emu.store.sessions == {} and emu.store.datasets == {}


def test_upload_experiment_accepts_a_maximal_score(client: Client, emu: LangSmithEmulator) -> None:
    body = _score(key="k" * 180, value="good", correction="fixed", feedback_source={"type": "model"},
                  feedback_config={"type": "categorical", "categories": [{"value": 1, "label": "good"}]},
                  created_at=at(3))
    upload(client, body)
    [row] = emu.experiments("ext-ds")[0]["rows"]
    assert row["feedback"][0]["feedback_source"]["type"] == "model" and row["feedback"][0]["value"] == "good"


# ---------------------------------------------------------------- limits, rate limits, faults
LIMIT_CASES = [
    ("sessions", "GET", "/sessions", {"params": {"limit": 101}}),
    ("datasets", "GET", "/api/v1/datasets", {"params": {"limit": 101}}),
    ("feedback", "GET", "/feedback", {"params": {"limit": 101}}),
    ("tokens", "GET", "/feedback/tokens", {"params": {"limit": 101, "run_id": str(uuid.uuid4())}}),
    ("runs-query", "POST", "/runs/query", {"json": {"limit": 101}}),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), [c[1:] for c in LIMIT_CASES], ids=[c[0] for c in LIMIT_CASES])
def test_limit_above_100_is_a_400(emu: LangSmithEmulator, method: str, path: str, kwargs: dict) -> None:
    response = requests.request(method, emu.url + path, headers=headers(), timeout=5, **kwargs)
    assert response.status_code == 400 and "limit" in response.json()["detail"]


def test_sdk_list_runs_with_a_large_limit_fails(emu: LangSmithEmulator, client: Client) -> None:
    add_runs(emu, 1)
    with pytest.raises(ls_utils.LangSmithError, match="400"):
        list(client.list_runs(project_name="proj", limit=150))


RULE_CASES = [
    ("POST", "/runs/query", "runs_query"), ("GET", "/runs/abc", "run_read"), ("POST", "/feedback", "feedback_create"),
    ("GET", "/feedback", "default"), ("PATCH", "/runs/abc", "default"), ("GET", "/sessions", "default"),
]


@pytest.mark.parametrize(("method", "path", "rule"), RULE_CASES, ids=[f"{m} {p}" for m, p, _ in RULE_CASES])
def test_rate_limit_rules(method: str, path: str, rule: str) -> None:
    assert rate_rule(method, path) == rule


def test_runs_query_429_has_retry_after_and_is_per_key(emu: LangSmithEmulator) -> None:
    emu.set_rate_limit("runs_query", limit=2, window=30.0)
    statuses = [requests.post(f"{emu.url}/runs/query", json={}, headers=headers(), timeout=5) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert 1 <= int(statuses[2].headers["Retry-After"]) <= 30
    other_key = LangSmithEmulator(None)  # any key accepted: a second key has its own window
    other_key.set_rate_limit("runs_query", limit=1, window=30.0)
    handle = other_key.serve()
    try:
        codes = [requests.post(f"{handle.url}/runs/query", json={}, headers={"x-api-key": k}, timeout=5).status_code
                 for k in ("a", "b", "a")]
        assert codes == [200, 200, 429]
    finally:
        other_key.stop()


def test_sdk_honours_a_429_retry_after(emu: LangSmithEmulator, client: Client) -> None:
    runs = add_runs(emu, 1)
    emu.set_rate_limit("runs_query", limit=2, window=1.0)
    started = time.monotonic()
    for _ in range(3):
        assert [str(r.id) for r in client.list_runs(run_ids=[runs[0]["id"]])] == [runs[0]["id"]]
    assert emu.recorder.count("POST", r"/runs/query$", status=429) >= 1
    assert time.monotonic() - started >= 0.9  # it waited out Retry-After instead of failing


def test_rate_limits_can_be_disabled() -> None:
    emulator = LangSmithEmulator({KEY}, rate_limits=False)
    emulator.set_rate_limit("runs_query", limit=1, window=60.0)
    handle = emulator.serve()
    try:
        codes = {requests.post(f"{handle.url}/runs/query", json={}, headers=headers(), timeout=5).status_code
                 for _ in range(20)}
        assert codes == {200}
    finally:
        emulator.stop()


def test_rate_limit_scale_shrinks_every_limit() -> None:
    emulator = LangSmithEmulator({KEY}, rate_limit_scale=0.1)
    assert emulator.limiter.limits["runs_query"] == (1, 10.0) and emulator.limiter.limits["default"] == (100, 10.0)


def test_injected_503_is_retried_by_the_sdk(emu: LangSmithEmulator, client: Client) -> None:
    run = add_runs(emu, 1)[0]
    emu.recorder.add_fault(r"/runs/query$", status=503, times=1)
    assert [str(r.id) for r in client.list_runs(run_ids=[run["id"]])] == [run["id"]]
    assert emu.recorder.count("POST", r"/runs/query$", status=503) == 1
    assert emu.recorder.count("POST", r"/runs/query$", status=200) == 1


# ---------------------------------------------------------------- webhook payloads and stored objects
def test_webhook_payload_matches_the_documented_shape(emu: LangSmithEmulator) -> None:
    runs = add_runs(emu, 2)
    emu.add_feedback(runs[0]["id"], "user_score", score=0)
    emu.add_feedback(runs[1]["id"], "user_score", score=1)
    emu.add_feedback(runs[1]["id"], "category", value="CONCEPTUAL")
    rule = str(uuid.uuid4())
    payload = emu.webhook_payload(rule, [r["id"] for r in runs])
    assert set(payload) == {"rule_id", "start_time", "end_time", "runs", "feedback_stats"}
    assert payload["rule_id"] == rule and payload["start_time"] == at(0) and payload["end_time"] == at(1.5)
    assert payload["feedback_stats"] == {
        "user_score": {"n": 2, "avg": 0.5, "show_feedback_arrow": True, "values": {}},
        "category": {"n": 0, "avg": None, "show_feedback_arrow": True, "values": {"CONCEPTUAL": 1}},
    }
    first = payload["runs"][0]
    assert first["inputs"] == {"i": 0} and first["inputs_s3_urls"] is None
    assert first["start_time"] == "2024-08-03T00:12:38.000000"  # naive UTC, as in the docs' example
    for key in ("trace_id", "dotted_order", "parent_run_ids", "session_id", "app_path", "tenant_id", "status"):
        assert first[key] is not None
    json.dumps(payload)  # must be JSON as sent
    with pytest.raises(KeyError):
        emu.webhook_payload(rule, [str(uuid.uuid4())])


def test_offloaded_run_data_is_behind_an_absolute_object_url() -> None:
    emu = LangSmithEmulator({KEY})
    run = emu.add_run({"name": "r", "inputs": {"q": "big"}, "outputs": {"a": "bigger"}}, offload=True)
    with pytest.raises(RuntimeError, match="serve"):  # seeding before serve() is fine; the payload needs a URL
        emu.webhook_payload("rule", [run["id"]])
    emu.serve()
    try:
        check_offloaded_payload(emu, run)
    finally:
        emu.stop()


def check_offloaded_payload(emu: LangSmithEmulator, run: dict) -> None:
    [sent] = emu.webhook_payload("rule", [run["id"]])["runs"]
    assert sent["inputs"] is None and sent["outputs"] is None
    url = sent["inputs_s3_urls"]["ROOT"]["presigned_url"]
    assert url.startswith(emu.url + "/_objects/")
    assert requests.get(url, timeout=5).json() == {"q": "big"}  # no API key, like S3
    assert requests.get(sent["outputs_s3_urls"]["ROOT"]["presigned_url"], timeout=5).json() == {"a": "bigger"}
    assert emu.recorder.count("GET", r"/_objects/") == 2
    assert requests.get(emu.url + "/_objects/nope", timeout=5).status_code == 404


def test_offloaded_run_data_can_use_relative_urls() -> None:
    emulator = LangSmithEmulator({KEY}, object_urls="relative")
    handle = emulator.serve()
    try:
        run = emulator.add_run({"name": "r", "inputs": {"q": 1}}, offload=True)
        url = emulator.webhook_payload("rule", [run["id"]])["runs"][0]["inputs_s3_urls"]["ROOT"]["presigned_url"]
        assert url.startswith("/_objects/")
        for root in (handle.url, handle.url + "/api/v1"):  # relative to either API root
            assert requests.get(root + url, timeout=5).json() == {"q": 1}
    finally:
        emulator.stop()
