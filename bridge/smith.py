"""Thin client over the `langsmith` SDK: endpoint, key and workspace injected, timeouts set, errors typed.

Retries are accounted for once: the SDK's HTTP adapter retries only idempotent methods (GET, HEAD, ...), while
POSTs (upload-experiment, runs/query, feedback tokens) are retried by the job queue, whose every attempt re-checks
what already exists. That way a POST is never silently sent twice by two layers of retries.

`smith_errors()` is the one place that turns what the SDK raises into `UpstreamError`.
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, BinaryIO
from urllib.parse import urljoin, urlsplit

import certifi
import requests
import urllib3
from langsmith import Client
from langsmith import utils as ls_utils
from urllib3.util import Retry

from .errors import MissingCredential, UpstreamError, is_transient_status, parse_retry_after

TARGET = "LangSmith"
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# The SDK treats a missing /info as "old server" and caches it; an explicit one avoids a request and surprises.
INFO = {"version": "", "instance_flags": {}}


def _http_error(exc: BaseException) -> requests.HTTPError | None:
    """The SDK raises its own classes `from` or during the requests.HTTPError; find that one for the status."""
    seen = exc
    while seen is not None:
        if isinstance(seen, requests.HTTPError) and seen.response is not None:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _network_failure(exc: BaseException) -> BaseException | None:
    """The connection-level failure somewhere in the chain (refused, reset, cut mid-body, timed out), if any."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                             ls_utils.LangSmithConnectionError, ConnectionError, TimeoutError)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def network_words(exc: BaseException) -> str:
    if isinstance(exc, (requests.Timeout, ls_utils.LangSmithRequestTimeout, urllib3.exceptions.TimeoutError,
                        TimeoutError)):
        return "no answer in time (timeout)"
    return "the connection failed (refused or cut off)"


def _response_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("error") or body.get("message") or body)[:500]
    return str(body)[:500]


# What the SDK's own exception classes mean, in plain words, with the status they stand for: a message for people
# never names an exception class.
SDK_ERRORS: tuple[tuple[type, int | None, str], ...] = (
    (ls_utils.LangSmithNotFoundError, 404, "not found"),
    (ls_utils.LangSmithAuthError, 401, "the API key was refused"),
    (ls_utils.LangSmithConflictError, 409, "it already exists"),
    (ls_utils.LangSmithRateLimitError, 429, "rate limited"),
    (ls_utils.LangSmithRequestTimeout, 408, "LangSmith took too long to answer"),
    (ls_utils.LangSmithUserError, None, "the request was refused as invalid"),
)


def _sdk_meaning(exc: BaseException) -> tuple[int | None, str]:
    for cls, status, words in SDK_ERRORS:
        if isinstance(exc, cls):
            return status, words
    return None, "LangSmith gave an answer the bridge did not understand"


@contextmanager
def smith_errors(action: str, not_found: str | None = None) -> Iterator[None]:
    """Translate SDK exceptions raised while doing `action`: the one place that turns what the langsmith SDK raises
    into `UpstreamError`. `not_found` is the whole sentence to show when LangSmith has no such thing ("LangSmith has
    no project named 'x'"). Never copies the SDK's text for connection errors, which quotes part of the API key."""
    try:
        yield
    except (ls_utils.LangSmithError, requests.RequestException) as exc:
        http = _http_error(exc)
        status = http.response.status_code if http is not None else _sdk_meaning(exc)[0]
        if status == 404 and not_found:
            raise UpstreamError(TARGET, not_found, status=404, sentence=True) from exc
        if http is not None:
            retry_after = parse_retry_after(http.response.headers.get("retry-after"))
            raise UpstreamError(TARGET, f"{action} failed: {_response_message(http.response)}", status=status,
                                transient=is_transient_status(status), retry_after=retry_after) from exc
        network = _network_failure(exc)
        if network is not None:
            raise UpstreamError(TARGET, f"{action} failed: {network_words(network)}", transient=True) from exc
        words = _sdk_meaning(exc)[1]
        raise UpstreamError(TARGET, f"{action} failed: {words}", status=status,
                            transient=is_transient_status(status)) from exc


def idempotent_retry() -> Retry:
    return Retry(total=3, status_forcelist=[408, 425, 429, 500, 502, 503, 504], backoff_factor=0.5,
                 raise_on_redirect=False, raise_on_status=False, respect_retry_after_header=True,
                 allowed_methods=IDEMPOTENT)


