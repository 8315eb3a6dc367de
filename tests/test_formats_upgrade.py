"""Upgrading training shards written before the chat-template message shapes (bridge.formats.upgrade).

The old mapping is rebuilt here from its shape, not from the module under test: until the revert of 31f4570 the
row builders were the ones `preset_rows` still uses (only `preference`/`kto` rows had no `tools` key), and
`to_table` wrote them with the five-field message struct below (copied from that version's training.py). Each run
goes through that old path into parquet and back, then `upgrade_rows`, and must equal what the new mapping builds
from the same run, down to the parquet bytes.
"""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.formats.training import (
    SCHEMAS,
    TRAINING_PRESETS,
    preset_rows,
    shape_row,
    split_configs,
    to_parquet_bytes,
    to_table,
)
from bridge.formats.upgrade import is_old_format, upgrade_rows

RUN_ID = "22222222-2222-4222-8222-222222222222"

# --- the old format (bridge 0.1.0), as it was -------------------------------------------------------------------

OLD_TOOL_CALL = pa.struct([("id", pa.string()), ("type", pa.string()),
                           ("function", pa.struct([("name", pa.string()), ("arguments", pa.string())]))])
OLD_MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string()), ("name", pa.string()),
                                   ("tool_call_id", pa.string()), ("tool_calls", pa.list_(OLD_TOOL_CALL))]))
_OLD_RUN_ID = pa.field("run_id", pa.string(), nullable=False)
OLD_SCHEMAS = {
    "sft": pa.schema([pa.field("messages", OLD_MESSAGES), pa.field("tools", pa.string()), _OLD_RUN_ID]),
    "preference": pa.schema([pa.field("prompt", OLD_MESSAGES), pa.field("chosen", OLD_MESSAGES),
                             pa.field("rejected", OLD_MESSAGES), _OLD_RUN_ID]),
    "kto": pa.schema([pa.field("prompt", OLD_MESSAGES), pa.field("completion", OLD_MESSAGES),
                      pa.field("label", pa.bool_()), _OLD_RUN_ID]),
}


def old_shard(preset: str, runs: list[tuple[dict, list[dict]]]) -> bytes:
    """The parquet shard the old bridge wrote for these runs (each with its feedback)."""
    rows = [row for run, feedback in runs for row in preset_rows(preset, run, feedback)[0]]
    if preset != "sft":  # the old preference / kto rows had no tools column
        rows = [{k: v for k, v in row.items() if k != "tools"} for row in rows]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=OLD_SCHEMAS[preset]), buffer, compression="zstd")
    return buffer.getvalue()


def read(shard: bytes) -> tuple[pa.Schema, list[dict]]:
    table = pq.read_table(io.BytesIO(shard))
    return table.schema, table.to_pylist()


def new_mapping(preset: str, runs: list[tuple[dict, list[dict]]]) -> dict[str, list[dict]]:
    """What today's export builds for the same runs, per config, in the stored form."""
    rows = [row for run, feedback in runs for row in preset_rows(preset, run, feedback)[0]]
    return {config: [shape_row(config, row) for row in found]
            for config, found in split_configs(preset, rows).items() if found}


# --- runs -------------------------------------------------------------------------------------------------------

TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
CALL = {"id": "call_abc123XYZ789long", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


def run(inputs: dict, outputs: dict, run_id: str = RUN_ID, tools: list | None = None) -> dict:
    extra = {"invocation_params": {"model": "gpt-4o-mini", **({"tools": tools} if tools else {})}}
    return {"id": run_id, "name": "ChatOpenAI", "run_type": "llm", "status": "success", "inputs": inputs,
            "outputs": outputs, "extra": extra}


def feedback(run_id: str = RUN_ID, correction: object = "Corrected.") -> list[dict]:
    """A thumbs up and a correction: the run is in sft, preference and kto."""
    return [{"id": "f1", "run_id": run_id, "key": "user_score", "score": 1, "created_at": "2026-11-20T10:00:00"},
            {"id": "f2", "run_id": run_id, "key": "correction", "correction": correction,
             "created_at": "2026-11-20T10:01:00"}]


def lc(cls: str, content, **kwargs) -> dict:
    return {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", cls],
            "kwargs": {"content": content, **kwargs}}


PLAIN = run({"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "2+2?"}]},
            {"generations": [[{"text": "4"}]]})
NAMED = run({"messages": [{"role": "user", "name": "alice", "content": "Hi, I am Alice."}]},
            {"output": "Hello Alice."})
OPENAI_TOOLS = run({"messages": [{"role": "user", "content": "Weather in Paris?"},
                                 {"role": "assistant", "content": None, "tool_calls": [CALL]},
                                 {"role": "tool", "tool_call_id": CALL["id"], "name": "get_weather",
                                  "content": "18 C"}]},
                   {"generations": [[{"text": "18 C in Paris."}]]}, tools=[TOOL])
LANGCHAIN_CALL_NO_OFFER = run({"messages": [[lc("HumanMessage", "Weather in Paris?")]]},
                              {"generations": [[{"text": "", "message": lc("AIMessage", "", tool_calls=[
                                  {"name": "get_weather", "args": {"city": "Paris"}, "id": "abcDEF123"}])}]]})
ANTHROPIC_TOOL_USE = run({"messages": [{"role": "user", "content": "Weather?"}]},
                         {"content": [{"type": "text", "text": "Checking."},
                                      {"type": "tool_use", "id": "toolu_01A", "name": "get_weather",
                                       "input": {"city": "Paris"}}], "role": "assistant"})
OFFERED_ONLY = run({"messages": [{"role": "user", "content": "Just say hi."}]}, {"output": "Hi."}, tools=[TOOL])

CASES = {"plain": PLAIN, "named": NAMED, "openai-tools": OPENAI_TOOLS, "langchain-call": LANGCHAIN_CALL_NO_OFFER,
         "anthropic-tool-use": ANTHROPIC_TOOL_USE}


@pytest.mark.parametrize("preset", TRAINING_PRESETS)
@pytest.mark.parametrize("case", list(CASES))
def test_upgrade_equals_the_new_mapping(preset, case):
    runs = [(CASES[case], feedback())]
    schema, old_rows = read(old_shard(preset, runs))
    assert is_old_format(schema)
    upgraded = upgrade_rows(preset, old_rows, tools_by_run=offered(runs))
    assert upgraded == new_mapping(preset, runs) and upgraded
    for config, rows in upgraded.items():
        expected = to_parquet_bytes(to_table(config, new_mapping(preset, runs)[config]))
        assert to_parquet_bytes(to_table(config, rows)) == expected  # the same shard, byte for byte


def offered(runs: list[tuple[dict, list[dict]]]) -> dict:
    """Run id -> the tools it was offered (what an old sft row or LangSmith still knows)."""
    params = {r["id"]: (r.get("extra") or {}).get("invocation_params") or {} for r, _ in runs}
    return {run_id: p["tools"] for run_id, p in params.items() if p.get("tools")}


@pytest.mark.parametrize("preset", ["preference", "kto"])
def test_without_the_tool_list_only_the_definitions_are_missing(preset):
    """A run with tool calls still lands in the tool config; its old preference / kto row just has no `tools`."""
    runs = [(OPENAI_TOOLS, feedback())]
    upgraded = upgrade_rows(preset, read(old_shard(preset, runs))[1])
    expected = new_mapping(preset, runs)
    assert list(upgraded) == list(expected) == [f"{preset}_tools"]
    assert upgraded[f"{preset}_tools"][0] == {**expected[f"{preset}_tools"][0], "tools": []}


def test_runs_with_and_without_tools_split_in_order():
    runs = [(run(PLAIN["inputs"], PLAIN["outputs"], run_id=f"plain-{i}"), feedback(f"plain-{i}")) for i in range(3)]
    runs.insert(1, (run(OPENAI_TOOLS["inputs"], OPENAI_TOOLS["outputs"], "tools-1", [TOOL]), feedback("tools-1")))
    for preset in TRAINING_PRESETS:
        upgraded = upgrade_rows(preset, read(old_shard(preset, runs))[1], tools_by_run=offered(runs))
        assert {c: [r["run_id"] for r in rows] for c, rows in upgraded.items()} == {
            preset: ["plain-0", "plain-1", "plain-2"], f"{preset}_tools": ["tools-1"]}
        assert upgraded == new_mapping(preset, runs)


def test_tool_rows_hold_template_ready_messages():
    rows = upgrade_rows("sft", read(old_shard("sft", [(OPENAI_TOOLS, feedback())]))[1])["sft_tools"]
    messages = [json.loads(m) for m in rows[0]["messages"]]
    assert messages[0] == {"role": "user", "content": "Weather in Paris?"}  # only the keys it has
    call, result = messages[1]["tool_calls"][0], messages[2]
    assert call["function"]["arguments"] == {"city": "Paris"} and call["id"] == result["tool_call_id"]
    assert len(call["id"]) == 9 and call["id"].isalnum()
    assert [json.loads(t) for t in rows[0]["tools"]] == [TOOL]


@pytest.mark.parametrize("preset", ["preference", "kto"])
def test_offered_tools_need_the_runs_tool_list_where_the_old_shard_had_none(preset):
    """Old preference / kto shards lost the tool definitions: a run offered tools but calling none looks plain."""
    runs = [(OFFERED_ONLY, feedback())]
    old_rows = read(old_shard(preset, runs))[1]
    assert list(upgrade_rows(preset, old_rows)) == [preset]  # renders and trains, without the definitions
    sft_row = read(old_shard("sft", runs))[1][0]  # the old sft row still has them
    assert upgrade_rows(preset, old_rows, tools_by_run={RUN_ID: sft_row["tools"]}) == new_mapping(preset, runs)
    assert upgrade_rows(preset, old_rows, tools_by_run={RUN_ID: [TOOL]}) == new_mapping(preset, runs)
    assert upgrade_rows("sft", [sft_row]) == new_mapping("sft", runs)  # sft kept them


@pytest.mark.parametrize("preset", TRAINING_PRESETS)
def test_upgrading_twice_changes_nothing(preset):
    runs = [(PLAIN, feedback()), (run(OPENAI_TOOLS["inputs"], OPENAI_TOOLS["outputs"], "t", [TOOL]), feedback("t"))]
    once = upgrade_rows(preset, read(old_shard(preset, runs))[1])
    twice = {config: rows for found in once.values() for config, rows in upgrade_rows(preset, found).items()}
    assert twice == once
    # and a shard written from upgraded rows reads back as new: nothing left to upgrade
    for config, rows in once.items():
        schema, back = read(to_parquet_bytes(to_table(config, rows)))
        assert not is_old_format(schema)
        assert upgrade_rows(preset, back) == {config: rows}


def test_is_old_format_tells_old_training_shards_from_everything_else():
    for preset in TRAINING_PRESETS:
        assert is_old_format(OLD_SCHEMAS[preset])
    assert not any(is_old_format(schema) for schema in SCHEMAS.values())  # runs (its feedback list has no role)
    assert is_old_format(read(old_shard("kto", []))[0])  # an empty old shard is still old
    assert not is_old_format(pa.schema([pa.field("messages", pa.list_(pa.struct([("name", pa.string())])))]))


def test_only_training_presets_upgrade():
    with pytest.raises(ValueError, match="only training shards"):
        upgrade_rows("runs", [])
    assert upgrade_rows("kto", []) == {}


# --- any conversation: old path + upgrade == new mapping --------------------------------------------------------

_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_ARGUMENTS = st.one_of(st.dictionaries(st.sampled_from(["city", "n", "q"]), st.integers() | _TEXT, max_size=2)
                       .map(json.dumps), _TEXT)
_CALL_ID = st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9]{9}", fullmatch=True), _TEXT.filter(bool))


@st.composite
def conversations(draw) -> dict:
    """An OpenAI-style run: user turns, maybe named, maybe tool calls and their results, maybe offered tools."""
    messages = []
    for _ in range(draw(st.integers(1, 3))):
        user = {"role": "user", "content": draw(_TEXT)}
        if draw(st.booleans()):
            user["name"] = draw(st.sampled_from(["alice", "bob"]))
        messages.append(user)
        if draw(st.booleans()):
            call_id = draw(_CALL_ID)
            call = {"type": "function", "function": {"name": "f", "arguments": draw(_ARGUMENTS)},
                    **({"id": call_id} if call_id else {})}
            messages.append({"role": "assistant", "content": draw(_TEXT), "tool_calls": [call]})
            messages.append({"role": "tool", "content": draw(_TEXT), **({"tool_call_id": call_id} if call_id else {})})
    tools = [TOOL] if draw(st.booleans()) else None
    return run({"messages": messages}, {"output": draw(_TEXT.filter(str.strip))}, tools=tools)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations(), st.sampled_from(TRAINING_PRESETS), _TEXT.filter(str.strip))
def test_any_conversation_upgrades_to_the_new_mapping(conversation, preset, correction):
    runs = [(conversation, feedback(correction=correction))]
    old_rows = read(old_shard(preset, runs))[1]
    assert upgrade_rows(preset, old_rows, tools_by_run=offered(runs) or None) == new_mapping(preset, runs)
