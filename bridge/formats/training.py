"""Training presets built from LangSmith runs + feedback, in TRL's conversational formats, and their Arrow tables.

- `sft`:        `{"messages"}` (+ `tools` with tools): the run's conversation plus an assistant turn, which is the human
                correction when there is one, else the model's own output when every considered feedback score is
                at least `positive_threshold`.
- `preference`: `{"prompt", "chosen", "rejected"}`: runs with a correction (chosen = correction, rejected = output).
- `kto`:        `{"prompt", "completion", "label"}`: runs with thumbs-style feedback (score 0/1 or a boolean).

Every training row also keeps `run_id` as a column: exactly-once bookkeeping needs it, it keeps provenance, and TRL
ignores columns it does not use. A run a preset cannot use is left out of that preset with a reason
(`SKIP_REASONS`); it is still in `runs`.

Each preset is written as two configs, so that every row renders through real chat templates (Llama 3.1, Qwen 2.5,
Mistral) exactly as `load_dataset` returns it:

- `sft`, `preference`, `kto`: runs without tools. Messages are a struct of `role` and `content` only (text; parts
  joined, non-text parts such as images dropped). A fixed struct with optional tool fields would not do: `datasets`
  gives every message every field, `tool_calls: None` included, and Llama 3.1's template takes its tool-call branch
  on `'tool_calls' in message` and fails on `None|length`.
- `sft_tools`, `preference_tools`, `kto_tools`: runs that were offered tools or whose conversation holds tool calls or
  tool results. Each message is one JSON object (`arrow.json`, read by `datasets` as `Json()`) with only the keys it
  has: `tool_calls` as `[{id, type: "function", function: {name, arguments}}]` with `arguments` an object (templates
  `tojson` it), `tool_call_id` on tool results. Call ids are shortened to 9 letters and digits (a hash of
  LangSmith's id, the same in the call and its result) because Mistral's template accepts no other. `tools` is the
  list of tool definitions in OpenAI form, to pass as `tools=` to `apply_chat_template`.

`preset_rows` gives rows in one full form (messages `{role, content, name, tool_call_id, tool_calls}`); `config_of`
says which config a row belongs to and `to_table` shapes it for that config (`shape_row`). Shards written before
0.2.0 (one five-field message struct, tools in the same config) are rewritten into these configs by `upgrade.py`.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bridge.formats.messages import completion_of, extract_messages, same_messages
from bridge.formats.runs import (
    RUNS_SCHEMA,
    as_dict,
    feedback_score,
    parse_time,
    run_id_of,
    sorted_feedback,
    to_json,
)

PRESETS = ("runs", "sft", "preference", "kto")
TRAINING_PRESETS = ("sft", "preference", "kto")

SKIP_REASONS = (
    "no_positive_feedback",       # sft: no correction, and no feedback score, or one below the threshold
    "no_correction",              # preference: nobody corrected the output
    "no_binary_feedback",         # kto: no 0/1 or boolean feedback score
    "conflicting_feedback",       # kto: both thumbs up and thumbs down
    "no_messages",                # no conversation could be read from the inputs
    "no_output",                  # no assistant reply could be read from the outputs
    "unreadable_correction",      # a correction exists but holds no assistant text or tool call
    "correction_same_as_output",  # preference: chosen and rejected would be identical
    "run_error",                  # sft: the run failed and no correction replaces its output
)

PLAIN_MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
PLAIN_MESSAGES = pa.list_(PLAIN_MESSAGE_TYPE)
# One JSON object per message (Arrow's canonical `arrow.json` extension type, which `datasets` reads as `Json()`):
# each message keeps exactly the keys it has, so `'tool_calls' in message` is true only where there are calls.
JSON_ITEMS = pa.list_(pa.json_())
_RUN_ID = pa.field("run_id", pa.string(), nullable=False)
_TOOLS = pa.field("tools", JSON_ITEMS)
_COLUMNS = {"sft": ("messages",), "preference": ("prompt", "chosen", "rejected"), "kto": ("prompt", "completion")}
_EXTRA = {"kto": [pa.field("label", pa.bool_())]}
TOOL_CONFIGS = {preset: f"{preset}_tools" for preset in TRAINING_PRESETS}
# Every config a repo can have, in card order: each training preset splits into runs without tools and with them.
CONFIGS = ("runs", *[c for p in TRAINING_PRESETS for c in (p, TOOL_CONFIGS[p])])


def _training_schema(preset: str, tools: bool) -> pa.Schema:
    kind = JSON_ITEMS if tools else PLAIN_MESSAGES
    fields = [pa.field(name, kind) for name in _COLUMNS[preset]] + _EXTRA.get(preset, [])
    return pa.schema([*fields, *([_TOOLS] if tools else []), _RUN_ID])


SCHEMAS: dict[str, pa.Schema] = {"runs": RUNS_SCHEMA}
for _preset in TRAINING_PRESETS:
    SCHEMAS[_preset] = _training_schema(_preset, tools=False)
    SCHEMAS[TOOL_CONFIGS[_preset]] = _training_schema(_preset, tools=True)
_PRESET_OF = {**{p: p for p in TRAINING_PRESETS}, **{c: p for p, c in TOOL_CONFIGS.items()}}


def _considered(feedback: Iterable[dict], keys: Collection[str] | None) -> list[dict]:
    items = sorted_feedback(feedback)
    return items if keys is None else [f for f in items if f.get("key") in keys]


def _latest_correction(feedback: list[dict]) -> Any:
    corrections = [f["correction"] for f in feedback if f.get("correction") not in (None, "", {}, [])]
    return corrections[-1] if corrections else None


def _is_positive(feedback: list[dict], threshold: float) -> bool:
    scores = [s for s in (feedback_score(f) for f in feedback) if s is not None]
    return bool(scores) and all(s >= threshold for s in scores)


def _binary_scores(feedback: list[dict]) -> list[float]:
    return [s for s in (feedback_score(f) for f in feedback) if s in (0.0, 1.0)]


def _failed(run: Mapping) -> bool:
    return bool(run.get("error")) or run.get("status") == "error"


def _tools(run: Mapping) -> str | None:
    extra, inputs = run.get("extra"), run.get("inputs")
    params = extra.get("invocation_params") if isinstance(extra, Mapping) else None
    for source in (params, inputs):
        if isinstance(source, Mapping):
            tools = source.get("tools") or source.get("functions")
            if isinstance(tools, list) and tools:
                return to_json(tools)
    return None


class _Run:
    """One run's prompt, output and correction, each read at most once (shared by every preset of the run)."""

    def __init__(self, run: Mapping, feedback: list[dict]) -> None:
        self.run, self.feedback = run, feedback
        self.run_id = run_id_of(run)
        self.prompt = extract_messages(run.get("inputs"), default_role="user")
        self._read: dict[str, list[dict] | None] = {}

    def output(self) -> list[dict] | None:
        if "output" not in self._read:
            outputs = extract_messages(self.run.get("outputs"), default_role="assistant")
            self._read["output"] = completion_of(self.prompt or [], outputs)
        return self._read["output"]

    def correction(self) -> list[dict] | None:
        if "correction" not in self._read:
            corrected = extract_messages(_latest_correction(self.feedback), default_role="assistant")
            self._read["correction"] = completion_of(self.prompt or [], corrected)
        return self._read["correction"]


