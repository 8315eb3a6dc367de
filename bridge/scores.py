"""The headline score of every experiment the bridge uploaded, for the Experiments page.

Kept in the state dir (table `experiment_scores`), written by the `experiment` job as it uploads (or finds) each
experiment. After the state dir is lost, a `scores` job (flows/scores.py) rebuilds the table from the metadata the
bridge puts on every experiment it uploads (`hf_repo`, `hf_ref`, `hf_pr`, `task`, `bridge_scores`, ...): one
listing of experiments, no run reads.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

# The score a chart shows when a file has several: the first of these it has, else the first in name order.
HEADLINE_KEYS = ("acc", "accuracy", "exact_match", "f1", "pass@1", "pass", "score", "correct", "mean")


def headline(scores: dict | None) -> tuple[str | None, float | None]:
    numbers = {k: float(v) for k, v in (scores or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if not numbers:
        return None, None
    for key in HEADLINE_KEYS:
        for name in sorted(numbers):
            if name == key or name.split(",")[0] == key:
                return name, numbers[name]
    first = sorted(numbers)[0]
    return first, numbers[first]


def epoch(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


@dataclass
class Score:
    experiment_id: str
    experiment: str
    repo: str
    task: str
    model: str | None
    ref: str | None
    pr: int | None
    revision: str
    metric: str | None
    score: float | None
    scores: dict
    url: str | None
    at: float

    @property
    def is_main(self) -> bool:
        return self.pr is None and self.ref == "refs/heads/main"


def from_outcome(outcome: dict, repo: str, ref: str, revision: str, pr: int | None) -> Score | None:
    """A Score from one file's outcome in an `experiment` job's result (None when nothing was uploaded)."""
    if outcome.get("status") not in ("uploaded", "exists") or not outcome.get("experiment_id"):
        return None
    metric, value = headline(outcome.get("scores"))
    at = epoch(outcome.get("started_at"))
    return Score(str(outcome["experiment_id"]), outcome.get("experiment") or "", repo, outcome.get("task") or "",
                 outcome.get("model"), ref, pr, revision, metric, value, outcome.get("scores") or {},
                 outcome.get("experiment_url"), at if at is not None else datetime.now(timezone.utc).timestamp())


def from_metadata(experiment_id: str, name: str, meta: dict, start_time: Any, url: str | None) -> Score | None:
    """A Score from the metadata of an experiment the bridge uploaded (None for any other experiment)."""
    if not meta.get("bridge_version") or not meta.get("hf_repo") or not meta.get("hf_revision"):
        return None
    metric, value = headline(meta.get("bridge_scores"))
    pr = meta.get("hf_pr")
    return Score(experiment_id, name, meta["hf_repo"], str(meta.get("task") or ""), meta.get("model"),
                 meta.get("hf_ref"), int(pr) if isinstance(pr, (int, float, str)) and str(pr).isdigit() else None,
                 meta["hf_revision"], metric, value, meta.get("bridge_scores") or {}, url, epoch(start_time) or 0.0)


class ScoreBook:
    def __init__(self, db: Any) -> None:
        self.db = db

    def add(self, scores: list[Score]) -> int:
        if not scores:
            return 0
        rows = [{**asdict(s), "scores": json.dumps(s.scores, default=str)} for s in scores]
        with self.db.tx() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO experiment_scores (experiment_id, experiment, repo, task, model, ref, pr, "
                "revision, metric, score, scores, url, at) VALUES (:experiment_id, :experiment, :repo, :task, "
                ":model, :ref, :pr, :revision, :metric, :score, :scores, :url, :at)", rows)
        return len(rows)

    def empty(self) -> bool:
        with self.db.read() as conn:
            return conn.execute("SELECT 1 FROM experiment_scores LIMIT 1").fetchone() is None

    def all(self, limit: int = 5000) -> list[Score]:
        """Oldest first (ties in the order they were written), at most the newest `limit`."""
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM (SELECT rowid AS seq, * FROM experiment_scores ORDER BY at DESC, "
                                "seq DESC LIMIT ?) ORDER BY at, seq", (limit,)).fetchall()
        return [Score(**{**{k: r[k] for k in r.keys() if k != "seq"}, "scores": json.loads(r["scores"] or "{}")})
                for r in rows]
