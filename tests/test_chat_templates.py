"""The training configs render through real chat templates exactly as `load_dataset` returns them.

Two runs go through the real export flow (sandbox LangSmith -> bridge -> sandbox Hub): one plain chat, one that
called a tool. The repo is downloaded and every training config loaded with `datasets` as a user would; each row is
then rendered with the chat templates of Llama 3.1, Qwen 2.5 and Mistral 7B v0.3 (kept in tests/chat_templates/),
in a Jinja environment set up as `transformers` sets up `apply_chat_template`'s, and compared with the expected text.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jinja2
import jinja2.ext
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from conftest import run_jobs
from test_flow_exports import REPO, RULE, config, deliver

TEMPLATES = Path(__file__).parent / "chat_templates"
TOKENS = {"llama-3.1": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
          "qwen-2.5": {"bos_token": "", "eos_token": "<|im_end|>"},
          "mistral-7b-v0.3": {"bos_token": "<s>", "eos_token": "</s>"}}
TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CALL_ID = "call_abc123XYZ789long"
SHORT_ID = "96cf5a50e"  # sha256(CALL_ID)[:9]: Mistral's templates accept only 9 letters and digits


def render(model: str, messages: list[dict], tools: list[dict] | None = None) -> str:
    """What `tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)` renders."""
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    template = env.from_string((TEMPLATES / f"{model}.jinja").read_text())
    return template.render(messages=messages, tools=tools, add_generation_prompt=False, **TOKENS[model])


PLAIN_EXPECTED = {
    "llama-3.1": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
                 "Today Date: 26 Jul 2024\n\nYou are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
                 "What is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nFour.<|eot_id|>",
    "qwen-2.5": "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
                "<|im_start|>assistant\nFour.<|im_end|>\n",
    # Mistral v0.3 puts the system prompt into the last user turn only; here that turn is not the last message.
    "mistral-7b-v0.3": "<s>[INST] What is 2+2?[/INST] Four.</s>",
}
_TOOL_JSON = json.dumps(TOOL)
_PARAMS_JSON = json.dumps(TOOL["function"]["parameters"])
TOOLS_EXPECTED = {
    "llama-3.1": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n"
                 "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
                 "<|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, please respond with a "
                 "JSON for a function call with its proper arguments that best answers the given prompt.\n\n"
                 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its '
                 f'value}}.Do not use variables.\n\n{json.dumps(TOOL, indent=4)}\n\nWeather in Paris?<|eot_id|>'
                 '<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "get_weather", "parameters": '
                 '{"city": "Paris"}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n\n"18 C and sunny"'
                 "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nIt is 18 C and sunny in Paris.<|eot_id|>",
    "qwen-2.5": "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools\n\n"
                "You may call one or more functions to assist with the user query.\n\nYou are provided with function "
                f"signatures within <tools></tools> XML tags:\n<tools>\n{_TOOL_JSON}\n</tools>\n\nFor each function "
                "call, return a json object with function name and arguments within <tool_call></tool_call> XML "
                'tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
                "<|im_end|>\n<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n"
                '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n<|im_start|>user\n'
                "<tool_response>\n18 C and sunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
                "It is 18 C and sunny in Paris.<|im_end|>\n",
    "mistral-7b-v0.3": '<s>[AVAILABLE_TOOLS] [{"type": "function", "function": {"name": "get_weather", '
                       f'"description": "Current weather", "parameters": {_PARAMS_JSON}}}}}][/AVAILABLE_TOOLS]'
                       '[INST] Weather in Paris?[/INST][TOOL_CALLS] [{"name": "get_weather", "arguments": '
                       f'{{"city": "Paris"}}, "id": "{SHORT_ID}"}}]</s>[TOOL_RESULTS] {{"content": 18 C and sunny, '
                       f'"call_id": "{SHORT_ID}"}}[/TOOL_RESULTS] It is 18 C and sunny in Paris.</s>',
}
MODELS = list(TOKENS)


def _run(minute: int, **fields) -> dict:
    start = datetime(2026, 11, 20, 10, tzinfo=timezone.utc) + timedelta(minutes=minute)
    return {"name": "ChatOpenAI", "run_type": "llm", "session_name": "prod", "start_time": start.isoformat(),
            "end_time": (start + timedelta(seconds=1)).isoformat(), **fields}


def plain_run() -> dict:
    return _run(0, inputs={"messages": [{"role": "system", "content": "You are terse."},
                                        {"role": "user", "content": "What is 2+2?"}]},
                outputs={"generations": [[{"text": "4"}]]})


def tool_run() -> dict:
    call = {"id": CALL_ID, "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    return _run(1, inputs={"messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": CALL_ID, "content": "18 C and sunny"}]},
        outputs={"generations": [[{"text": "It is 18 C and sunny in Paris."}]]},
        extra={"invocation_params": {"tools": [TOOL]}})


@pytest.fixture
def loaded(hub, smith, make_bridge, tmp_path):
    """Every training config of an exported repo, as `datasets.load_dataset` gives it."""
    import datasets

    runtime = make_bridge(config())
    plain, tools = smith.add_run(plain_run()), smith.add_run(tool_run())
    for run in (plain, tools):
        smith.add_feedback(run["id"], "user_score", score=1)
    smith.add_feedback(plain["id"], "correction", correction={"output": "Four."})
    smith.add_feedback(tools["id"], "correction", correction={"output": "Paris: 18 C, sunny."})
    deliver(runtime, smith.webhook_payload(RULE, [plain["id"], tools["id"]]))
    run_jobs(runtime)
    out = tmp_path / "download"
    for path in hub.list_files(REPO):
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_bytes(hub.read_file(REPO, path))
    configs = ("sft", "sft_tools", "preference", "preference_tools", "kto", "kto_tools")
    return {name: datasets.load_dataset(str(out), name, split="train", cache_dir=str(tmp_path / "cache"))
            for name in configs}


def test_each_run_lands_in_the_config_for_its_kind(loaded):
    assert {name: ds.num_rows for name, ds in loaded.items()} == {
        "sft": 1, "sft_tools": 1, "preference": 1, "preference_tools": 1, "kto": 1, "kto_tools": 1}
    assert loaded["sft"][0]["messages"] == [{"role": "system", "content": "You are terse."},
                                            {"role": "user", "content": "What is 2+2?"},
                                            {"role": "assistant", "content": "Four."}]
    call, result = loaded["kto_tools"][0]["prompt"][1:]
    assert "tool_calls" not in loaded["kto_tools"][0]["prompt"][0]  # only the keys a message has
    assert call["tool_calls"] == [{"id": SHORT_ID, "type": "function",
                                   "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    assert result == {"role": "tool", "content": "18 C and sunny", "tool_call_id": SHORT_ID}
    assert loaded["sft_tools"][0]["tools"] == [TOOL]


@pytest.mark.parametrize("model", MODELS)
def test_sft_rows_render_as_expected(loaded, model):
    assert render(model, loaded["sft"][0]["messages"]) == PLAIN_EXPECTED[model]
    row = loaded["kto_tools"][0]  # sft_tools ends in the correction; kto keeps the model's own answer
    assert render(model, row["prompt"] + row["completion"], row["tools"]) == TOOLS_EXPECTED[model]


@pytest.mark.parametrize("model", MODELS)
def test_every_training_row_renders(loaded, model):
    """prompt + chosen / rejected / completion of every config renders, and as the same messages written by hand."""
    by_hand = {"Four.": PLAIN_EXPECTED[model]}
    for name, ds in loaded.items():
        for row in ds:
            tools = row.get("tools")
            turns = [row["messages"]] if "messages" in row else \
                [row["prompt"] + row[c] for c in ("chosen", "rejected", "completion") if c in row]
            for messages in turns:
                text = render(model, messages, tools)
                assert text, name
                if messages[-1]["content"] in by_hand and not tools:
                    assert text == by_hand[messages[-1]["content"]]
    assert "Paris: 18 C, sunny." in render(model, loaded["sft_tools"][0]["messages"], loaded["sft_tools"][0]["tools"])


def test_the_old_fixed_struct_breaks_llama():
    """Why plain configs hold role/content only: a message with `tool_calls: None` (what a fixed struct with optional
    tool fields becomes after load_dataset) sends Llama 3.1's template down its tool-call branch."""
    with pytest.raises(TypeError):
        render("llama-3.1", [{"role": "user", "content": "hi", "tool_calls": None, "tool_call_id": None,
                              "name": None}])



