"""The LangSmith emulator's automation rules: the rules API, the rule log, and the rules running by themselves.

Routes (served bare and under /api/v1, as smith-backend's `RunRulesSchema` per langsmith.md): `GET /runs/rules`
(filters `id`, `session_id`, `type`), `POST /runs/rules`, `PATCH /runs/rules/{id}` (the whole rule: fields left out
fall back to their defaults), `DELETE /runs/rules/{id}`, `GET /runs/rules/{id}/logs` (`limit` ≤ 720, `offset`,
`start_time`, `end_time`; most recent first) and `GET /runs/rules/{id}/last_applied` (404 when never applied).

`RuleBook.apply()` is one pass of LangSmith's rule worker: each enabled rule takes the finished runs of its project
that arrived after it was created (or started after `backfill_from`) and that it has not seen yet, keeps those its
filter matches and its sampling rate picks (a hash of rule and run id, so a pass repeated picks the same runs),
records one log entry per run, and POSTs one delivery to each webhook with LangSmith's delivery rules: 5 s timeout,
no retry after a 4xx or a timeout, up to 2 retries after a connection error or a 5xx. A run is applied once per rule,
whatever the webhook's outcome. `RuleBook.start(interval)` runs passes on a thread every few seconds.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
import uuid
from typing import Any

import requests
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.sandbox.langsmith_common import ApiError, as_uuid, feedback_stats, parse_time, run_time
from bridge.sandbox.langsmith_filter import FilterEval, parse_filter

DELIVERY_TIMEOUT = 5.0
RETRIES = 2  # after a connection error or a 5xx
MAX_LOG_PAGE = 720
RULE_DEFAULTS: dict[str, Any] = {
    "is_enabled": True, "session_id": None, "dataset_id": None, "filter": None, "trace_filter": None,
    "tree_filter": None, "webhooks": [], "group_by": None, "backfill_from": None, "add_to_dataset_id": None,
    "add_to_annotation_queue_id": None, "evaluator_id": None, "extend_only": False, "transient": False,
    "include_extended_stats": False,
}


def sampled(rule_id: str, run_id: str, rate: float) -> bool:
    digest = hashlib.sha256(f"{rule_id}:{run_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64 < rate


class RuleBook:
    """Rules, their logs and what each rule has seen, on the emulator's store (and under its lock)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.rules: dict[str, dict] = {}
        self.logs: dict[str, list[dict]] = {}
        self.seen: dict[str, set[str]] = {}
        self.http = requests.Session()
        self.http.trust_env = False
        self.timeout, self.retry_pause = DELIVERY_TIMEOUT, 0.2  # tests shorten both
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ---- the API
    def validate(self, body: dict, rule_id: str) -> dict:
        rule = {**copy.deepcopy(RULE_DEFAULTS), **{k: v for k, v in body.items() if k in RULE_DEFAULTS}}
        if not isinstance(body.get("display_name"), str) or not body["display_name"]:
            raise ApiError(422, "display_name: field required")
        rate = body.get("sampling_rate")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ApiError(422, "sampling_rate: a number from 0 to 1 is required")
        if bool(rule["session_id"]) == bool(rule["dataset_id"]):
            raise ApiError(422, "exactly one of session_id and dataset_id is required")
        if rule["filter"]:
            parse_filter(rule["filter"])  # a bad filter is refused here, not at its first application
        if not isinstance(rule["webhooks"], list) or not all(
                isinstance(w, dict) and isinstance(w.get("url"), str) for w in rule["webhooks"]):
            raise ApiError(422, "webhooks: expected a list of {url, headers}")
        session = self.store.get_session(as_uuid(rule["session_id"], "session_id")) if rule["session_id"] else None
        rule.update(id=rule_id, display_name=body["display_name"], sampling_rate=float(rate),
                    tenant_id=self.store.tenant_id, session_name=session["name"] if session else None,
                    session_id=session["id"] if session else None)
        return rule

    def create(self, body: dict) -> dict:
        with self.store.lock:
            rule = self.validate(body, str(uuid.uuid4()))
            now = self.store.now()
            rule["created_at"] = rule["updated_at"] = now.isoformat()
            rule["_since"] = run_time(parse_time(rule["backfill_from"])) if rule["backfill_from"] else run_time(now)
            self.rules[rule["id"]] = rule
            self.logs[rule["id"]], self.seen[rule["id"]] = [], set()
            return self.view(rule)

    def update(self, rule_id: str, body: dict) -> dict:
        with self.store.lock:
            old = self.get(rule_id)
            rule = self.validate(body, rule_id)
            rule.update(created_at=old["created_at"], updated_at=self.store.now().isoformat(), _since=old["_since"])
            self.rules[rule_id] = rule
            return self.view(rule)

    def delete(self, rule_id: str) -> None:
        with self.store.lock:
            self.get(rule_id)
            del self.rules[rule_id]

    def get(self, rule_id: str) -> dict:
        rule = self.rules.get(rule_id)
        if rule is None:
            raise ApiError(404, "Rule not found")
        return rule

    def list(self, ids: list[str], session_id: str | None) -> list[dict]:
        with self.store.lock:
            return [self.view(r) for r in self.rules.values()
                    if (not ids or r["id"] in ids) and (not session_id or r["session_id"] == session_id)]

    @staticmethod
    def view(rule: dict) -> dict:
        return {k: copy.deepcopy(v) for k, v in rule.items() if not k.startswith("_")}

    def log(self, rule_id: str, start: str | None, end: str | None, limit: int, offset: int) -> list[dict]:
        with self.store.lock:
            self.get(rule_id)
            entries = [e for e in reversed(self.logs[rule_id])
                       if (not start or e["application_time"] >= start) and (not end or e["application_time"] < end)]
            return copy.deepcopy(entries[offset:offset + limit])

    # ---- the worker
    def start(self, interval: float = 3.0) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, args=(interval,), name="langsmith-rules", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.apply()

    def apply(self) -> int:
        """One pass over every enabled rule; returns how many runs were applied."""
        with self.store.lock:
            work = [(rule, self._due(rule)) for rule in self.rules.values() if rule["is_enabled"]]
        applied = 0
        for rule, runs in work:
            if runs:
                self._deliver(rule, runs)
                applied += len(runs)
        return applied

    def _due(self, rule: dict) -> list[dict]:
        """The rule's new runs (marked seen now, so each run is applied once per rule), filtered and sampled."""
        seen, expr = self.seen[rule["id"]], parse_filter(rule["filter"]) if rule["filter"] else None
        due = []
        for run in self.store.runs.values():
            if run["session_id"] != rule["session_id"] or run["id"] in seen or not run.get("end_time"):
                continue
            if max(run["modified_at"], run["start_time"]) < rule["_since"]:
                continue
            seen.add(run["id"])
            keys = {f["key"] for f in self.store.feedback.of_runs({run["id"]})}
            if expr is not None and not FilterEval(run, keys, self.store.ignored_filters)(expr):
                continue
            if sampled(rule["id"], run["id"], rule["sampling_rate"]):
                due.append(run)
        return due

    def _deliver(self, rule: dict, runs: list[dict]) -> None:
        with self.store.lock:
            body = self._payload(rule, runs)
        outcomes = [self._post(hook, body) for hook in rule["webhooks"]]
        outcome = None
        if outcomes:
            worst = "error" if any(o["outcome"] == "error" for o in outcomes) else "success"
            outcome = {"outcome": worst, "payload": outcomes}
        stamp = run_time(self.store.now())
        with self.store.lock:
            for run in runs:
                self.logs[rule["id"]].append({
                    "rule_id": rule["id"], "run_id": run["id"], "run_name": run["name"], "run_type": run["run_type"],
                    "run_session_id": run["session_id"], "start_time": run["start_time"], "end_time": run["end_time"],
                    "application_time": stamp, "thread_id": None, "add_to_annotation_queue": None,
                    "add_to_dataset": None, "evaluators": None, "alerts": None, "webhooks": outcome})

    def _payload(self, rule: dict, runs: list[dict]) -> bytes:
        starts = [parse_time(r["start_time"]) for r in runs]
        ends = [parse_time(r["end_time"] or r["start_time"]) for r in runs]
        rows = self.store.feedback.of_runs({r["id"] for r in runs})
        return json.dumps({"rule_id": rule["id"], "start_time": min(starts).isoformat(),
                           "end_time": max(ends).isoformat(),
                           "runs": [self.store.run_view(r, for_webhook=True) for r in runs],
                           "feedback_stats": feedback_stats(rows)}).encode()

    def _post(self, hook: dict, body: bytes) -> dict:
        headers = {"Content-Type": "application/json", **(hook.get("headers") or {})}
        for attempt in range(RETRIES + 1):
            try:
                response = self.http.post(hook["url"], data=body, headers=headers, timeout=self.timeout)
            except requests.ReadTimeout:  # a slow reply is final; a connect timeout is a connection failure
                return {"url": hook["url"], "outcome": "error", "error": f"no answer within {self.timeout:g} s"}
            except requests.ConnectionError:
                if attempt == RETRIES:
                    return {"url": hook["url"], "outcome": "error", "error": "connection failed"}
                time.sleep(self.retry_pause * 2 ** attempt)
                continue
            if response.status_code < 500 or attempt == RETRIES:
                ok = response.status_code < 400
                return {"url": hook["url"], "outcome": "success" if ok else "error",
                        "status_code": response.status_code}
            time.sleep(self.retry_pause * 2 ** attempt)
        raise AssertionError("unreachable")


