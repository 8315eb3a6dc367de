"""Thin client over the `langsmith` SDK: endpoint, key and workspace injected, timeouts set, errors typed.

Retries are accounted for once: the SDK's HTTP adapter retries only idempotent methods (GET, HEAD, ...), while
POSTs (upload-experiment, runs/query, feedback tokens) are retried by the job queue, whose every attempt re-checks
what already exists. That way a POST is never silently sent twice by two layers of retries.

Runs are read through LangSmith's v2 runs API (`POST /api/v2/runs/query`, the SDK's generated sync client
`langsmith._client.Langsmith`): up to 1000 runs per request, only the fields an export needs. A server without it
(self-hosted before v0.16) answers 404 there; the first run read then switches this process to the v1 routes for
good (`runs_api` says which is in use, for the Settings page).

`smith_errors()` (smith_errors.py) is the one place that turns what the SDK raises (its v1 client's `LangSmithError`
family and the generated client's `langsmith._exceptions` family) into `UpstreamError`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, BinaryIO

import requests
from langsmith import Client
from langsmith import _exceptions as v2_errors
from langsmith._client import Langsmith as GeneratedClient
from langsmith._httpx import httpx  # the HTTP library the generated client is built on (httpx2 or httpx)
from langsmith.client import _get_openapi_base_url
from urllib3.util import Retry

from .objects import HostPolicy, ObjectFetcher
from .smith_errors import smith_errors
from .errors import MissingCredential, UpstreamError
from .formats.runs_v2 import EXPORT_SELECTS, PAYLOAD_SELECTS, webhook_shape

log = logging.getLogger("bridge.smith")

TARGET = "LangSmith"
V2_PAGE = 1000  # the v2 run query's largest page, also its most ids per request
ALL_TIME = "1970-01-01T00:00:00+00:00"  # v2 queries default to the last day; an explicit lower bound is all time
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# The SDK treats a missing /info as "old server" and caches it; an explicit one avoids a request and surprises.
INFO = {"version": "", "instance_flags": {}}


def idempotent_retry() -> Retry:
    return Retry(total=3, status_forcelist=[408, 425, 429, 500, 502, 503, 504], backoff_factor=0.5,
                 raise_on_redirect=False, raise_on_status=False, respect_retry_after_header=True,
                 allowed_methods=IDEMPOTENT)


class Smith:
    """The bridge's view of LangSmith. Built from settings, lazily, never from environment globals."""

    def __init__(self, endpoint: str, api_key: str | None, workspace_id: str | None = None,
                 timeout: float = 30.0, web_url: str | None = None,
                 on_session: Callable[[requests.Session, str], object] | None = None,
                 on_object_status: Callable[[int | str], object] | None = None,
                 on_http_client: Callable[[Any], object] | None = None,
                 object_hosts: list[str] | tuple[str, ...] = ()) -> None:
        self.endpoint, self.api_key, self.workspace_id = endpoint.rstrip("/"), api_key, workspace_id
        self.object_hosts = tuple(object_hosts)
        self.timeout, self._web_url, self.on_session = timeout, web_url, on_session
        self.on_object_status, self.on_http_client = on_object_status, on_http_client
        self._client: Client | None = None
        self._generated: GeneratedClient | None = None
        self.runs_api: str | None = None  # "v2" or "v1" once the first run read has decided; None before
        self.page_size = V2_PAGE
        self._objects: ObjectFetcher | None = None
        self.query_limiter = RateLimiter(15, 10.0)  # LangSmith cloud: POST /runs/query, 15 per 10 s per key

    @property
    def client(self) -> Client:
        if not self.api_key:
            raise MissingCredential("LANGSMITH_API_KEY is not set: it is needed to talk to LangSmith")
        if self._client is None:
            self._client = Client(api_url=self.endpoint, api_key=self.api_key, workspace_id=self.workspace_id,
                                  auto_batch_tracing=False, info=INFO, retry_config=idempotent_retry(),
                                  timeout_ms=int(self.timeout * 1000), web_url=self._web_url)
            if self.on_session:
                self.on_session(self._client.session, "langsmith")
        return self._client

    @property
    def generated(self) -> GeneratedClient:
        """The SDK's generated sync client (the v2 API). It retries nothing itself (`max_retries=0`): a run query
        is retried by the job queue, like every POST here, so two layers of retries never multiply."""
        if not self.api_key:
            raise MissingCredential("LANGSMITH_API_KEY is not set: it is needed to talk to LangSmith")
        if self._generated is None:
            # No redirects: httpx would carry the X-API-Key header to wherever one points.
            http = httpx.Client(timeout=httpx.Timeout(self.timeout), follow_redirects=False)
            if self.on_http_client:
                self.on_http_client(http)
            self._generated = GeneratedClient(api_key=self.api_key, tenant_id=self.workspace_id,
                                              base_url=_get_openapi_base_url(self.endpoint), timeout=self.timeout,
                                              max_retries=0, http_client=http)
        return self._generated

    @property
    def objects(self) -> "ObjectFetcher":
        """One fetcher for the process: its connections and threads stay from one export to the next."""
        if self._objects is None:
            self._objects = ObjectFetcher(self.endpoint, timeout=self.timeout, on_status=self.on_object_status,
                                          hosts=HostPolicy(self.endpoint, self.object_hosts))
        return self._objects

    def close(self) -> None:
        if self._objects is not None:
            self._objects.close()
        if self._generated is not None:
            self._generated.close()

    @property
    def web_url(self) -> str:
        return self.client._host_url

    def check(self) -> str:
        with smith_errors("connection check"):
            next(iter(self.client.list_datasets(limit=1)), None)
        return "reachable, key accepted"

    # ---- experiments ----
    UPLOAD_PATH = "/api/v1/datasets/upload-experiment"

    def find_dataset(self, name: str) -> str | None:
        with smith_errors(f"look up dataset {name!r}"):
            found = next(iter(self.client.list_datasets(dataset_name=name, limit=1)), None)
        return str(found.id) if found else None

    def experiments(self, dataset_id: str, name: str | None = None, metadata: dict | None = None) -> list:
        with smith_errors("list experiments"):
            return list(self.client.list_projects(reference_dataset_id=dataset_id, name=name, metadata=metadata))

    def all_experiments(self) -> list:
        """Every experiment (a project with a reference dataset) of the workspace, newest first."""
        with smith_errors("list experiments"):
            return list(self.client.list_projects(reference_free=False))

    def upload_experiment(self, body: BinaryIO) -> dict:
        with smith_errors("upload experiment"):
            response = self.client.request_with_retries(
                "POST", self.UPLOAD_PATH, request_kwargs={"data": body, "headers": {"Content-Type": "application/json"}})
        return response.json()

    def dataset_url(self, dataset_id: str) -> str:
        with smith_errors("read the workspace id"):
            tenant = self.client._get_tenant_id()  # cached by the SDK after the first call
        return f"{self.web_url}/o/{tenant}/datasets/{dataset_id}"

    def compare_url(self, dataset_id: str, experiment_ids: list[str]) -> str:
        """LangSmith's comparison view; with one experiment it is that experiment's page."""
        return f"{self.dataset_url(dataset_id)}/compare?selectedSessions={','.join(experiment_ids)}"

    # ---- runs and feedback (batched: never one request per run) ----
    BATCH = 100  # v1 run queries, feedback listings and token batches

    def runs_by_id(self, runs: list[dict], selects: list[str] = PAYLOAD_SELECTS) -> list[dict]:
        """Runs given by id, in webhook shape: one v2 query per project and 1000 ids (the v2 API needs the project
        and a start-time window, which webhook runs and rule logs carry); v1: one query per 100 ids."""
        return self._either(lambda: self._v2_runs_by_id(runs, selects),
                            lambda: self._v1_runs_by_id([str(r["id"]) for r in runs]))

    def _v2_runs_by_id(self, runs: list[dict], selects: list[str]) -> list[dict]:
        by_project: dict[str, list[dict]] = {}
        for run in runs:
            by_project.setdefault(str(run.get("session_id") or ""), []).append(run)
        unknown = by_project.pop("", [])
        if unknown:
            raise UpstreamError(TARGET, f"cannot read {len(unknown)} run(s) by id without their project")
        found: list[dict] = []
        for project_id, members in by_project.items():
            for batch in batches(members, V2_PAGE):
                low, high = start_window(batch)
                found += self._v2_query(f"query {len(batch)} run(s)", project_ids=[project_id],
                                        ids=[str(r["id"]) for r in batch], min_start_time=low,
                                        max_start_time=high, page_size=len(batch), selects=selects)[0]
        return found

    def _v1_runs_by_id(self, ids: list[str]) -> list[dict]:
        found: list[dict] = []
        for batch in batches(ids, self.BATCH):
            self.query_limiter.wait()
            with smith_errors(f"query {len(batch)} run(s)"), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # v1 is the fallback for servers without v2
                found += [run.model_dump(mode="json") for run in self.client.list_runs(run_ids=batch, limit=len(batch))]
        return found

    def project_id(self, name: str) -> str:
        with smith_errors(f"read project {name!r}", not_found=f"LangSmith has no project named {name!r}"):
            return str(self.client.read_project(project_name=name).id)

    def runs_page(self, project_id: str, *, filter: str | None, start_time: str | None,
                  cursor: str | None) -> tuple[list[dict], str | None]:
        """One page of a project's runs (v2: `page_size`, 1000; v1: 100) and the cursor of the next page. Paged by
        hand so a back-fill can save its cursor and resume after a restart, and so each page waits for the rate
        limit. Without `start_time` the window starts at the epoch (v2 would default to the last day only)."""
        return self._either(
            lambda: self._v2_query("query runs", project_ids=[project_id], filter=filter or None,
                                   min_start_time=start_time or ALL_TIME,
                                   max_start_time=now_iso(), page_size=self.page_size, cursor=cursor,
                                   selects=EXPORT_SELECTS),
            lambda: self._v1_runs_page(project_id, filter, start_time, cursor))

    def feedback_changed(self, project_ids: list[str], keys: list[str], since: str,
                         until: str) -> tuple[list[dict], int] | None:
        """The runs in `project_ids` with feedback under one of `keys` whose `modified_at` lies in [since, until)
        (added, edited, or given through a presigned link), each as its id, project and start time (what reading it
        again needs), and the number of requests it took: v2 queries of `page_size` (1000) runs each, paced under
        the run-query limit, over runs of all time (v2 would look at the last day's only). None without the v2 API:
        the v1 `/runs/query` cannot ask this."""
        condition = feedback_condition(keys)

        def v2_pages() -> tuple[list[dict], int]:
            runs: dict[str, dict] = {}
            cursor, pages = None, 0
            while True:
                found, cursor = self._v2_query(
                    "query runs whose feedback changed", project_ids=project_ids, filter=condition,
                    min_feedback_modified_at=since, max_feedback_modified_at=until, min_start_time=ALL_TIME,
                    max_start_time=now_iso(), page_size=self.page_size, cursor=cursor,
                    selects=["ID", "PROJECT_ID", "START_TIME"])
                pages += 1
                runs.update((str(run["id"]), run) for run in found)
                if not cursor:
                    return list(runs.values()), pages
        return self._either(v2_pages, lambda: None)

    def project_feedback_keys(self, *, name: str | None = None,
                              project_id: str | None = None) -> tuple[str, list[str]]:
        """A project's id and the feedback keys used in it (its feedback stats): one `GET /sessions`."""
        label = repr(name) if name else project_id
        with smith_errors(f"read project {label}", not_found=f"LangSmith has no project {label}"):
            project = self.client.read_project(project_name=name, project_id=project_id, include_stats=True)
        return str(project.id), sorted((project.feedback_stats or {}).keys())

    def _v1_runs_page(self, project_id: str, filter: str | None, start_time: str | None,
                      cursor: str | None) -> tuple[list[dict], str | None]:
        self.query_limiter.wait()
        with smith_errors("query runs"):
            response = self.client.request_with_retries(
                "POST", "/runs/query", request_kwargs={"data": json.dumps(_query_body(project_id, filter, start_time,
                                                                                      cursor))})
        body = response.json()
        return body.get("runs", []), (body.get("cursors") or {}).get("next")

    def _v2_query(self, action: str, **params: Any) -> tuple[list[dict], str | None]:
        """One `POST /api/v2/runs/query`, paced under the run-query rate limit; runs come back in webhook shape."""
        self.query_limiter.wait()
        with smith_errors(action):
            page = self.generated.runs.query(**{k: v for k, v in params.items() if v is not None})
        return [webhook_shape(run.model_dump(mode="json", exclude_unset=True)) for run in page.items], page.next_cursor

    def _either(self, v2_call: Callable[[], Any], v1_call: Callable[[], Any]) -> Any:
        """`v2_call()`, unless this process uses v1: decided before, or now, because the server answered 404 on
        the v2 route before v2 ever worked (once v2 has worked, a 404 is an ordinary error)."""
        if self.runs_api != "v1":
            try:
                found = v2_call()
            except UpstreamError as exc:
                if self.runs_api is not None or not _route_missing(exc):
                    raise
                log.warning("LangSmith has no v2 runs API (404 on /api/v2/runs/query): this process reads runs "
                            "through the v1 API, which LangSmith cloud removes after Jan 31, 2027")
                self.runs_api = "v1"
            else:
                self.runs_api = "v2"
                return found
        return v1_call()

    # ---- automation rules (not wrapped by the SDK: its session, so auth, workspace and errors apply)
    RULES = "/runs/rules"
    LOG_PAGE = 720  # the rule log's largest page

    def _rules_call(self, action: str, method: str, path: str, **request_kwargs: Any) -> Any:
        with smith_errors(action):
            response = self.client.request_with_retries(method, path, request_kwargs=request_kwargs)
        return response.json()

    def rules(self, session_id: str | None = None, rule_id: str | None = None) -> list[dict]:
        params = {k: v for k, v in (("session_id", session_id), ("id", rule_id)) if v}
        return self._rules_call("list automation rules", "GET", self.RULES, params=params)

    def create_rule(self, body: dict) -> dict:
        return self._rules_call("create the automation rule", "POST", self.RULES, data=json.dumps(body),
                                headers={"Content-Type": "application/json"})

    def update_rule(self, rule_id: str, body: dict) -> dict:
        """PATCH takes the whole rule: fields left out fall back to their defaults."""
        return self._rules_call("update the automation rule", "PATCH", f"{self.RULES}/{rule_id}",
                                data=json.dumps(body), headers={"Content-Type": "application/json"})

    def rule_log(self, rule_id: str, since: str | None) -> list[dict]:
        """Every entry of a rule's log since `since` (all of it without), most recent first, 720 per request."""
        entries: list[dict] = []
        while True:
            params = {"limit": self.LOG_PAGE, "offset": len(entries), **({"start_time": since} if since else {})}
            page = self._rules_call("read the automation rule's log", "GET", f"{self.RULES}/{rule_id}/logs",
                                    params=params)
            entries += page
            if len(page) < self.LOG_PAGE:
                return entries

    def feedback_for(self, run_ids: list[str]) -> list[dict]:
        """Every feedback item of `run_ids`, including corrections, in one listing per 100 runs."""
        items: list[dict] = []
        for batch in batches(run_ids, self.BATCH):
            with smith_errors(f"list feedback of {len(batch)} run(s)"):
                items += [f.model_dump(mode="json") for f in self.client.list_feedback(run_ids=batch)]
        return items

    def create_tokens(self, entries: list[dict]) -> list[dict]:
        """Presigned feedback tokens, one `POST /feedback/tokens` per 100 entries (the SDK's batch wire form, but
        across runs). The service answers in request order; each answer is joined back to its entry."""
        tokens: list[dict] = []
        for batch in batches(entries, self.BATCH):
            with smith_errors(f"create {len(batch)} feedback link(s)"):
                response = self.client.request_with_retries(
                    "POST", "/feedback/tokens", request_kwargs={"data": json.dumps(batch, default=str)})
            answers = response.json()
            if len(answers) != len(batch):
                raise UpstreamError(TARGET, f"asked for {len(batch)} feedback links, got {len(answers)}")
            tokens += [{**entry, **answer} for entry, answer in zip(batch, answers)]
        return tokens

    def create_feedback_from_token(self, url: str, **fields: object) -> None:
        """Submits feedback through a presigned URL (no API key needed or sent by the SDK for this call)."""
        with smith_errors("submit feedback"):
            self.client.create_feedback_from_token(url, **fields)


