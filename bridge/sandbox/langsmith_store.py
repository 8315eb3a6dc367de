"""In-memory state of the LangSmith emulator: projects, datasets, examples, runs, feedback, tokens, stored objects.

Everything here is plain dicts shaped like the real service's JSON, guarded by one lock because the uvicorn thread
and the test thread (seeding through `LangSmithEmulator`) both touch it. Errors the HTTP layer should return are
raised as `ApiError(status, detail)`.

Timestamps: runs keep naive UTC strings with microseconds (`2024-04-05T01:28:54.085646`), as in the rule webhook
payload, which also makes them sort lexically; projects, datasets, feedback and tokens use aware ISO strings.

`Store` holds the state and the projects (sessions), datasets, examples and uploaded experiments; runs, feedback,
tokens and stored objects are its `RunRecords` part (langsmith_runs.py), the run-query filters are in
langsmith_filter.py and the shared helpers in langsmith_common.py.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from typing import Any

# parse_time, as_uuid, public and feedback_stats stay importable from here, as before the store was split.
from bridge.sandbox.langsmith_common import (DEFAULT_TENANT_ID, UTC, ApiError, as_uuid, feedback_stats, parse_time,
                                             public)
from bridge.sandbox.langsmith_runs import FeedbackTable, RunRecords

SESSION_STAT_KEYS = ("run_count", "latency_p50", "latency_p99", "first_token_p50", "first_token_p99",
                     "total_tokens", "prompt_tokens", "completion_tokens", "total_cost", "prompt_cost",
                     "completion_cost", "last_run_start_time", "last_run_start_time_live", "feedback_stats",
                     "session_feedback_stats", "run_facets", "error_rate", "streaming_rate")


class Store(RunRecords):
    def __init__(self, tenant_id: str = DEFAULT_TENANT_ID, *, object_urls: str = "absolute") -> None:
        if object_urls not in ("absolute", "relative"):
            raise ValueError(f"object_urls must be 'absolute' or 'relative', got {object_urls!r}")
        self.tenant_id = tenant_id
        self.object_urls = object_urls
        self.base_url: str | None = None  # set by LangSmithEmulator.serve(); absolute object URLs need it
        self.lock = threading.RLock()
        self.clock_offset = dt.timedelta()
        self.sessions: dict[str, dict] = {}
        self.datasets: dict[str, dict] = {}
        self.examples: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.feedback = FeedbackTable()  # id -> row, and each run's feedback ids
        self.tokens: dict[str, dict] = {}
        self.objects: dict[str, bytes] = {}
        self.pending_patches: dict[str, dict] = {}  # a batch may carry a patch before its post
        self.ignored_filters: list[str] = []
        self.v2_enabled = True  # False: the v2 runs API answers 404, as self-hosted LangSmith before v0.16

    def now(self) -> dt.datetime:
        return dt.datetime.now(UTC) + self.clock_offset

    # ---- projects (sessions)
    def create_session(self, name: str, *, session_id: Any = None, description: str | None = None,
                       extra: dict | None = None, reference_dataset_id: str | None = None,
                       start_time: Any = None, end_time: Any = None, upsert: bool = False) -> dict:
        with self.lock:
            existing = self.session_by_name(name)
            if existing is not None:
                if not upsert:
                    raise ApiError(409, "Session already exists.")
                return self.update_session(existing["id"], {"description": description, "extra": extra})
            sid = as_uuid(session_id or uuid.uuid4(), "id")
            if sid in self.sessions:
                raise ApiError(409, "Session already exists.")
            self.sessions[sid] = {
                "id": sid, "name": name, "description": description, "extra": extra, "tenant_id": self.tenant_id,
                "start_time": parse_time(start_time or self.now()).isoformat(),
                "end_time": parse_time(end_time).isoformat() if end_time else None,
                "reference_dataset_id": reference_dataset_id, "default_dataset_id": None, "trace_tier": "longlived",
                "test_run_number": self._next_test_run_number(reference_dataset_id),
            }
            return self.session_view(self.sessions[sid])

    def _next_test_run_number(self, dataset_id: str | None) -> int | None:
        if dataset_id is None:
            return None
        return 1 + sum(1 for s in self.sessions.values() if s["reference_dataset_id"] == dataset_id)

    def session_by_name(self, name: str) -> dict | None:
        return next((s for s in self.sessions.values() if s["name"] == name), None)

    def get_session(self, session_id: str) -> dict:
        session = self.sessions.get(session_id)
        if session is None:
            raise ApiError(404, "Session not found")
        return session

    def update_session(self, session_id: str, changes: dict) -> dict:
        with self.lock:
            session = self.get_session(session_id)
            name = changes.get("name")
            if name and name != session["name"] and self.session_by_name(name):
                raise ApiError(409, "Session already exists.")
            for key in ("name", "description", "extra"):
                if changes.get(key) is not None:
                    session[key] = changes[key]
            if changes.get("end_time"):
                session["end_time"] = parse_time(changes["end_time"]).isoformat()
            return self.session_view(session)

    def session_view(self, session: dict, include_stats: bool = False) -> dict:
        view = {**public(session), **{key: None for key in SESSION_STAT_KEYS}}
        if include_stats:
            runs = [r for r in self.runs.values() if r["session_id"] == session["id"]]
            view["run_count"] = sum(1 for r in runs if r["is_root"])
            view["last_run_start_time"] = max((r["start_time"] for r in runs), default=None)
            view["feedback_stats"] = feedback_stats(self._feedback_of_runs({r["id"] for r in runs})) or None
            summary = self._session_summary_feedback(session["id"])
            view["session_feedback_stats"] = feedback_stats(summary) or None
            view["error_rate"] = (sum(1 for r in runs if r["error"]) / len(runs)) if runs else None
        return view

    def list_sessions(self, *, ids: list[str], name: str | None, name_contains: str | None,
                      reference_datasets: list[str], reference_free: bool | None, metadata: dict | None,
                      include_stats: bool) -> list[dict]:
        with self.lock:
            found = []
            for session in self.sessions.values():
                meta = (session["extra"] or {}).get("metadata") or {}
                if ((ids and session["id"] not in ids) or (name is not None and session["name"] != name)
                        or (name_contains and name_contains not in session["name"])
                        or (reference_datasets and session["reference_dataset_id"] not in reference_datasets)
                        or (reference_free is not None and (session["reference_dataset_id"] is None) != reference_free)
                        or (metadata and any(meta.get(k) != v for k, v in metadata.items()))):
                    continue
                found.append(session)
            found.sort(key=lambda s: s["start_time"], reverse=True)
            return [self.session_view(s, include_stats) for s in found]

    def _session_for_run(self, session_name: str | None, session_id: Any) -> dict:
        if session_id:
            sid = as_uuid(session_id, "session_id")
            if sid not in self.sessions:
                self.create_session(f"project-{sid[:8]}", session_id=sid)
            return self.sessions[sid]
        name = session_name or "default"
        return self.session_by_name(name) or self.sessions[self.create_session(name)["id"]]

    # ---- datasets and examples
    def create_dataset(self, name: str, *, dataset_id: Any = None, description: str | None = None,
                       externally_managed: bool = False, metadata: dict | None = None,
                       data_type: str = "kv") -> dict:
        with self.lock:
            if self.dataset_by_name(name) is not None:
                raise ApiError(409, "Dataset with this name already exists.")
            did = as_uuid(dataset_id or uuid.uuid4(), "id")
            if did in self.datasets:
                raise ApiError(409, "Dataset with this id already exists.")
            stamp = self.now().isoformat()
            self.datasets[did] = {
                "id": did, "name": name, "description": description, "created_at": stamp, "modified_at": stamp,
                "data_type": data_type, "inputs_schema_definition": None, "outputs_schema_definition": None,
                "externally_managed": externally_managed, "tenant_id": self.tenant_id, "metadata": metadata,
                "transformations": None, "_rows": {},
            }
            return self.dataset_view(self.datasets[did])

    def dataset_by_name(self, name: str) -> dict | None:
        return next((d for d in self.datasets.values() if d["name"] == name), None)

    def get_dataset(self, dataset_id: str) -> dict:
        dataset = self.datasets.get(dataset_id)
        if dataset is None:
            raise ApiError(404, "Dataset not found")
        return dataset

    def dataset_view(self, dataset: dict) -> dict:
        sessions = [s for s in self.sessions.values() if s["reference_dataset_id"] == dataset["id"]]
        return {**public(dataset), "example_count": len(dataset["_rows"]), "session_count": len(sessions),
                "last_session_start_time": max((s["start_time"] for s in sessions), default=None)}

    def list_datasets(self, *, ids: list[str], name: str | None, name_contains: str | None) -> list[dict]:
        with self.lock:
            return [self.dataset_view(d) for d in sorted(self.datasets.values(), key=lambda d: d["created_at"],
                                                         reverse=True)
                    if (not ids or d["id"] in ids) and (name is None or d["name"] == name)
                    and (not name_contains or name_contains in d["name"])]

    def example_for_row(self, dataset: dict, row_id: str, inputs: dict, outputs: dict | None) -> dict:
        """The dataset's example for an external row id: created on first sight, reused afterwards."""
        example_id = dataset["_rows"].get(row_id)
        if example_id is None:
            example_id = row_id if row_id not in self.examples else str(uuid.uuid4())
            stamp = self.now().isoformat()
            self.examples[example_id] = {"id": example_id, "dataset_id": dataset["id"], "inputs": inputs,
                                         "outputs": outputs, "metadata": {}, "created_at": stamp,
                                         "modified_at": stamp, "source_run_id": None}
            dataset["_rows"][row_id] = example_id
        return self.examples[example_id]

    # ---- externally run experiments (POST /datasets/upload-experiment)
    def upload_experiment(self, body: dict) -> dict:
        """Create the dataset (if new), experiment, examples, runs and feedback; `body` is already validated."""
        with self.lock:
            dataset = self._upload_dataset(body)
            if self.session_by_name(body["experiment_name"]) is not None:
                raise ApiError(409, "Session already exists.")
            if dataset is None:
                dataset = self._create_upload_dataset(body)
            metadata = body.get("experiment_metadata")
            session = self.sessions[self.create_session(
                body["experiment_name"], description=body.get("experiment_description"),
                extra={"metadata": metadata} if metadata else None, reference_dataset_id=dataset["id"],
                start_time=body["experiment_start_time"], end_time=body["experiment_end_time"])["id"]]
            for row in body["results"]:
                self._add_experiment_row(session, dataset, row)
            for score in body.get("summary_experiment_scores") or []:
                self.add_feedback({**_score_feedback(score), "session_id": session["id"]})
            return {"dataset": self.dataset_view(dataset), "experiment": self.session_view(session)}

    def _upload_dataset(self, body: dict) -> dict | None:
        """The existing dataset the upload names, if any. Only datasets this endpoint created may be reused."""
        dataset = self.datasets.get(as_uuid(body["dataset_id"], "dataset_id")) if body.get("dataset_id") else None
        if dataset is None and body.get("dataset_name"):
            dataset = self.dataset_by_name(body["dataset_name"])
        if dataset is not None and not dataset["externally_managed"]:
            raise ApiError(400, f"Dataset {dataset['name']!r} is not externally managed: upload-experiment only "
                                "accepts datasets it created")
        return dataset

    def _create_upload_dataset(self, body: dict) -> dict:
        dataset_id = as_uuid(body.get("dataset_id") or uuid.uuid4(), "dataset_id")
        name = body.get("dataset_name") or f"dataset-{dataset_id[:8]}"
        view = self.create_dataset(name, dataset_id=dataset_id, description=body.get("dataset_description"),
                                   externally_managed=True)
        return self.datasets[view["id"]]

    def _add_experiment_row(self, session: dict, dataset: dict, row: dict) -> None:
        example = self.example_for_row(dataset, as_uuid(row["row_id"], "row_id"), row["inputs"],
                                       row.get("expected_outputs"))
        run = self.add_run({
            "name": row.get("run_name") or "Target", "run_type": "chain", "session_id": session["id"],
            "inputs": row["inputs"], "outputs": row.get("actual_outputs"), "error": row.get("error"),
            "start_time": row["start_time"], "end_time": row["end_time"], "reference_example_id": example["id"],
            "extra": {"metadata": row.get("run_metadata") or {}},
        })
        for score in row.get("evaluation_scores") or []:
            self.add_feedback({**_score_feedback(score), "run_id": run["id"], "session_id": session["id"]})

    def experiments(self, dataset_name: str) -> list[dict]:
        """Experiments uploaded for a dataset, oldest first, each with its metadata and rows."""
        with self.lock:
            dataset = self.dataset_by_name(dataset_name)
            if dataset is None:
                return []
            row_of = {example_id: row_id for row_id, example_id in dataset["_rows"].items()}
            found = []
            for session in self.sessions.values():
                if session["reference_dataset_id"] != dataset["id"]:
                    continue
                runs = [r for r in self.runs.values() if r["session_id"] == session["id"]]
                rows = [{"row_id": row_of.get(r["reference_example_id"]), "run": self.run_view(r),
                         "example": public(self.examples[r["reference_example_id"]]),
                         "feedback": [public(f) for f in self._feedback_of_runs({r["id"]})]}
                        for r in runs if r["reference_example_id"] in self.examples]
                summary = [public(f) for f in self._session_summary_feedback(session["id"])]
                found.append({**self.session_view(session, include_stats=True),
                              "metadata": (session["extra"] or {}).get("metadata") or {},
                              "rows": rows, "summary_feedback": summary})
            return found


def _score_feedback(score: dict) -> dict:
    source = {"type": (score.get("feedback_source") or {}).get("type") or "api", "metadata": {}, "user_id": None,
              "user_name": None}
    stamps = {k: parse_time(score[k]).isoformat() for k in ("created_at", "modified_at") if score.get(k)}
    return {"key": score["key"], "score": score.get("score"), "value": score.get("value"),
            "comment": score.get("comment"), "correction": score.get("correction"),
            "feedback_config": score.get("feedback_config"), "feedback_source": source, **stamps}

