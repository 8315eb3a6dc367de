"""lighteval detail files: `details/<model>/<ts>/details_<task>_<ts>.parquet` (pushed: `<ts>/details_...`).

Three column generations:
- <= v0.9: `example`, `full_prompt`, `predictions`, `gold`, `choices`, `gold_index`, `metrics`, `specifics`, ...
  with every value stored as a Python `str()` (read back with `ast.literal_eval`);
- v0.10: the same columns with real types;
- >= v0.11: `doc` (query, choices, gold_index, instruction, id, ...), `model_response` (input, text,
  text_post_processed, logprobs, ...) and `metric` (metric -> value).
The results file beside them gives the model name and the run's duration; its start/end times are perf_counter().
"""

from __future__ import annotations

import ast
import posixpath
import re
from typing import Any, Iterator

from .common import FILE_STAMP, Source, content_id, jsonable, make_score, open_parquet, parse_file_stamp, seconds
from .model import EvalFile, EvalRow, Score
from .table import parquet_records

DETAILS_NAME = re.compile(rf"^details_(?P<task>.+?)(?:_(?P<stamp>{FILE_STAMP}))?\.parquet$")
# the columns read back with literal_eval; text columns are real strings in every generation, and token-id columns
# (input_tokens, cont_tokens) can be long and are not used
VALUE_COLUMNS = {"predictions", "gold", "choices", "gold_index", "metrics", "specifics", "num_effective_few_shots",
                 "num_asked_few_shots", "truncated", "padded"}
NUMPY_REPR = re.compile(r"\bnp\.\w+\(([^()]*)\)")  # numpy 2 str() of scalars: np.float64(0.5)
NOT_FINITE = re.compile(r"(?<![\w'\"])-?(?:nan|inf)\b")  # bare nan/inf are not Python literals


def sidecar_paths(path: str) -> list[str]:
    folder, name = posixpath.split(path)
    match = DETAILS_NAME.match(name)
    if not (match and match["stamp"]):
        return []
    results = f"results_{match['stamp']}.json"
    guesses = [posixpath.join(folder, results), posixpath.join(posixpath.dirname(folder), results)]
    parts = folder.split("/")
    if "details" in parts:  # local layout: details/<model>/<ts>/ beside results/<model>/
        at = len(parts) - 1 - parts[::-1].index("details")
        model_parts = parts[at + 1 : -1] if parts[-1] == match["stamp"] else parts[at + 1 :]
        guesses.append(posixpath.join(*parts[:at], "results", *model_parts, results))
    return list(dict.fromkeys(guess.lstrip("/") for guess in guesses))


def read(source: Source) -> EvalFile:
    match = DETAILS_NAME.match(source.name)
    task = match["task"] if match else source.name.removesuffix(".parquet")
    stamp = match["stamp"] if match else None
    general = (source.sidecar_json(sidecar_paths(source.path)) or {}).get("config_general") or {}
    finished = parse_file_stamp(stamp)  # written when the run ended
    duration = seconds(general.get("total_evaluation_time_secondes"))
    started = finished - duration if finished and duration else finished
    model = general.get("model_name") or _model_from_folder(source.path, stamp)
    with source.opener() as f:
        names = set(open_parquet(source, f).schema_arrow.names)  # fails early on a file that is not parquet
    structs = {"doc", "model_response"} <= names
    return EvalFile(source.path, "lighteval", task, model, started, finished, _rows(source, structs))


def _model_from_folder(path: str, stamp: str | None) -> str | None:
    parts = posixpath.dirname(path).split("/")
    if stamp and parts and parts[-1] == stamp and "details" in parts[:-1]:
        at = len(parts) - 1 - parts[::-1].index("details")
        return "/".join(parts[at + 1 : -1]) or None
    return None


def _rows(source: Source, structs: bool) -> Iterator[EvalRow]:
    for _, record in parquet_records(source):
        if structs:
            yield source.finish(record, _struct_row(record))
        else:
            decoded = {key: literal(item) if key in VALUE_COLUMNS else item for key, item in record.items()}
            yield source.finish(decoded, _flat_row(decoded))


# ------------------------------------------------------------------------------------------------- <= v0.10 shape