# --- a repo exported before 0.2.0, its training shards upgraded in place --------------------------------------

def _pure_runs(prefix: str) -> list[tuple[dict, list[dict]]]:
    """The two runs of this file with ids and feedback as LangSmith gives them (no flow: the shards are built here)."""
    from test_formats_upgrade import feedback

    plain, tools = {**plain_run(), "id": f"{prefix}-plain"}, {**tool_run(), "id": f"{prefix}-tools"}
    return [(plain, feedback(plain["id"], {"output": "Four."})),
            (tools, feedback(tools["id"], {"output": "Paris: 18 C, sunny."}))]


def _write_repo(root: Path, shards: dict[str, bytes]) -> Path:
    from bridge.formats.card import render_card

    for path, data in shards.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    configs = sorted({path.split("/")[0] for path in shards} - {"runs"})
    (root / "README.md").write_text(render_card("acme/old-export", configs, [RULE], "0.2.0"))
    return root


def _load(root: Path, config_name: str, cache: Path):
    import datasets

    return datasets.load_dataset(str(root), config_name, split="train", cache_dir=str(cache))


def _old_repo_shards() -> dict[str, bytes]:
    """What bridge 0.1.0 wrote for the two runs: one shard per preset, five-field messages, tools together."""
    from bridge.formats.training import to_parquet_bytes, to_table
    from test_formats_upgrade import old_shard

    shards = {f"{p}/2026/11/20/old.parquet": old_shard(p, _pure_runs("old")) for p in ("sft", "preference", "kto")}
    return {"runs/2026/11/20/old.parquet": to_parquet_bytes(to_table("runs", [])), **shards}


