"""Plain tables in every container, guessed columns, explicit column mappings and their errors."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.errors import FormatError
from bridge.formats.evals import common
from bridge.formats.evals import Score, UnrecognizedFormat, read_eval_file

UNIT = {"type": "continuous", "min": 0, "max": 1}
RECORDS = [
    {"id": "q1", "question": "2+2?", "answer": "4", "prediction": "4", "correct": True, "f1": 1.0, "model": "m"},
    {"id": "q2", "question": "Capital of Peru?", "answer": "Lima", "prediction": "Cusco", "correct": False,
     "f1": 0.0, "model": "m"},
]


def csv_bytes(records: list[dict], delimiter: str = ",") -> bytes:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(records[0]), delimiter=delimiter)
    writer.writeheader()
    writer.writerows(records)
    return text.getvalue().encode()


def parquet_bytes(records: list[dict]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), buffer)
    return buffer.getvalue()


CONTAINERS = {
    "jsonl": ("results.jsonl", lambda records: "".join(json.dumps(r) + "\n" for r in records).encode()),
    "json-array": ("results.json", lambda records: json.dumps(records, indent=2).encode()),
    "json-object": ("results.json", lambda records: json.dumps({"model": "m", "data": records}).encode()),
    "csv": ("results.csv", csv_bytes),
    "tsv": ("results.tsv", lambda records: csv_bytes(records, "\t")),
    "parquet": ("results.parquet", parquet_bytes),
}


def read(path: str, data: bytes, **options):
    return read_eval_file(path, lambda: io.BytesIO(data), **options)


@pytest.mark.parametrize("container", CONTAINERS, ids=list(CONTAINERS))
def test_every_container_gives_the_same_rows(container):
    name, build = CONTAINERS[container]
    result = read(f"evals/{name}", build(RECORDS))
    assert (result.format, result.task, result.model) == ("table", "results", None)
    first, second = list(result.rows)
    assert first.identity == "q1" and second.identity == "q2"
    assert first.inputs == {"question": "2+2?"}
    assert first.expected == {"answer": "4"}
    assert first.outputs == {"prediction": "4"}
    assert first.scores == [Score("correct", 1.0, feedback_config=UNIT), Score("f1", 1.0)]
    assert second.scores == [Score("correct", 0.0, feedback_config=UNIT), Score("f1", 0.0)]
    assert first.metadata == {"model": "m"}


MAPPED = [{"q": "2+2?", "gold_text": "4", "model_out": "4", "grade": 0.5, "judge_score": 3, "note": "easy"}]


@pytest.mark.parametrize("container", ["jsonl", "csv", "parquet"], ids=["jsonl", "csv", "parquet"])
def test_columns_mapping_overrides_guessing(container):
    name, build = CONTAINERS[container]
    columns = {"inputs": ["q"], "expected": ["gold_text"], "outputs": ["model_out"], "scores": ["grade"]}
    (row,) = list(read(name, build(MAPPED), format="table", columns=columns).rows)
    assert row.inputs == {"q": "2+2?"}
    assert row.expected == {"gold_text": "4"}
    assert row.outputs == {"model_out": "4"}
    assert row.scores == [Score("grade", 0.5)]  # only the mapped scores: judge_score stays metadata
    assert row.metadata == {"judge_score": 3, "note": "easy"}


def test_roles_mapped_to_nothing_are_still_guessed():
    # the settings model dumps every role, so unset ones arrive as empty lists
    columns = {"inputs": ["q"], "expected": [], "outputs": [], "scores": []}
    records = [{"q": "2+2?", "answer": "4", "output": "4", "exact": 1}]
    (row,) = list(read("m.jsonl", CONTAINERS["jsonl"][1](records), columns=columns, format="table").rows)
    assert (row.inputs, row.expected, row.outputs) == ({"q": "2+2?"}, {"answer": "4"}, {"output": "4"})
    assert row.scores == [Score("exact", 1.0)]


@pytest.mark.parametrize("container", ["jsonl", "json-array", "csv", "parquet"],
                         ids=["jsonl", "json-array", "csv", "parquet"])
def test_missing_mapped_column_is_named(container):
    name, build = CONTAINERS[container]
    with pytest.raises(FormatError, match="'answer_text' mapped to expected") as caught:
        result = read(name, build(MAPPED), format="table", columns={"inputs": ["q"], "expected": ["answer_text"]})
        list(result.rows)
    assert (caught.value.file, caught.value.location) == (name, "columns")


def test_no_input_column_is_unrecognized_under_auto_and_an_error_when_asked_for():
    data = parquet_bytes([{"step": 1, "loss": 0.5}])
    with pytest.raises(UnrecognizedFormat):
        read("train_log.parquet", data)
    with pytest.raises(FormatError, match="no input column") as caught:
        read("train_log.parquet", data, format="table")
    assert not isinstance(caught.value, UnrecognizedFormat)


def test_ragas_old_names():
    records = [{"question": "Who wrote Hamlet?", "contexts": ["Hamlet is a play by Shakespeare."],
                "answer": "Shakespeare", "ground_truth": "William Shakespeare", "faithfulness": 1.0,
                "answer_relevancy": 0.92}]
    (row,) = list(read("ragas.jsonl", CONTAINERS["jsonl"][1](records)).rows)
    assert row.inputs == {"question": "Who wrote Hamlet?", "contexts": ["Hamlet is a play by Shakespeare."]}
    assert row.outputs == {"answer": "Shakespeare"}
    assert row.expected == {"ground_truth": "William Shakespeare"}
    assert [score.key for score in row.scores] == ["faithfulness", "answer_relevancy"]


def test_deepeval_test_cases():
    document = {"testCases": [{"name": "test_case_0", "input": "What if these shoes don't fit?",
                               "actualOutput": "We offer a 30-day full refund.", "expectedOutput": "30-day refund",
                               "success": True,
                               "metricsData": [{"name": "Answer Relevancy", "score": 0.9, "threshold": 0.7,
                                                "success": True, "reason": "relevant"}]}]}
    (row,) = list(read("deepeval.json", json.dumps(document).encode()).rows)
    assert row.inputs == {"input": "What if these shoes don't fit?"}
    assert row.outputs == {"actualOutput": "We offer a 30-day full refund."}
    assert row.expected == {"expectedOutput": "30-day refund"}
    assert row.scores == [Score("success", 1.0, feedback_config=UNIT),
                          Score("Answer Relevancy", 0.9, comment="relevant")]


def test_dict_columns_are_used_as_they_are():
    records = [{"inputs": {"question": "hi", "lang": "en"}, "outputs": {"answer": "hello"}, "score": 1}]
    (row,) = list(read("runs.jsonl", CONTAINERS["jsonl"][1](records)).rows)
    assert row.inputs == {"question": "hi", "lang": "en"}
    assert row.outputs == {"answer": "hello"}


def test_identity_without_id_column_is_the_inputs_hash_and_repeats_are_numbered():
    records = [{"prompt": "same"}, {"prompt": "same"}, {"prompt": "other"}]
    rows = list(read("p.jsonl", CONTAINERS["jsonl"][1](records)).rows)
    digest = hashlib.sha256(json.dumps({"prompt": "same"}, separators=(",", ":")).encode()).hexdigest()
    assert [row.identity for row in rows] == [digest, f"{digest}#2", rows[2].identity]
    assert rows[2].identity != digest


def test_times_error_and_bookkeeping_columns():
    records = [{"input": "x", "output": "", "start_time": "2025-03-01T12:00:00Z", "end_time": "2025-03-01T12:00:02Z",
                "error": "rate limited", "latency_ms": 2000, "score": 0}]
    (row,) = list(read("t.csv", csv_bytes(records)).rows)
    assert row.start_time == datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
    assert row.end_time == datetime(2025, 3, 1, 12, 0, 2, tzinfo=timezone.utc)
    assert row.error == "rate limited"
    assert row.outputs == {"output": None}  # an empty CSV cell is missing
    assert row.scores == [Score("score", 0.0)]
    assert row.metadata == {"latency_ms": 2000}  # a number, but bookkeeping rather than a score


def test_nan_in_parquet_is_missing():
    (row,) = list(read("n.parquet", parquet_bytes([{"query": "q", "bleu": float("nan"), "rouge": 0.5}])).rows)
    assert row.scores == [Score("rouge", 0.5)]


@pytest.mark.parametrize(
    "name, data, location, message",
    [
        ("t.jsonl", b'{"input": "a"}\n\n{"input": "b"\n', "line 3", "invalid JSON"),
        ("t.jsonl", b'{"input": "a"}\n"text"\n', "line 2", "expected a JSON object, got a string"),
        ("t.json", b'[\n  {"input": "a"},\n  {"input": }\n]', "item 2, line 3", "invalid JSON"),
        ("t.json", b'[\n  {"input": "a"},\n  3\n]', "item 2, line 3", "expected a JSON object, got a number"),
        ("t.json", b'[{"input": "a"}', "item 2, line 1", "not closed"),
        ("t.csv", b'input,output\na,b\nc,d,e\n', "line 3", "expected 2 fields, got 3"),
    ],
    ids=["jsonl-bad-json", "jsonl-string", "array-bad-item", "array-number", "array-unclosed", "csv-extra-field"],
)
def test_broken_rows_name_file_and_location(name, data, location, message):
    rows = read(name, data).rows
    with pytest.raises(FormatError) as caught:
        list(rows)
    assert (caught.value.file, caught.value.location) == (name, location)
    assert message in str(caught.value)


def test_json_array_items_larger_than_the_read_chunk():
    records = [{"input": "x" * 150_000 + str(i), "score": i + 0.5} for i in range(3)]
    rows = list(read("big.json", json.dumps(records).encode()).rows)
    assert [row.scores[0].score for row in rows] == [0.5, 1.5, 2.5]
    assert rows[2].inputs["input"].endswith("x2")


ROW_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=40),
                       st.floats(allow_nan=False, allow_infinity=False))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    records=st.lists(st.fixed_dictionaries({"input": st.text(max_size=60)}, optional={"extra": ROW_VALUES}),
                     max_size=8),
    indent=st.sampled_from([None, 0, 2]),
    chunk=st.integers(1, 9),
)
def test_json_array_streaming_matches_json_loads(monkeypatch_chunk, records, indent, chunk):
    # tiny read chunks cut values, escapes and multibyte characters at every possible place
    monkeypatch_chunk(chunk)
    data = json.dumps(records, indent=indent, ensure_ascii=False).encode()
    rows = list(read("h.json", data, format="table").rows)
    assert [row.inputs for row in rows] == [{"input": record["input"]} for record in records]


@pytest.fixture
def monkeypatch_chunk():
    original = common.CHUNK
    yield lambda size: setattr(common, "CHUNK", size)
    common.CHUNK = original
