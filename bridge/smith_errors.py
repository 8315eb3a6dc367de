"""The one place that turns what the `langsmith` SDK raises into `UpstreamError`: its v1 client's `LangSmithError`
family (status found in the exception chain, `Retry-After` honoured) and the generated v2 client's
`langsmith._exceptions` family. Messages are plain words: never an exception class name, and never the SDK's text
for connection errors, which quotes part of the API key.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import requests
from langsmith import _exceptions as v2_errors
from langsmith import utils as ls_utils

from .errors import UpstreamError, is_transient_status, parse_retry_after
from .objects import TIMEOUT_WORDS
from .objects import network_words as connection_words

TARGET = "LangSmith"


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
    if isinstance(exc, (requests.Timeout, ls_utils.LangSmithRequestTimeout)):
        return TIMEOUT_WORDS
    return connection_words(exc)


def _response_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("error") or body.get("message") or body)[:500]
    return str(body)[:500]


def _v2_body_message(exc: v2_errors.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("error") or body.get("message") or body)[:500]
    return (str(body) if body else exc.response.reason_phrase or f"status {exc.status_code}")[:500]


def v2_error(action: str, exc: v2_errors.LangsmithError) -> UpstreamError:
    """The generated (v2) client's exceptions: a status with its body and `Retry-After`, a timeout, a connection
    failure (both worth retrying), or an answer that was not what the API promises (not worth retrying)."""
    if isinstance(exc, v2_errors.APIStatusError):
        status = exc.status_code
        return UpstreamError(TARGET, f"{action} failed: {_v2_body_message(exc)}", status=status,
                             transient=is_transient_status(status),
                             retry_after=parse_retry_after(exc.response.headers.get("retry-after")))
    if isinstance(exc, v2_errors.APITimeoutError):
        return UpstreamError(TARGET, f"{action} failed: no answer in time (timeout)", transient=True)
    if isinstance(exc, v2_errors.APIConnectionError):
        return UpstreamError(TARGET, f"{action} failed: connection error", transient=True)
    return UpstreamError(TARGET, f"{action} failed: LangSmith's answer was not in the expected form")


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
    except v2_errors.LangsmithError as exc:
        raise v2_error(action, exc) from exc
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