@pytest.mark.parametrize("new_date", ["2026/11/21", "2026/11/19"])
def test_an_old_shard_next_to_a_new_one_breaks_the_config(tmp_path, new_date):
    """Why old shards are upgraded in place. With the old shard first (the usual order: it is older),
    `load_dataset` reads every shard as the old struct, so the new rows get `tool_calls: None` back and Llama's
    template fails; with a new shard first it refuses the config."""
    import datasets
    from test_formats_upgrade import new_mapping

    from bridge.formats.training import to_parquet_bytes, to_table

    new = to_parquet_bytes(to_table("sft", new_mapping("sft", _pure_runs("new"))["sft"]))
    root = _write_repo(tmp_path / "repo", {**_old_repo_shards(), f"sft/{new_date}/new.parquet": new})
    if new_date < "2026/11/20":
        with pytest.raises(datasets.exceptions.DatasetGenerationError):
            _load(root, "sft", tmp_path / "cache")
        return
    rows = {row["run_id"]: row for row in _load(root, "sft", tmp_path / "cache")}
    assert rows["new-plain"]["messages"][0]["tool_calls"] is None
    with pytest.raises(TypeError):
        render("llama-3.1", rows["new-plain"]["messages"])


@pytest.mark.parametrize("model", MODELS)
def test_upgraded_shards_load_with_new_ones_and_render(tmp_path, model):
    """Old shards upgraded (new shard per config, old one gone) next to shards the new mapping wrote for the same
    runs: every config loads, its shards share one schema, and each upgraded row renders as the new one."""
    import pyarrow.parquet as pq
    from test_formats_upgrade import new_mapping, offered

    from bridge.formats.training import to_parquet_bytes, to_table
    from bridge.formats.upgrade import is_old_format, upgrade_rows

    shards = {}
    for path, data in _old_repo_shards().items():
        preset, table = path.split("/")[0], pq.read_table(io.BytesIO(data))
        if not is_old_format(table.schema):
            shards[path] = data
            continue
        for config, rows in upgrade_rows(preset, table.to_pylist(), offered(_pure_runs("old"))).items():
            shards[path.replace(preset, config, 1)] = to_parquet_bytes(to_table(config, rows))
        for config, rows in new_mapping(preset, _pure_runs("new")).items():
            shards[f"{config}/2026/11/21/new.parquet"] = to_parquet_bytes(to_table(config, rows))
    root = _write_repo(tmp_path / "repo", shards)
    for config in ("sft", "sft_tools", "preference", "preference_tools", "kto", "kto_tools"):
        files = sorted((root / config).rglob("*.parquet"))
        assert len(files) == 2 and len({pq.read_schema(f) for f in files}) == 1, config
        rows = {row["run_id"]: row for row in _load(root, config, tmp_path / "cache")}
        tools = rows.get("old-tools", {}).get("tools")
        for run_id, row in rows.items():
            twin = rows[run_id.replace("old-", "new-")]
            for column in ("messages", "chosen", "rejected", "completion"):
                if column in row:
                    turns = row.get("prompt", []) + row[column]
                    twin_turns = twin.get("prompt", []) + twin[column]
                    assert render(model, turns, tools) == render(model, twin_turns, tools), (config, column)
    kto_tools = _load(root, "kto_tools", tmp_path / "cache")[0]
    assert kto_tools["run_id"] == "old-tools"
    assert render(model, kto_tools["prompt"] + kto_tools["completion"], kto_tools["tools"]) == TOOLS_EXPECTED[model]
    sft = _load(root, "sft", tmp_path / "cache")[0]
    assert sft["run_id"] == "old-plain" and render(model, sft["messages"]) == PLAIN_EXPECTED[model]
