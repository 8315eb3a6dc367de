"""The object fetcher (presigned inputs/outputs URLs) against a real loopback server: a table of answers."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from bridge.errors import UpstreamError
from bridge.sandbox.server import ServerHandle
from bridge.smith import ObjectFetcher

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
    ("/file", "refused to fetch an object URL with scheme 'file'", False),
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