def _sft(item: _Run, threshold: float) -> tuple[dict | None, str | None]:
    has_correction = _latest_correction(item.feedback) is not None
    if not has_correction and not _is_positive(item.feedback, threshold):
        return None, "no_positive_feedback"
    if not item.prompt:
        return None, "no_messages"
    if has_correction:
        reply = item.correction()
        if not reply:
            return None, "unreadable_correction"
    else:
        if _failed(item.run):
            return None, "run_error"
        reply = item.output()
        if not reply:
            return None, "no_output"
    return {"messages": [*item.prompt, *reply], "tools": _tools(item.run), "run_id": item.run_id}, None


def _preference(item: _Run, threshold: float) -> tuple[dict | None, str | None]:
    if _latest_correction(item.feedback) is None:
        return None, "no_correction"
    if not item.prompt:
        return None, "no_messages"
    chosen = item.correction()
    if not chosen:
        return None, "unreadable_correction"
    rejected = item.output()
    if not rejected:
        return None, "no_output"
    if same_messages(chosen, rejected):
        return None, "correction_same_as_output"
    return {"prompt": item.prompt, "chosen": chosen, "rejected": rejected, "tools": _tools(item.run),
            "run_id": item.run_id}, None


def _kto(item: _Run, threshold: float) -> tuple[dict | None, str | None]:
    labels = {score >= threshold for score in _binary_scores(item.feedback)}
    if not labels:
        return None, "no_binary_feedback"
    if len(labels) > 1:
        return None, "conflicting_feedback"
    if not item.prompt:
        return None, "no_messages"
    completion = item.output()
    if not completion:
        return None, "no_output"
    return {"prompt": item.prompt, "completion": completion, "label": labels.pop(), "tools": _tools(item.run),
            "run_id": item.run_id}, None


