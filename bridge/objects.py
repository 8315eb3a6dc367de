"""Offloaded run inputs/outputs behind LangSmith's presigned object URLs: which hosts may serve them, and a
fetcher that gets many at once over kept-alive connections. One concept apart from the SDK client in `smith`.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import zlib
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
    cap, a timeout, and redirects followed by hand so one can never switch to another scheme. It talks the standard
    library's `http.client` over kept-alive connections (one per host per fetch thread, see `_Connections`): a GET
    of a presigned URL needs nothing more, and an export makes two per run, so the CPU per GET is the export's
    largest cost (half urllib3's, a quarter of requests'). Connections and threads are kept from one export to the
    next.
    """

    MAX_REDIRECTS = 3
    THREADS = 32  # shared by the job workers; object stores answer in parallel, one at a time costs a round trip each
    REDIRECT = frozenset((301, 302, 303, 307, 308))
    DRAIN_BYTES = 64 * 1024  # an error or redirect body up to this is read off (the connection stays usable)

    def __init__(self, api_root: str, max_bytes: int = 50 * 1024 * 1024, timeout: float = 30.0,
                 on_status: Callable[[int | str], object] | None = None, hosts: HostPolicy | None = None) -> None:
        self.api_root, self.max_bytes = api_root.rstrip("/") + "/", max_bytes
        self.hosts = hosts or HostPolicy(api_root, ())
        # No proxy or netrc from the environment (http.client reads neither); certifi's CAs, as requests uses.
        self.connections = _Connections(timeout)
        self.on_status = on_status or (lambda status: None)
        self._threads: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def map(self, fn: Callable[[Any], Any], items: list) -> list:
        """`fn` over `items` on the fetcher's threads (shared by every export running at the time), in order.

        One task per thread, each taking every THREADS-th item: handing each item over on its own cost a wake-up
        of a thread and of the caller per item (system time, under the GIL's hand-offs)."""
        with self._lock:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(self.THREADS, thread_name_prefix="object-fetch")
        width = min(self.THREADS, len(items))
        parts = list(self._threads.map(lambda part: [fn(item) for item in part],
                                       [items[i::width] for i in range(width)]))
        out: list = [None] * len(items)
        for i, part in enumerate(parts):
            out[i::width] = part
        return out

    def close(self) -> None:
        with self._lock:
            if self._threads is not None:
                self._threads.shutdown(wait=False)
                self._threads = None
        self.connections.close_all()

    def fetch(self, url: str) -> bytes:
        url = urljoin(self.api_root, url)
        for _ in range(self.MAX_REDIRECTS + 1):
            refusal = self.hosts.refusal(url)
            if refusal:
                raise ObjectRefused(refusal)
            conn, response = self._get(url)
            location = response.getheader("location") if response.status in self.REDIRECT else None
            if location:
                self._discard(conn, response)
                url = urljoin(url, location)
                continue
            if response.status >= 400:
                self._discard(conn, response)
                raise UpstreamError(TARGET, "object fetch failed", status=response.status,
                                    transient=is_transient_status(response.status))
            return self._read_capped(conn, response)
        raise UpstreamError(TARGET, f"object fetch followed more than {self.MAX_REDIRECTS} redirects")

    def _get(self, url: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        try:
            conn, response = self.connections.get(url)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            self.on_status("error")
            raise UpstreamError(TARGET, f"object fetch failed: {network_words(exc)}", transient=True) from exc
        self.on_status(response.status)
        return conn, response

    def _discard(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        """Reads a small body off so the connection can serve the next GET; a large or broken one closes it."""
        try:
            if response.length is not None and response.length <= self.DRAIN_BYTES:
                response.read()
                if response.will_close:
                    conn.close()
                return
        except (OSError, http.client.HTTPException):
            pass
        conn.close()

    def _read_capped(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> bytes:
        declared = response.getheader("content-length", "")
        chunks, size = [], 0
        try:
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise UpstreamError(TARGET, f"object larger than {self.max_bytes} bytes")
            decoder = _decoder(response.getheader("content-encoding", ""))
            while True:
                chunk = response.read(64 * 1024)
                if not chunk:
                    break
                chunk = decoder.decompress(chunk) if decoder else chunk
                size += len(chunk)
                if size > self.max_bytes:
                    raise UpstreamError(TARGET, f"object larger than {self.max_bytes} bytes")
                chunks.append(chunk)
        except (OSError, http.client.HTTPException, zlib.error) as exc:
            conn.close()
            raise UpstreamError(TARGET, f"object fetch failed: {network_words(exc)}", transient=True) from exc
        except UpstreamError:
            conn.close()  # the rest of a body over the cap is not read: the connection cannot be reused
            raise
        if response.will_close:
            conn.close()
        return b"".join(chunks)


def _decoder(encoding: str) -> Any:
    """A decompressor for a gzip or deflate body (as urllib3 decoded them), None for a plain one."""
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    return None


class _Connections:
    """Kept-alive connections, one per (scheme, host, port) per thread: a thread's GET never waits for another's.
    A kept connection the server has meanwhile closed is reopened once (a GET may be repeated)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.tls = ssl.create_default_context(cafile=certifi.where())
        self.local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def get(self, url: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = (parts.scheme, parts.hostname, parts.port)
        kept: dict = self.local.__dict__.setdefault("connections", {})
        conn = kept.get(key)
        if conn is not None:
            try:
                return conn, self._request(conn, target)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()  # closed by the server while idle: one more try on a new connection
        conn = kept[key] = self._open(parts)
        try:
            return conn, self._request(conn, target)
        except BaseException:
            conn.close()
            raise

    @staticmethod
    def _request(conn: http.client.HTTPConnection, target: str) -> http.client.HTTPResponse:
        conn.request("GET", target, headers={"Accept-Encoding": "identity"})
        return conn.getresponse()

    def _open(self, parts: Any) -> http.client.HTTPConnection:
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=self.timeout, context=self.tls)
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout)
        with self._lock:
            self._all = [c for c in self._all if c.sock is not None]
            self._all.append(conn)
        return conn

    def close_all(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all = []