def _flat_row(value: dict) -> EvalRow:
    choices = _list(value.get("choices"))
    inputs = _inputs(value.get("example"), value.get("full_prompt"), choices, value.get("instruction"))
    gold_index = _list(value.get("gold_index"))
    expected = _expected(_list(value.get("gold")), gold_index, choices)
    outputs = _prediction(_list(value.get("predictions")), choices)
    metadata = {key: jsonable(value[key]) for key in ("num_effective_few_shots", "num_asked_few_shots", "truncated",
                                                      "padded", "specifics") if value.get(key) not in (None, [], {})}
    return EvalRow(_example_id(inputs), inputs, expected, outputs, _scores(value.get("metrics")), metadata=metadata)


def literal(value: Any) -> Any:
    """Values of <= v0.9 files are Python str() of lists/dicts/numbers; anything unreadable stays text."""
    if not isinstance(value, str) or not value.strip():
        return value
    for text in (value, NOT_FINITE.sub("None", NUMPY_REPR.sub(r"\1", value))):
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            continue
    return value


# ------------------------------------------------------------------------------------------------- >= v0.11 shape


def _struct_row(record: dict) -> EvalRow:
    doc = record.get("doc") or {}
    response = record.get("model_response") or {}
    choices = _list(doc.get("choices"))
    inputs = _inputs(doc.get("query"), response.get("input"), choices, doc.get("instruction"))
    expected = _expected([], _list(doc.get("gold_index")), choices)
    texts = _list(response.get("text_post_processed")) or _list(response.get("text"))
    if any(isinstance(text, str) and text for text in texts):
        outputs = _prediction(texts, choices)
        raw = _list(response.get("text"))
        if raw and raw[0] != texts[0]:
            outputs["raw_output"] = raw[0]
    else:
        outputs = _prediction(_list(response.get("logprobs")), choices)
    identity = str(doc["id"]) if doc.get("id") not in (None, "") else _example_id(inputs)
    metadata = {key: jsonable(doc[key]) for key in ("task_name", "specific") if doc.get(key) not in (None, {}, "")}
    return EvalRow(identity, inputs, expected, outputs, _scores(record.get("metric")), metadata=metadata)


# ---------------------------------------------------------------------------------------------------------- shared


def _example_id(inputs: dict) -> str:
    """Hash of the example without the rendered prompt: few-shot sampling and chat templates change the prompt from
    one model or run to the next, and the identity should line the same question up across experiments."""
    return content_id({key: value for key, value in inputs.items() if key != "prompt"})


def _list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _inputs(query: Any, prompt: Any, choices: list, instruction: Any) -> dict:
    inputs = {"query": jsonable(query)}
    if prompt and prompt != query:
        inputs["prompt"] = jsonable(prompt)  # the full prompt with few-shot examples
    if choices:
        inputs["choices"] = jsonable(choices)
    if instruction:
        inputs["instruction"] = instruction
    return inputs


def _expected(gold: list, gold_index: list, choices: list) -> dict | None:
    indexes = [index for index in gold_index if isinstance(index, int) and 0 <= index < len(choices)]
    if not gold and indexes:
        gold = [choices[index] for index in indexes]
    if not gold and not gold_index:
        return None
    expected = {"gold": jsonable(gold[0] if len(gold) == 1 else gold)}
    if gold_index:
        expected["gold_index"] = gold_index[0] if len(gold_index) == 1 else gold_index
    return expected


def _prediction(predictions: list, choices: list) -> dict | None:
    """Generated text, or for log-likelihood tasks the choice with the highest log-likelihood."""
    if not predictions:
        return None
    if all(isinstance(item, str) for item in predictions):
        outputs = {"output": predictions[0]}
        if len(predictions) > 1:
            outputs["outputs"] = predictions
        return outputs
    loglikelihoods = [_first_number(item) for item in predictions]
    if None in loglikelihoods:
        return {"output": jsonable(predictions)}
    if len(loglikelihoods) == 1:
        return {"loglikelihood": loglikelihoods[0]}
    best = max(range(len(loglikelihoods)), key=loglikelihoods.__getitem__)
    outputs = {"choice_index": best}
    if len(choices) == len(loglikelihoods):
        outputs["choice"] = jsonable(choices[best])
    outputs["loglikelihoods"] = loglikelihoods
    return outputs


def _first_number(item: Any) -> float | None:
    """(logprob, is_greedy) pairs or bare logprobs."""
    if isinstance(item, (list, tuple)) and item:
        item = item[0]
    if isinstance(item, bool) or not isinstance(item, (int, float)):
        return None
    return float(item)


def _scores(metrics: Any) -> list[Score]:
    if not isinstance(metrics, dict):
        return []
    return [score for key, value in metrics.items() if (score := make_score(str(key), value))]