_BUILDERS = {"sft": _sft, "preference": _preference, "kto": _kto}


def preset_rows(preset: str, run: Any, feedback: list[dict], *, positive_threshold: float = 1.0,
                feedback_keys: Collection[str] | None = None) -> tuple[list[dict], str | None]:
    """Rows of one training preset for one run: `(rows, None)` or `([], reason)` with a reason from SKIP_REASONS.

    `feedback` is this run's feedback (`group_feedback(...)[run_id]`). `feedback_keys` limits which feedback keys
    count as scores (default: all, so an automatic evaluator's low score also blocks sft). The `runs` preset is
    built with `runs.run_row` (it needs rule id, links and feedback URLs), not here.
    """
    return presets_rows([preset], run, feedback, positive_threshold=positive_threshold,
                        feedback_keys=feedback_keys)[preset]


def presets_rows(presets: Iterable[str], run: Any, feedback: list[dict], *, positive_threshold: float = 1.0,
                 feedback_keys: Collection[str] | None = None) -> dict[str, tuple[list[dict], str | None]]:
    """`preset_rows` of several training presets for one run, its messages read once: preset -> (rows, reason)."""
    builders = {preset: _builder(preset) for preset in presets}
    if not builders:
        return {}
    item = _Run(as_dict(run), _considered(feedback, feedback_keys))
    out = {}
    for preset, builder in builders.items():
        row, reason = builder(item, positive_threshold)
        out[preset] = ([row] if row else []), reason
    return out


def _builder(preset: str) -> Any:
    builder = _BUILDERS.get(preset)
    if builder is None:
        raise ValueError(f"unknown training preset {preset!r}: expected one of {', '.join(TRAINING_PRESETS)}"
                         + (" (the runs preset is built with bridge.formats.runs.run_row)" if preset == "runs" else ""))
    return builder


def collect_rows(presets: Iterable[str], runs: Iterable[Any], feedback_by_run: Mapping[str, list[dict]], *,
                 positive_threshold: float = 1.0, feedback_keys: Collection[str] | None = None,
                 ) -> tuple[dict[str, list[dict]], dict[str, dict[str, int]]]:
    """Training rows for a batch, per preset, and skip reasons counted per preset: `{"sft": {"no_output": 2}}`.

    `runs` in `presets` is ignored here (see `run_row`).
    """
    wanted = [p for p in presets if p != "runs"]
    rows: dict[str, list[dict]] = {p: [] for p in wanted}
    skipped: dict[str, dict[str, int]] = {}
    for run in runs:
        run = as_dict(run)
        feedback = feedback_by_run.get(run_id_of(run), [])
        built = presets_rows(wanted, run, feedback, positive_threshold=positive_threshold,
                             feedback_keys=feedback_keys)
        for preset, (found, reason) in built.items():
            rows[preset].extend(found)
            if reason:
                counts = skipped.setdefault(preset, {})
                counts[reason] = counts.get(reason, 0) + 1
    return rows, skipped


# --- configs: runs without tools, runs with them ---------------------------------------------------------------

def uses_tools(row: Mapping) -> bool:
    """The run was offered tools, or its conversation holds a tool call or a tool result."""
    if row.get("tools") not in (None, "", "[]", []):
        return True
    return any(m.get("tool_calls") or m.get("role") == "tool" or m.get("tool_call_id")
               for column in ("messages", "prompt", "chosen", "rejected", "completion")
               for m in row.get(column) or [] if isinstance(m, Mapping))


def config_of(preset: str, row: Mapping) -> str:
    """The config (and folder) a row of `preset` goes to: `<preset>_tools` for runs with tools."""
    return TOOL_CONFIGS[preset] if preset in TOOL_CONFIGS and uses_tools(row) else preset


