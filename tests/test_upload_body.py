"""Pure: the upload-experiment body and the PR comment."""

import json
from datetime import datetime, timedelta, timezone

import pytest

from bridge.formats.evals import EvalRow, Score
from bridge.formats.pr_comment import Side, TaskResult, marker, md_escape, render_comment
from bridge.formats.upload import Spool, experiment_name, name_fields, row_id, window, write_body

T0 = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)


def rows(n, timed=False):
    for i in range(n):
        start = T0 + timedelta(seconds=i) if timed else None
        yield EvalRow(identity=str(i), inputs={"q": i}, expected={"a": i}, outputs={"p": i},
                      scores=[Score("acc", float(i % 2), feedback_config={"type": "continuous", "min": 0, "max": 1})],
                      start_time=start, end_time=start + timedelta(milliseconds=500) if timed else None)


def body_of(spool, started=None, finished=None, fallback=T0):
    import io
    start, end = window(spool, started, finished, fallback)
    out = io.BytesIO()
    write_body(spool, {"experiment_name": "e", "dataset_name": "d"}, start, end, out)
    return json.loads(out.getvalue()), start, end


@pytest.mark.parametrize("timed", [False, True], ids=["spread-over-window", "own-times"])
def test_row_times_lie_inside_the_experiment_window(timed):
    spool = Spool("d")
    for row in rows(50, timed):
        spool.add(row)
    body, start, end = body_of(spool)
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
    exp_start, exp_end = parse(body["experiment_start_time"]), parse(body["experiment_end_time"])
    for row in body["results"]:
        assert exp_start <= parse(row["start_time"]) <= parse(row["end_time"]) <= exp_end
    assert body["summary_experiment_scores"] == [{"key": "acc", "score": 0.5,
                                                  "feedback_config": {"type": "continuous", "min": 0, "max": 1}}]


def test_row_ids_are_stable_per_dataset_and_identity():
    assert row_id("d", "1") == row_id("d", "1") != row_id("d", "2") != row_id("other", "1")
    spool = Spool("d")
    spool.add(next(rows(1)))
    body, _, _ = body_of(spool)
    assert body["results"][0]["row_id"] == row_id("d", "0")


def test_nan_and_infinity_become_null():
    spool = Spool("d")
    spool.add(EvalRow("x", {"q": float("nan")}, None, {"p": float("inf")}, [Score("acc", float("nan"))]))
    body, _, _ = body_of(spool)
    assert body["results"][0]["inputs"] == {"q": None} and body["results"][0]["actual_outputs"] == {"p": None}
    assert body["summary_experiment_scores"] == []


def test_inputs_mentioning_start_time_still_get_times():
    spool = Spool("d")
    spool.add(EvalRow("x", {"text": '"start_time"'}, None, None, []))
    body, _, _ = body_of(spool)
    assert "start_time" in body["results"][0]


@pytest.mark.parametrize("template, pr, expected", [
    ("{model}@{short_sha}", None, "m@abcdef0"),
    ("{model}@{short_sha}", 3, "m@abcdef0 pr-3"),
    ("{model} {pr} {short_sha}", 3, "m pr-3 abcdef0"),
    ("{repo_name}/{task}", None, "evals/t"),
], ids=["main", "pr-appended", "pr-in-template", "repo-and-task"])
def test_names(template, pr, expected):
    fields = name_fields("acme/evals", "refs/heads/main", "abcdef0123", pr, "t", "m")
    assert experiment_name(template, fields) == expected


def test_comment_escapes_everything_from_files():
    evil = "<img src=x onerror=alert(1)>|[link](http://evil)"
    result = TaskResult(evil, "**bold**", Side("exp", "http://ls/exp", 3, {evil: 0.5}, "id1"),
                        Side("base", "http://ls/base", 3, {evil: 0.25}, "id2"), "http://ls/compare")
    text = render_comment("a" * 40, 7, [result])
    assert "<img" not in text and "](http://evil)" not in text and "**bold**" not in text
    assert md_escape(evil) in text and "▲ +0.25" in text and marker("a" * 40) in text


def test_comment_without_baseline():
    text = render_comment("b" * 40, 1, [TaskResult("t", None, Side("exp", None, 2, {"acc": 1.0}))], ["x.csv: bad"])
    assert "No baseline yet" in text and "x.csv: bad" in text.replace("\\", "")