def feedback_condition(keys: list[str]) -> str:
    """A filter that is true for runs with feedback under any of `keys` (the v2 API's feedback bounds apply to it)."""
    conditions = [f"eq(feedback_key, {json.dumps(key)})" for key in sorted(set(keys))]
    return conditions[0] if len(conditions) == 1 else f"or({', '.join(conditions)})"


def _route_missing(exc: UpstreamError) -> bool:
    """A 404 that says the route itself is unknown (FastAPI's plain "Not Found"), not that a run or project is."""
    cause = exc.__cause__
    if exc.status != 404 or not isinstance(cause, v2_errors.APIStatusError):
        return False
    body = cause.body
    return not isinstance(body, dict) or str(body.get("detail", "Not Found")) == "Not Found"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def start_window(runs: list[dict]) -> tuple[str, str]:
    """A start-time window holding every run (a second either side); unknown start times widen it to all time."""
    starts = [_aware(r["start_time"]) for r in runs if r.get("start_time")]
    if len(starts) < len(runs):
        return ALL_TIME, now_iso()
    return (min(starts) - timedelta(seconds=1)).isoformat(), (max(starts) + timedelta(seconds=1)).isoformat()


def _aware(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)  # LangSmith sends naive UTC times


def batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class RateLimiter:
    """Allows `calls` per `period` seconds; `wait()` blocks the calling worker until the next call is allowed."""

    def __init__(self, calls: int, period: float, clock=time.monotonic, sleep=time.sleep) -> None:
        self.calls, self.period, self.clock, self.sleep = calls, period, clock, sleep
        self.sent: deque[float] = deque()
        self.lock = threading.Lock()

    def wait(self) -> None:
        with self.lock:
            now = self.clock()
            while self.sent and now - self.sent[0] >= self.period:
                self.sent.popleft()
            if len(self.sent) >= self.calls:
                self.sleep(self.period - (now - self.sent[0]))
                self.sent.popleft()
            self.sent.append(self.clock())


def _query_body(project_id: str, filter: str | None, start_time: str | None, cursor: str | None) -> dict:
    body: dict = {"session": [project_id], "limit": Smith.BATCH}
    if filter:
        body["filter"] = filter
    if start_time:
        body["start_time"] = start_time
    if cursor:
        body["cursor"] = cursor
    return body
