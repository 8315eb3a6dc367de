"""The reference point for acknowledgement latency: a bare `huggingface_hub.WebhooksServer`, default UI, launched
like app.py launches the bridge (gradio, loopback, no share link), with no-op async handlers on the same two paths.

    python -m bench.bare_server --port 7861
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import time

os.environ.setdefault("HF_HUB_DISABLE_EXPERIMENTAL_WARNING", "1")

from fastapi import Request  # noqa: E402
from huggingface_hub import WebhooksServer  # noqa: E402


async def noop(request: Request) -> dict:
    # A server has to take the body off the socket; this one does nothing else with it.
    await request.body()
    return {"status": "ok"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints advice about WEBHOOK_SECRET
        server = WebhooksServer()
    server.webhook_secret = None  # like the bridge: no header-check wrapper around the routes
    server.add_webhook("hub")(noop)
    server.add_webhook("langsmith")(noop)
    server.launch(prevent_thread_lock=True, share=False, server_port=args.port, quiet=True)
    while True:  # gradio serves from its own thread; the benchmark stops this process with SIGTERM
        time.sleep(3600)


if __name__ == "__main__":
    main()
