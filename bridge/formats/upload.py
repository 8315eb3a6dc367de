"""Pure: an `EvalFile` -> the JSON body of LangSmith's `POST /api/v1/datasets/upload-experiment`.

Rows are streamed: the first pass writes each result row to a spool file while it sums the scores; the second writes
the final body (header fields, then the spooled rows) to another file that the HTTP client streams. Memory stays
bounded whatever the number of rows.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import IO, Any

ROW_NAMESPACE = uuid.UUID("6f1d3c5e-8b2a-5d4e-9c7f-0a1b2c3d4e5f")
MIN_ROW_SPACING = timedelta(milliseconds=1)


def row_id(dataset_name: str, identity: str) -> str:
    """The same example gets the same id in every experiment of a dataset, so the comparison view lines them up."""
    return str(uuid.uuid5(ROW_NAMESPACE, f"{dataset_name}\x00{identity}"))


def render(template: str, fields: dict[str, Any]) -> str:
    return re.sub(r"{(\w+)}", lambda m: str(fields.get(m.group(1)) or ""), template).strip()


def name_fields(repo: str, ref: str, sha: str, pr: int | None, task: str, model: str | None) -> dict[str, Any]:
    repo_name = repo.split("/", 1)[1]
    return {"repo": repo, "repo_name": repo_name, "task": task, "model": model or repo_name, "sha": sha,
            "short_sha": sha[:7], "ref": ref, "pr": f"pr-{pr}" if pr is not None else ""}


def experiment_name(template: str, fields: dict[str, Any]) -> str:
    name = render(template, fields)
    if fields["pr"] and fields["pr"] not in name:
        name = f"{name} {fields['pr']}"  # PR previews must never be mistaken for a main experiment
    return name


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def finite(value: Any) -> Any:
    """NaN and infinities (pandas, numpy and lm-eval write them) are not JSON: they become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def strict_json(value: Any) -> str:
    try:
        return json.dumps(value, default=str, allow_nan=False)
    except ValueError:
        return json.dumps(finite(value), default=str, allow_nan=False)


def score_dict(score: Any) -> dict:
    out = {"key": score.key[:180]}
    for name in ("score", "value", "comment", "feedback_config"):
        value = getattr(score, name)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            out[name] = value
    return out


@dataclass
class ScoreStats:
    total: float = 0.0
    count: int = 0
    config: dict | None = None

    @property
    def mean(self) -> float:
        return self.total / self.count


@dataclass
class Spool:
    """First pass: rows as JSON lines, with what the header needs (counts, score means, known times)."""

    dataset_name: str
    file: IO[str] = field(default_factory=lambda: tempfile.TemporaryFile("w+", encoding="utf-8"))
    rows: int = 0
    untimed: int = 0
    errors: int = 0
    scores: dict[str, ScoreStats] = field(default_factory=dict)
    earliest: datetime | None = None
    latest: datetime | None = None

    def add(self, row: Any) -> None:
        result = {"row_id": row_id(self.dataset_name, row.identity), "inputs": row.inputs}
        if row.expected is not None:
            result["expected_outputs"] = row.expected
        if row.outputs is not None:
            result["actual_outputs"] = row.outputs
        result["evaluation_scores"] = [score_dict(s) for s in row.scores]
        if row.error:
            result["error"] = str(row.error)
            self.errors += 1
        if row.metadata:
            result["run_metadata"] = row.metadata
        if row.start_time and row.end_time:
            result["start_time"], result["end_time"] = iso(row.start_time), iso(row.end_time)
            self._widen(row.start_time, row.end_time)
        else:
            self.untimed += 1
        self._count_scores(row.scores)
        # A one-letter mark says whether the row still needs times, so the second pass parses only those rows.
        self.file.write(("T" if "start_time" in result else "U") + strict_json(result) + "\n")
        self.rows += 1

    def _widen(self, start: datetime, end: datetime) -> None:
        self.earliest = min(filter(None, (self.earliest, start)))
        self.latest = max(filter(None, (self.latest, end)))

    def _count_scores(self, scores: Iterable[Any]) -> None:
        for score in scores:
            if score.score is None or (isinstance(score.score, float) and math.isnan(score.score)):
                continue
            stats = self.scores.setdefault(score.key, ScoreStats(config=score.feedback_config))
            stats.total += float(score.score)
            stats.count += 1

    def means(self) -> dict[str, float]:
        return {key: round(stats.mean, 6) for key, stats in sorted(self.scores.items())}


def window(spool: Spool, started: datetime | None, finished: datetime | None,
           fallback: datetime) -> tuple[datetime, datetime]:
    """The experiment's wall-clock window: the file's own when it has one, else starting at `fallback` (the commit
    time); always wide enough for the rows that carry their own times and for 1 ms per untimed row."""
    start = started or finished or fallback
    end = finished if finished and finished > start else start
    end = max(end, start + MIN_ROW_SPACING * max(1, spool.untimed))
    if spool.earliest:
        start = min(start, spool.earliest)
    if spool.latest:
        end = max(end, spool.latest)
    return start, end


def write_body(spool: Spool, header: dict, start: datetime, end: datetime, out: IO[bytes]) -> None:
    """Second pass: header fields, summary scores, then every spooled row with untimed rows spread evenly."""
    head = {**header, "experiment_start_time": iso(start), "experiment_end_time": iso(end),
            "summary_experiment_scores": [
                {"key": key, "score": round(stats.mean, 6), **({"feedback_config": stats.config} if stats.config else {})}
                for key, stats in sorted(spool.scores.items())]}
    out.write(json.dumps(head)[:-1].encode() + b', "results": [')
    step = (end - start) / max(1, spool.untimed)
    spool.file.seek(0)
    untimed = 0
    for i, line in enumerate(spool.file):
        mark, text = line[0], line[1:].strip()
        if mark == "U":
            row = json.loads(text)
            row_start = start + step * untimed
            row["start_time"], row["end_time"] = iso(row_start), iso(min(end, row_start + step))
            untimed += 1
            text = strict_json(row)
        out.write((b"," if i else b"") + text.encode())
    out.write(b"]}")
