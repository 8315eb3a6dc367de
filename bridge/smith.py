"""Thin client over the `langsmith` SDK: endpoint, key and workspace injected, timeouts set, errors typed.

Retries are accounted for once: the SDK's HTTP adapter retries only idempotent methods (GET, HEAD, ...), while
POSTs (upload-experiment, runs/query, feedback tokens) are retried by the job queue, whose every attempt re-checks
what already exists. That way a POST is never silently sent twice by two layers of retries.

`smith_errors()` is the one place that turns what the SDK raises into `UpstreamError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import requests
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


def _response_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("error") or body.get("message") or body)[:500]
    return str(body)[:500]


@contextmanager
def smith_errors(action: str) -> Iterator[None]:
    """Translate SDK exceptions raised while doing `action`. Never copies the SDK's text for connection errors,
    which quotes part of the API key."""
    try:
        yield
    except (ls_utils.LangSmithError, requests.RequestException) as exc:
        http = _http_error(exc)
        if http is not None:
            status = http.response.status_code
            retry_after = parse_retry_after(http.response.headers.get("retry-after"))
            raise UpstreamError(TARGET, f"{action} failed: {_response_message(http.response)}", status=status,
                                transient=is_transient_status(status), retry_after=retry_after) from exc
        if isinstance(exc, (ls_utils.LangSmithConnectionError, requests.ConnectionError, requests.Timeout)):
            cause = exc.__cause__ or exc
            raise UpstreamError(TARGET, f"{action} failed: connection error ({type(cause).__name__})",
                                transient=True) from exc
        if isinstance(exc, ls_utils.LangSmithRateLimitError):
            raise UpstreamError(TARGET, f"{action} failed: rate limited", status=429, transient=True) from exc
        raise UpstreamError(TARGET, f"{action} failed: {type(exc).__name__}", transient=False) from exc


def idempotent_retry() -> Retry:
    return Retry(total=3, status_forcelist=[408, 425, 429, 500, 502, 503, 504], backoff_factor=0.5,
                 raise_on_redirect=False, raise_on_status=False, respect_retry_after_header=True,
                 allowed_methods=IDEMPOTENT)


class Smith:
    """The bridge's view of LangSmith. Built from settings, lazily, never from environment globals."""

    def __init__(self, endpoint: str, api_key: str | None, workspace_id: str | None = None,
                 timeout: float = 30.0) -> None:
        self.endpoint, self.api_key, self.workspace_id, self.timeout = endpoint.rstrip("/"), api_key, workspace_id, timeout
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if not self.api_key:
            raise MissingCredential("LANGSMITH_API_KEY is not set: it is needed to talk to LangSmith")
        if self._client is None:
            self._client = Client(api_url=self.endpoint, api_key=self.api_key, workspace_id=self.workspace_id,
                                  auto_batch_tracing=False, info=INFO, retry_config=idempotent_retry(),
                                  timeout_ms=int(self.timeout * 1000))
        return self._client

    @property
    def web_url(self) -> str:
        return self.client._host_url

    def check(self) -> str:
        with smith_errors("connection check"):
            next(iter(self.client.list_datasets(limit=1)), None)
        return "reachable, key accepted"
