"""Training presets built from LangSmith runs + feedback, in TRL's conversational formats, and their Arrow tables.

- `sft`:        `{"messages", "tools"}`: the run's conversation plus an assistant turn, which is the human
                correction when there is one, else the model's own output when every considered feedback score is
                at least `positive_threshold`.
- `preference`: `{"prompt", "chosen", "rejected"}`: runs with a correction (chosen = correction, rejected = output).
- `kto`:        `{"prompt", "completion", "label"}`: runs with thumbs-style feedback (score 0/1 or a boolean).

Every training row also keeps `run_id` as a column: exactly-once bookkeeping needs it, it keeps provenance, and TRL
ignores columns it does not use. A run a preset cannot use is left out of that preset with a reason
(`SKIP_REASONS`); it is still in `runs`.

Messages use one fixed struct (`MESSAGE_TYPE`) so every shard has the same schema: `role`, `content` (text; parts
joined, non-text parts such as images dropped), `name`, `tool_call_id` and `tool_calls` in OpenAI form with
`arguments` as a JSON string. Fields a message does not have are null. `tools` is the tool list as a JSON string.
"""

from __future__ import annotations

import io
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

TOOL_CALL_TYPE = pa.struct([
    ("id", pa.string()),
    ("type", pa.string()),
    ("function", pa.struct([("name", pa.string()), ("arguments", pa.string())])),
])

MESSAGE_TYPE = pa.struct([
    ("role", pa.string()),
    ("content", pa.string()),
    ("name", pa.string()),
    ("tool_call_id", pa.string()),
    ("tool_calls", pa.list_(TOOL_CALL_TYPE)),
])

MESSAGES = pa.list_(MESSAGE_TYPE)
_RUN_ID = pa.field("run_id", pa.string(), nullable=False)

SCHEMAS: dict[str, pa.Schema] = {
    "runs": RUNS_SCHEMA,
    "sft": pa.schema([pa.field("messages", MESSAGES), pa.field("tools", pa.string()), _RUN_ID]),
    "preference": pa.schema([
        pa.field("prompt", MESSAGES), pa.field("chosen", MESSAGES), pa.field("rejected", MESSAGES), _RUN_ID,
    ]),
    "kto": pa.schema([
        pa.field("prompt", MESSAGES), pa.field("completion", MESSAGES), pa.field("label", pa.bool_()), _RUN_ID,
    ]),
}

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
    return {"prompt": item.prompt, "chosen": chosen, "rejected": rejected, "run_id": item.run_id}, None


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
    return {"prompt": item.prompt, "completion": completion, "label": labels.pop(), "run_id": item.run_id}, None


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
        raise ValueError(f"unknown preset {preset!r}: expected one of {', '.join(PRESETS)}")
    rows = list(rows)
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
    try:
        return pa.Table.from_pylist(rows, schema=schema)
    except UnicodeEncodeError:
        # Streamed tokens can end in half an emoji (a lone surrogate), which UTF-8 cannot hold.
        return pa.Table.from_pylist(_without_surrogates(rows), schema=schema)


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