def split_configs(preset: str, rows: Iterable[Mapping]) -> dict[str, list[Mapping]]:
    """`rows` of one preset by config, both configs of a training preset present (each may be empty)."""
    out: dict[str, list[Mapping]] = {preset: []} | ({TOOL_CONFIGS[preset]: []} if preset in TOOL_CONFIGS else {})
    for row in rows:
        out[config_of(preset, row)].append(row)
    return out


_SHORT_ID = re.compile(r"[A-Za-z0-9]{9}")


def short_call_id(call_id: Any) -> str | None:
    """9 letters and digits for a tool call id (Mistral's templates accept nothing else); stable, so a call and its
    result still match. An id already in that form is kept."""
    if call_id in (None, ""):
        return None
    text = str(call_id)
    return text if _SHORT_ID.fullmatch(text) else hashlib.sha256(text.encode()).hexdigest()[:9]


def _arguments_object(arguments: Any) -> Any:
    """Tool call arguments as the object templates `tojson`; text that is not a JSON object stays text."""
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except ValueError:
            return arguments
        return parsed if isinstance(parsed, dict) else arguments
    return arguments


def _template_call(call: Mapping) -> dict:
    function = call.get("function") or {}
    out: dict[str, Any] = {"type": "function", "function": {"name": function.get("name"),
                                                             "arguments": _arguments_object(function.get("arguments"))}}
    call_id = short_call_id(call.get("id"))
    return {"id": call_id, **out} if call_id else out


def template_message(message: Mapping) -> dict:
    """A message with only the keys it has, in the form chat templates read."""
    out: dict[str, Any] = {"role": message.get("role"), "content": message.get("content") or ""}
    if message.get("tool_calls"):
        out["tool_calls"] = [_template_call(c) for c in message["tool_calls"]]
    if message.get("tool_call_id"):
        out["tool_call_id"] = short_call_id(message["tool_call_id"])
    if message.get("name"):
        out["name"] = message["name"]
    return out


def template_tools(tools: Any) -> list[dict]:
    """Tool definitions in OpenAI form (`{type: function, function: {...}}`); legacy `functions` are wrapped."""
    items = json.loads(tools) if isinstance(tools, str) and tools else tools or []
    return [t if isinstance(t, Mapping) and "function" in t else {"type": "function", "function": t}
            for t in items if isinstance(t, Mapping)]


def shape_row(config: str, row: Mapping) -> dict:
    """A row of a training config in that config's form (idempotent: shaped rows come out the same)."""
    preset = _PRESET_OF[config]
    tools = config != preset
    out = {k: v for k, v in row.items() if k != "tools"}
    for column in _COLUMNS[preset]:
        messages = row.get(column)
        if messages is not None:
            out[column] = ([json.dumps(template_message(m), ensure_ascii=False) for m in _loaded(messages)] if tools
                           else [{"role": m.get("role"), "content": m.get("content")} for m in messages])
    if tools:
        out["tools"] = [json.dumps(t, ensure_ascii=False) for t in template_tools(_loaded_tools(row.get("tools")))]
    return out


def _loaded(messages: list) -> list[Mapping]:
    return [json.loads(m) if isinstance(m, str) else m for m in messages]


def _loaded_tools(tools: Any) -> Any:
    if isinstance(tools, list):
        return [json.loads(t) if isinstance(t, str) else t for t in tools]
    return tools


# --- Arrow / parquet -------------------------------------------------------------------------------------------

_ROW_GROUP_BYTES = 64 * 1024 * 1024  # the Hub's viewer wants row groups well under ~100-300 MB


