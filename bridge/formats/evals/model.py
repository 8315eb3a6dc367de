"""The rows every eval reader produces, shaped after a LangSmith upload-experiment result row."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterator

from bridge.errors import FormatError

FORMATS = ("table", "lm-eval", "lighteval", "inspect", "promptfoo", "openai-evals")


class UnrecognizedFormat(FormatError):
    """The file is not an eval result file the bridge knows; the caller skips it and reports the reason."""


@dataclass(frozen=True)
class Score:
    """One evaluation score of a row (a LangSmith feedback)."""

    key: str
    score: float | None = None  # numbers and booleans (True -> 1.0)
    value: str | None = None  # categorical / string values
    comment: str | None = None
    feedback_config: dict | None = None  # e.g. {"type": "continuous", "min": 0, "max": 1} when the range is known


@dataclass
class EvalRow:
    """One example of a task with the model's output and its scores.

    `identity` is unique inside its file: `read_eval_file` appends `#2`, `#3`, ... to repeats.
    `start_time`/`end_time` are tz-aware UTC and only set when the file has real per-row wall-clock times.
    """

    identity: str
    inputs: dict
    expected: dict | None
    outputs: dict | None
    scores: list[Score]
    start_time: datetime | None = None
    end_time: datetime | None = None
    error: str | None = None
    metadata: dict = field(default_factory=dict)


@dataclass
class EvalFile:
    """A read eval file: what ran, when, and its rows (a lazy iterator; iterate once).

    `started_at`/`finished_at` are tz-aware UTC wall-clock times or None. When only one instant is known (the
    timestamp lm-eval and lighteval put in file names, which is when results were written) both are set to it.
    """

    path: str
    format: str
    task: str
    model: str | None
    started_at: datetime | None
    finished_at: datetime | None
    rows: Iterator[EvalRow]
