"""LangSmith run + feedback → `runs` rows (bridge.formats.runs)."""

from __future__ import annotations

import io
import json
import random
from datetime import datetime, timedelta, timezone

import msgspec
import pyarrow.parquet as pq
import pytest

from bridge.errors import FormatError
from bridge.formats.runs import (
    RUNS_SCHEMA,
    group_feedback,
    offloaded_payload_urls,
    parent_run_id,
    run_model,
    run_row,
    run_tokens,
    run_web_url,
    trace_id,
)
from bridge.formats.training import to_parquet_bytes, to_table
from bridge.ledger import ZSTD_FRAME, decode_rows, encode_rows

UTC = timezone.utc
WEB = "https://smith.langchain.com"

# The run from LangSmith's webhook documentation (seed 000), verbatim.
SEED_PAYLOAD = {
    "rule_id": "d75d7417-0c57-4655-88fe-1db3cda3a47a",
    "start_time": "2024-04-05T01:28:54.734491+00:00",
    "end_time": "2024-04-05T01:28:56.492563+00:00",
    "runs": [{
        "status": "success", "is_root": True, "trace_id": "6ab80f10-d79c-4fa2-b441-922ed6feb630",
        "dotted_order": "20230505T051324571809Z6ab80f10-d79c-4fa2-b441-922ed6feb630", "run_type": "tool",
        "modified_at": "2024-04-05T01:28:54.145062", "tenant_id": "2ebda79f-2946-4491-a9ad-d642f49e0815",
        "end_time": "2024-04-05T01:28:54.085649", "name": "Search", "start_time": "2024-04-05T01:28:54.085646",
        "id": "6ab80f10-d79c-4fa2-b441-922ed6feb630", "session_id": "6a3be6a2-9a8c-4fc8-b4c6-a8983b286cc5",
        "parent_run_ids": [], "child_run_ids": None, "direct_child_run_ids": None, "total_tokens": 0,
        "completion_tokens": 0, "prompt_tokens": 0, "total_cost": None, "completion_cost": None, "prompt_cost": None,
        "first_token_time": None,
        "app_path": "/o/2ebda79f-2946-4491-a9ad-d642f49e0815/projects/p/6a3be6a2-9a8c-4fc8-b4c6-a8983b286cc5/r/"
                    "6ab80f10-d79c-4fa2-b441-922ed6feb630?trace_id=6ab80f10-d79c-4fa2-b441-922ed6feb630"
                    "&start_time=2023-05-05T05:13:24.571809",
        "in_dataset": False, "last_queued_at": None, "inputs": None, "inputs_s3_urls": None, "outputs": None,
        "outputs_s3_urls": None, "extra": None, "events": None, "feedback_stats": None, "serialized": None,
        "share_token": None,
    }],
}

ROOT_ID = "11111111-1111-4111-8111-111111111111"
CHILD_ID = "22222222-2222-4222-8222-222222222222"
GRANDCHILD_ID = "33333333-3333-4333-8333-333333333333"
ROOT_ORDER = f"20240405T012854085646Z{ROOT_ID}"
CHILD_ORDER = f"{ROOT_ORDER}.20240405T012854100000Z{CHILD_ID}"
GRANDCHILD_ORDER = f"{CHILD_ORDER}.20240405T012854200000Z{GRANDCHILD_ID}"


def seed_run() -> dict:
    return json.loads(json.dumps(SEED_PAYLOAD["runs"][0]))


def test_seed_payload_run_is_mapped():
    run = seed_run()
    exported = datetime(2024, 4, 5, 2, 0, tzinfo=UTC)
    row = run_row(run, rule_id=SEED_PAYLOAD["rule_id"], feedback=[], feedback_urls=[],
                  web_url=run_web_url(WEB, run), exported_at=exported)

    assert row["run_id"] == "6ab80f10-d79c-4fa2-b441-922ed6feb630"
    assert row["trace_id"] == row["run_id"]
    assert row["parent_run_id"] is None
    assert row["is_root"] is True
    assert row["dotted_order"] == run["dotted_order"]
    assert row["session_id"] == "6a3be6a2-9a8c-4fc8-b4c6-a8983b286cc5"
    assert row["rule_id"] == "d75d7417-0c57-4655-88fe-1db3cda3a47a"
    assert (row["name"], row["run_type"], row["status"], row["error"]) == ("Search", "tool", "success", None)
    # Naive payload times are UTC.
    assert row["start_time"] == datetime(2024, 4, 5, 1, 28, 54, 85646, tzinfo=UTC)
    assert row["end_time"] == datetime(2024, 4, 5, 1, 28, 54, 85649, tzinfo=UTC)
    assert row["latency_ms"] == pytest.approx(0.003)
    assert (row["inputs"], row["outputs"], row["metadata"]) == (None, None, None)
    assert row["tags"] == []
    assert row["model"] is None
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (0, 0, 0)
    assert row["total_cost"] is None
    assert row["feedback"] == [] and row["feedback_urls"] == []
    assert row["run_url"] == WEB + run["app_path"]
    assert row["exported_at"] == exported
    assert set(row) == set(RUNS_SCHEMA.names)


