"""Runs, feedback, presigned feedback tokens and stored objects: the run side of the LangSmith emulator's store.

`RunRecords` is a mixin of `langsmith_store.Store`, split off because runs and their feedback are the bulk of the
store and change together, while sessions and datasets only read them for stats. `Store` owns the state (annotated
below) and provides `now()` and `_session_for_run()`; `query_runs` matches with langsmith_filter.py.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import secrets
import threading
import uuid
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any

from bridge.sandbox.langsmith_common import ApiError, as_uuid, feedback_stats, parse_time, public, run_time
from bridge.sandbox.langsmith_filter import FilterEval, parse_filter, run_checks

TOKEN_TTL = dt.timedelta(hours=3)  # the SDK's default, also used when a token request names no expiry

# Keys of a run in the rule webhook payload (seed 000) plus the ones the SDK reads, with their defaults.
RUN_DEFAULTS: dict[str, Any] = {
    "id": None, "name": "run", "run_type": "chain", "status": None, "is_root": True, "trace_id": None,
    "dotted_order": None, "parent_run_id": None, "parent_run_ids": [], "child_run_ids": None,
    "direct_child_run_ids": None, "session_id": None, "tenant_id": None, "start_time": None, "end_time": None,
    "modified_at": None, "inputs": None, "inputs_s3_urls": None, "outputs": None, "outputs_s3_urls": None,
    "s3_urls": None, "error": None, "extra": None, "events": None, "tags": None, "serialized": None,
    "reference_example_id": None, "total_tokens": 0, "completion_tokens": 0, "prompt_tokens": 0,
    "total_cost": None, "completion_cost": None, "prompt_cost": None, "first_token_time": None,
    "app_path": None, "in_dataset": False, "last_queued_at": None, "feedback_stats": None, "share_token": None,
}
# `ls_schemas.Run` cannot be built without these, so a `select` never drops them.
RUN_REQUIRED_KEYS = ("id", "name", "start_time", "run_type", "trace_id")
PATCHABLE_RUN_KEYS = ("name", "end_time", "error", "inputs", "outputs", "events", "tags", "extra",
                      "reference_example_id", "status", "serialized")


class FeedbackTable(MutableMapping):
    """`Store.feedback`: feedback rows by id, in insertion order like a dict, that also knows each run's feedback.

    `by_run` maps a run id (None for feedback on no run, e.g. experiment summary scores) to its feedback ids, so
    finding a run's feedback costs what it returns instead of a scan of every row; `position` keeps each id's place
    in the table, so the rows come back in the order such a scan would find them. Both are kept up to date wherever
    rows are added, replaced or deleted (the routes `del` rows directly). Rows changed in place must keep their
    `run_id`, as every update does (PATCH /feedback changes score, value, comment and correction only)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}
        self.by_run: dict[str | None, set[str]] = {}
        self.position: dict[str, int] = {}
        self.counter = itertools.count()

    def __getitem__(self, fid: str) -> dict:
        return self.rows[fid]

    def __setitem__(self, fid: str, row: dict) -> None:
        old = self.rows.get(fid)
        if old is None:
            self.position[fid] = next(self.counter)
        else:
            self.by_run[old.get("run_id")].discard(fid)
        self.rows[fid] = row
        self.by_run.setdefault(row.get("run_id"), set()).add(fid)

    def __delitem__(self, fid: str) -> None:
        self.by_run[self.rows.pop(fid).get("run_id")].discard(fid)
        del self.position[fid]

    def __contains__(self, fid: object) -> bool:
        return fid in self.rows

    def __iter__(self) -> Iterator[str]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def values(self):  # noqa: ANN201 - the dict's own view, for the scans that want every row
        return self.rows.values()

    def of_runs(self, run_ids: Iterable[str | None]) -> list[dict]:
        """The rows of `run_ids`, in table order: what a scan of every row would find, in the same order."""
        ids = [fid for run_id in set(run_ids) for fid in self.by_run.get(run_id, ())]
        return [self.rows[fid] for fid in sorted(ids, key=self.position.__getitem__)]


