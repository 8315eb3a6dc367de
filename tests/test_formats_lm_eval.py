"""lm-evaluation-harness sample logs: current and old shapes, multiple choice, filters, sibling results, streaming."""

from __future__ import annotations

import io
import json
import tracemalloc
from datetime import datetime, timedelta, timezone

import pytest

from bridge.errors import FormatError
from bridge.formats.evals import Score, read_eval_file, sidecar_candidates

UNIT = {"type": "continuous", "min": 0, "max": 1}
STAMP = "2025-01-28T01-08-13.454441"
SAMPLES = f"org__model/samples_gsm8k_{STAMP}.jsonl"


def jsonl(*records) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in records).encode()


def read(path: str, data: bytes, **options):
    return read_eval_file(path, lambda: io.BytesIO(data), **options)


def generation(doc_id: int, filter_name: str, answer: str, exact: float) -> dict:
    return {
        "doc_id": doc_id,
        "doc": {"question": f"What is {doc_id} + {doc_id}?", "answer": str(2 * doc_id)},
        "target": str(2 * doc_id),
        "arguments": {"gen_args_0": {"arg_0": f"Question: What is {doc_id} + {doc_id}?\nAnswer:",
                                     "arg_1": {"until": ["Question:"]}}},
        "resps": [[f" The answer is {answer}."]],
        "filtered_resps": [answer],
        "filter": filter_name,
        "metrics": ["exact_match"],
        "doc_hash": "d" * 64, "prompt_hash": "p" * 64, "target_hash": "t" * 64,
        "exact_match": exact,
    }


def multiple_choice(with_choices: bool = True) -> dict:
    doc = {"question": "Which planet is largest?", "answer": 2}
    if with_choices:
        doc["choices"] = ["Mars", "Venus", "Jupiter", "Earth"]
    continuations = [" Mars", " Venus", " Jupiter", " Earth"]
    loglikelihoods = ["-4.5", "-3.25", "-0.75", "-2.0"]
    return {
        "doc_id": 3,
        "doc": doc,
        "target": "2",  # stringified index since v0.4.3
        "arguments": {f"gen_args_{i}": {"arg_0": "Question: Which planet is largest?\nAnswer:", "arg_1": text}
                      for i, text in enumerate(continuations)},
        "resps": [[[value, "False"]] for value in loglikelihoods],
        "filtered_resps": [[value, "False"] for value in loglikelihoods],
        "filter": "none",
        "metrics": ["acc", "acc_norm"],
        "acc": 1.0,
        "acc_norm": 1.0,
    }


def test_two_filters_put_the_filter_in_the_identity():
    data = jsonl(*(generation(i, "strict-match", str(2 * i), 1.0) for i in range(2)),
                 *(generation(i, "flexible-extract", str(2 * i + 1), 0.0) for i in range(2)))
    result = read(SAMPLES, data)
    assert (result.task, result.model) == ("gsm8k", "org/model")  # model from the sanitized folder name
    rows = list(result.rows)
    assert [row.identity for row in rows] == ["0/strict-match", "1/strict-match", "0/flexible-extract",
                                              "1/flexible-extract"]
    first = rows[1]
    assert first.inputs == {"prompt": "Question: What is 1 + 1?\nAnswer:",
                            "doc": {"question": "What is 1 + 1?", "answer": "2"}}
    assert first.expected == {"target": "2"}
    assert first.outputs == {"output": "2", "raw_output": " The answer is 2."}
    assert first.scores == [Score("exact_match", 1.0, feedback_config=UNIT)]
    assert first.metadata["filter"] == "strict-match"
    assert rows[2].scores == [Score("exact_match", 0.0, feedback_config=UNIT)]


def test_one_filter_keeps_the_plain_doc_id():
    data = jsonl(generation(0, "strict-match", "0", 1.0), generation(1, "strict-match", "2", 1.0))
    rows = list(read(SAMPLES, data).rows)
    assert [row.identity for row in rows] == ["0", "1"]


def test_metrics_list_decides_which_numbers_are_scores():
    record = {**generation(0, "none", "0", 1.0), "metrics": ["exact_match"], "extra_number": 7}
    (row,) = list(read(SAMPLES, jsonl(record)).rows)
    assert [score.key for score in row.scores] == ["exact_match"]