@pytest.mark.parametrize("raw, expected", [
    pytest.param("2024-04-05T01:28:54.085646", datetime(2024, 4, 5, 1, 28, 54, 85646, tzinfo=UTC), id="naive-is-utc"),
    pytest.param("2024-04-05T01:28:54.085646Z", datetime(2024, 4, 5, 1, 28, 54, 85646, tzinfo=UTC), id="zulu"),
    pytest.param("2024-04-05T03:28:54+02:00", datetime(2024, 4, 5, 1, 28, 54, tzinfo=UTC), id="offset-converted"),
    pytest.param(datetime(2024, 4, 5, 1, 28, 54), datetime(2024, 4, 5, 1, 28, 54, tzinfo=UTC), id="naive-datetime"),
])
def test_timestamps_are_utc(raw, expected):
    run = {**seed_run(), "start_time": raw, "end_time": None}
    row = run_row(run, rule_id=None, feedback=[], feedback_urls=[], web_url=None)
    assert row["start_time"] == expected and row["start_time"].utcoffset() == timedelta(0)
    assert row["latency_ms"] is None


def test_unreadable_timestamp_names_run_and_field():
    with pytest.raises(FormatError, match=r"run 6ab80f10.*start_time.*ISO 8601"):
        run_row({**seed_run(), "start_time": "yesterday"}, rule_id=None, feedback=[], feedback_urls=[], web_url=None)


def test_run_without_id_is_a_format_error():
    with pytest.raises(FormatError, match="no 'id'"):
        run_row({"name": "x"}, rule_id=None, feedback=[], feedback_urls=[], web_url=None)


@pytest.mark.parametrize("run, parent, trace", [
    pytest.param({"id": CHILD_ID, "parent_run_id": ROOT_ID}, ROOT_ID, None, id="explicit-parent"),
    pytest.param({"id": GRANDCHILD_ID, "dotted_order": GRANDCHILD_ORDER}, CHILD_ID, ROOT_ID, id="from-dotted-order"),
    pytest.param({"id": CHILD_ID, "parent_run_ids": [ROOT_ID]}, ROOT_ID, None, id="last-of-parent-run-ids"),
    pytest.param({"id": ROOT_ID, "dotted_order": ROOT_ORDER, "parent_run_ids": []}, None, ROOT_ID, id="root"),
    pytest.param({"id": CHILD_ID, "dotted_order": "garbage.order"}, None, None, id="malformed-order-ignored"),
])
def test_tree_fields(run, parent, trace):
    assert parent_run_id(run) == parent
    assert trace_id(run) == trace


def dify_trace() -> list[dict]:
    """A Dify message trace with a tool call under it, as Dify's LangSmith integration sends them (seed 002)."""
    message = {
        "id": ROOT_ID, "name": "message_9f1c", "run_type": "llm", "dotted_order": ROOT_ORDER, "trace_id": ROOT_ID,
        "start_time": "2024-04-05T01:28:54.085646", "end_time": "2024-04-05T01:28:56.085646",
        "inputs": {"messages": {"role": "user", "content": "Weather in Paris?",
                                "usage_metadata": {"input_tokens": 20, "output_tokens": 8, "total_tokens": 28}}},
        "outputs": {"choices": {"role": "ai", "content": "Sunny, 21°C."}},
        "input_tokens": 20, "output_tokens": 8, "total_tokens": 28,
        "extra": {"metadata": {"conversation_id": "c-1", "ls_provider": "openai", "ls_model_name": "gpt-4o"}},
        "tags": ["message", "chat"], "error": None,
    }
    tool = {
        "id": CHILD_ID, "name": "weather", "run_type": "tool", "parent_run_id": ROOT_ID, "trace_id": ROOT_ID,
        "dotted_order": CHILD_ORDER, "start_time": "2024-04-05T01:28:54.100000",
        "end_time": "2024-04-05T01:28:55.100000", "inputs": {"city": "Paris"}, "outputs": {"result": "sunny"},
        "extra": {"metadata": {"message_id": "m-1", "tool_name": "weather"}}, "tags": ["tool", "weather"],
    }
    return [message, tool]


