"""Thin client over huggingface_hub: endpoint and token injected, request timeout set, errors typed.

`hub_errors()` is the one place that turns what huggingface_hub raises into `UpstreamError` (transient or not).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx2
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
from huggingface_hub.utils import set_client_factory
from huggingface_hub.utils._http import default_client_factory

from .errors import MissingCredential, UpstreamError, is_transient_status, parse_retry_after

TARGET = "Hugging Face Hub"
BRIDGE_MARK = "[hub-langsmith-bridge]"


def install_timeout(seconds: float) -> None:
    """huggingface_hub's shared HTTP client has no timeout by default; a stuck call must not hang a worker forever."""

    def factory() -> httpx2.Client:
        client = default_client_factory()  # keeps the library's own request hooks
        client.timeout = httpx2.Timeout(seconds)
        return client

    set_client_factory(factory)


def _server_message(exc: HfHubHTTPError) -> str:
    return (getattr(exc, "server_message", None) or str(exc).splitlines()[0]).strip()


@contextmanager
def hub_errors(action: str) -> Iterator[None]:
    """Translate huggingface_hub exceptions raised while doing `action` (e.g. "commit to acme/x")."""
    try:
        yield
    except HfHubHTTPError as exc:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        retry_after = parse_retry_after(response.headers.get("retry-after")) if response is not None else None
        raise UpstreamError(TARGET, f"{action} failed: {_server_message(exc)}", status=status,
                            transient=is_transient_status(status), retry_after=retry_after) from exc
    except (httpx2.TransportError, LocalEntryNotFoundError, ConnectionError, TimeoutError) as exc:
        raise UpstreamError(TARGET, f"{action} failed: {type(exc).__name__}: {exc}", transient=True) from exc


class Hub:
    """The bridge's view of the Hub. Built from settings, never from import-time globals."""

    def __init__(self, endpoint: str, token: str | None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.token = token
        self.api = HfApi(endpoint=self.endpoint, token=token or False, library_name="hub-langsmith-bridge")

    def require_token(self, why: str) -> None:
        if not self.token:
            raise MissingCredential(f"HF_TOKEN is not set: it is needed to {why}")

    def check(self) -> str:
        """A connection check for the landing page: who the token belongs to, or that the Hub answers."""
        with hub_errors("connection check"):
            if self.token:
                return f"connected as {self.api.whoami()['name']}"
            self.api.list_datasets(limit=1)
            return "reachable (no token)"

    def web_url(self, repo_id: str, repo_type: str, path: str = "") -> str:
        prefix = constants.REPO_TYPES_URL_PREFIXES.get(repo_type, "")
        return f"{self.endpoint}/{prefix}{repo_id}{path}"
