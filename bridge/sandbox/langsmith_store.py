"""In-memory state of the LangSmith emulator: projects, datasets, examples, runs, feedback, tokens, stored objects.

Everything here is plain dicts shaped like the real service's JSON, guarded by one lock because the uvicorn thread
and the test thread (seeding through `LangSmithEmulator`) both touch it. Errors the HTTP layer should return are
raised as `ApiError(status, detail)`.

Timestamps: runs keep naive UTC strings with microseconds (`2024-04-05T01:28:54.085646`), as in the rule webhook
payload, which also makes them sort lexically; projects, datasets, feedback and tokens use aware ISO strings.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import secrets
import threading
import uuid
from typing import Any, Callable, Iterable

UTC = dt.timezone.utc
DEFAULT_TENANT_ID = "5e1f0b1e-0000-4000-8000-00000000e5a1"
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
SESSION_STAT_KEYS = ("run_count", "latency_p50", "latency_p99", "first_token_p50", "first_token_p99",
                     "total_tokens", "prompt_tokens", "completion_tokens", "total_cost", "prompt_cost",
                     "completion_cost", "last_run_start_time", "last_run_start_time_live", "feedback_stats",
                     "session_feedback_stats", "run_facets", "error_rate", "streaming_rate")


class ApiError(Exception):
    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


# ---------------------------------------------------------------- small helpers
def parse_time(value: Any) -> dt.datetime:
    """An aware UTC datetime from an ISO string or datetime; naive input is taken as UTC. Raises ValueError."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str) and value:
        moment = dt.datetime.fromisoformat(value)
    else:
        raise ValueError(f"not a datetime: {value!r}")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def run_time(moment: dt.datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def as_uuid(value: Any, field: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ApiError(422, f"{field}: not a valid uuid: {value!r}") from None


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float))  # bool counts: the SDK sends True/False scores


def public(record: dict) -> dict:
    """A deep copy without the store's private `_` keys."""
    return {k: copy.deepcopy(v) for k, v in record.items() if not k.startswith("_")}


def feedback_stats(rows: Iterable[dict]) -> dict[str, dict]:
    """Per key `{n, avg, show_feedback_arrow, values}` as in the webhook payload: n/avg over numeric scores,
    values counts string values."""
    stats: dict[str, dict] = {}
    sums: dict[str, float] = {}
    for row in rows:
        entry = stats.setdefault(row["key"], {"n": 0, "avg": None, "show_feedback_arrow": True, "values": {}})
        if is_number(row.get("score")):
            entry["n"] += 1
            sums[row["key"]] = sums.get(row["key"], 0.0) + float(row["score"])
        if isinstance(row.get("value"), str):
            entry["values"][row["value"]] = entry["values"].get(row["value"], 0) + 1
    for key, entry in stats.items():
        entry["avg"] = sums[key] / entry["n"] if entry["n"] else None
    return stats


# ---------------------------------------------------------------- the run filter mini-language
_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+(?:\.\d+)?)|(?P<word>[A-Za-z_][\w.]*)'
                    r'|(?P<punct>[(),]))')


def parse_filter(text: str) -> Any:
    """`eq(name, "x")`-style expressions into nested `(op, [args])` tuples; literals stay Python values and bare
    words become `("field", name)`. Raises ApiError(400) on a syntax error, as the real query does."""
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ApiError(400, f"invalid filter at {pos}: {text!r}")
        tokens.append(match)
        pos = match.end()
    expr, rest = _parse_expr(tokens, 0, text)
    if rest != len(tokens):
        raise ApiError(400, f"invalid filter (trailing input): {text!r}")
    return expr


def _parse_expr(tokens: list, i: int, text: str) -> tuple[Any, int]:
    if i >= len(tokens):
        raise ApiError(400, f"invalid filter (unexpected end): {text!r}")
    tok = tokens[i]
    if tok.group("str"):
        return json.loads(tok.group("str")), i + 1
    if tok.group("num"):
        return float(tok.group("num")), i + 1
    word = tok.group("word")
    if not word:
        raise ApiError(400, f"invalid filter: {text!r}")
    if i + 1 < len(tokens) and tokens[i + 1].group("punct") == "(":
        args, i = [], i + 2
        while i < len(tokens) and tokens[i].group("punct") != ")":
            arg, i = _parse_expr(tokens, i, text)
            args.append(arg)
            if i < len(tokens) and tokens[i].group("punct") == ",":
                i += 1
        if i >= len(tokens):
            raise ApiError(400, f"invalid filter (unclosed call): {text!r}")
        return (word.lower(), args), i + 1
    return {"null": None, "true": True, "false": False}.get(word.lower(), ("field", word)), i + 1