def test_dify_trace_keeps_the_tree_usage_and_model():
    rows = [run_row(r, rule_id="rule", feedback=[], feedback_urls=[], web_url=None) for r in dify_trace()]
    by_id = {row["run_id"]: row for row in rows}
    assert by_id[CHILD_ID]["parent_run_id"] == ROOT_ID and by_id[CHILD_ID]["is_root"] is False
    assert by_id[ROOT_ID]["parent_run_id"] is None and by_id[ROOT_ID]["is_root"] is True
    assert by_id[ROOT_ID]["model"] == "gpt-4o"
    assert (by_id[ROOT_ID]["prompt_tokens"], by_id[ROOT_ID]["completion_tokens"]) == (20, 8)
    assert json.loads(by_id[ROOT_ID]["metadata"])["conversation_id"] == "c-1"
    assert json.loads(by_id[ROOT_ID]["outputs"]) == {"choices": {"role": "ai", "content": "Sunny, 21°C."}}
    assert by_id[CHILD_ID]["tags"] == ["tool", "weather"]
    assert by_id[ROOT_ID]["latency_ms"] == pytest.approx(2000.0)
    # A reader rebuilds the tree from the rows alone.
    ordered = sorted(rows, key=lambda r: r["dotted_order"])
    assert [r["run_id"] for r in ordered] == [ROOT_ID, CHILD_ID]
    assert {r["run_id"]: r["parent_run_id"] for r in ordered} == {ROOT_ID: None, CHILD_ID: ROOT_ID}


