"""The object fetcher (presigned inputs/outputs URLs) against a real loopback server: a table of answers."""

from __future__ import annotations

import gzip

import pytest
from starlette.applications import Starlette
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from bridge.errors import UpstreamError
from bridge.sandbox.server import ServerHandle
from bridge.objects import ObjectFetcher

CAP = 64


async def chunks():
    for _ in range(10):
        yield b"x" * 16


def make_app() -> Starlette:
    return Starlette(routes=[
        Route("/blob", lambda r: Response(b'{"ok": true}')),
        Route("/hop", lambda r: RedirectResponse("/blob", status_code=302)),
        Route("/hop-absolute", lambda r: RedirectResponse(f"{r.base_url}blob", status_code=307)),
        Route("/loop", lambda r: RedirectResponse("/loop", status_code=302)),
        Route("/file", lambda r: RedirectResponse("file:///etc/passwd", status_code=302)),
        Route("/big-declared", lambda r: Response(b"x" * (CAP + 1))),
        Route("/big-streamed", lambda r: StreamingResponse(chunks())),
        Route("/gone", lambda r: Response(b"no", status_code=404)),
        Route("/busy", lambda r: Response(b"later", status_code=503)),
        Route("/gzip", lambda r: Response(gzip.compress(b'{"ok": true}'), headers={"Content-Encoding": "gzip"})),
        Route("/close", lambda r: Response(b'{"ok": true}', headers={"Connection": "close"})),
    ])


@pytest.fixture(scope="module")
def server():
    handle = ServerHandle(make_app()).start()
    yield handle
    handle.stop()


@pytest.fixture
def fetcher(server):
    statuses: list = []
    fetcher = ObjectFetcher(server.url, max_bytes=CAP, timeout=5, on_status=statuses.append)
    fetcher.statuses = statuses
    return fetcher


@pytest.mark.parametrize("path, statuses", [
    ("/blob", [200]),
    ("/hop", [302, 200]),
    ("/hop-absolute", [307, 200]),
], ids=["plain", "relative-redirect", "absolute-redirect"])
def test_fetches(fetcher, path, statuses):
    assert fetcher.fetch(path) == b'{"ok": true}'
    assert fetcher.statuses == statuses


@pytest.mark.parametrize("path, message, transient", [
    ("/loop", "more than 3 redirects", False),
    ("/file", "an object URL with scheme 'file' is not fetched", False),
    ("/big-declared", f"object larger than {CAP} bytes", False),
    ("/big-streamed", f"object larger than {CAP} bytes", False),
    ("/gone", "object fetch failed", False),
    ("/busy", "object fetch failed", True),
], ids=["redirect-loop", "other-scheme", "over-cap-declared", "over-cap-streamed", "404", "503"])
def test_refuses_and_keeps_working(fetcher, path, message, transient):
    with pytest.raises(UpstreamError, match=message) as raised:
        fetcher.fetch(path)
    assert raised.value.transient is transient
    # Whatever was left unread on the connection, the next fetch gets a clean answer.
    assert fetcher.fetch("/blob") == b'{"ok": true}'


def test_gzip_bodies_are_decoded_and_closed_connections_reopened(fetcher):
    assert fetcher.fetch("/gzip") == b'{"ok": true}'  # as stored by an object store that compresses
    # The server closes the kept connection after answering: the next GET opens a new one.
    assert [fetcher.fetch(p) for p in ("/close", "/close", "/blob")] == [b'{"ok": true}'] * 3
    assert fetcher.statuses == [200] * 4


def test_unreachable_is_transient(fetcher):
    dead = ServerHandle(make_app())
    url = dead.url  # bound, never listening
    dead.sock.close()
    with pytest.raises(UpstreamError, match="object fetch failed") as raised:
        fetcher.fetch(url + "/blob")
    assert raised.value.transient and fetcher.statuses == ["error"]


def test_map_shares_the_threads(fetcher):
    assert fetcher.map(fetcher.fetch, ["/blob"] * 40) == [b'{"ok": true}'] * 40
    assert fetcher.statuses == [200] * 40


