"""openai/evals record logs beyond the real sample: interleaved samples, model-graded metrics, broken lines."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pytest

from bridge.errors import FormatError
from bridge.formats.evals import Score, read_eval_file

UNIT = {"type": "continuous", "min": 0, "max": 1}


def read(path: str, data: bytes):
    return read_eval_file(path, lambda: io.BytesIO(data))


def event(event_id: int, sample_id: str, kind: str, data: dict, second: int) -> dict:
    return {"run_id": "run1", "event_id": event_id, "sample_id": sample_id, "type": kind, "data": data,
            "created_by": "", "created_at": f"2024-05-01 12:00:{second:02d}.000000+00:00"}


def test_openai_evals_interleaved_samples_and_model_graded_metrics():
    lines = [
        {"spec": {"completion_fns": ["gpt-4"], "eval_name": "coqa-fact.dev.v0", "run_id": "run1",
                  "created_at": "2024-05-01 11:59:59.000000"}},
        event(0, "s.0", "sampling", {"prompt": [{"role": "user", "content": "Q0"}], "sampled": ["A0"]}, 1),
        event(1, "s.1", "sampling", {"prompt": "Q1", "sampled": "A1"}, 2),
        event(2, "s.0", "sampling", {"prompt": "grade A0", "sampled": "Y"}, 3),  # the grader's own sampling
        event(3, "s.1", "match", {"correct": True, "expected": "A1", "picked": "A1"}, 4),
        event(4, "s.0", "metrics", {"choice": "Y", "score": 1.0}, 5),
        {"final_report": {"accuracy": 1.0}},
    ]
    out = read("coqa.jsonl", "".join(json.dumps(line) + "\n" for line in lines).encode())
    assert (out.task, out.model) == ("coqa-fact.dev.v0", "gpt-4")
    assert out.started_at == datetime(2024, 5, 1, 11, 59, 59, tzinfo=timezone.utc)
    assert out.finished_at == datetime(2024, 5, 1, 12, 0, 5, tzinfo=timezone.utc)
    first, second = list(out.rows)
    assert first.identity == "s.1" and second.identity == "s.0"  # in the order samples are completed
    assert first.scores == [Score("correct", 1.0, feedback_config=UNIT)]
    assert second.inputs == {"prompt": [{"role": "user", "content": "Q0"}]}
    assert second.outputs == {"output": "A0"}
    assert second.scores == [Score("choice", value="Y"), Score("score", 1.0)]
    assert (second.start_time.second, second.end_time.second) == (1, 5)


def test_openai_evals_broken_line():
    data = (json.dumps({"spec": {"eval_name": "x"}}) + "\n" + json.dumps(event(0, "s", "match", {}, 1)) + "\n{oops\n")
    rows = read("run.jsonl", data.encode()).rows
    next(rows)
    with pytest.raises(FormatError) as caught:
        next(rows)
    assert (caught.value.file, caught.value.location) == ("run.jsonl", "line 3")
