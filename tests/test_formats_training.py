"""Message extraction (bridge.formats.messages) and the sft / preference / kto presets (bridge.formats.training)."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.formats.messages import extract_messages
from bridge.formats.runs import group_feedback
from bridge.formats.training import (
    PRESETS,
    SCHEMAS,
    SKIP_REASONS,
    TRAINING_PRESETS,
    CONFIGS,
    collect_rows,
    config_of,
    preset_rows,
    split_configs,
    to_parquet_bytes,
    to_table,
)

RUN_ID = "11111111-1111-4111-8111-111111111111"


def lc(cls: str, content, **kwargs) -> dict:
    """A LangChain message as LangSmith stores it (`dumpd`: a constructor record)."""
    return {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", cls],
            "kwargs": {"content": content, **kwargs}}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str, **extra) -> dict:
    return {"role": "assistant", "content": text, **extra}


SYSTEM = {"role": "system", "content": "Be terse."}
def nested(value, depth: int):
    for _ in range(depth):
        value = {"output": [value]}
    return value


CALC_CALL = {"id": "call_1", "type": "function", "function": {"name": "calc", "arguments": '{"expr": "2+2"}'}}

EXTRACT_CASES = [
    pytest.param({"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"}]},
                 "user", [SYSTEM, user("2+2?")], id="openai-messages"),
    pytest.param({"messages": [{"role": "user", "content": [{"type": "text", "text": "What is "},
                                                             {"type": "image_url", "image_url": {"url": "x"}},
                                                             {"type": "text", "text": "this?"}]}]},
                 "user", [user("What is this?")], id="openai-content-parts"),
    pytest.param({"messages": [{"role": "developer", "content": "Be terse."}, user("2+2?")]},
                 "user", [SYSTEM, user("2+2?")], id="openai-developer-is-system"),
    pytest.param({"messages": [user("2+2?"), {"role": "assistant", "content": None, "tool_calls": [CALC_CALL]},
                               {"role": "tool", "tool_call_id": "call_1", "name": "calc", "content": "4"}]},
                 "user", [user("2+2?"), assistant("", tool_calls=[CALC_CALL]),
                          {"role": "tool", "content": "4", "name": "calc", "tool_call_id": "call_1"}],
                 id="openai-tool-calls"),
    pytest.param({"messages": [[lc("SystemMessage", "Be terse."), lc("HumanMessage", "2+2?")]]},
                 "user", [SYSTEM, user("2+2?")], id="langchain-constructor-nested-batch"),
    pytest.param({"messages": [{"type": "human", "data": {"content": "hi", "example": False}},
                               {"type": "ai", "data": {"content": "hello"}}]},
                 "user", [user("hi"), assistant("hello")], id="langchain-type-data"),
    pytest.param({"messages": [{"type": "human", "content": "hi", "additional_kwargs": {}},
                               {"type": "AIMessageChunk", "content": "hello"}]},
                 "user", [user("hi"), assistant("hello")], id="langchain-dumped-and-chunk"),
    pytest.param({"messages": [lc("ChatMessage", "hi", role="user")]}, "user", [user("hi")],
                 id="langchain-chat-message"),
    pytest.param({"messages": [["system", "Be terse."], ["human", "2+2?"]]}, "user", [SYSTEM, user("2+2?")],
                 id="langchain-role-pairs"),
    pytest.param({"prompt": "Tell me a joke"}, "user", [user("Tell me a joke")], id="prompt-string"),
    pytest.param({"prompts": ["Human: hi\nAI:"]}, "user", [user("Human: hi\nAI:")], id="llm-prompts-batch"),
    pytest.param({"question": "Why?", "context": "docs"}, "user", [user("Why?")], id="question-string"),
    pytest.param({"input": "and now?", "chat_history": [{"type": "human", "data": {"content": "a"}},
                                                       {"type": "ai", "data": {"content": "b"}}]},
                 "user", [user("a"), assistant("b"), user("and now?")], id="input-with-chat-history"),
    pytest.param({"system": "Be terse.", "messages": [user("2+2?")], "model": "claude"}, "user",
                 [SYSTEM, user("2+2?")], id="anthropic-system-key"),
    pytest.param({"messages": {"role": "user", "content": "hi", "usage_metadata": {"input_tokens": 3}}}, "user",
                 [user("hi")], id="dify-single-message-dict"),
    pytest.param({"choices": {"role": "ai", "content": "Sunny."}}, "assistant", [assistant("Sunny.")],
                 id="dify-choices-dict"),
    pytest.param({"generations": [[{"text": "4", "type": "Generation"}]]}, "assistant", [assistant("4")],
                 id="generations-text"),
    pytest.param({"generations": [[{"text": "", "type": "ChatGeneration", "message": lc(
        "AIMessage", "", tool_calls=[{"name": "calc", "args": {"expr": "2+2"}, "id": "call_1", "type": "tool_call"}],
    )}]]},
                 "assistant", [assistant("", tool_calls=[CALC_CALL])], id="generations-langchain-tool-calls"),
    pytest.param({"generations": [[{"text": "", "message": lc("AIMessage", "", additional_kwargs={
        "function_call": {"name": "calc", "arguments": '{"expr": "2+2"}'}})}]]}, "assistant",
                 [assistant("", tool_calls=[{k: v for k, v in CALC_CALL.items() if k != "id"}])],
                 id="generations-legacy-function-call"),
    pytest.param({"choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"},
                              {"index": 1, "message": {"role": "assistant", "content": "four"}}], "model": "gpt-4o"},
                 "assistant", [assistant("4")], id="openai-choices-first"),
    pytest.param({"role": "assistant", "content": [{"type": "text", "text": "Let me check."},
                                                   {"type": "tool_use", "id": "call_1", "name": "calc",
                                                    "input": {"expr": "2+2"}}]},
                 "assistant", [assistant("Let me check.", tool_calls=[CALC_CALL])], id="anthropic-tool-use"),
    pytest.param({"output": [{"type": "reasoning", "summary": []},
                             {"type": "message", "role": "assistant",
                              "content": [{"type": "output_text", "text": "done"}]}]},
                 "assistant", [assistant("done")], id="openai-responses-output"),
    pytest.param({"output": "4"}, "assistant", [assistant("4")], id="output-string"),
    pytest.param({"output": lc("AIMessage", "4")}, "assistant", [assistant("4")], id="output-ai-message"),
    pytest.param({"content": "4", "type": "ai", "response_metadata": {}}, "assistant", [assistant("4")],
                 id="ai-message-dict"),
    pytest.param("plain correction", "assistant", [assistant("plain correction")], id="bare-string"),
    pytest.param({"documents": [{"page_content": "x"}]}, "assistant", None, id="retriever-output-none"),
    pytest.param({"output": ""}, "assistant", None, id="empty-output-none"),
    pytest.param(None, "user", None, id="none"),
    pytest.param(nested("deep", 30), "user", None, id="too-deep-none"),
]


@pytest.mark.parametrize("value, role, expected", EXTRACT_CASES)
def test_extract_messages(value, role, expected):
    assert extract_messages(value, default_role=role) == expected


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.sampled_from(["human", "ai", "assistant", "user", "tool", "constructor", "messages", "content"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["role", "type", "content", "messages", "data", "kwargs", "id", "lc",
                                       "generations", "text", "output", "tool_calls", "function", "name", "args",
                                       "prompt", "chat_history", "system"]), children, max_size=5),
    max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_extract_messages_never_raises_on_odd_json(value):
    messages = extract_messages(value)
    assert messages is None or all(m["role"] in {"user", "assistant", "system", "tool"} and
                                   isinstance(m["content"], str) for m in messages)


# --- presets on whole runs -------------------------------------------------------------------------------------

def chat_run(outputs=None, *, inputs=None, **fields) -> dict:
    """A LangChain chat-model run as /runs/query returns it."""
    default_inputs = {"messages": [[lc("SystemMessage", "Be terse."), lc("HumanMessage", "2+2?")]]}
    default_outputs = {"generations": [[{"text": "5", "message": lc("AIMessage", "5")}]]}
    return {
        "id": RUN_ID, "name": "ChatOpenAI", "run_type": "llm", "status": "success", "error": None,
        "inputs": default_inputs if inputs is None else inputs,
        "outputs": default_outputs if outputs is None else outputs,
        "extra": {"invocation_params": {"model": "gpt-4o-mini"}}, **fields,
    }


def fb(key="user_score", score=None, correction=None, created="2024-04-05T02:00:00", fid=None, **fields) -> dict:
    return {"id": fid or f"{key}-{created}", "run_id": RUN_ID, "key": key, "score": score, "correction": correction,
            "created_at": created, **fields}


PROMPT = [SYSTEM, user("2+2?")]

PRESET_CASES = [
    # sft
    pytest.param("sft", chat_run(), [fb(score=1)], {"messages": [*PROMPT, assistant("5")]}, id="sft-thumbs-up"),
    pytest.param("sft", chat_run(), [fb(score=True)], {"messages": [*PROMPT, assistant("5")]}, id="sft-bool-true"),
    pytest.param("sft", chat_run(), [fb(score=0)], "no_positive_feedback", id="sft-thumbs-down"),
    pytest.param("sft", chat_run(), [], "no_positive_feedback", id="sft-no-feedback"),
    pytest.param("sft", chat_run(), [fb(score=1), fb("correctness", score=0.2)], "no_positive_feedback",
                 id="sft-any-low-score-blocks"),
    pytest.param("sft", chat_run(), [fb(score=0, correction="4")], {"messages": [*PROMPT, assistant("4")]},
                 id="sft-correction-string"),
    pytest.param("sft", chat_run(), [fb(correction={"output": "4"})], {"messages": [*PROMPT, assistant("4")]},
                 id="sft-correction-output-dict"),
    pytest.param("sft", chat_run(), [fb(correction={"role": "assistant", "content": "4"})],
                 {"messages": [*PROMPT, assistant("4")]}, id="sft-correction-message"),
    pytest.param("sft", chat_run(), [fb(correction=[*PROMPT, assistant("4")])],
                 {"messages": [*PROMPT, assistant("4")]}, id="sft-correction-full-conversation"),
    pytest.param("sft", chat_run(), [fb(correction="3", created="2024-04-05T01:00:00"),
                                     fb("fix", correction="4", created="2024-04-05T03:00:00")],
                 {"messages": [*PROMPT, assistant("4")]}, id="sft-latest-correction-wins"),
    pytest.param("sft", chat_run(), [fb(correction={"label": 3})], "unreadable_correction",
                 id="sft-unreadable-correction"),
    pytest.param("sft", chat_run(status="error", error="Timeout", outputs={}), [fb(score=1)], "run_error",
                 id="sft-failed-run"),
    pytest.param("sft", chat_run(inputs={"documents": []}), [fb(score=1)], "no_messages", id="sft-no-prompt"),
    pytest.param("sft", chat_run(outputs={"generations": [[{"text": ""}]]}), [fb(score=1)], "no_output",
                 id="sft-empty-output"),
    pytest.param("sft", chat_run(
        inputs={"messages": [user("2+2?")], "tools": [{"type": "function", "function": {"name": "calc"}}]},
        outputs={"messages": [user("2+2?"), assistant("", tool_calls=[CALC_CALL]),
                              {"role": "tool", "tool_call_id": "call_1", "content": "4"}, assistant("4")]}),
                 [fb(score=1)],
                 {"messages": [user("2+2?"), assistant("", tool_calls=[CALC_CALL]),
                               {"role": "tool", "content": "4", "tool_call_id": "call_1"}, assistant("4")],
                  "tools": json.dumps([{"type": "function", "function": {"name": "calc"}}])},
                 id="sft-graph-state-output-with-tools"),
    pytest.param("sft", chat_run(inputs={"question": "2+2?"}, outputs={"output": "4"}), [fb(score=1)],
                 {"messages": [user("2+2?"), assistant("4")]}, id="sft-chain-question-output"),
    # preference
    pytest.param("preference", chat_run(), [fb(score=0, correction="4")],
                 {"prompt": PROMPT, "chosen": [assistant("4")], "rejected": [assistant("5")]}, id="pref-correction"),
    pytest.param("preference", chat_run(), [fb(score=1)], "no_correction", id="pref-no-correction"),
    pytest.param("preference", chat_run(), [fb(correction={"output": "5"})], "correction_same_as_output",
                 id="pref-same-as-output"),
    pytest.param("preference", chat_run(status="error", error="boom", outputs={}), [fb(correction="4")],
                 "no_output", id="pref-no-output"),
    # kto
    pytest.param("kto", chat_run(), [fb(score=1)],
                 {"prompt": PROMPT, "completion": [assistant("5")], "label": True}, id="kto-up"),
    pytest.param("kto", chat_run(), [fb(score=False)],
                 {"prompt": PROMPT, "completion": [assistant("5")], "label": False}, id="kto-down-bool"),
    pytest.param("kto", chat_run(), [fb(score=1, fid="a"), fb(score=0, fid="b")], "conflicting_feedback",
                 id="kto-conflict"),
    pytest.param("kto", chat_run(), [fb("quality", score=0.7)], "no_binary_feedback", id="kto-non-binary"),
    pytest.param("kto", chat_run(), [fb(comment="meh")], "no_binary_feedback", id="kto-comment-only"),
]


@pytest.mark.parametrize("preset, run, feedback, expected", PRESET_CASES)
def test_preset_rows(preset, run, feedback, expected):
    rows, reason = preset_rows(preset, run, feedback)
    if isinstance(expected, str):
        assert (rows, reason) == ([], expected)
        assert reason in SKIP_REASONS
    else:
        assert reason is None
        assert rows == [{"tools": None, **expected, "run_id": RUN_ID}]
        to_table(config_of(preset, rows[0]), rows)  # every produced row fits its config's schema


def test_positive_threshold_is_a_parameter():
    assert preset_rows("sft", chat_run(), [fb(score=0.8)])[1] == "no_positive_feedback"  # default 1.0: thumbs up
    assert preset_rows("sft", chat_run(), [fb(score=0.8)], positive_threshold=0.75)[1] is None
    assert preset_rows("sft", chat_run(), [fb("stars", score=3)], positive_threshold=4)[1] == "no_positive_feedback"
    rows, _ = preset_rows("sft", chat_run(), [fb("stars", score=5)], positive_threshold=4)
    assert rows[0]["messages"][-1] == assistant("5")


def test_feedback_keys_limit_what_counts():
    feedback = [fb("thumbs", score=1), fb("conciseness", score=0.1)]
    assert preset_rows("sft", chat_run(), feedback)[1] == "no_positive_feedback"
    rows, reason = preset_rows("sft", chat_run(), feedback, feedback_keys={"thumbs"})
    assert reason is None and rows[0]["run_id"] == RUN_ID


def test_runs_preset_is_not_built_here():
    with pytest.raises(ValueError, match="run_row"):
        preset_rows("runs", chat_run(), [])


def test_skip_reasons_are_counted_per_preset_and_runs_matched_by_id():
    runs = [chat_run(id=f"run-{i}") for i in range(4)]
    runs.append(chat_run(id="run-no-prompt", inputs={"documents": []}))
    feedback = [
        {"id": "f1", "run_id": "run-2", "key": "thumbs", "score": 0, "correction": "4"},
        {"id": "f2", "run_id": "run-no-prompt", "key": "thumbs", "score": 1},
        {"id": "f3", "run_id": "run-0", "key": "thumbs", "score": 1},
    ]
    rows, skipped = collect_rows(PRESETS, runs, group_feedback(reversed(feedback)))
    assert set(rows) == set(TRAINING_PRESETS)
    assert [r["run_id"] for r in rows["sft"]] == ["run-0", "run-2"]
    assert rows["sft"][1]["messages"][-1] == assistant("4")
    assert [r["run_id"] for r in rows["preference"]] == ["run-2"]
    assert [(r["run_id"], r["label"]) for r in rows["kto"]] == [("run-0", True), ("run-2", False)]
    assert skipped == {
        "sft": {"no_positive_feedback": 2, "no_messages": 1},
        "preference": {"no_correction": 4},
        "kto": {"no_binary_feedback": 2, "no_messages": 1},
    }


FULL_ROWS = {
    "sft": {"messages": [SYSTEM, user("2+2?"), assistant("4")], "run_id": RUN_ID},
    "preference": {"prompt": PROMPT, "chosen": [assistant("4")], "rejected": [assistant("5")], "run_id": RUN_ID},
    "kto": {"prompt": PROMPT, "completion": [assistant("5")], "label": False, "run_id": RUN_ID},
}
TOOL_TURNS = [SYSTEM, user("2+2?"), assistant("", tool_calls=[CALC_CALL]),
              {"role": "tool", "content": "4", "tool_call_id": "call_1", "name": "calc"}]
TOOL_ROWS = {
    "sft_tools": {"messages": [*TOOL_TURNS, assistant("4")], "tools": "[]", "run_id": RUN_ID},
    "preference_tools": {"prompt": TOOL_TURNS, "chosen": [assistant("4")], "rejected": [assistant("5")],
                         "tools": None, "run_id": RUN_ID},
    "kto_tools": {"prompt": TOOL_TURNS, "completion": [assistant("5")], "label": True, "tools": None,
                  "run_id": RUN_ID},
}
TRAINING_CONFIGS = [c for c in CONFIGS if c != "runs"]


@pytest.mark.parametrize("config", TRAINING_CONFIGS)
def test_config_schema_identical_for_null_and_full_batches(config):
    full_row = FULL_ROWS.get(config) or TOOL_ROWS[config]
    nulls = to_table(config, [{"run_id": RUN_ID}])
    full = to_table(config, [full_row])
    assert nulls.schema.equals(SCHEMAS[config]) and full.schema.equals(SCHEMAS[config])
    assert to_table(config, []).schema.equals(SCHEMAS[config])


@pytest.mark.parametrize("preset", TRAINING_PRESETS)
def test_plain_rows_round_trip_as_role_and_content(preset):
    back = pq.read_table(io.BytesIO(to_parquet_bytes(to_table(preset, [FULL_ROWS[preset]]))))
    assert back.schema.equals(SCHEMAS[preset])
    assert back.to_pylist()[0] == FULL_ROWS[preset]  # no null tool fields on any message


@pytest.mark.parametrize("config", list(TOOL_ROWS))
def test_tool_rows_keep_only_the_keys_each_message_has(config):
    preset = config.removesuffix("_tools")
    assert config_of(preset, TOOL_ROWS[config]) == config and config_of(preset, FULL_ROWS[preset]) == preset
    back = pq.read_table(io.BytesIO(to_parquet_bytes(to_table(config, [TOOL_ROWS[config]]))))
    assert back.schema.equals(SCHEMAS[config])
    row = back.to_pylist()[0]
    messages = [json.loads(m) for m in row[next(iter(row))]]  # arrow.json values read back as JSON text
    assert messages[0] == {"role": "system", "content": "Be terse."}
    call = messages[2]["tool_calls"][0]
    assert call["function"]["arguments"] == json.loads(CALC_CALL["function"]["arguments"])
    assert call["id"] == messages[3]["tool_call_id"] and len(call["id"]) == 9 and call["id"].isalnum()
    # shaping is idempotent: rows read back and written again give the same table
    again = to_table(config, [{**TOOL_ROWS[config], row_key: row[row_key]} for row_key in [next(iter(row))]])
    assert again.column(0).to_pylist() == back.column(0).to_pylist()


def test_split_configs_keeps_both_configs_of_a_preset():
    split = split_configs("kto", [FULL_ROWS["kto"], TOOL_ROWS["kto_tools"]])
    assert {k: len(v) for k, v in split.items()} == {"kto": 1, "kto_tools": 1}
    assert split_configs("runs", [{"run_id": RUN_ID}]) == {"runs": [{"run_id": RUN_ID}]}


def test_to_table_checks_rows():
    with pytest.raises(ValueError, match="run_id must not be null"):
        to_table("kto", [{"label": True}])
    with pytest.raises(ValueError, match="unknown preset"):
        to_table("dpo", [])


def test_lone_surrogates_from_streamed_tokens_are_replaced():
    half_emoji = json.loads('"ok \\ud83d"')
    table = to_table("kto", [{**FULL_ROWS["kto"], "completion": [assistant(half_emoji)]}])
    assert table.to_pylist()[0]["completion"][0]["content"] == "ok \ufffd"


def test_many_rows_are_split_into_row_groups(monkeypatch):
    import bridge.formats.training as training
    monkeypatch.setattr(training, "_ROW_GROUP_BYTES", 4096)
    table = to_table("kto", [FULL_ROWS["kto"]] * 500)
    meta = pq.ParquetFile(io.BytesIO(to_parquet_bytes(table))).metadata
    assert meta.num_row_groups > 1 and meta.num_rows == 500