class RuleRoutes:
    def __init__(self, book: RuleBook) -> None:
        self.book = book

    def routes(self) -> list[Route]:
        return [Route("/runs/rules", self.list, methods=["GET"]), Route("/runs/rules", self.create, methods=["POST"]),
                Route("/runs/rules/{rule_id}", self.update, methods=["PATCH"]),
                Route("/runs/rules/{rule_id}", self.delete, methods=["DELETE"]),
                Route("/runs/rules/{rule_id}/logs", self.logs, methods=["GET"]),
                Route("/runs/rules/{rule_id}/last_applied", self.last_applied, methods=["GET"])]

    @staticmethod
    async def body(request: Request) -> dict:
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError as exc:
            raise ApiError(422, f"body: invalid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(422, "body: expected a JSON object")
        return body

    async def list(self, request: Request) -> Response:
        q = request.query_params
        ids = [as_uuid(v, "id") for v in q.getlist("id")]
        session = as_uuid(q["session_id"], "session_id") if q.get("session_id") else None
        return JSONResponse(self.book.list(ids, session))

    async def create(self, request: Request) -> Response:
        return JSONResponse(self.book.create(await self.body(request)))

    async def update(self, request: Request) -> Response:
        rule_id = as_uuid(request.path_params["rule_id"], "rule_id")
        return JSONResponse(self.book.update(rule_id, await self.body(request)))

    async def delete(self, request: Request) -> Response:
        self.book.delete(as_uuid(request.path_params["rule_id"], "rule_id"))
        return JSONResponse({})

    async def logs(self, request: Request) -> Response:
        q = request.query_params
        try:
            limit, offset = int(q.get("limit") or MAX_LOG_PAGE), int(q.get("offset") or 0)
        except ValueError:
            raise ApiError(422, "limit/offset: not an integer") from None
        if not 1 <= limit <= MAX_LOG_PAGE or offset < 0:
            raise ApiError(400, f"limit must be between 1 and {MAX_LOG_PAGE}, offset >= 0")
        bounds = []
        for name in ("start_time", "end_time"):
            try:
                bounds.append(run_time(parse_time(q[name])) if q.get(name) else None)
            except ValueError as exc:
                raise ApiError(422, f"{name}: {exc}") from None
        rule_id = as_uuid(request.path_params["rule_id"], "rule_id")
        return JSONResponse(self.book.log(rule_id, bounds[0], bounds[1], limit, offset))

    async def last_applied(self, request: Request) -> Response:
        entries = self.book.log(as_uuid(request.path_params["rule_id"], "rule_id"), None, None, 1, 0)
        if not entries:
            raise ApiError(404, "Rule has not been applied")
        return JSONResponse(entries[0])