class RunRecords:
    """Runs, feedback, tokens and stored objects, on the state `Store.__init__` creates."""

    tenant_id: str
    object_urls: str
    base_url: str | None
    lock: threading.RLock
    runs: dict[str, dict]
    feedback: FeedbackTable
    tokens: dict[str, dict]
    objects: dict[str, bytes]
    pending_patches: dict[str, dict]
    ignored_filters: list[str]

    # ---- runs
    def add_run(self, raw: dict, *, offload: bool = False, on_conflict: str = "raise") -> dict | None:
        """Store a run given in webhook/SDK shape, filling what the real service derives. `on_conflict`:
        "raise" (409) or "ignore" (batch ingestion re-sends)."""
        with self.lock:
            run = {**copy.deepcopy(RUN_DEFAULTS), **copy.deepcopy(raw)}
            run["id"] = as_uuid(run["id"] or uuid.uuid4(), "id")
            if run["id"] in self.runs:
                if on_conflict == "ignore":
                    return None
                raise ApiError(409, "Run already exists")
            session = self._session_for_run(run.pop("session_name", None), run["session_id"])
            run["session_id"] = session["id"]
            self._fill_run(run)
            if offload:
                run["_objects"] = {part: self.put_object(run[part]) for part in ("inputs", "outputs")
                                   if run[part] is not None}
            self.runs[run["id"]] = run
            if run["id"] in self.pending_patches:
                self.patch_run(run["id"], self.pending_patches.pop(run["id"]))
            return self.run_view(run)

    def _fill_run(self, run: dict) -> None:
        try:
            start = parse_time(run["start_time"] or self.now())
            run["start_time"] = run_time(start)
            run["end_time"] = run_time(parse_time(run["end_time"])) if run["end_time"] else None
        except ValueError as exc:
            raise ApiError(422, f"start_time/end_time: {exc}") from None
        parent_id = as_uuid(run["parent_run_id"], "parent_run_id") if run["parent_run_id"] else None
        parent = self.runs.get(parent_id) if parent_id else None
        run["parent_run_id"] = parent_id
        run["is_root"] = parent_id is None
        run["parent_run_ids"] = (parent["parent_run_ids"] + [parent_id]) if parent else ([parent_id] if parent_id else [])
        run["trace_id"] = str(run["trace_id"] or (parent["trace_id"] if parent else parent_id or run["id"]))
        own_order = f"{start.strftime('%Y%m%dT%H%M%S%fZ')}{run['id']}"
        if not run["dotted_order"]:
            run["dotted_order"] = f"{parent['dotted_order']}.{own_order}" if parent else own_order
        run["status"] = run["status"] or _run_status(run)
        run["tenant_id"] = self.tenant_id
        run["modified_at"] = run_time(self.now())
        run["app_path"] = run["app_path"] or (
            f"/o/{self.tenant_id}/projects/p/{run['session_id']}/r/{run['id']}"
            f"?trace_id={run['trace_id']}&start_time={run['start_time']}")

    def patch_run(self, run_id: str, changes: dict, *, missing: str = "raise") -> None:
        """Apply a PATCH. `missing`: "raise" (404) or "defer" (keep it until the run's post arrives)."""
        with self.lock:
            run = self.runs.get(run_id)
            if run is None:
                if missing == "defer":
                    self.pending_patches.setdefault(run_id, {}).update(changes)
                    return
                raise ApiError(404, "Run not found")
            for key in PATCHABLE_RUN_KEYS:
                if changes.get(key) is None:
                    continue
                if key == "extra" and isinstance(run["extra"], dict):
                    run["extra"] = {**run["extra"], **changes["extra"]}
                elif key == "end_time":
                    run["end_time"] = run_time(parse_time(changes["end_time"]))
                else:
                    run[key] = copy.deepcopy(changes[key])
            if changes.get("status") is None:
                run["status"] = _run_status(run)
            run["modified_at"] = run_time(self.now())

    def get_run(self, run_id: str) -> dict:
        run = self.runs.get(run_id)
        if run is None:
            raise ApiError(404, "Run not found")
        return run

    def run_view(self, run: dict, *, select: list[str] | None = None, for_webhook: bool = False) -> dict:
        view = public(run)
        view["feedback_stats"] = feedback_stats(self._feedback_of_runs({run["id"]})) or None
        for part, token in run.get("_objects", {}).items():
            # Seeding may happen before serve(); only the webhook payload cannot do without the URL.
            url = self.object_url(token, required=for_webhook)
            view[f"{part}_s3_urls"] = {"ROOT": {"presigned_url": url}} if url else None
            if for_webhook:
                view[part] = None  # the payload carries only the URL for offloaded data
        if select:
            view = {key: view.get(key) for key in (*RUN_REQUIRED_KEYS, *select)}
        return view

    def query_runs(self, body: dict) -> list[dict]:
        """All runs matching a /runs/query body, in the order requested (newest first by default)."""
        with self.lock:
            checks = run_checks(body)
            expr = parse_filter(body["filter"]) if body.get("filter") else None
            found = []
            for run in self.runs.values():
                if not all(check(run) for check in checks):
                    continue
                keys = {f["key"] for f in self._feedback_of_runs({run["id"]})}
                if expr is not None and not FilterEval(run, keys, self.ignored_filters)(expr):
                    continue
                found.append(run)
            found.sort(key=lambda r: (r["start_time"], r["id"]), reverse=body.get("order", "desc") != "asc")
            return found

    # ---- feedback
    def add_feedback(self, raw: dict, *, require_run: bool = True) -> dict:
        with self.lock:
            key = raw.get("key")
            if not isinstance(key, str) or not key:
                raise ApiError(422, "key: field required")
            fid = as_uuid(raw.get("id") or uuid.uuid4(), "id")
            if fid in self.feedback:
                raise ApiError(409, "Feedback already exists")
            run_id = as_uuid(raw["run_id"], "run_id") if raw.get("run_id") else None
            run = self.runs.get(run_id) if run_id else None
            if run_id and run is None and require_run:
                raise ApiError(404, "Run not found")
            stamp = self.now().isoformat()
            self.feedback[fid] = {
                "id": fid, "key": key, "run_id": run_id,
                "trace_id": str(raw.get("trace_id") or (run["trace_id"] if run else run_id) or "") or None,
                "session_id": raw.get("session_id") or (run["session_id"] if run else None),
                "score": raw.get("score"), "value": raw.get("value"), "comment": raw.get("comment"),
                "correction": raw.get("correction"), "feedback_config": raw.get("feedback_config"),
                "feedback_source": raw.get("feedback_source") or {"type": "api", "metadata": {}, "user_id": None,
                                                                  "user_name": None},
                "created_at": raw.get("created_at") or stamp, "modified_at": raw.get("modified_at") or stamp,
                "start_time": raw.get("start_time"), "extra": raw.get("extra"),
                "comparative_experiment_id": raw.get("comparative_experiment_id"),
                "feedback_group_id": raw.get("feedback_group_id"),
            }
            return public(self.feedback[fid])

    def get_feedback(self, feedback_id: str) -> dict:
        row = self.feedback.get(feedback_id)
        if row is None:
            raise ApiError(404, "Feedback not found")
        return row

    def list_feedback(self, *, run_ids: list[str], keys: list[str], sources: list[str],
                      session_ids: list[str]) -> list[dict]:
        with self.lock:
            rows = self.feedback.of_runs(run_ids) if run_ids else self.feedback.values()
            return [public(f) for f in rows
                    if (not keys or f["key"] in keys)
                    and (not sources or (f["feedback_source"] or {}).get("type") in sources)
                    and (not session_ids or f["session_id"] in session_ids)]

    def _feedback_of_runs(self, run_ids: Iterable[str]) -> list[dict]:
        return self.feedback.of_runs(run_ids)

    def _session_summary_feedback(self, session_id: str) -> list[dict]:
        """Feedback on a session itself (no run), e.g. an experiment's summary scores, in table order."""
        return [f for f in self.feedback.of_runs((None, "")) if f["session_id"] == session_id]

    # ---- presigned feedback tokens
    def create_token(self, spec: Any) -> dict:
        with self.lock:
            if not isinstance(spec, dict):
                raise ApiError(422, "body: expected an object or a list of objects")
            run_id = as_uuid(spec.get("run_id"), "run_id")
            if not isinstance(spec.get("feedback_key"), str) or not spec["feedback_key"]:
                raise ApiError(422, "feedback_key: field required")
            self.get_run(run_id)
            token = {"id": str(uuid.uuid4()), "run_id": run_id, "feedback_key": spec["feedback_key"],
                     "feedback_config": spec.get("feedback_config"),
                     "expires_at": self._token_expiry(spec).isoformat(), "created_at": self.now().isoformat()}
            self.tokens[token["id"]] = token
            return token

    def _token_expiry(self, spec: dict) -> dt.datetime:
        try:
            if spec.get("expires_at"):
                return parse_time(spec["expires_at"])
            if spec.get("expires_in"):
                span = spec["expires_in"]
                return self.now() + dt.timedelta(days=span.get("days", 0), hours=span.get("hours", 0),
                                                 minutes=span.get("minutes", 0))
        except (ValueError, TypeError, AttributeError) as exc:
            raise ApiError(422, f"expires_at/expires_in: {exc}") from None
        return self.now() + TOKEN_TTL

    def tokens_for_run(self, run_id: str) -> list[dict]:
        with self.lock:
            return [t for t in self.tokens.values() if t["run_id"] == run_id]

    def submit_token(self, token_id: str, data: dict) -> dict:
        """Feedback through a presigned token: one new feedback row per submission, on the token's run."""
        with self.lock:
            token = self.tokens.get(token_id)
            if token is None:
                raise ApiError(404, "Token not found")
            if parse_time(token["expires_at"]) <= self.now():
                raise ApiError(400, "Token expired")
            source = {"type": "api", "metadata": data.get("metadata") or {}, "user_id": None, "user_name": None}
            return self.add_feedback({
                "run_id": token["run_id"], "key": token["feedback_key"], "score": data.get("score"),
                "value": data.get("value"), "comment": data.get("comment"), "correction": data.get("correction"),
                "feedback_config": token["feedback_config"], "feedback_source": source,
            })

    # ---- stored objects behind "presigned" URLs
    def put_object(self, value: Any) -> str:
        token = secrets.token_urlsafe(24)
        self.objects[token] = json.dumps(value).encode()
        return token

    def object_url(self, token: str, *, required: bool = True) -> str | None:
        if self.object_urls == "relative":
            return f"/_objects/{token}"
        if self.base_url is None:
            if not required:
                return None
            raise RuntimeError("absolute object URLs need a served emulator: call serve() first")
        return f"{self.base_url}/_objects/{token}"


def _run_status(run: dict) -> str:
    return "error" if run.get("error") else ("success" if run.get("end_time") else "pending")
