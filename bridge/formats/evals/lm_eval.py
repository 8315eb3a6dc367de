"""lm-evaluation-harness `--log_samples` files.

`<model>/samples_<task>_<date_id>.jsonl` (one line per document and filter; `filter`/`metrics` keys since v0.4.7)
and, up to v0.4.2, `<model_args>_<task>.jsonl` holding a pretty-printed JSON array. The sibling
`results_<date_id>.json` gives the model name and the start date; its start_time/end_time are perf_counter()
values and are never used as times.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any, Iterator

from bridge.errors import FormatError

from .common import (
    FILE_STAMP,
    Source,
    content_id,
    from_epoch,
    iter_objects,
    make_score,
    parse_file_stamp,
    seconds,
    stem,
)
from .model import EvalFile, EvalRow, Score

SAMPLES_NAME = re.compile(rf"^samples_(?P<task>.+?)(?:_(?P<stamp>{FILE_STAMP}))?\.jsonl$")
BOOKKEEPING = {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics", "doc_hash",
               "prompt_hash", "target_hash", "task_name"}
KEPT_IN_METADATA = ("doc_id", "filter", "doc_hash", "prompt_hash", "target_hash")


def sidecar_paths(path: str) -> list[str]:
    folder, name = posixpath.split(path)
    match = SAMPLES_NAME.match(name)
    if not (match and match["stamp"]):
        return [posixpath.join(folder, "results.json")]  # lm-eval <= 0.4.2 wrote results.json beside the samples
    results = f"results_{match['stamp']}.json"
    # pushed to the Hub, results also land under the unsanitized model name ("org/model" instead of "org__model")
    return list(dict.fromkeys([posixpath.join(folder, results), posixpath.join(folder.replace("__", "/"), results)]))


def read(source: Source) -> EvalFile:
    results = source.sidecar_json(sidecar_paths(source.path))
    match = SAMPLES_NAME.match(source.name)
    task = match["task"] if match else _old_task_name(stem(source.path), results)
    stamp = parse_file_stamp(match["stamp"] if match else None)
    started, finished = _window(results, stamp)
    model = _model(results) or _model_from_folder(source.path)
    return EvalFile(source.path, "lm-eval", task, model, started, finished, _rows(source))


def _old_task_name(name: str, results: dict | None) -> str:
    """`<model_args>_<task>`: the task is the longest results.json config name that ends the file name."""
    tasks = sorted((results or {}).get("configs") or {}, key=len, reverse=True)
    for task in tasks:
        if name.endswith(f"_{task}"):
            return task
    # model_args had "=" and "/" replaced by "__": the task follows the first "_" after the last value starts
    tail = name.rsplit("__", 1)[-1]
    return tail.split("_", 1)[1] if "_" in tail and "__" in name else name


def _window(results: dict | None, stamp):
    start = from_epoch((results or {}).get("date"))
    if start is None:
        return stamp, stamp  # the file-name stamp is when results were written: the only instant known
    duration = seconds((results or {}).get("total_evaluation_time_seconds"))
    return start, start + duration if duration else start


def _model(results: dict | None) -> str | None:
    if not results:
        return None
    if isinstance(results.get("model_name"), str) and results["model_name"]:
        return results["model_name"]
    model_args = (results.get("config") or {}).get("model_args")
    if isinstance(model_args, str):
        found = re.search(r"(?:^|,)\s*(?:pretrained|model|engine)=([^,]+)", model_args)
        return found.group(1) if found else None
    return None


def _model_from_folder(path: str) -> str | None:
    folder = posixpath.basename(posixpath.dirname(path))
    return folder.replace("__", "/") if "__" in folder else None  # lm-eval's sanitized model directory


# -------------------------------------------------------------------------------------------------------------- rows


def _rows(source: Source) -> Iterator[EvalRow]:
    several_filters = len(_filters(source)) > 1
    with source.opener() as f:
        for _, record in iter_objects(source, f):
            yield source.finish(record, to_row(record, several_filters))


def _filters(source: Source) -> set[str]:
    """The filters of the file (a first pass, one line in memory at a time); stops at two."""
    found: set[str] = set()
    with source.opener() as f:
        try:
            for _, record in iter_objects(source, f):
                if "filter" not in record:
                    break  # shapes before v0.4.7 have one filter and no key
                found.add(str(record["filter"]))
                if len(found) > 1:
                    break
        except FormatError:
            pass  # reported by the main pass when it reaches the broken line
    return found


def to_row(record: dict, several_filters: bool) -> EvalRow:
    doc = record.get("doc")
    arguments = _arguments(record.get("arguments"))
    inputs = {}
    if arguments and arguments[0] and isinstance(arguments[0][0], str):
        inputs["prompt"] = arguments[0][0]
    if doc is not None:
        inputs["doc"] = doc
    outputs = _prediction(record, doc, arguments)
    expected = None
    if "target" in record:
        expected = {"target": record["target"]}
        choice = _target_choice(record["target"], doc, arguments, outputs)
        if choice is not None:
            expected["target_choice"] = choice
    scores, extra = _scores(record)
    identity = str(record["doc_id"]) if "doc_id" in record else content_id(inputs)
    if several_filters and "filter" in record:
        identity = f"{identity}/{record['filter']}"
    metadata = {key: record[key] for key in KEPT_IN_METADATA if key in record}
    return EvalRow(identity, inputs, expected, outputs, scores, metadata={**metadata, **extra})


def _arguments(value: Any) -> list[list]:
    """[[arg_0, arg_1, ...] per request] from `{"gen_args_0": {"arg_0": ...}}` or the older list of tuples."""
    if isinstance(value, dict):
        ordered = sorted(value.items(), key=lambda item: _index(item[0]))
        return [[args[key] for key in sorted(args, key=_index)] if isinstance(args, dict) else [args]
                for _, args in ordered]
    if isinstance(value, list):
        return [list(args) if isinstance(args, (list, tuple)) else [args] for args in value]
    return []


def _index(name: str) -> int:
    found = re.search(r"(\d+)$", name)
    return int(found.group(1)) if found else 0


def _prediction(record: dict, doc: Any, arguments: list[list]) -> dict | None:
    filtered, raw = record.get("filtered_resps"), record.get("resps")
    if filtered is None and isinstance(raw, list):
        filtered = [resp[0] if isinstance(resp, list) and resp else resp for resp in raw]
    if not isinstance(filtered, list) or not filtered:
        return None if filtered in (None, []) else {"output": filtered}
    pairs = [_loglikelihood(item) for item in filtered]
    if all(pair is not None for pair in pairs):
        return _choice(pairs, doc, arguments)
    if all(isinstance(item, str) for item in filtered):
        outputs = {"output": filtered[0]}
        first_raw = raw[0][0] if isinstance(raw, list) and raw and isinstance(raw[0], list) and raw[0] else None
        if isinstance(first_raw, str) and first_raw != filtered[0]:
            outputs["raw_output"] = first_raw  # the filter changed it (stripping, answer extraction)
        if len(filtered) > 1:
            outputs["outputs"] = filtered
        return outputs
    numbers = [_float(item) for item in filtered]
    if len(filtered) == 1 and numbers[0] is not None:
        return {"loglikelihood": numbers[0]}  # loglikelihood_rolling (perplexity tasks)
    return {"output": filtered}


def _choice(pairs: list[tuple[float, bool | None]], doc: Any, arguments: list[list]) -> dict:
    if len(pairs) == 1:
        loglikelihood, greedy = pairs[0]
        return {"loglikelihood": loglikelihood, "is_greedy": greedy}
    loglikelihoods = [loglikelihood for loglikelihood, _ in pairs]
    best = max(range(len(loglikelihoods)), key=loglikelihoods.__getitem__)
    outputs = {"choice_index": best}
    text = _choice_text(best, len(pairs), doc, arguments)
    if text is not None:
        outputs["choice"] = text
    outputs["loglikelihoods"] = loglikelihoods
    return outputs


def _choice_text(index: int, count: int, doc: Any, arguments: list[list]) -> str | None:
    choices = doc.get("choices") if isinstance(doc, dict) else None
    if isinstance(choices, dict):  # ARC-style {"text": [...], "label": [...]}
        choices = choices.get("text")
    if isinstance(choices, list) and len(choices) == count:
        return str(choices[index])
    if len(arguments) == count and len(arguments[index]) > 1 and isinstance(arguments[index][1], str):
        return arguments[index][1]  # the continuation that was scored
    return None


def _target_choice(target: Any, doc: Any, arguments: list[list], outputs: dict | None) -> str | None:
    """Multiple-choice targets are often the index of the right choice (stringified since v0.4.3)."""
    if not outputs or "loglikelihoods" not in outputs:
        return None
    if isinstance(target, bool) or not isinstance(target, (int, str)) or not str(target).isdigit():
        return None
    count, index = len(outputs["loglikelihoods"]), int(target)
    return _choice_text(index, count, doc, arguments) if index < count else None


def _loglikelihood(item: Any) -> tuple[float, bool | None] | None:
    """`["-1.23", "False"]` (stringified since v0.4.3) or `[-1.23, false]` -> (-1.23, False)."""
    if not isinstance(item, (list, tuple)) or len(item) != 2:
        return None
    loglikelihood = _float(item[0])
    if loglikelihood is None:
        return None
    greedy = item[1]
    if isinstance(greedy, str):
        greedy = {"true": True, "false": False}.get(greedy.lower())
    return loglikelihood, greedy if isinstance(greedy, bool) else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _scores(record: dict) -> tuple[list[Score], dict]:
    """Scores from the `metrics` names when present, else from the numeric keys that are not bookkeeping."""
    listed = record.get("metrics") if isinstance(record.get("metrics"), list) else None
    names = listed if listed is not None else [key for key in record if key not in BOOKKEEPING]
    scores, extra = [], {}
    for name in names:
        value = record.get(name)
        if listed is None and isinstance(value, str):
            extra[name] = value  # an unknown text field, not a metric
            continue
        score = make_score(str(name), value)
        if score:
            scores.append(score)
        elif value is not None:
            extra[name] = value  # e.g. perplexity's [loglikelihood, word count] pairs
    return scores, extra
