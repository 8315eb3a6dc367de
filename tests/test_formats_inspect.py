"""Inspect AI `.eval` archives built in code: epochs, chat input, every kind of score value, per-sample times."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import datetime, timezone

import pytest

from bridge.errors import FormatError
from bridge.formats.evals import Score, read_eval_file

UNIT = {"type": "continuous", "min": 0, "max": 1}
EVAL = {"task": "security_guide", "model": "openai/gpt-4o-mini", "created": "2025-06-01T10:00:00+02:00",
        "config": {"epochs": 2}}
HEADER = {"version": 2, "status": "success", "eval": EVAL,
          "stats": {"started_at": "2025-06-01T10:00:00+02:00", "completed_at": "2025-06-01T10:05:00+02:00"}}


def sample(epoch: int, **changes) -> dict:
    base = {
        "id": "q1",
        "epoch": epoch,
        "input": [{"id": "m1", "role": "system", "content": "Be brief."},
                  {"id": "m2", "role": "user", "content": "attachment://abc123", "source": "input"}],
        "target": ["Use a password manager", "password manager"],
        "output": {"model": "gpt-4o-mini", "choices": [{"message": {
            "role": "assistant", "content": [{"type": "reasoning", "reasoning": "..."},
                                             {"type": "text", "text": "Use a password manager."}]}}]},
        "scores": {
            "includes": {"value": "C", "answer": "Use a password manager.", "explanation": "found"},
            "partial": {"value": "P"},
            "refused": {"value": "N"},
            "grader": {"value": 0.8, "explanation": "mostly right"},
            "multi": {"value": {"accuracy": "I", "length": 23}},
            "flag": {"value": True},
        },
        "metadata": {"topic": "passwords"},
        "attachments": {"abc123": "How should I store my passwords?"},
        "started_at": "2025-06-01T08:00:01+00:00",
        "completed_at": "2025-06-01T08:00:03.500000+00:00",
        "total_time": 2.5,
    }
    return {**base, **changes}


def archive(files: dict[str, object]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, content in files.items():
            zipped.writestr(name, json.dumps(content))
    return buffer.getvalue()


def read(data: bytes, path: str = "logs/2025-06-01T10-00-00_security-guide.eval", opener=None):
    return read_eval_file(path, opener or (lambda: io.BytesIO(data)))


def test_eval_archive_rows():
    data = archive({"header.json": HEADER, "samples/q1_epoch_1.json": sample(1),
                    "samples/q1_epoch_2.json": sample(2, error={"message": "RuntimeError: timeout", "traceback": ""}),
                    "summaries.json": [], "reductions.json": []})
    result = read(data)
    assert (result.format, result.task, result.model) == ("inspect", "security_guide", "openai/gpt-4o-mini")
    assert result.started_at == datetime(2025, 6, 1, 8, 0, tzinfo=timezone.utc)
    assert result.finished_at == datetime(2025, 6, 1, 8, 5, tzinfo=timezone.utc)
    first, second = list(result.rows)

    assert [first.identity, second.identity] == ["q1/epoch 1", "q1/epoch 2"]  # two epochs: the epoch is needed
    assert first.inputs == {"messages": [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": "How should I store my passwords?"}]}
    assert first.expected == {"target": ["Use a password manager", "password manager"]}
    assert first.outputs == {"output": "Use a password manager."}
    assert first.start_time == datetime(2025, 6, 1, 8, 0, 1, tzinfo=timezone.utc)
    assert first.end_time == datetime(2025, 6, 1, 8, 0, 3, 500000, tzinfo=timezone.utc)
    assert first.metadata["sample_metadata"] == {"topic": "passwords"}
    assert first.metadata["answers"] == {"includes": "Use a password manager."}
    assert first.error is None
    assert second.error == "RuntimeError: timeout"


def test_score_values():
    data = archive({"header.json": HEADER, "samples/q1_epoch_1.json": sample(1)})
    scores = {score.key: score for score in next(read(data).rows).scores}
    assert scores == {
        "includes": Score("includes", 1.0, value="C", comment="found", feedback_config=UNIT),
        "partial": Score("partial", 0.5, value="P", feedback_config=UNIT),
        "refused": Score("refused", 0.0, value="N", feedback_config=UNIT),
        "grader": Score("grader", 0.8, comment="mostly right"),
        "multi/accuracy": Score("multi/accuracy", 0.0, value="I", feedback_config=UNIT),
        "multi/length": Score("multi/length", 23.0),
        "flag": Score("flag", 1.0, feedback_config=UNIT),
    }


def test_one_epoch_identity_is_the_sample_id():
    header = {**HEADER, "eval": {**EVAL, "config": {"epochs": 1}}}
    data = archive({"header.json": header, "samples/7_epoch_1.json": sample(1, id=7)})
    assert next(read(data).rows).identity == "7"


def test_log_still_running_has_only_the_journal_start():
    data = archive({"_journal/start.json": {"version": 2, "eval": EVAL}, "samples/q1_epoch_1.json": sample(1)})
    result = read(data)
    assert result.task == "security_guide"
    assert result.started_at == datetime(2025, 6, 1, 8, 0, tzinfo=timezone.utc)  # eval.created
    assert result.finished_at is None
    assert len(list(result.rows)) == 1


class Stream(io.RawIOBase):
    """A download stream: readable, not seekable."""

    def __init__(self, data: bytes) -> None:
        self.data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self.data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_non_seekable_stream_is_spooled():
    data = archive({"header.json": HEADER, "samples/q1_epoch_1.json": sample(1)})
    result = read(data, opener=lambda: Stream(data))
    assert next(result.rows).outputs == {"output": "Use a password manager."}


def test_output_falls_back_to_last_assistant_message():
    changed = sample(1, output={"model": "x", "choices": []},
                     messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}])
    data = archive({"header.json": HEADER, "samples/q1_epoch_1.json": changed})
    assert next(read(data).rows).outputs == {"output": "Hello!"}


@pytest.mark.parametrize(
    "data, location, message",
    [
        (b"PK\x03\x04 not really a zip", None, "not a zip archive"),
        (archive({"samples/q1_epoch_1.json": sample(1)}), None, "no header.json"),
    ],
    ids=["not-a-zip", "no-header"],
)
def test_unreadable_archives(data, location, message):
    with pytest.raises(FormatError, match=message) as caught:
        read(data, path="logs/run.eval")
    assert (caught.value.file, caught.value.location) == ("logs/run.eval", location)


def test_broken_sample_names_its_archive_member():
    data = archive({"header.json": HEADER, "samples/q1_epoch_1.json": sample(1), "samples/q2_epoch_1.json": [1]})
    rows = read(data, path="logs/run.eval").rows
    next(rows)
    with pytest.raises(FormatError) as caught:
        next(rows)
    assert caught.value.location == "samples/q2_epoch_1.json"
    assert "expected a JSON object" in str(caught.value)