def test_without_metrics_list_numeric_keys_are_scores():
    record = {key: value for key, value in generation(0, "none", "0", 1.0).items() if key not in ("filter", "metrics")}
    record["inst_level_strict_acc"] = [True, False, True, True]  # ifeval: one boolean per instruction
    record["word_perplexity"] = [-12.5, 4]  # perplexity tasks log (loglikelihood, words) pairs
    (row,) = list(read(SAMPLES, jsonl(record)).rows)
    scores = {score.key: score for score in row.scores}
    assert set(scores) == {"exact_match", "inst_level_strict_acc"}
    assert scores["inst_level_strict_acc"].score == 0.75
    assert scores["inst_level_strict_acc"].feedback_config == UNIT
    assert row.metadata["word_perplexity"] == [-12.5, 4]


@pytest.mark.parametrize("with_choices, choice", [(True, "Jupiter"), (False, " Jupiter")],
                         ids=["choice-from-doc", "choice-from-continuation"])
def test_multiple_choice_prediction_is_the_highest_loglikelihood(with_choices, choice):
    (row,) = list(read(SAMPLES, jsonl(multiple_choice(with_choices))).rows)
    assert row.outputs == {"choice_index": 2, "choice": choice, "loglikelihoods": [-4.5, -3.25, -0.75, -2.0]}
    assert row.expected == {"target": "2", "target_choice": choice}
    assert row.inputs["prompt"] == "Question: Which planet is largest?\nAnswer:"
    assert row.scores == [Score("acc", 1.0, feedback_config=UNIT), Score("acc_norm", 1.0, feedback_config=UNIT)]


def test_single_loglikelihood_request():
    record = {"doc_id": 0, "doc": {"text": "The cat sat on the"}, "target": " mat",
              "arguments": {"gen_args_0": {"arg_0": "The cat sat on the", "arg_1": " mat"}},
              "resps": [[["-1.5", "True"]]], "filtered_resps": [["-1.5", "True"]], "acc": 1.0, "perplexity": -1.5}
    (row,) = list(read(SAMPLES, jsonl(record)).rows)
    assert row.outputs == {"loglikelihood": -1.5, "is_greedy": True}
    assert {score.key: score.feedback_config for score in row.scores} == {"acc": UNIT, "perplexity": None}


OLD_ARRAY = json.dumps([
    {"doc_id": 0, "doc": {"query": "A man is sitting on a roof. He", "choices": ["starts pulling up roofing.",
                                                                               "is holding a rubik's cube."]},
     "target": 0, "arguments": [["A man is sitting on a roof. He", " starts pulling up roofing."],
                                ["A man is sitting on a roof. He", " is holding a rubik's cube."]],
     "resps": [[[-12.25, False]], [[-20.5, False]]], "filtered_resps": [[-12.25, False], [-20.5, False]],
     "acc": 1.0, "acc_norm": 1.0},
    {"doc_id": 1, "doc": {"query": "A woman walks in. She", "choices": ["sits.", "flies."]},
     "target": 1, "arguments": [["A woman walks in. She", " sits."], ["A woman walks in. She", " flies."]],
     "resps": [[[-9.0, False]], [[-3.5, True]]], "filtered_resps": [[-9.0, False], [-3.5, True]],
     "acc": 1.0, "acc_norm": 0.0},
], indent=2).encode()


def test_old_json_array_shape():
    path = "out/pretrained__EleutherAI__pythia-160m,dtype__float_hellaswag.jsonl"
    result = read(path, OLD_ARRAY)
    assert result.task == "hellaswag"
    first, second = list(result.rows)
    assert first.identity == "0" and second.identity == "1"
    assert first.inputs["prompt"] == "A man is sitting on a roof. He"
    assert first.outputs == {"choice_index": 0, "choice": "starts pulling up roofing.",
                             "loglikelihoods": [-12.25, -20.5]}
    assert first.expected == {"target": 0, "target_choice": "starts pulling up roofing."}
    assert second.outputs["choice"] == "flies."
    assert {score.key: score.score for score in second.scores} == {"acc": 1.0, "acc_norm": 0.0}


def test_old_shape_task_name_and_model_from_results_json():
    path = "out/pretrained__org__model_v2_mmlu_abstract_algebra.jsonl"
    results = {"configs": {"mmlu_abstract_algebra": {}, "algebra": {}},
               "config": {"model": "hf", "model_args": "pretrained=org/model_v2,dtype=float"}}
    sidecars = {"out/results.json": json.dumps(results).encode()}
    assert sidecar_candidates(path, [path, *sidecars]) == ["out/results.json"]
    result = read(path, OLD_ARRAY, sidecar=sidecars.get)
    assert (result.task, result.model) == ("mmlu_abstract_algebra", "org/model_v2")


