"""What a person can ask for from the UI. Every action validates its fields and enqueues a job; none calls an upstream.

A bad field raises `FieldError(field, message)` so the UI can show the message next to that field.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import Any

from .events import PayloadError, parse_hub_delivery, parse_rule_delivery
from .jobs import Job, JobStore
from .routing import EXPERIMENT, Ignored, JobSpec, route_hub, route_rule
from .settings import EVAL_FORMATS, BridgeConfig

REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
REPO_TYPES = ("dataset", "model", "space")


class FieldError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def _manual_key(kind: str) -> str:
    return f"{kind}:manual:{uuid.uuid4()}"  # a person asking twice means twice; flows are idempotent anyway


def _iso(field: str, value: str | None) -> str | None:
    if not value or not str(value).strip():
        return None
    try:
        return datetime.fromisoformat(str(value).strip().replace("Z", "+00:00")).isoformat()
    except ValueError:
        raise FieldError(field, f"{value!r} is not a date and time like 2026-11-21T08:00:00Z") from None


def submit_experiment(store: JobStore, repo: str, repo_type: str = "dataset", revision: str = "main",
                      files: list[str] | None = None, format: str = "auto") -> Job:
    repo, revision = (repo or "").strip(), (revision or "main").strip()
    if not repo:
        raise FieldError("repo", "Enter a repo id like owner/name")
    if not REPO_ID.match(repo):
        raise FieldError("repo", f"{repo!r} is not a repo id: enter one like owner/name")
    if repo_type not in REPO_TYPES:
        raise FieldError("repo_type", f"the repo type must be one of {', '.join(REPO_TYPES)}")
    if format not in EVAL_FORMATS:
        raise FieldError("format", f"the format must be one of {', '.join(EVAL_FORMATS)}")
    if not re.fullmatch(r"[\w./#-]{1,200}", revision):
        raise FieldError("revision", f"{revision!r} is not a branch, sha or PR number")
    payload: dict[str, Any] = {"repo": repo, "repo_type": repo_type, "revision": revision, "all_files": True}
    if files:
        payload["files"] = [f.strip() for f in files if f.strip()]
    if format != "auto":
        payload["format"] = format
    return store.enqueue(EXPERIMENT, _manual_key(EXPERIMENT), payload, trigger="manual",
                         subject=f"{repo}@{revision}")[0]


def submit_backfill(store: JobStore, config: BridgeConfig, repo: str, project: str, filter: str | None = None,
                    start_time: str | None = None, end_time: str | None = None) -> Job:
    if repo not in {t.repo for t in config.exports}:
        raise FieldError("repo", f"{repo!r} is not an exports target in bridge.yaml")
    if not (project or "").strip():
        raise FieldError("project", "name the LangSmith project to read runs from")
    start, end = _iso("start_time", start_time), _iso("end_time", end_time)
    if start and end and start > end:
        raise FieldError("end_time", "the end of the window is before its start")
    payload = {"repo": repo, "project": project.strip(), "filter": (filter or "").strip() or None,
               "start_time": start, "end_time": end}
    return store.enqueue("backfill", _manual_key("backfill"), payload, trigger="manual",
                         subject=f"{project.strip()} → {repo}")[0]


def token_id_of(url: str) -> str:
    """The presigned token's id at the end of a feedback link: the bridge's page (`.../feedback/<id>`) or, in rows
    exported before the page existed, LangSmith's token URL (`.../feedback/tokens/<id>`)."""
    return str(url).rstrip("/").rsplit("/", 1)[-1]


def submit_feedback(store: JobStore, run: dict, key: str, score: float | None, comment: str | None = None) -> Job:
    links = {link["key"]: link["url"] for link in run.get("feedback_urls") or []}
    if key not in links:
        raise FieldError("key", f"this run has no feedback link for {key!r}")
    return enqueue_feedback(store, token_id_of(links[key]), run["run_id"], key, score=score, comment=comment)


def enqueue_feedback(store: JobStore, token_id: str, run_id: str, key: str, **fields: Any) -> Job:
    """A `feedback` job for the presigned token `token_id`: the job finds the token's URL in the state dir, so the
    URL is in no job view. `fields`: score, value, comment, correction (blank texts are dropped)."""
    cleaned = {k: (v.strip() or None) if isinstance(v, str) else v for k, v in fields.items()}
    payload = {"token_id": token_id, "run_id": run_id, "key": key, **cleaned}
    return store.enqueue("feedback", _manual_key("feedback"), payload, trigger="manual",
                         subject=f"{key} on run {run_id[:8]}")[0]


ROUTERS = {"hub": (parse_hub_delivery, lambda d, c: route_hub(d, c)),
           "langsmith": (parse_rule_delivery, lambda d, c: route_rule(d, c))}


def replay_delivery(store: JobStore, config: BridgeConfig, delivery_id: int) -> list[Job]:
    """Routes a stored delivery again with the current configuration (e.g. after adding the rule it needed)."""
    delivery = store.delivery(delivery_id)
    if not delivery["body"]:
        raise FieldError("delivery", f"delivery {delivery_id} has no stored body: duplicates and ignored deliveries "
                                     "keep none, and bodies go after the retention period. A reconcile recovers "
                                     "what a rule added since then needs.")
    parse, route = ROUTERS[delivery["source"]]
    try:
        routed = route(parse(json.loads(delivery["body"])), config)
    except PayloadError as exc:
        raise FieldError("delivery", str(exc)) from None
    if isinstance(routed, Ignored):
        raise FieldError("delivery", f"nothing to do: {routed.reason}")
    tag = f"#replay-{uuid.uuid4().hex[:8]}"
    specs = [JobSpec(s.kind, s.key + tag, s.payload, s.subject) for s in routed]
    _, job_ids = store.record_delivery(delivery["source"], delivery["body"], specs, trigger="manual")
    return [store.get(i) for i in job_ids]


def submit_scores_recovery(store: JobStore) -> Job:
    """Rebuilds the Experiments page's scores from the metadata of the experiments in LangSmith."""
    return store.enqueue("scores", _manual_key("scores"), {}, trigger="manual",
                         subject="experiment scores from LangSmith")[0]
