"""lighteval detail parquet files in their three column generations, built in tmp_path."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bridge.errors import FormatError
from bridge.formats.evals import Score, read_eval_file, sidecar_candidates
from bridge.formats.evals.common import content_id
from bridge.formats.evals.lighteval import literal

UNIT = {"type": "continuous", "min": 0, "max": 1}
STAMP = "2025-11-05T14-43-47.148527"
NAME = f"details_leaderboard|arc:challenge|25_{STAMP}.parquet"
WRITTEN = datetime(2025, 11, 5, 14, 43, 47, 148527, tzinfo=timezone.utc)
QUESTION = "Which planet is largest?"
PROMPT = "Question: Which is smallest?\nAnswer: Mercury\n\nQuestion: Which planet is largest?\nAnswer:"
CHOICES = [" Mars", " Jupiter", " Venus"]


def write(tmp_path, table: pa.Table):
    path = tmp_path / "details.parquet"
    pq.write_table(table, path)
    return path


def read(tmp_path, table: pa.Table, repo_path: str = f"{STAMP}/{NAME}", **options):
    path = write(tmp_path, table)
    return read_eval_file(repo_path, lambda: path.open("rb"), **options)


# <= v0.9: every value is the Python str() of the real value
STRINGIFIED = pa.table({
    "example": [QUESTION, "Capital of France?"],
    "full_prompt": [PROMPT, "Q: Capital of France?\nA:"],
    "instruction": ["", ""],
    "num_effective_few_shots": ["1", "0"],
    "num_asked_few_shots": ["1", "0"],
    "predictions": ["[(-3.5, False), (-0.25, True), (-2.0, False)]", "['Paris']"],
    "gold": ["[]", "['Paris']"],
    "choices": [str(CHOICES), "[]"],
    "gold_index": ["[1]", "[]"],
    "metrics": ["{'acc': 1, 'acc_norm': np.float64(1.0)}", "{'em': 1.0, 'quasi_exact_match': nan}"],
    "specifics": ["{}", "{}"],
    "truncated": ["[0, 0, 0]", "[0]"],
    "padded": ["[0, 0, 0]", "[0]"],
})

# v0.10: the same columns, typed (one prediction type per file: this one is a multiple-choice task)
TYPED = pa.table({
    "example": [QUESTION, "Capital of France?"],
    "full_prompt": [PROMPT, "Q: Capital of France?\nA:"],
    "instruction": ["", ""],
    "num_effective_few_shots": [1, 0],
    "num_asked_few_shots": [1, 0],
    "predictions": pa.array([[[-3.5, 0.0], [-0.25, 1.0], [-2.0, 0.0]], []], pa.list_(pa.list_(pa.float64()))),
    "gold": [[], ["Paris"]],
    "choices": [CHOICES, []],
    "gold_index": [[1], []],
    "metrics": [{"acc": 1.0, "em": None}, {"acc": None, "em": 1.0}],
    "specifics": [None, None],
})


@pytest.mark.parametrize("table", [STRINGIFIED, TYPED], ids=["v0.9-stringified", "v0.10-typed"])
def test_flat_generations_multiple_choice_row(tmp_path, table):
    result = read(tmp_path, table)
    assert (result.format, result.task) == ("lighteval", "leaderboard|arc:challenge|25")
    row = next(result.rows)
    assert row.inputs == {"query": QUESTION, "prompt": PROMPT, "choices": CHOICES}
    # no doc id in these generations: a hash of the example without the rendered (model-specific) prompt
    assert row.identity == content_id({"query": QUESTION, "choices": CHOICES})
    assert row.expected == {"gold": " Jupiter", "gold_index": 1}
    assert row.outputs == {"choice_index": 1, "choice": " Jupiter", "loglikelihoods": [-3.5, -0.25, -2.0]}
    assert row.scores[0] == Score("acc", 1.0, feedback_config=UNIT)
    assert row.metadata["num_effective_few_shots"] == 1


def test_stringified_generation_row_and_numpy_reprs(tmp_path):
    rows = list(read(tmp_path, STRINGIFIED).rows)
    assert rows[0].scores == [Score("acc", 1.0, feedback_config=UNIT), Score("acc_norm", 1.0, feedback_config=UNIT)]
    generated = rows[1]
    assert generated.inputs == {"query": "Capital of France?", "prompt": "Q: Capital of France?\nA:"}
    assert generated.expected == {"gold": "Paris"}
    assert generated.outputs == {"output": "Paris"}
    assert generated.scores == [Score("em", 1.0, feedback_config=UNIT)]  # nan (not a Python literal) dropped


def test_struct_generation(tmp_path):
    doc = pa.array([
        {"query": QUESTION, "choices": CHOICES, "gold_index": 1, "instruction": "", "id": "arc-17",
         "task_name": "leaderboard|arc:challenge"},
        {"query": "Capital of France?", "choices": ["Paris"], "gold_index": 0, "instruction": "Answer briefly.",
         "id": "", "task_name": "leaderboard|arc:challenge"},
    ])
    response = pa.array([
        {"input": PROMPT, "text": [], "text_post_processed": None, "logprobs": [-3.5, -0.25, -2.0],
         "argmax_logits_eq_gold": [True]},
        {"input": "Answer briefly.\nQ: Capital of France?\nA:", "text": [" Paris."], "text_post_processed": ["Paris"],
         "logprobs": [], "argmax_logits_eq_gold": []},
    ])
    metric = pa.array([{"acc": 1.0, "em": None}, {"acc": None, "em": 1.0}])
    result = read(tmp_path, pa.table({"doc": doc, "model_response": response, "metric": metric}))
    choice, generated = list(result.rows)

    assert choice.identity == "arc-17"
    assert choice.inputs == {"query": QUESTION, "prompt": PROMPT, "choices": CHOICES}
    assert choice.expected == {"gold": " Jupiter", "gold_index": 1}
    assert choice.outputs == {"choice_index": 1, "choice": " Jupiter", "loglikelihoods": [-3.5, -0.25, -2.0]}
    assert choice.scores == [Score("acc", 1.0, feedback_config=UNIT)]
    assert choice.metadata["task_name"] == "leaderboard|arc:challenge"

    assert generated.identity == content_id({"query": "Capital of France?", "choices": ["Paris"],
                                             "instruction": "Answer briefly."})  # empty doc id
    assert generated.inputs["instruction"] == "Answer briefly."
    assert generated.expected == {"gold": "Paris", "gold_index": 0}
    assert generated.outputs == {"output": "Paris", "raw_output": " Paris."}
    assert generated.scores == [Score("em", 1.0, feedback_config=UNIT)]


def test_window_from_file_stamp_without_results(tmp_path):
    result = read(tmp_path, TYPED)
    assert (result.started_at, result.finished_at) == (WRITTEN, WRITTEN)
    assert result.model is None


def test_results_file_gives_model_and_duration(tmp_path):
    results = {"config_general": {"model_name": "org/model", "start_time": 6149622.07, "end_time": 6150222.07,
                                  "total_evaluation_time_secondes": "600.0"}}
    sidecars = {f"results_{STAMP}.json": json.dumps(results).encode()}
    result = read(tmp_path, TYPED, sidecar=sidecars.get)
    assert result.model == "org/model"
    assert result.finished_at == WRITTEN  # the stamp is when results were written
    assert result.started_at == WRITTEN - timedelta(seconds=600)  # perf_counter values themselves never used


def test_model_from_local_details_folder(tmp_path):
    result = read(tmp_path, TYPED, repo_path=f"out/details/org/model/{STAMP}/{NAME}")
    assert result.model == "org/model"


@pytest.mark.parametrize(
    "path, others, expected",
    [
        (f"{STAMP}/{NAME}", [f"results_{STAMP}.json", "results_2024-01-01T00-00-00.json"], [f"results_{STAMP}.json"]),
        (f"out/details/org/model/{STAMP}/{NAME}", [f"out/results/org/model/results_{STAMP}.json"],
         [f"out/results/org/model/results_{STAMP}.json"]),
        (f"{STAMP}/{NAME}", [], []),
    ],
    ids=["hub-layout", "local-layout", "none-available"],
)
def test_sidecar_candidates(path, others, expected):
    assert sidecar_candidates(path, [path, *others]) == expected


@pytest.mark.parametrize(
    "text, value",
    [("[(-1.5, False)]", [(-1.5, False)]), ("{'acc': np.float64(0.5)}", {"acc": 0.5}),
     ("{'x': nan, 'y': 'banana'}", {"x": None, "y": "banana"}), ("not python", "not python"), ("", "")],
    ids=["tuples", "numpy-repr", "nan", "plain-text", "empty"],
)
def test_literal(text, value):
    assert literal(text) == value


def test_not_parquet_is_a_format_error(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(FormatError, match="parquet") as caught:
        read_eval_file(NAME, lambda: path.open("rb"))
    assert caught.value.file == NAME
