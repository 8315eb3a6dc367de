"""openai/evals record JSONL: a `spec` line, a `final_report` line, then events joined on `sample_id`.

`sampling` events hold the prompt and the sampled text, `match` events the expected answer and whether it was
picked; model-graded evals end a sample with a `metrics` event instead. Event `created_at` times are wall-clock.
"""

from __future__ import annotations

from typing import Any, Iterator

from bridge.errors import FormatError

from .common import Source, iter_objects, make_score, stem, to_utc
from .model import EvalFile, EvalRow

CLOSING_EVENTS = {"match", "metrics"}


def read(source: Source) -> EvalFile:
    spec, last = _scan(source)
    model = ", ".join(spec.get("completion_fns") or []) or None
    task = spec.get("eval_name") or spec.get("base_eval") or stem(source.path)
    return EvalFile(source.path, "openai-evals", task, model, to_utc(spec.get("created_at")), last, _rows(source))


def _scan(source: Source) -> tuple[dict, Any]:
    """The spec and the last event time (a first pass, one line in memory at a time)."""
    spec, last = {}, None
    with source.opener() as f:
        try:
            for _, record in iter_objects(source, f):
                if isinstance(record.get("spec"), dict):
                    spec = record["spec"]
                moment = to_utc(record.get("created_at"))
                if moment and (last is None or moment > last):
                    last = moment
        except FormatError:
            pass  # reported by the row pass when it reaches the broken line
    return spec, last


def _rows(source: Source) -> Iterator[EvalRow]:
    """Events of one sample are gathered until its match/metrics event; only unfinished samples wait in memory."""
    pending: dict[str, list[dict]] = {}
    with source.opener() as f:
        for _, record in iter_objects(source, f):
            sample_id = record.get("sample_id")
            if sample_id is None or "type" not in record:
                continue  # spec, final_report and run-level events
            pending.setdefault(str(sample_id), []).append(record)
            if record["type"] in CLOSING_EVENTS:
                yield _finish(source, str(sample_id), pending.pop(str(sample_id)))
    for sample_id, events in pending.items():
        yield _finish(source, sample_id, events)


def _finish(source: Source, sample_id: str, events: list[dict]) -> EvalRow:
    raw = {"sample_id": sample_id, "events": events}
    for event in events:
        raw.setdefault(event["type"], event.get("data") or {})  # the first sampling is the model's own
    return source.finish(raw, to_row(sample_id, events, raw))


def to_row(sample_id: str, events: list[dict], joined: dict) -> EvalRow:
    sampling, match = joined.get("sampling") or {}, joined.get("match") or {}
    outputs = None
    if "sampled" in sampling:
        sampled = sampling["sampled"]
        outputs = {"output": sampled[0] if isinstance(sampled, list) and len(sampled) == 1 else sampled}
    if "picked" in match:
        outputs = {**(outputs or {}), "picked": match["picked"]}
    scores = [make_score("correct", match.get("correct"))]
    for event in events:
        if event["type"] == "metrics":
            scores += [make_score(str(key), value) for key, value in (event.get("data") or {}).items()]
    times = sorted(moment for event in events if (moment := to_utc(event.get("created_at"))))
    metadata = {"run_id": events[0].get("run_id"), "event_ids": [event.get("event_id") for event in events]}
    if match.get("options") is not None:
        metadata["options"] = match["options"]
    return EvalRow(
        identity=sample_id,
        inputs={"prompt": sampling.get("prompt")} if "prompt" in sampling else {},
        expected={"expected": match["expected"]} if "expected" in match else None,
        outputs=outputs,
        scores=[score for score in scores if score],
        start_time=times[0] if times else None,
        end_time=times[-1] if times else None,
        metadata={key: value for key, value in metadata.items() if value is not None},
    )
