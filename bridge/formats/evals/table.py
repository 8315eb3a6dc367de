"""Plain tables people write by hand: JSON Lines, a JSON array (or an object holding one), CSV/TSV, Parquet.

Column roles are guessed from common names (Ragas and DeepEval names included) unless the caller's `columns`
mapping names them; unassigned numeric or boolean columns become scores, everything else run metadata.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from itertools import chain
from typing import Any, Callable, Iterator

from bridge.errors import FormatError

from .common import (
    MISSING,
    Source,
    content_id,
    describe,
    is_number,
    iter_json_array,
    iter_json_lines,
    jsonable,
    lookup,
    make_score,
    open_parquet,
    stem,
    text_lines,
    to_utc,
)
from .model import EvalFile, EvalRow, Score, UnrecognizedFormat

INPUT_NAMES = ("input", "inputs", "question", "prompt", "query", "user_input")
CONTEXT_NAMES = ("context", "contexts", "retrieved_contexts", "retrievalcontext")
EXPECTED_NAMES = ("expected", "expected_output", "expectedoutput", "expected_outputs", "reference_outputs",
                  "reference", "target", "gold", "answer", "ground_truth")
OUTPUT_NAMES = ("output", "outputs", "actual_output", "actualoutput", "prediction", "response", "completion",
                "generated", "generation")
ID_NAMES = ("id", "example_id", "sample_id", "doc_id", "idx", "uuid", "row_id", "question_id")
START_NAMES = ("start_time", "started_at")
END_NAMES = ("end_time", "completed_at", "finished_at")
ERROR_NAMES = ("error",)
# numeric bookkeeping that would be noise as feedback
NOT_SCORES = {"index", "latency", "latency_ms", "latencyms", "duration", "cost", "tokens", "total_tokens",
              "prompt_tokens", "completion_tokens", "seed", "epoch", "timestamp", "__index_level_0__", "unnamed: 0"}
SCORE_CONTAINERS = {"scores", "metrics", "metricsdata"}
DICT_COLUMNS = {"inputs", "outputs", "expected", "expected_outputs", "reference_outputs"}
LIST_KEYS = ("data", "rows", "results", "records", "examples", "samples", "items", "testCases", "test_cases")


@dataclass
class Plan:
    """Which column plays which role."""

    inputs: list[str]
    expected: list[str]
    outputs: list[str]
    scores: list[str] | None  # None: guess from the values
    identity: list[str]
    start: str | None = None
    end: str | None = None
    error: str | None = None

    def used(self) -> set[str]:
        named = [*self.inputs, *self.expected, *self.outputs, *(self.scores or ()), *self.identity]
        return {name for name in (*named, self.start, self.end, self.error) if name}


def read(source: Source) -> EvalFile:
    lower = source.name.lower()
    if lower.endswith(".parquet"):
        rows = _parquet(source)
    elif lower.endswith((".csv", ".tsv")):
        rows = _csv(source, "\t" if lower.endswith(".tsv") else ",")
    else:
        rows = _json(source)
    return EvalFile(source.path, "table", stem(source.path), None, None, None, rows)


# ------------------------------------------------------------------------------------------------------ containers


def _json(source: Source) -> Iterator[EvalRow]:
    records = _json_records(source)
    first = next(records, None)  # the columns are chosen from the first record, before any row is handed out
    records.close()
    if first is None:
        return iter(())
    plan = make_plan(source, list(first[1]), lambda name: lookup(first[1], name) is not MISSING)
    return (build_row(plan, record) for _, record in _json_records(source))


def _json_records(source: Source) -> Iterator[tuple[str, dict]]:
    with source.opener() as f:
        lead = f.read(1)
        while lead and lead in b" \t\r\n\xef\xbb\xbf":
            lead = f.read(1)
        if lead == b"{" and source.name.lower().endswith(".json"):
            yield from _object_records(source, lead + f.read())
        elif lead == b"[":
            yield from iter_json_array(source, f)
        elif lead:
            yield from iter_json_lines(source, chain([lead + f.readline()], f))


def _object_records(source: Source, data: bytes) -> Iterator[tuple[str, dict]]:
    """A JSON object holding the rows under a key like "data", or JSON Lines in a file named .json."""
    try:
        document = json.loads(data)
    except json.JSONDecodeError as error:
        if error.msg != "Extra data":
            raise source.fail(f"line {error.lineno}", f"invalid JSON: {error.msg}") from None
        yield from iter_json_lines(source, data.splitlines())
        return
    rows = next((document[key] for key in LIST_KEYS if isinstance(document.get(key), list)), None)
    if rows is None:
        raise _not_a_table(source, f"a JSON object without a list of rows under {', '.join(LIST_KEYS)}")
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise source.fail(f"item {number}", f"expected a JSON object, got {describe(row)}")
        yield f"item {number}", row


def _csv(source: Source, delimiter: str) -> Iterator[EvalRow]:
    records = _csv_records(source, delimiter)
    header = next(records, None)
    records.close()
    if header is None:
        return iter(())
    names = header[1]
    plan = make_plan(source, names, lambda name: name in names)
    return _csv_rows(source, delimiter, plan)


def _csv_rows(source: Source, delimiter: str, plan: Plan) -> Iterator[EvalRow]:
    records = _csv_records(source, delimiter)
    _, names = next(records)
    for location, cells in records:
        if len(cells) > len(names):
            raise source.fail(location, f"expected {len(names)} fields, got {len(cells)}")
        yield build_row(plan, dict(zip(names, cells)), from_text=True)


def _csv_records(source: Source, delimiter: str) -> Iterator[tuple[str, list[str]]]:
    with source.opener() as f:
        reader = csv.reader(text_lines(f), delimiter=delimiter)
        try:
            for cells in reader:
                if cells:
                    yield f"line {reader.line_num}", cells
        except csv.Error as error:
            raise source.fail(f"line {reader.line_num}", f"invalid CSV: {error}") from None


def _parquet(source: Source) -> Iterator[EvalRow]:
    with source.opener() as f:
        names = open_parquet(source, f).schema_arrow.names  # the footer only
    plan = make_plan(source, names, lambda name: name in names or name.split(".")[0] in names)
    return (build_row(plan, record) for _, record in parquet_records(source))


def parquet_records(source: Source, batch_size: int = 256) -> Iterator[tuple[str, dict]]:
    """Rows of a parquet file, one record batch in memory at a time."""
    with source.opener() as f:
        batches, number = open_parquet(source, f).iter_batches(batch_size=batch_size), 0
        while True:
            try:
                batch = next(batches, None)
            except Exception as error:  # pyarrow has no single base class for a damaged page
                raise source.fail(f"row {number + 1}", f"unreadable parquet data: {error}") from None
            if batch is None:
                return
            for record in batch.to_pylist():
                number += 1
                yield f"row {number}", record


# ---------------------------------------------------------------------------------------------------------- roles


def make_plan(source: Source, names: list[str], present: Callable[[str], bool]) -> Plan:
    mapping = source.columns or {}
    for role, columns in mapping.items():
        for column in columns:
            if not present(column):
                shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
                raise source.fail("columns", f"column {column!r} mapped to {role} is not in the file ({shown})")
    by_lower: dict[str, str] = {}
    for name in names:
        by_lower.setdefault(name.lower(), name)
    taken = {column for columns in mapping.values() for column in columns}

    def first(aliases) -> list[str]:
        found = next((by_lower[alias] for alias in aliases if by_lower.get(alias) not in (None, *taken)), None)
        if found:
            taken.add(found)
        return [found] if found else []

    outputs = mapping.get("outputs") or first(OUTPUT_NAMES)
    expected = mapping.get("expected") or first(EXPECTED_NAMES)
    if "outputs" not in mapping and not outputs and expected and expected[0].lower() == "answer":
        # Ragas <= 0.1 calls the model's answer "answer" and the reference "ground_truth"
        reference = first(EXPECTED_NAMES)
        if reference:
            outputs, expected = expected, reference
    inputs = mapping.get("inputs") or first(INPUT_NAMES)
    if inputs and "inputs" not in mapping:
        inputs += [name for name in names if name.lower() in CONTEXT_NAMES and name not in taken]
    if not inputs:
        raise _not_a_table(source, f"no input column (looked for {', '.join(INPUT_NAMES)}); map one with columns")
    single = lambda aliases: (first(aliases) or [None])[0]  # noqa: E731 - tiny local helper
    return Plan(inputs, expected, outputs, mapping.get("scores"), mapping.get("identity") or first(ID_NAMES),
                single(START_NAMES), single(END_NAMES), single(ERROR_NAMES))


def _not_a_table(source: Source, message: str) -> FormatError:
    kind = UnrecognizedFormat if source.auto else FormatError
    return kind(source.path, None, message)


def build_row(plan: Plan, record: dict, from_text: bool = False) -> EvalRow:
    value = lambda name: _value(record, name, from_text)  # noqa: E731
    inputs = _group(plan.inputs, value) or {}
    scores, metadata = _scores_and_metadata(plan, record, from_text)
    identity = "/".join(str(value(name)) for name in plan.identity) if plan.identity else content_id(inputs)
    error = value(plan.error) if plan.error else None
    return EvalRow(
        identity=identity,
        inputs=inputs,
        expected=_group(plan.expected, value),
        outputs=_group(plan.outputs, value),
        scores=scores,
        start_time=to_utc(value(plan.start)) if plan.start else None,
        end_time=to_utc(value(plan.end)) if plan.end else None,
        error=str(error) if error not in (None, "", False) else None,
        metadata=metadata,
    )


def _group(names: list[str], value: Callable[[str], Any]) -> dict | None:
    if not names:
        return None
    if len(names) == 1 and names[0].lower() in DICT_COLUMNS and isinstance(value(names[0]), dict):
        return jsonable(value(names[0]))  # a column already holding {"question": ..., ...}
    return {name: jsonable(value(name)) for name in names}


def _value(record: dict, name: str, from_text: bool) -> Any:
    found = lookup(record, name)
    if found is MISSING or (from_text and isinstance(found, str) and not found.strip()):
        return None
    return found


def _scores_and_metadata(plan: Plan, record: dict, from_text: bool) -> tuple[list[Score], dict]:
    if plan.scores is not None:
        named = [make_score(name, cell(_value(record, name, from_text), from_text)) for name in plan.scores]
        scores = [score for score in named if score]
    else:
        scores = []
    metadata, used = {}, plan.used()
    for key, raw in record.items():
        item = cell(raw, from_text)
        if key in used or item is None or (isinstance(item, float) and math.isnan(item)):
            continue
        if plan.scores is None and key.lower() in SCORE_CONTAINERS and (found := container_scores(item)):
            scores.extend(found)
        elif plan.scores is None and key.lower() not in NOT_SCORES and (isinstance(item, bool) or is_number(item)):
            scores.append(make_score(key, item))
        else:
            metadata[key] = jsonable(item)
    return scores, metadata


def cell(value: Any, from_text: bool) -> Any:
    """CSV cells are text: read numbers and true/false as such; empty cells as missing."""
    if not from_text or not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return value


def container_scores(value: Any) -> list[Score]:
    """Scores held in one column: {"metric": value} or DeepEval's [{"name", "score", "reason"}, ...]."""
    if isinstance(value, dict):
        return [score for key, item in value.items() if (score := make_score(str(key), item))]
    if isinstance(value, list) and all(isinstance(item, dict) and "name" in item for item in value):
        scores = (make_score(str(item["name"]), item.get("score"), item.get("reason")) for item in value)
        return [score for score in scores if score]
    return []