def to_table(preset: str, rows: Iterable[Mapping]) -> pa.Table:
    """A table with exactly `SCHEMAS[preset]`, whatever the rows hold (all-null columns keep their type).

    Rows may come straight from `run_row` / `preset_rows` or back from the export buffer (`ledger.decode_rows`):
    timestamps given as ISO strings are parsed (naive = UTC). Strings with a zone (what the buffer holds) are
    parsed by Arrow, column by column; anything else (datetimes, naive strings) row by row in Python.
    """
    schema = SCHEMAS.get(preset)
    if schema is None:
        raise ValueError(f"unknown preset {preset!r}: expected one of {', '.join(CONFIGS)}")
    rows = list(rows)
    if preset in _PRESET_OF:
        rows = [shape_row(preset, row) for row in rows]
    names = set(schema.names)
    required = [field.name for field in schema if not field.nullable]
    for index, row in enumerate(rows):
        unknown = row.keys() - names
        if unknown:  # from_pylist would drop them silently
            raise ValueError(f"{preset} row {index}: unknown columns {sorted(unknown)}")
        missing = [name for name in required if row.get(name) is None]
        if missing:  # from_pylist would accept the null and the parquet writer fail later
            raise ValueError(f"{preset} row {index}: {', '.join(missing)} must not be null")
    table = _with_zoned_text_times(rows, preset)
    if table is not None:
        return table
    rows = _timestamps_parsed(rows, schema)
    storage = _storage_schema(schema)
    try:
        table = pa.Table.from_pylist(rows, schema=storage)
    except UnicodeEncodeError:
        # Streamed tokens can end in half an emoji (a lone surrogate), which UTF-8 cannot hold.
        table = pa.Table.from_pylist(_without_surrogates(rows), schema=storage)
    return table if storage is schema else table.cast(schema)


def _storage_schema(schema: pa.Schema) -> pa.Schema:
    """`schema` with JSON columns as the text they are built from (pyarrow builds no extension type from Python)."""
    if not any(f.type == JSON_ITEMS for f in schema):
        return schema
    return pa.schema([pa.field(f.name, pa.list_(pa.string()), f.nullable) if f.type == JSON_ITEMS else f
                      for f in schema])


def _text_times(kind: pa.DataType) -> pa.DataType:
    """`kind` with every timestamp (at any depth) read as a string."""
    if pa.types.is_timestamp(kind):
        return pa.string()
    if pa.types.is_list(kind):
        return pa.list_(_text_times(kind.value_type))
    if pa.types.is_struct(kind):
        return pa.struct([field.with_type(_text_times(field.type)) for field in kind])
    return kind


_TEXT_TIME_SCHEMAS = {name: pa.schema([field.with_type(_text_times(field.type)) for field in schema])
                      for name, schema in SCHEMAS.items()}


def _with_zoned_text_times(rows: list[Mapping], preset: str) -> pa.Table | None:
    """The table built in C when every timestamp is an ISO string with a zone (or null): strings first, then one
    cast. None when that cannot be done (a datetime object, a naive or unreadable string, a lone surrogate): the
    row-by-row path decides, with its own errors."""
    schema, text_schema = SCHEMAS[preset], _TEXT_TIME_SCHEMAS[preset]
    try:
        table = pa.Table.from_pylist(rows, schema=text_schema)
        return table if text_schema == schema else table.cast(schema)
    except (pa.ArrowException, UnicodeEncodeError, TypeError, ValueError):
        return None


def _has_timestamp(kind: pa.DataType) -> bool:
    if pa.types.is_timestamp(kind):
        return True
    if pa.types.is_list(kind):
        return _has_timestamp(kind.value_type)
    return pa.types.is_struct(kind) and any(_has_timestamp(field.type) for field in kind)


def _parsed(value: Any, kind: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_timestamp(kind):
        return parse_time(value, where="row", field="timestamp") if isinstance(value, str) else value
    if pa.types.is_list(kind) and isinstance(value, list):
        return [_parsed(item, kind.value_type) for item in value]
    if pa.types.is_struct(kind) and isinstance(value, Mapping):
        return {**value, **{f.name: _parsed(value.get(f.name), f.type) for f in kind if _has_timestamp(f.type)}}
    return value


def _timestamps_parsed(rows: list[Mapping], schema: pa.Schema) -> list[Mapping]:
    """ISO strings back to datetimes: rows may have been buffered as JSON (`json.dumps(row, default=str)`)."""
    fields = [f for f in schema if _has_timestamp(f.type)]
    if not fields:
        return rows
    return [{**row, **{f.name: _parsed(row.get(f.name), f.type) for f in fields if f.name in row}} for row in rows]


def _without_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, Mapping):
        return {k: _without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_surrogates(v) for v in value]
    return value


def to_parquet_bytes(table: pa.Table) -> bytes:
    """Parquet bytes (zstd). Same table → same bytes, so re-uploading a shard is a no-op on the Hub."""
    rows_per_group = max(1, table.num_rows)
    if table.nbytes > _ROW_GROUP_BYTES:
        rows_per_group = max(1, table.num_rows * _ROW_GROUP_BYTES // table.nbytes)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", row_group_size=rows_per_group)
    return buffer.getvalue()