LC_GENERATIONS = {"generations": [[{
    "text": "4", "type": "ChatGeneration",
    "message": {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "AIMessage"],
                "kwargs": {"content": "4", "type": "ai",
                           "usage_metadata": {"input_tokens": 12, "output_tokens": 1, "total_tokens": 13},
                           "response_metadata": {"model_name": "gpt-4o-mini-2024-07-18"}}}}]],
    "llm_output": {"token_usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}}}


@pytest.mark.parametrize("run, model, tokens", [
    pytest.param({"extra": {"metadata": {"ls_model_name": "gpt-4o"}, "invocation_params": {"model": "other"}},
                  "prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}, "gpt-4o", (5, 2, 7),
                 id="langsmith-fields"),
    pytest.param({"extra": {"invocation_params": {"model_name": "gpt-3.5-turbo"}}}, "gpt-3.5-turbo",
                 (None, None, None), id="invocation-params"),
    pytest.param({"extra": {"metadata": {"model_id": "claude-3-haiku", "model_provider": "anthropic"}}},
                 "claude-3-haiku", (None, None, None), id="dify-model-id"),
    pytest.param({"outputs": LC_GENERATIONS, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                 "gpt-4o-mini-2024-07-18", (12, 1, 13), id="langchain-generation-usage"),
    pytest.param({"outputs": {"model": "gpt-4o-2024-08-06", "usage": {"prompt_tokens": 9, "completion_tokens": 3}}},
                 "gpt-4o-2024-08-06", (9, 3, 12), id="openai-raw-response"),
    pytest.param({"input_tokens": 20, "output_tokens": 8, "total_tokens": 28}, None, (20, 8, 28), id="dify-top-level"),
])
def test_model_and_tokens(run, model, tokens):
    assert run_model(run) == model
    assert run_tokens(run) == tokens


def feedback_item(fid: str, run_id: str, key: str, created: str, **fields) -> dict:
    return {"id": fid, "run_id": run_id, "trace_id": run_id, "key": key, "created_at": created,
            "modified_at": created, "feedback_source": {"type": "api", "metadata": {}}, **fields}


def test_feedback_lands_on_its_run_whatever_the_order():
    runs = [{"id": rid, "name": n} for rid, n in ((ROOT_ID, "a"), (CHILD_ID, "b"), (GRANDCHILD_ID, "c"))]
    feedback = [
        feedback_item("f3", GRANDCHILD_ID, "user_score", "2024-04-05T02:00:00", score=0),
        feedback_item("f1", ROOT_ID, "user_score", "2024-04-05T02:00:01", score=1),
        feedback_item("f2", ROOT_ID, "note", "2024-04-05T01:59:00", comment="good", correction={"output": "x"}),
        feedback_item("f9", None, "project_level", "2024-04-05T01:00:00", score=1),
    ]
    random.Random(7).shuffle(feedback)
    grouped = group_feedback(feedback)
    rows = {r["id"]: run_row(r, rule_id=None, feedback=grouped.get(r["id"], []), feedback_urls=[], web_url=None)
            for r in runs}
    assert [f["id"] for f in rows[ROOT_ID]["feedback"]] == ["f2", "f1"]  # oldest first
    assert [f["id"] for f in rows[GRANDCHILD_ID]["feedback"]] == ["f3"]
    assert rows[CHILD_ID]["feedback"] == []
    assert "None" not in grouped


def test_feedback_paging_overlap_is_deduplicated():
    item = feedback_item("f1", ROOT_ID, "user_score", "2024-04-05T02:00:00", score=1)
    grouped = group_feedback([item, dict(item), feedback_item("f2", ROOT_ID, "x", "2024-04-05T02:00:00")])
    assert [f["id"] for f in grouped[ROOT_ID]] == ["f1", "f2"]


def test_feedback_entry_fields():
    feedback = [
        feedback_item("f1", ROOT_ID, "thumbs", "2024-04-05T02:00:00", score=True),
        feedback_item("f2", ROOT_ID, "category", "2024-04-05T02:00:01", value="CONCEPTUAL"),
        feedback_item("f3", ROOT_ID, "fix", "2024-04-05T02:00:02Z", comment="too long",
                      correction={"output": "Shorter."}, value={"a": 1}),
        {"id": "f4", "run_id": ROOT_ID, "key": "correction_only", "correction": "plain text",
         "feedback_source": "app"},
    ]
    row = run_row({"id": ROOT_ID}, rule_id=None, feedback=feedback, feedback_urls=[], web_url=None)
    entries = {f["id"]: f for f in row["feedback"]}
    assert entries["f1"]["score"] == 1.0 and entries["f1"]["source"] == "api"
    assert entries["f2"]["value"] == "CONCEPTUAL" and entries["f2"]["score"] is None
    assert json.loads(entries["f3"]["correction"]) == {"output": "Shorter."}
    assert json.loads(entries["f3"]["value"]) == {"a": 1} and entries["f3"]["comment"] == "too long"
    assert entries["f3"]["created_at"] == datetime(2024, 4, 5, 2, 0, 2, tzinfo=UTC)
    assert json.loads(entries["f4"]["correction"]) == "plain text" and entries["f4"]["source"] == "app"


def test_feedback_urls():
    urls = [{"feedback_key": "thumbs", "url": "https://api.smith.langchain.com/feedback/tokens/abc",
             "expires_at": "2024-04-12T01:00:00Z", "id": "abc"}]
    row = run_row({"id": ROOT_ID}, rule_id=None, feedback=[], feedback_urls=urls, web_url=None)
    assert row["feedback_urls"] == [{"key": "thumbs", "url": urls[0]["url"],
                                     "expires_at": datetime(2024, 4, 12, 1, tzinfo=UTC)}]


@pytest.mark.parametrize("base, run, expected", [
    pytest.param(WEB + "/", {"app_path": "/o/t/projects/p/s/r/i?trace_id=i"}, WEB + "/o/t/projects/p/s/r/i?trace_id=i",
                 id="app-path"),
    pytest.param(WEB, {"id": CHILD_ID, "tenant_id": "t", "session_id": "s", "dotted_order": CHILD_ORDER,
                       "start_time": "2024-04-05T01:28:54.100000"},
                 f"{WEB}/o/t/projects/p/s/r/{CHILD_ID}?trace_id={ROOT_ID}&start_time=2024-04-05T01%3A28%3A54.100000",
                 id="built-from-ids"),
    pytest.param(WEB, {"id": CHILD_ID, "session_id": "s"}, None, id="no-tenant"),
    pytest.param(None, {"app_path": "/o/t"}, None, id="no-web-base"),
])
def test_run_web_url(base, run, expected):
    assert run_web_url(base, run) == expected


def test_offloaded_payload_urls():
    run = {"inputs": None, "inputs_s3_urls": {"ROOT": {"presigned_url": "https://s3/x?sig=1"}},
           "outputs": {"output": "inline"}, "outputs_s3_urls": {"ROOT": {"presigned_url": "https://s3/y"}}}
    assert offloaded_payload_urls(run) == {"inputs": "https://s3/x?sig=1"}
    assert offloaded_payload_urls(seed_run()) == {}


def full_row() -> dict:
    run = dify_trace()[0]
    feedback = [feedback_item("f1", ROOT_ID, "fix", "2024-04-05T02:00:00", score=0.5, comment="c",
                              correction="better", value="v")]
    urls = [{"key": "thumbs", "url": "https://x/t", "expires_at": "2024-04-12T00:00:00"}]
    return run_row(run, rule_id="r", feedback=feedback, feedback_urls=urls, web_url="https://x/run",
                   exported_at=datetime(2024, 4, 5, tzinfo=UTC))


def test_schema_is_identical_for_all_null_and_full_batches():
    sparse = run_row({"id": ROOT_ID}, rule_id=None, feedback=[], feedback_urls=[], web_url=None)
    assert all(v in (None, []) for k, v in sparse.items() if k not in ("run_id", "is_root"))
    empty, nulls, full = to_table("runs", []), to_table("runs", [sparse]), to_table("runs", [full_row()])
    assert nulls.schema.equals(RUNS_SCHEMA) and full.schema.equals(RUNS_SCHEMA) and empty.schema.equals(RUNS_SCHEMA)
    read = [pq.read_table(io.BytesIO(to_parquet_bytes(t))).schema for t in (empty, nulls, full)]
    assert all(schema.equals(read[0]) for schema in read)


def test_parquet_round_trip_keeps_every_value():
    rows = [full_row(), run_row(seed_run(), rule_id=None, feedback=[], feedback_urls=[], web_url=None)]
    data = to_parquet_bytes(to_table("runs", rows))
    back = pq.read_table(io.BytesIO(data))
    assert back.schema.equals(RUNS_SCHEMA)
    assert back.to_pylist() == rows
    assert to_parquet_bytes(to_table("runs", rows)) == data  # deterministic: re-uploads are no-ops


def test_half_emoji_in_inputs_still_exports():
    run = {"id": ROOT_ID, "inputs": {"partial": json.loads('"tok \\ud83d"')}}
    table = to_table("runs", [run_row(run, rule_id=None, feedback=[], feedback_urls=[], web_url=None)])
    assert json.loads(table.column("inputs")[0].as_py()) == {"partial": "tok \ufffd"}


def test_rows_buffered_as_json_give_the_same_table():
    rows = [full_row()]
    buffered = json.loads(json.dumps(rows, default=str))
    assert isinstance(buffered[0]["feedback"][0]["created_at"], str)
    assert to_table("runs", buffered).equals(to_table("runs", rows))


@pytest.mark.parametrize("encode", [
    lambda rows: encode_rows({"runs": rows})[0],                # what the buffer holds now (zstd of msgspec JSON)
    lambda rows: msgspec.json.encode({"runs": rows}, enc_hook=str).decode(),  # what 0.2.0 buffered (text)
    lambda rows: json.dumps({"runs": rows}, default=str),       # what older versions buffered
], ids=["zstd", "older-msgspec", "older-json"])
def test_buffered_rows_read_back_to_the_same_parquet(encode):
    rows = [full_row(), run_row(seed_run(), rule_id=None, feedback=[], feedback_urls=[], web_url=None)]
    back = decode_rows(encode(rows))["runs"]
    assert to_parquet_bytes(to_table("runs", back)) == to_parquet_bytes(to_table("runs", rows))


def test_buffered_rows_are_compressed_and_counted_at_their_json_size():
    per_preset = {"runs": [full_row()] * 4}
    stored, size = encode_rows(per_preset)
    assert stored.startswith(ZSTD_FRAME) and len(stored) < size / 3
    assert size == len(msgspec.json.encode(per_preset))  # what max_bytes_per_commit counts
    assert decode_rows(stored) == json.loads(msgspec.json.encode(per_preset))


def test_buffered_half_emoji_and_naive_times_still_export():
    run = {"id": ROOT_ID, "inputs": {"partial": json.loads('"tok \\ud83d"')}}
    row = run_row(run, rule_id=None, feedback=[], feedback_urls=[], web_url=None)
    back = decode_rows(encode_rows({"runs": [row]})[0])["runs"]  # no UTF-8 form: written by json, read back by it
    assert json.loads(to_table("runs", back).column("inputs")[0].as_py()) == {"partial": "tok \ufffd"}
    naive = {**full_row(), "start_time": "2024-04-05T01:28:54.085646", "end_time": None}  # parsed row by row, as UTC
    assert to_table("runs", [naive]).column("start_time")[0].as_py() == datetime(2024, 4, 5, 1, 28, 54, 85646,
                                                                                tzinfo=UTC)


def test_to_table_rejects_unknown_columns():
    with pytest.raises(ValueError, match="unknown columns"):
        to_table("runs", [{"run_id": ROOT_ID, "runid": "typo"}])
