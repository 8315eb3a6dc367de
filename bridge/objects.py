"""Offloaded run inputs/outputs behind LangSmith's presigned object URLs: which hosts may serve them, and a
fetcher that gets many at once over kept-alive connections. One concept apart from the SDK client in `smith`.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3

from .errors import UpstreamError, is_transient_status

TARGET = "LangSmith"
TIMEOUT_WORDS = "no answer in time (timeout)"


def network_words(exc: BaseException) -> str:
    """A connection-level failure in plain words (never the exception's class or text)."""
    if isinstance(exc, (urllib3.exceptions.TimeoutError, TimeoutError)):
        return TIMEOUT_WORDS
    return "the connection failed (refused or cut off)"


class ObjectRefused(UpstreamError):
    """An object URL the host policy does not allow (never retried: the URL will not change)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(TARGET, reason)


class HostPolicy:
    """Which hosts an object URL may point at. The URLs come from delivery bodies: without a webhook secret anyone
    could otherwise make the bridge fetch any address (an internal service, a cloud metadata endpoint) and publish
    the answer in a dataset. Allowed: the LangSmith API host and the `object_hosts` globs; never a loopback,
    private, link-local or otherwise non-public address, unless the LangSmith endpoint itself is one (a self-hosted
    instance, the sandbox)."""

    def __init__(self, api_root: str, patterns: tuple[str, ...] | list[str],
                 resolve: Callable[[str], list[str]] | None = None) -> None:
        self.api_host = (urlsplit(api_root).hostname or "").lower()
        self.patterns = tuple(p.lower() for p in patterns)
        self.resolve = resolve or _addresses
        self._local_api: bool | None = None

    def refusal(self, url: str) -> str | None:
        """Why `url` may not be fetched, or None when it may."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return f"an object URL with scheme {parts.scheme!r} is not fetched"
        host = (parts.hostname or "").lower()
        if host != self.api_host and not any(fnmatchcase(host, p) for p in self.patterns):
            return f"object host {host!r} is neither the LangSmith host nor in object_hosts"
        if self.local_api:
            return None
        try:
            addresses = self.resolve(host)
        except OSError:
            return f"object host {host!r} could not be resolved"
        if any(not ipaddress.ip_address(a).is_global for a in addresses):
            return f"object host {host!r} resolves to a non-public address"
        return None

    @property
    def local_api(self) -> bool:
        if self._local_api is None:
            try:
                self._local_api = any(not ipaddress.ip_address(a).is_global for a in self.resolve(self.api_host))
            except (OSError, ValueError):
                self._local_api = False
        return self._local_api


def _addresses(host: str) -> list[str]:
    return [info[4][0].split("%")[0] for info in socket.getaddrinfo(host, None)]


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
                 on_status: Callable[[int | str], object] | None = None, hosts: HostPolicy | None = None) -> None:
        self.api_root, self.max_bytes = api_root.rstrip("/") + "/", max_bytes
        self.hosts = hosts or HostPolicy(api_root, ())
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
            refusal = self.hosts.refusal(url)
            if refusal:
                raise ObjectRefused(refusal)
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