# ---- which hosts an object URL may point at (the URL comes from a delivery body) ----
ADDRESSES = {"api.smith.langchain.com": ["34.120.0.1"], "storage.googleapis.com": ["142.250.0.1"],
             "bucket.s3.us-east-2.amazonaws.com": ["52.219.0.1"], "evil.example.com": ["93.184.0.1"],
             "rebind.storage.googleapis.com": ["169.254.169.254"], "internal.s3.amazonaws.com": ["10.0.0.7"],
             "localhost": ["127.0.0.1"], "ls.internal": ["10.1.2.3"], "v6.s3.amazonaws.com": ["::1"]}
CLOUD = ("storage.googleapis.com", "*.storage.googleapis.com", "*.s3.amazonaws.com", "*.s3.*.amazonaws.com")


def resolve(host: str) -> list[str]:
    if host not in ADDRESSES:
        raise OSError("no such host")
    return ADDRESSES[host]


@pytest.mark.parametrize("api, url, refusal", [
    ("https://api.smith.langchain.com", "https://api.smith.langchain.com/objects/1", None),
    ("https://api.smith.langchain.com", "https://storage.googleapis.com/b/o?sig=1", None),
    ("https://api.smith.langchain.com", "https://bucket.s3.us-east-2.amazonaws.com/o", None),
    ("https://api.smith.langchain.com", "https://evil.example.com/o", "'evil.example.com' is neither"),
    ("https://api.smith.langchain.com", "http://169.254.169.254/latest/meta-data", "'169.254.169.254' is neither"),
    ("https://api.smith.langchain.com", "https://rebind.storage.googleapis.com/o", "non-public address"),
    ("https://api.smith.langchain.com", "https://internal.s3.amazonaws.com/o", "non-public address"),
    ("https://api.smith.langchain.com", "https://v6.s3.amazonaws.com/o", "non-public address"),
    ("https://api.smith.langchain.com", "http://localhost:8080/o", "'localhost' is neither"),
    ("https://api.smith.langchain.com", "https://nx.storage.googleapis.com/o", "could not be resolved"),
    ("https://api.smith.langchain.com", "ftp://storage.googleapis.com/o", "scheme 'ftp'"),
    # A self-hosted LangSmith on a private network (or the sandbox on loopback): its own addresses are fine.
    ("http://ls.internal/api/v1", "http://ls.internal/objects/1", None),
    ("http://localhost:1984", "http://localhost:1984/objects/1", None),
    ("http://ls.internal/api/v1", "https://evil.example.com/o", "'evil.example.com' is neither"),
], ids=["api-host", "gcs", "s3-regional", "other-host", "metadata-ip", "allowed-name-private-ip",
        "allowed-name-10-net", "allowed-name-ipv6-loopback", "localhost", "unresolvable", "ftp",
        "self-hosted-private", "sandbox-loopback", "self-hosted-other-host"])
def test_host_policy(api, url, refusal):
    from bridge.objects import HostPolicy

    found = HostPolicy(api, CLOUD, resolve=resolve).refusal(url)
    if refusal is None:
        assert found is None
    else:
        assert refusal in found


def test_refused_url_is_not_requested(server):
    from bridge.objects import HostPolicy, ObjectRefused

    statuses: list = []
    strict = ObjectFetcher("https://api.smith.langchain.com", timeout=5, on_status=statuses.append,
                           hosts=HostPolicy("https://api.smith.langchain.com", CLOUD, resolve=resolve))
    with pytest.raises(ObjectRefused, match="neither the LangSmith host nor in object_hosts"):
        strict.fetch(f"{server.url}/blob")
    assert statuses == []  # refused before any connection


def test_redirect_to_a_refused_host_stops(server):
    """Each hop is checked: an allowed host redirecting to an internal address is refused at the hop."""
    from bridge.objects import HostPolicy, ObjectRefused

    host = server.url.split("//")[1].split(":")[0]
    policy = HostPolicy(server.url, (), resolve=lambda h: ["127.0.0.1"] if h == host else ["10.0.0.1"])
    fetcher = ObjectFetcher(server.url, timeout=5, hosts=policy)
    assert fetcher.fetch("/blob") == b'{"ok": true}'
    with pytest.raises(ObjectRefused, match="scheme 'file'"):
        fetcher.fetch("/file")
