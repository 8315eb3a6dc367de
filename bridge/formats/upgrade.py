"""Pure: the rows of a training shard written before the chat-template message shapes, in today's configs.

Bridges before 0.2.0 wrote every message of `sft`, `preference` and `kto` as one fixed struct of five fields
(`role`, `content`, `name`, `tool_call_id`, `tool_calls` with `arguments` as JSON text), and runs with tools sat in
the same config as the others. Today `sft`/`preference`/`kto` hold `role`/`content` structs only and runs with
tools go to `*_tools` (see `training.py`). `load_dataset` refuses a config whose shards disagree, so a repo holding
old shards must have them rewritten; these two functions are all the rewrite needs:

    if is_old_format(pq.read_schema(shard)):            # the shard's parquet schema says it is old
        for config, rows in upgrade_rows(preset, pq.read_table(shard).to_pylist()).items():
            write to_table(config, rows) as a shard of `config`   # same commit that deletes the old shard

Contract:
- `preset` is the config folder the old shard sits in (`sft`, `preference` or `kto`); `rows` are its rows as
  pyarrow's `to_pylist()` gives them (every message with all five keys, nulls included).
- The result maps a config to its rows, only configs with at least one row (`{}` for no rows): `preset` for runs
  without tools, `<preset>_tools` for runs with tool calls, tool results or offered tools. Rows keep their order and
  are in the config's stored form, ready for `training.to_table(config, rows)`, and equal to the rows the new mapping
  builds from the same run, so the two give the same parquet bytes.
- What an old shard cannot tell: old `preference` and `kto` shards have no `tools` column, so a run that was offered
  tools but called none looks like a plain run there. Pass `tools_by_run` (run id -> tool definitions, as JSON text
  or a list, e.g. from the same run's old `sft` row) to route those runs as the new mapping does; without it they go
  to the plain config, which still renders and trains, only without the tool definitions.
- Rows already in today's form (a tool config's messages as JSON text) come out unchanged, so calling it twice is
  harmless.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from bridge.formats.training import TRAINING_PRESETS, config_of, shape_row

OLD_MESSAGE_FIELDS = frozenset({"name", "tool_call_id", "tool_calls"})  # in the old struct, not in today's
_MESSAGE_COLUMNS = ("messages", "prompt", "chosen", "rejected", "completion")


def is_old_format(schema: pa.Schema) -> bool:
    """True for a training shard with the old five-field message struct (`pq.read_schema(path)` gives `schema`)."""
    return any(_is_old_messages(field.type) for field in schema)


def _is_old_messages(kind: pa.DataType) -> bool:
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not pa.types.is_struct(kind.value_type):
        return False
    names = {field.name for field in kind.value_type}
    return "role" in names and bool(names & OLD_MESSAGE_FIELDS)


def upgrade_rows(preset: str, rows: Iterable[Mapping], tools_by_run: Mapping[str, Any] | None = None,
                 ) -> dict[str, list[dict]]:
    """Old rows of `preset` by today's config, in that config's stored form (the module docstring has the contract)."""
    if preset not in TRAINING_PRESETS:
        raise ValueError(f"only training shards need upgrading: got {preset!r}, expected one of "
                         f"{', '.join(TRAINING_PRESETS)}")
    out: dict[str, list[dict]] = {}
    for row in rows:
        full = _full_row(row, tools_by_run or {})
        config = config_of(preset, full)
        out.setdefault(config, []).append(shape_row(config, full))
    return out


def _full_row(row: Mapping, tools_by_run: Mapping[str, Any]) -> dict:
    """The row as the new mapping builds it before shaping: messages as dicts, `tools` as the run's definitions."""
    out = dict(row)
    for column in _MESSAGE_COLUMNS:
        if isinstance(out.get(column), list):
            out[column] = [json.loads(m) if isinstance(m, str) else m for m in out[column]]
    if out.get("tools") in (None, "", "[]", []):
        out["tools"] = tools_by_run.get(row.get("run_id"), out.get("tools"))
    return out
