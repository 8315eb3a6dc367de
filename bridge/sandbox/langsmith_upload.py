"""Validation of `POST /datasets/upload-experiment` bodies, answered as FastAPI-shaped 422s like the real service.

`validate_upload` returns every problem at once (`{loc, msg, type}` with `loc` naming the field), so a client sees
the same error list LangSmith would give; the store's `upload_experiment` only ever sees valid bodies.
"""

from __future__ import annotations

import uuid
from typing import Any

from bridge.sandbox.langsmith_common import parse_time

SCORE_KEY_MAX = 180


def _is_time(value: Any) -> bool:
    try:
        parse_time(value)
        return True
    except (ValueError, TypeError):
        return False


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
        return isinstance(value, str)
    except ValueError:
        return False


KINDS = {
    "str": (lambda v: isinstance(v, str), "string_type", "Input should be a valid string"),
    "obj": (lambda v: isinstance(v, dict), "dict_type", "Input should be a valid dictionary"),
    "list": (lambda v: isinstance(v, list), "list_type", "Input should be a valid list"),
    "time": (_is_time, "datetime_parsing", "Input should be a valid datetime"),
    "uuid": (_is_uuid, "uuid_parsing", "Input should be a valid UUID"),
    "number": (lambda v: isinstance(v, (int, float)), "float_type", "Input should be a valid number"),
    "str_or_obj": (lambda v: isinstance(v, (str, dict)), "union_type", "Input should be a string or an object"),
    "value": (lambda v: isinstance(v, (str, int, float, dict)), "union_type", "Input should be a string or number"),
}


class Checker:
    """Collects FastAPI-shaped errors (`{loc, msg, type}`); `loc` names the field, as the real 422s do."""

    def __init__(self) -> None:
        self.errors: list[dict] = []

    def fail(self, loc: list, kind: str, msg: str) -> None:
        self.errors.append({"loc": ["body", *loc], "msg": msg, "type": kind})

    def field(self, obj: dict, key: str, loc: list, kind: str, *, required: bool = False) -> bool:
        """True when the field is present and of the right kind."""
        if obj.get(key) is None:
            if required:
                self.fail([*loc, key], "missing", "Field required")
            return False
        test, error_type, msg = KINDS[kind]
        if not test(obj[key]):
            self.fail([*loc, key], error_type, msg)
            return False
        return True


def validate_upload(body: Any) -> list[dict]:
    check = Checker()
    if not isinstance(body, dict):
        check.fail([], "dict_type", "Input should be a valid dictionary")
        return check.errors
    check.field(body, "experiment_name", [], "str", required=True)
    window = [check.field(body, key, [], "time", required=True)
              for key in ("experiment_start_time", "experiment_end_time")]
    start = parse_time(body["experiment_start_time"]) if window[0] else None
    end = parse_time(body["experiment_end_time"]) if window[1] else None
    if start and end and end < start:
        check.fail(["experiment_end_time"], "value_error", "experiment_end_time is before experiment_start_time")
    if body.get("dataset_id") is None and body.get("dataset_name") is None:
        check.fail(["dataset_id"], "missing", "One of dataset_id or dataset_name is required")
    check.field(body, "dataset_id", [], "uuid")
    for key in ("dataset_name", "experiment_description", "dataset_description"):
        check.field(body, key, [], "str")
    check.field(body, "experiment_metadata", [], "obj")
    if check.field(body, "summary_experiment_scores", [], "list"):
        for i, score in enumerate(body["summary_experiment_scores"]):
            _check_score(check, score, ["summary_experiment_scores", i])
    if check.field(body, "results", [], "list", required=True):
        for i, row in enumerate(body["results"]):
            _check_row(check, row, ["results", i], start, end)
    return check.errors


def _check_row(check: Checker, row: Any, loc: list, start: Any, end: Any) -> None:
    if not isinstance(row, dict):
        check.fail(loc, "dict_type", "Input should be a valid dictionary")
        return
    check.field(row, "row_id", loc, "uuid", required=True)
    check.field(row, "inputs", loc, "obj", required=True)
    for key in ("expected_outputs", "actual_outputs", "run_metadata"):
        check.field(row, key, loc, "obj")
    for key in ("run_name", "error"):
        check.field(row, key, loc, "str")
    times = {key: parse_time(row[key]) for key in ("start_time", "end_time")
             if check.field(row, key, loc, "time", required=True)}
    for key, moment in times.items():
        if start and end and not start <= moment <= end:
            check.fail([*loc, key], "value_error",
                       f"{key} {moment.isoformat()} is outside the experiment's start/end time")
    if len(times) == 2 and times["end_time"] < times["start_time"]:
        check.fail([*loc, "end_time"], "value_error", "end_time is before start_time")
    if check.field(row, "evaluation_scores", loc, "list"):
        for i, score in enumerate(row["evaluation_scores"]):
            _check_score(check, score, [*loc, "evaluation_scores", i])


def _check_score(check: Checker, score: Any, loc: list) -> None:
    if not isinstance(score, dict):
        check.fail(loc, "dict_type", "Input should be a valid dictionary")
        return
    if check.field(score, "key", loc, "str", required=True) and len(score["key"]) > SCORE_KEY_MAX:
        check.fail([*loc, "key"], "string_too_long", f"String should have at most {SCORE_KEY_MAX} characters")
    check.field(score, "score", loc, "number")
    check.field(score, "value", loc, "value")
    check.field(score, "comment", loc, "str")
    check.field(score, "correction", loc, "str_or_obj")
    for key in ("created_at", "modified_at"):
        check.field(score, key, loc, "time")
    if check.field(score, "feedback_source", loc, "obj"):
        check.field(score["feedback_source"], "type", [*loc, "feedback_source"], "str", required=True)
    if check.field(score, "feedback_config", loc, "obj"):
        _check_feedback_config(check, score["feedback_config"], [*loc, "feedback_config"])


def _check_feedback_config(check: Checker, config: dict, loc: list) -> None:
    kinds = ("continuous", "categorical", "freeform")
    if check.field(config, "type", loc, "str", required=True) and config["type"] not in kinds:
        check.fail([*loc, "type"], "enum", f"Input should be {', '.join(repr(k) for k in kinds)}")
    for key in ("min", "max"):
        check.field(config, key, loc, "number")
    if check.field(config, "categories", loc, "list"):
        for i, category in enumerate(config["categories"]):
            if not isinstance(category, dict):
                check.fail([*loc, "categories", i], "dict_type", "Input should be a valid dictionary")
                continue
            check.field(category, "value", [*loc, "categories", i], "number", required=True)
            check.field(category, "label", [*loc, "categories", i], "str")