def test_sibling_results_give_model_and_wall_clock_window():
    results = {"model_name": "EleutherAI/pythia-160m", "date": 1738026493.25,
               "start_time": 6149622.07, "end_time": 6149980.57,  # perf_counter(): never times
               "total_evaluation_time_seconds": "358.5"}
    results_path = f"org__model/results_{STAMP}.json"
    all_paths = [SAMPLES, results_path, "org__model/results_2024-01-01T00-00-00.000001.json", "README.md"]
    assert sidecar_candidates(SAMPLES, all_paths) == [results_path]
    asked = []
    sidecar = lambda path: asked.append(path) or ({results_path: json.dumps(results).encode()}.get(path))  # noqa: E731
    result = read(SAMPLES, jsonl(generation(0, "none", "0", 1.0)), sidecar=sidecar)
    assert asked[0] == results_path
    assert result.model == "EleutherAI/pythia-160m"
    started = datetime(2025, 1, 28, 1, 8, 13, 250000, tzinfo=timezone.utc)
    assert result.started_at == started
    assert result.finished_at == started + timedelta(seconds=358.5)


def test_hub_results_under_unsanitized_model_folder():
    results = f"org/model/results_{STAMP}.json"
    assert sidecar_candidates(SAMPLES, [SAMPLES, results]) == [results]


def test_without_results_the_file_stamp_is_the_window():
    result = read(SAMPLES, jsonl(generation(0, "none", "0", 1.0)), sidecar=lambda path: None)
    stamp = datetime(2025, 1, 28, 1, 8, 13, 454441, tzinfo=timezone.utc)
    assert (result.started_at, result.finished_at) == (stamp, stamp)


def test_columns_override_uses_dotted_paths_into_the_record():
    result = read(SAMPLES, jsonl(generation(4, "none", "8", 1.0)),
                  columns={"inputs": ["doc.question"], "outputs": ["filtered_resps.0"]})
    (row,) = list(result.rows)
    assert row.inputs == {"doc.question": "What is 4 + 4?"}
    assert row.outputs == {"filtered_resps.0": "8"}
    assert row.expected == {"target": "8"}  # roles not mapped keep the reader's choice


def test_empty_column_roles_leave_the_reader_choice():
    result = read(SAMPLES, jsonl(generation(4, "none", "8", 1.0)),
                  columns={"inputs": [], "expected": [], "outputs": [], "scores": []})
    row = next(result.rows)
    assert row.inputs["prompt"].startswith("Question: What is 4 + 4?") and row.scores[0].key == "exact_match"


def test_columns_override_names_a_missing_path():
    result = read(SAMPLES, jsonl(generation(4, "none", "8", 1.0)), columns={"inputs": ["doc.passage"]})
    with pytest.raises(FormatError, match="doc.passage") as caught:
        next(result.rows)
    assert caught.value.file == SAMPLES


@pytest.mark.parametrize(
    "bad_line, message",
    [(b"{not json\n", "invalid JSON"), (b"[1, 2]\n", "expected a JSON object, got an array")],
    ids=["not-json", "array-line"],
)
def test_broken_line_names_file_and_line(bad_line, message):
    data = jsonl(generation(0, "none", "0", 1.0), generation(1, "none", "2", 1.0)) + bad_line
    rows = read(SAMPLES, data).rows
    assert [next(rows).identity, next(rows).identity] == ["0", "1"]  # rows before the break still arrive
    with pytest.raises(FormatError) as caught:
        next(rows)
    assert (caught.value.file, caught.value.location) == (SAMPLES, "line 3")
    assert message in str(caught.value) and SAMPLES in str(caught.value)


class CountingFile(io.FileIO):
    """A file that remembers how far it was read."""

    def __init__(self, path, log):
        super().__init__(path, "r")
        log.append(self)


def test_twenty_thousand_lines_are_streamed(tmp_path):
    path = tmp_path / "samples_gsm8k_2025-01-28T01-08-13.454441.jsonl"
    with path.open("w") as f:
        for i in range(20_000):
            record = generation(i, "none", str(2 * i), 1.0)
            record["doc"]["passage"] = "lorem ipsum " * 80
            f.write(json.dumps(record) + "\n")
    size = path.stat().st_size
    opened: list[CountingFile] = []
    result = read_eval_file(f"m/{path.name}", lambda: io.BufferedReader(CountingFile(path, opened)))
    before_rows = len(opened)  # detection only

    first = next(result.rows)
    assert first.identity == "0"
    stream = opened[-1]
    assert len(opened) > before_rows and stream.tell() < size / 20  # the row pass has read only its first buffer

    tracemalloc.start()
    try:
        count = 1 + sum(1 for _ in result.rows)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 20_000
    assert peak < size / 4  # never the whole file as dicts (the file is ~20 MB)