class FilterEval:
    """Evaluates a parsed filter on one run. Unsupported operators or fields match everything and are noted in
    `ignored`, so a filter the emulator does not understand widens a query instead of failing it."""

    COMPARE = {"eq": lambda a, b: a == b, "neq": lambda a, b: a != b, "gt": lambda a, b: a > b,
               "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}

    def __init__(self, run: dict, feedback_keys: set[str], ignored: list[str]) -> None:
        self.run, self.feedback_keys, self.ignored = run, feedback_keys, ignored

    def __call__(self, expr: Any) -> bool:
        op, args = expr if isinstance(expr, tuple) and expr[0] != "field" else ("?", [expr])
        if op == "and":
            return all(self(arg) for arg in args)
        if op == "or":
            return any(self(arg) for arg in args)
        if op == "not" and len(args) == 1:
            return not self(args[0])
        if op == "has" and len(args) == 2 and _field_name(args[0]):
            return self._has(_field_name(args[0]), args[1])
        if op in self.COMPARE and len(args) == 2 and _field_name(args[0]):
            return self._compare(op, _field_name(args[0]), args[1])
        self.ignored.append(repr(expr))
        return True

    def _has(self, field: str, value: Any) -> bool:
        if field == "feedback_key":
            return value in self.feedback_keys
        current = self.run.get(field)
        return isinstance(current, (list, dict, str)) and value in current

    def _compare(self, op: str, field: str, value: Any) -> bool:
        if field == "feedback_key" and op in ("eq", "neq"):
            return (value in self.feedback_keys) == (op == "eq")
        if field in ("metadata_key", "metadata_value"):
            metadata = (self.run.get("extra") or {}).get("metadata") or {}
            pool = metadata.keys() if field == "metadata_key" else [str(v) for v in metadata.values()]
            return (str(value) in pool) == (op != "neq")
        if field not in self.run:
            self.ignored.append(f"{op}({field}, ...)")
            return True
        current = self.run[field]
        if field in ("start_time", "end_time") and current is not None and value is not None:
            current, value = parse_time(current), parse_time(value)
        if op in ("eq", "neq") or (current is not None and value is not None):
            try:
                return self.COMPARE[op](current, value)
            except TypeError:
                return False
        return False


def _field_name(expr: Any) -> str | None:
    return expr[1] if isinstance(expr, tuple) and expr[0] == "field" else None


# ---------------------------------------------------------------- the store
class Store:
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
        self.feedback: dict[str, dict] = {}
        self.tokens: dict[str, dict] = {}
        self.objects: dict[str, bytes] = {}
        self.pending_patches: dict[str, dict] = {}  # a batch may carry a patch before its post
        self.ignored_filters: list[str] = []

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
            summary = [f for f in self.feedback.values() if f["session_id"] == session["id"] and not f["run_id"]]
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
            checks = _run_checks(body)
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
            return [public(f) for f in self.feedback.values()
                    if (not run_ids or f["run_id"] in run_ids) and (not keys or f["key"] in keys)
                    and (not sources or (f["feedback_source"] or {}).get("type") in sources)
                    and (not session_ids or f["session_id"] in session_ids)]

    def _feedback_of_runs(self, run_ids: set[str]) -> list[dict]:
        return [f for f in self.feedback.values() if f["run_id"] in run_ids]

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
                summary = [public(f) for f in self.feedback.values()
                           if f["session_id"] == session["id"] and not f["run_id"]]
                found.append({**self.session_view(session, include_stats=True),
                              "metadata": (session["extra"] or {}).get("metadata") or {},
                              "rows": rows, "summary_feedback": summary})
            return found

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


def _score_feedback(score: dict) -> dict:
    source = {"type": (score.get("feedback_source") or {}).get("type") or "api", "metadata": {}, "user_id": None,
              "user_name": None}
    stamps = {k: parse_time(score[k]).isoformat() for k in ("created_at", "modified_at") if score.get(k)}
    return {"key": score["key"], "score": score.get("score"), "value": score.get("value"),
            "comment": score.get("comment"), "correction": score.get("correction"),
            "feedback_config": score.get("feedback_config"), "feedback_source": source, **stamps}


def _run_status(run: dict) -> str:
    return "error" if run.get("error") else ("success" if run.get("end_time") else "pending")


def _run_checks(body: dict) -> list[Callable[[dict], bool]]:
    """Predicates for the structured /runs/query fields (everything but `filter`)."""
    checks: list[Callable[[dict], bool]] = []

    def one_of(field: str, values: Any) -> None:
        wanted = {as_uuid(v, field) for v in (values if isinstance(values, list) else [values])}
        checks.append(lambda run: str(run[field]) in wanted)

    for key, field in (("id", "id"), ("session", "session_id"), ("trace", "trace_id"),
                       ("parent_run", "parent_run_id"), ("reference_example", "reference_example_id")):
        if body.get(key):
            one_of(field, body[key])
    if body.get("is_root") is not None:
        checks.append(lambda run: run["is_root"] == bool(body["is_root"]))
    if body.get("run_type"):
        checks.append(lambda run: run["run_type"] == body["run_type"])
    if body.get("error") is not None:
        checks.append(lambda run: bool(run["error"]) == bool(body["error"]))
    if body.get("start_time"):
        try:
            since = run_time(parse_time(body["start_time"]))
        except ValueError as exc:
            raise ApiError(422, f"start_time: {exc}") from None
        checks.append(lambda run: run["start_time"] >= since)
    return checks
