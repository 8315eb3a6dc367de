"""Inspect AI logs: `.eval` (a zip of header.json and samples/<id>_epoch_<n>.json) and `.json` (one document).

Scores `C`/`I`/`P`/`N` (correct, incorrect, partial, no answer) become 1/0/0.5/0 with the letter kept as the
value. Samples of newer logs carry wall-clock `started_at`/`completed_at`.
"""

from __future__ import annotations

import json
import zipfile
from typing import Any, Iterator

from .common import UNIT, Source, load_json, make_score, parse_object, seekable, to_utc
from .model import EvalFile, EvalRow, Score

LETTERS = {"C": 1.0, "I": 0.0, "P": 0.5, "N": 0.0}
SAMPLE_FACTS = ("epoch", "uuid", "total_time", "working_time", "model_usage", "limit", "error_retries")


def read(source: Source) -> EvalFile:
    if source.name.lower().endswith(".json"):
        with source.opener() as f:
            log = load_json(source, f)
        if not isinstance(log, dict) or not isinstance(log.get("eval"), dict):
            raise source.fail(None, "expected an Inspect log object with an `eval` section")
        samples = ((f"samples[{index}]", sample) for index, sample in enumerate(log.get("samples") or []))
        return _file(source, log, samples)
    return _file(source, _zip_header(source), _zip_samples(source))


def _file(source: Source, header: dict, samples: Iterator[tuple[str, Any]]) -> EvalFile:
    spec = header.get("eval") or {}
    stats = header.get("stats") or {}
    epochs = (spec.get("config") or {}).get("epochs") or 1
    started = to_utc(stats.get("started_at")) or to_utc(spec.get("created"))
    rows = _rows(source, samples, several_epochs=epochs > 1)
    return EvalFile(source.path, "inspect", str(spec.get("task") or source.name), spec.get("model"), started,
                    to_utc(stats.get("completed_at")), rows)


def _rows(source: Source, samples: Iterator[tuple[str, Any]], several_epochs: bool) -> Iterator[EvalRow]:
    for location, sample in samples:
        if not isinstance(sample, dict):
            raise source.fail(location, "expected a sample object")
        yield source.finish(sample, to_row(sample, several_epochs))


def _zip_header(source: Source) -> dict:
    with source.opener() as f, _open_zip(source, f) as archive:
        names = set(archive.namelist())
        # a log still being written has only the journal's start record
        for name in ("header.json", "_journal/start.json"):
            if name in names:
                return parse_object(source, archive.read(name), name)
    raise source.fail(None, "the .eval archive has no header.json")


def _zip_samples(source: Source) -> Iterator[tuple[str, dict]]:
    with source.opener() as f, _open_zip(source, f) as archive:
        for name in archive.namelist():
            if name.startswith("samples/") and name.endswith(".json"):
                yield name, parse_object(source, archive.read(name), name)


def _open_zip(source: Source, f) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(seekable(f))
    except zipfile.BadZipFile as error:
        raise source.fail(None, f"not a zip archive: {error}") from None


# ------------------------------------------------------------------------------------------------------------ rows


def to_row(sample: dict, several_epochs: bool) -> EvalRow:
    attachments = sample.get("attachments") or {}
    given = _resolve(sample.get("input"), attachments)
    inputs = {"input": given} if not isinstance(given, list) else {"messages": [_message(m) for m in given]}
    if sample.get("choices"):
        inputs["choices"] = sample["choices"]
    target = sample.get("target")
    scores, answers = _scores(sample.get("scores") or {})
    identity = str(sample.get("id"))
    if several_epochs:
        identity = f"{identity}/epoch {sample.get('epoch')}"
    metadata = {key: sample[key] for key in SAMPLE_FACTS if sample.get(key) not in (None, [], {})}
    if sample.get("metadata"):
        metadata["sample_metadata"] = sample["metadata"]
    if answers:
        metadata["answers"] = answers
    return EvalRow(
        identity=identity,
        inputs=inputs,
        expected={"target": target} if target not in (None, "", []) else None,
        outputs=_output(sample, attachments),
        scores=scores,
        start_time=to_utc(sample.get("started_at")),
        end_time=to_utc(sample.get("completed_at")),
        error=_error(sample.get("error")),
        metadata=metadata,
    )


def _resolve(value: Any, attachments: dict) -> Any:
    """Replace `attachment://<hash>` references with the text Inspect moved out of the sample."""
    if isinstance(value, str) and value.startswith("attachment://"):
        return attachments.get(value.removeprefix("attachment://"), value)
    if isinstance(value, list):
        return [_resolve(item, attachments) for item in value]
    if isinstance(value, dict):
        return {key: _resolve(item, attachments) for key, item in value.items()}
    return value


def _message(message: Any) -> Any:
    if not isinstance(message, dict):
        return message
    kept = ("role", "content", "tool_calls", "tool_call_id", "function")
    return {key: message[key] for key in kept if message.get(key) is not None}


def _output(sample: dict, attachments: dict) -> dict | None:
    choices = (sample.get("output") or {}).get("choices") or []
    if choices:
        message = choices[0].get("message") or {}
    else:  # no model output recorded: fall back to the last assistant message
        assistant = [m for m in sample.get("messages") or [] if isinstance(m, dict) and m.get("role") == "assistant"]
        message = assistant[-1] if assistant else None
    if not message:
        return None
    message = _resolve(message, attachments)
    content = message.get("content")
    outputs = {"output": _text(content)}
    if message.get("tool_calls"):
        outputs["tool_calls"] = message["tool_calls"]
    return outputs


def _text(content: Any) -> Any:
    """Message content is a string or a list of parts; the text parts joined, else the parts as they are."""
    if not isinstance(content, list):
        return content
    texts = [part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"]
    return "".join(texts) if texts else content


def _scores(scores: dict) -> tuple[list[Score], dict]:
    found, answers = [], {}
    for name, score in scores.items():
        score = score if isinstance(score, dict) else {"value": score}
        comment = score.get("explanation")
        value = score.get("value")
        parts = value.items() if isinstance(value, dict) else [(None, value)]
        for part, item in parts:
            key = f"{name}/{part}" if part is not None else str(name)
            converted = _score(key, item, comment if isinstance(comment, str) else None)
            if converted:
                found.append(converted)
        if score.get("answer") is not None:
            answers[name] = score["answer"]
    return found, answers


def _score(key: str, value: Any, comment: str | None) -> Score | None:
    if isinstance(value, str) and value in LETTERS:
        return Score(key, LETTERS[value], value=value, comment=comment, feedback_config=dict(UNIT))
    if isinstance(value, list):
        return Score(key, value=json.dumps(value), comment=comment)
    return make_score(key, value, comment)


def _error(error: Any) -> str | None:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error) if error else None
