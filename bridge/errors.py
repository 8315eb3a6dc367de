"""The bridge's one small exception tree.

Upstream errors are classified once, here, into *transient* (worth retrying later) and *permanent* (fail now with
the upstream's message). The job queue only looks at that distinction.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """bridge.yaml or the environment is invalid. `path` names the file, `key` the key path."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        self.path, self.key, self.message = path, key, message
        where = ": ".join(part for part in (path, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class MissingCredential(BridgeError):
    """A job needs a token or key that is not configured (permanent until an operator sets it)."""


class FormatError(BridgeError):
    """An eval result file or run payload could not be read. Names the file, the line/row and what was expected."""

    def __init__(self, file: str, location: str | None, message: str) -> None:
        self.file, self.location = file, location
        where = f"{file} ({location})" if location else file
        super().__init__(f"{where}: {message}")


class UpstreamError(BridgeError):
    """An upstream (Hub or LangSmith) call failed.

    `transient` errors are retried by the job queue with backoff (honouring `retry_after` seconds when the upstream
    gave one); the others fail the job at once with the upstream's message.
    """

    def __init__(self, target: str, message: str, *, status: int | None = None, transient: bool = False,
                 retry_after: float | None = None, sentence: bool = False) -> None:
        """`sentence=True`: `message` is a whole sentence for people ("LangSmith has no project named 'x'") and is
        used as it is, without the "<target> <status>:" prefix."""
        self.target, self.status, self.transient, self.retry_after = target, status, transient, retry_after
        prefix = f"{target} {status}" if status else target
        super().__init__(message if sentence else f"{prefix}: {message}")


TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def is_transient_status(status: int | None) -> bool:
    return status is not None and (status in TRANSIENT_STATUSES or status >= 500)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds form; an HTTP date is treated as unknown)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds)


class PartialFailure(BridgeError):
    """A job did part of its work: `result` lists what succeeded and what failed, and is kept on the job."""

    def __init__(self, message: str, result: dict) -> None:
        self.result = result
        super().__init__(message)