class Smith:
    """The bridge's view of LangSmith. Built from settings, lazily, never from environment globals."""

    def __init__(self, endpoint: str, api_key: str | None, workspace_id: str | None = None,
                 timeout: float = 30.0, web_url: str | None = None,
                 on_session: Callable[[requests.Session, str], object] | None = None,
                 on_object_status: Callable[[int | str], object] | None = None) -> None:
        self.endpoint, self.api_key, self.workspace_id = endpoint.rstrip("/"), api_key, workspace_id
        self.timeout, self._web_url, self.on_session = timeout, web_url, on_session
        self.on_object_status = on_object_status
        self._client: Client | None = None
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
    def objects(self) -> "ObjectFetcher":
        """One fetcher for the process: its connections and threads stay from one export to the next."""
        if self._objects is None:
            self._objects = ObjectFetcher(self.endpoint, timeout=self.timeout, on_status=self.on_object_status)
        return self._objects

    def close(self) -> None:
        if self._objects is not None:
            self._objects.close()

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
    BATCH = 100

    def runs_by_id(self, ids: list[str]) -> list[dict]:
        """Full runs for `ids` with one `POST /runs/query` per 100 ids, paced under LangSmith's 15 per 10 s."""
        found: list[dict] = []
        for batch in batches(ids, self.BATCH):
            self.query_limiter.wait()
            with smith_errors(f"query {len(batch)} run(s)"), warnings.catch_warnings():
                # list_runs is deprecated for client.runs.query, which needs the v2 API self-hosted and older
                # instances lack; the v1 route is what every instance serves today.
                warnings.simplefilter("ignore", DeprecationWarning)
                found += [run.model_dump(mode="json") for run in self.client.list_runs(run_ids=batch, limit=len(batch))]
        return found

    def project_id(self, name: str) -> str:
        with smith_errors(f"read project {name!r}", not_found=f"LangSmith has no project named {name!r}"):
            return str(self.client.read_project(project_name=name).id)

    def runs_page(self, project_id: str, *, filter: str | None, start_time: str | None,
                  cursor: str | None) -> tuple[list[dict], str | None]:
        """One page (≤ 100 runs) of a project's runs, and the cursor of the next page. Paged by hand so a back-fill
        can save its cursor and resume after a restart, and so each page waits for the rate limit."""
        self.query_limiter.wait()
        with smith_errors("query runs"):
            response = self.client.request_with_retries(
                "POST", "/runs/query", request_kwargs={"data": json.dumps(_query_body(project_id, filter, start_time,
                                                                                      cursor))})
        body = response.json()
        return body.get("runs", []), (body.get("cursors") or {}).get("next")

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


class ObjectFetcher:
    """Fetches inputs/outputs LangSmith offloaded behind presigned object-store URLs, many at once.

    A presigned URL carries its own authorisation, so nothing here ever sends the API key. Only http(s), a size
    cap, a timeout, and redirects followed by hand so one can never switch to another scheme. It talks urllib3
    directly (the library under requests): a URL that needs no session state costs half the CPU per GET that way,
    and an export fetches two objects per run. Connections and threads are kept from one export to the next.
    """

    MAX_REDIRECTS = 3
    THREADS = 32  # shared by the job workers; object stores answer in parallel, one at a time costs a round trip each

    def __init__(self, api_root: str, max_bytes: int = 50 * 1024 * 1024, timeout: float = 30.0,
                 on_status: Callable[[int | str], object] | None = None) -> None:
        self.api_root, self.max_bytes = api_root.rstrip("/") + "/", max_bytes
        self.timeout = urllib3.Timeout(connect=timeout, read=timeout)
        # No proxy or netrc from the environment (urllib3 reads neither); certifi's CAs, as requests uses.
        self.http = urllib3.PoolManager(maxsize=self.THREADS, retries=False, ca_certs=certifi.where())
        self.on_status = on_status or (lambda status: None)
        self._threads: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def map(self, fn: Callable[[Any], Any], items: list) -> list:
        """`fn` over `items` on the fetcher's threads (shared by every export running at the time)."""
        with self._lock:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(self.THREADS, thread_name_prefix="object-fetch")
        return list(self._threads.map(fn, items))

    def close(self) -> None:
        with self._lock:
            if self._threads is not None:
                self._threads.shutdown(wait=False)
                self._threads = None
        self.http.clear()

    def fetch(self, url: str) -> bytes:
        url = urljoin(self.api_root, url)
        for _ in range(self.MAX_REDIRECTS + 1):
            if urlsplit(url).scheme not in ("http", "https"):
                raise UpstreamError(TARGET, f"refused to fetch an object URL with scheme {urlsplit(url).scheme!r}")
            response = self._get(url)
            location = response.get_redirect_location()
            if location:
                response.drain_conn()
                url = urljoin(url, location)
                continue
            if response.status >= 400:
                response.drain_conn()
                raise UpstreamError(TARGET, "object fetch failed", status=response.status,
                                    transient=is_transient_status(response.status))
            return self._read_capped(response)
        raise UpstreamError(TARGET, f"object fetch followed more than {self.MAX_REDIRECTS} redirects")

    def _get(self, url: str) -> urllib3.BaseHTTPResponse:
        try:
            response = self.http.request("GET", url, preload_content=False, redirect=False, timeout=self.timeout)
        except urllib3.exceptions.HTTPError as exc:
            self.on_status("error")
            raise UpstreamError(TARGET, f"object fetch failed: {network_words(exc)}", transient=True) from exc
        self.on_status(response.status)
        return response

    def _read_capped(self, response: urllib3.BaseHTTPResponse) -> bytes:
        declared = response.headers.get("content-length", "")
        chunks, size = [], 0
        try:
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise UpstreamError(TARGET, f"object larger than {self.max_bytes} bytes")
            for chunk in response.stream(64 * 1024):
                size += len(chunk)
                if size > self.max_bytes:
                    raise UpstreamError(TARGET, f"object larger than {self.max_bytes} bytes")
                chunks.append(chunk)
        except urllib3.exceptions.HTTPError as exc:
            response.close()
            raise UpstreamError(TARGET, f"object fetch failed: {network_words(exc)}", transient=True) from exc
        except UpstreamError:
            response.close()  # the rest of a body over the cap is not read: the connection cannot be reused
            raise
        finally:
            response.release_conn()
        return b"".join(chunks)


def _query_body(project_id: str, filter: str | None, start_time: str | None, cursor: str | None) -> dict:
    body: dict = {"session": [project_id], "limit": Smith.BATCH}
    if filter:
        body["filter"] = filter
    if start_time:
        body["start_time"] = start_time
    if cursor:
        body["cursor"] = cursor
    return body
