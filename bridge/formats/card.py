"""The exported dataset's README.md (dataset card) and where its parquet shards live.

Layout: `<preset>/<yyyy>/<mm>/<dd>/<shard-id>.parquet` (UTC date of the export batch). Each preset is one config
(`<preset>/**/*.parquet`, split `train`), `runs` the default. The card is deterministic (no timestamps, sorted
inputs) so the writer commits README.md only when something in it really changed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timezone

import pyarrow as pa
import yaml

from bridge.formats.training import CONFIGS, SCHEMAS

_SHARD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SPLIT = "train"

PRESET_PURPOSE = {
    "runs": "one row per exported run, with its feedback: the trace tree, timings, usage, inputs and outputs",
    "sft": "conversations ending in an approved or human-corrected assistant turn (TRL SFTTrainer, `messages`)",
    "preference": "prompt with the human correction as `chosen` and the model's output as `rejected` "
                  "(TRL DPO/ORPO/CPO/reward)",
    "kto": "prompt, the model's completion and a thumbs up/down `label` (TRL KTO/BCO)",
}
_TOOLS_PURPOSE = " Runs with tools: messages keep their tool calls and results, `tools` lists the tool definitions."
PRESET_PURPOSE |= {f"{p}_tools": PRESET_PURPOSE[p] + _TOOLS_PURPOSE for p in ("sft", "preference", "kto")}

PRESET_TAGS = {"runs": ["traces"], "sft": ["sft"], "preference": ["dpo", "preference"], "kto": ["kto"]}
PRESET_TAGS |= {f"{p}_tools": [*PRESET_TAGS[p], "tool-calling"] for p in ("sft", "preference", "kto")}

COLUMN_MEANING = {
    "run_id": "LangSmith run id (UUID); unique per run",
    "trace_id": "id of the root run of the trace this run belongs to",
    "parent_run_id": "id of the run that called this one; null for a root run",
    "dotted_order": "LangSmith ordering key `<time><id>.<time><id>...` from the root to this run; sorts a trace "
                    "in execution order",
    "is_root": "true for the root run of a trace",
    "session_id": "LangSmith tracing project id",
    "rule_id": "LangSmith automation rule the export belongs to",
    "name": "run name (chain, tool, model or Dify trace kind)",
    "run_type": "llm, chain, tool, retriever, embedding, prompt or parser",
    "status": "success, error or pending",
    "error": "error message of a failed run",
    "start_time": "when the run started (UTC)",
    "end_time": "when the run ended (UTC)",
    "latency_ms": "end_time - start_time in milliseconds",
    "inputs": "run inputs as a JSON string",
    "outputs": "run outputs as a JSON string",
    "metadata": "run metadata (`extra.metadata`) as a JSON string",
    "tags": "run tags",
    "model": "model name (`ls_model_name`, invocation params or provider metadata)",
    "prompt_tokens": "input tokens",
    "completion_tokens": "output tokens",
    "total_tokens": "input + output tokens",
    "total_cost": "cost LangSmith computed for the run, in USD",
    "feedback": "feedback on the run: key, score, value, comment, correction (JSON string), source, id, created_at",
    "feedback_urls": "links to the bridge's feedback page for the run (key, url, expires_at): it shows the run and "
                     "takes a rating or a correction with a button; opening the link records nothing",
    "run_url": "link to the run in LangSmith",
    "exported_at": "when the bridge first wrote the row (UTC)",
    "updated_at": "when the bridge last rewrote the row because the run's feedback changed (UTC; empty: never)",
    "messages": "the conversation (messages)",
    "tools": "tool definitions offered to the model (OpenAI form): pass them as `tools=` to the chat template",
    "prompt": "the conversation up to the assistant's turn (messages)",
    "chosen": "the human correction (messages)",
    "rejected": "the model's original output (messages)",
    "completion": "the model's output (messages)",
    "label": "true for a thumbs up, false for a thumbs down",
}

_JSON_COLUMNS = {"inputs", "outputs", "metadata"}


def shard_path(preset: str, when: datetime, shard_id: str) -> str:
    """`<preset>/<yyyy>/<mm>/<dd>/<shard-id>.parquet`, dated in UTC (a naive `when` is UTC)."""
    if preset not in CONFIGS:
        raise ValueError(f"unknown preset {preset!r}: expected one of {', '.join(CONFIGS)}")
    if not _SHARD_ID.match(shard_id):
        raise ValueError(f"shard id {shard_id!r} must be letters, digits, '.', '_' or '-' (no path separators)")
    when = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
    return f"{preset}/{when:%Y/%m/%d}/{shard_id}.parquet"


def data_glob(preset: str) -> str:
    return f"{preset}/**/*.parquet"


def _ordered_presets(presets: Iterable[str]) -> list[str]:
    wanted = {"runs", *presets}
    unknown = wanted - set(CONFIGS)
    if unknown:
        raise ValueError(f"unknown presets {sorted(unknown)}: expected {', '.join(CONFIGS)}")
    return [p for p in CONFIGS if p in wanted]


def _header(repo_id: str, presets: list[str], license: str | None) -> str:
    configs = []
    for preset in presets:
        config = {"config_name": preset, "data_files": [{"split": SPLIT, "path": data_glob(preset)}]}
        if preset == "runs":
            config["default"] = True
        configs.append(config)
    tags = ["langsmith", "hub-langsmith-bridge", *[t for p in presets for t in PRESET_TAGS[p]]]
    header: dict = {"pretty_name": f"{repo_id.split('/')[-1]} (LangSmith export)"}
    if license:
        header["license"] = license
    if any(p != "runs" for p in presets):
        header["task_categories"] = ["text-generation"]
    header["tags"] = tags
    header["configs"] = configs
    return yaml.safe_dump(header, sort_keys=False, allow_unicode=True, default_flow_style=False)


def _type_name(field: pa.Field) -> str:
    kind = field.type
    if field.name in _JSON_COLUMNS:
        return "string (JSON)"
    if pa.types.is_timestamp(kind):
        return "timestamp (UTC)"
    if pa.types.is_list(kind):
        item = kind.value_type
        if pa.types.is_struct(item) and "role" in item.names:
            return "list of messages (`role`, `content`)"
        if isinstance(item, pa.JsonType):
            return "list of JSON objects" if field.name == "tools" else \
                "list of messages (JSON objects: `role`, `content`, and `tool_calls`, `tool_call_id`, `name` where set)"
        return "list of struct" if pa.types.is_struct(item) else f"list of {item}"
    return {"bool": "bool", "double": "float64"}.get(str(kind), str(kind))


def _meaning(preset: str, column: str) -> str:
    if column == "run_id" and preset != "runs":
        return "LangSmith run the row was built from (its details are in the `runs` config)"
    return COLUMN_MEANING.get(column, "")


def _column_table(preset: str) -> str:
    lines = ["| column | type | meaning |", "|---|---|---|"]
    for field in SCHEMAS[preset]:
        lines.append(f"| `{field.name}` | {_type_name(field)} | {_meaning(preset, field.name)} |")
    return "\n".join(lines)


def _load_snippet(repo_id: str, presets: list[str]) -> str:
    lines = ["```python", "import json", "from datasets import load_dataset", ""]
    for preset in presets:
        lines.append(f'{preset} = load_dataset("{repo_id}", "{preset}", split="{SPLIT}")')
    lines += ["", 'inputs = json.loads(runs[0]["inputs"])  # free-form fields are JSON strings', "```"]
    return "\n".join(lines)


def render_card(repo_id: str, presets: Iterable[str], rule_ids: Iterable[str], bridge_version: str, *,
                positive_threshold: float | None = None, redaction: Iterable[str] = (),
                license: str | None = None) -> str:
    """README.md for an exported dataset. Same arguments → same text.

    `presets` should be those with at least one shard in the repo (a config whose glob matches no file makes the
    viewer and `load_dataset` fail for it); `runs` is always included. `redaction` names the rules applied
    (e.g. `["emails", "secrets"]`; pass "custom" rather than private patterns).
    """
    ordered = _ordered_presets(presets)
    rules = sorted({str(r) for r in rule_ids if r})
    parts = [
        f"---\n{_header(repo_id, ordered, license)}---",
        f"# {repo_id}",
        "Runs and feedback exported from [LangSmith](https://smith.langchain.com) by hub-langsmith-bridge. "
        "Rows are appended in parquet shards as LangSmith automation rules send runs. When a run's feedback changes "
        "later, the shard holding it is replaced by one with its updated rows (`updated_at` says when), so each run "
        "appears once per configuration with its current feedback.",
        "## Configurations",
        "\n".join(["| config | rows |", "|---|---|"] + [f"| `{p}` | {PRESET_PURPOSE[p]} |" for p in ordered]),
        "## Loading",
        _load_snippet(repo_id, ordered),
        "Training configs follow TRL's conversational formats; every row keeps the `run_id` it came from (TRL "
        "ignores extra columns). Rows render through chat templates as loaded: runs without tools hold plain "
        "`role`/`content` messages; runs with tools are in the `*_tools` configs, whose messages carry only the "
        "keys they have (tool call arguments as objects, call ids of 9 letters and digits) and need `datasets` "
        "4.7 or later (its `Json` feature type). Apply a template with "
        "`tokenizer.apply_chat_template(row[\"messages\"], tools=row.get(\"tools\"))`.",
        "## Columns",
    ]
    for preset in ordered:
        parts += [f"### `{preset}`", _column_table(preset)]
    parts += [
        "## Rebuilding a trace",
        "Select the rows of one `trace_id` and sort them by `dotted_order`: each run's parent is `parent_run_id` "
        "(null for the root, where `is_root` is true). A trace may be incomplete when the automation rule only "
        "matched some of its runs.",
        "## Provenance",
        "\n".join(_provenance(rules, bridge_version, positive_threshold, sorted(set(redaction)), ordered)),
    ]
    return "\n\n".join(parts) + "\n"


def _provenance(rules: list[str], version: str, threshold: float | None, redaction: list[str],
                presets: list[str]) -> list[str]:
    listed = ", ".join(f"`{r}`" for r in rules) if rules else "none recorded"
    lines = [f"- Exported by hub-langsmith-bridge {version}.",
             f"- LangSmith automation rules: {listed}.",
             "- Shards: `<config>/<yyyy>/<mm>/<dd>/<shard-id>.parquet` (UTC export date)."]
    if threshold is not None and any(p in presets for p in ("sft", "kto")):
        lines.append(f"- Positive feedback: every feedback score at least {threshold:g} (sft); kto labels are "
                     f"score >= {threshold:g}.")
    lines.append("- Redaction before export: " + (", ".join(redaction) if redaction else "none") + ".")
    return lines
