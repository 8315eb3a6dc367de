"""Pure: a PR's rows against the baseline's rows of the same task, matched by `row_id`.

A row regressed when one of its scores (present on both sides) got worse: a pass/fail score (0/1, booleans, Inspect's
C/I as the readers map them) went from pass to fail, or a continuous score dropped by more than `threshold` on a 0-1
scale (a score whose range the reader knows is rescaled to it). A row fixed when none got worse and one got better by
the same measure. Rows only one side has are counted, not judged.

Memory: the baseline side keeps, per row, its scores and three snippets of at most `SNIPPET` characters; the PR
side is streamed against it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .upload import row_id

SNIPPET = 160
# Keys tried in order to find the text a person recognises an example by (inputs) or an answer by (outputs).
INPUT_KEYS = ("question", "query", "problem", "input", "messages", "doc", "prompt", "text", "instruction")
ANSWER_KEYS = ("target_choice", "choice", "output", "answer", "target", "prediction", "response", "completion",
               "expected", "text", "value")


@dataclass
class RowSide:
    """What one side says about one example."""

    scores: dict[str, float]
    ranges: dict[str, float]
    input: str
    expected: str
    output: str


@dataclass
class RowChange:
    row_id: str
    input: str
    expected: str
    main_output: str
    pr_output: str
    keys: list[str]  # the scores that moved, e.g. ["acc 1 → 0"]


@dataclass
class Comparison:
    regressed: list[RowChange] = field(default_factory=list)
    fixed: list[RowChange] = field(default_factory=list)
    unchanged: int = 0
    only_pr: int = 0
    only_main: int = 0


def snippet(value: Any, keys: tuple[str, ...] = ANSWER_KEYS, limit: int = SNIPPET) -> str:
    """A short one-line text for a row's inputs or outputs (the first recognised field, else compact JSON)."""
    text = _text(value, keys)
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _text(value: Any, keys: tuple[str, ...]) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in keys:
            if value.get(key) not in (None, "", [], {}):
                return _text(value[key], INPUT_KEYS if key in ("doc", "messages") else keys)
    if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
        users = [m for m in value if m.get("role") == "user"] or value
        return _text(users[-1]["content"], keys)  # a chat: the last thing the user asked
    return json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)


def side_of(row: Any) -> RowSide:
    scores, ranges = {}, {}
    for score in row.scores:
        value = score.score
        if value is None or isinstance(value, bool) or not math.isfinite(float(value)) or "stderr" in score.key:
            continue
        scores[score.key] = float(value)
        config = score.feedback_config or {}
        if isinstance(config.get("min"), (int, float)) and isinstance(config.get("max"), (int, float)):
            ranges[score.key] = float(config["max"]) - float(config["min"]) or 1.0
    return RowSide(scores, ranges, snippet(row.inputs, INPUT_KEYS), snippet(row.expected), snippet(row.outputs))


def index_rows(dataset: str, rows: Iterable[Any]) -> dict[str, RowSide]:
    return {row_id(dataset, row.identity): side_of(row) for row in rows}


def _moves(main: RowSide, pr: RowSide, threshold: float) -> tuple[list[str], list[str]]:
    """(worse, better): the score keys that moved beyond the threshold, as "key old → new"."""
    worse, better = [], []
    for key in sorted(set(main.scores) & set(pr.scores)):
        old, new = main.scores[key], pr.scores[key]
        scale = pr.ranges.get(key) or main.ranges.get(key) or 1.0
        binary = old in (0.0, 1.0) and new in (0.0, 1.0)
        moved = old != new if binary else abs(new - old) / scale > threshold
        if moved:
            (worse if new < old else better).append(f"{key} {old:.4g} → {new:.4g}")
    return worse, better


def compare(dataset: str, main: dict[str, RowSide], pr_rows: Iterable[Any], threshold: float) -> Comparison:
    """Streams the PR's rows against the baseline index (which this consumes: it is emptied)."""
    result = Comparison()
    for row in pr_rows:
        rid = row_id(dataset, row.identity)
        old = main.pop(rid, None)
        if old is None:
            result.only_pr += 1
            continue
        new = side_of(row)
        worse, better = _moves(old, new, threshold)
        if worse or better:
            change = RowChange(rid, new.input or old.input, new.expected or old.expected, old.output, new.output,
                               worse or better)
            (result.regressed if worse else result.fixed).append(change)
        else:
            result.unchanged += 1
    result.only_main = len(main)
    return result


def as_dict(comparison: Comparison, max_rows: int) -> dict:
    """A JSON-able summary for the job result (and the Jobs page): counts and the first rows of each kind."""
    def rows(changes: list[RowChange]) -> list[dict]:
        return [change.__dict__ for change in changes[:max_rows]]
    return {"regressed": len(comparison.regressed), "fixed": len(comparison.fixed),
            "unchanged": comparison.unchanged, "only_pr": comparison.only_pr, "only_main": comparison.only_main,
            "regressed_rows": rows(comparison.regressed), "fixed_rows": rows(comparison.fixed)}
