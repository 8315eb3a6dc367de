"""hub-langsmith-bridge entry point: parse flags, load settings, build the app, launch.

    python app.py                      # real Hub and LangSmith (tokens from the environment)
    python app.py --sandbox --no-share # local emulators of both, no account and no network needed
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import logging
import os
import sys
from pathlib import Path

from bridge.errors import ConfigError
from bridge.settings import Settings

log = logging.getLogger("bridge")

GIL_SWITCH_SECONDS = 0.0005


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Bridge between the Hugging Face Hub and LangSmith.")
    parser.add_argument("--sandbox", action="store_true",
                        help="run against local emulators of the Hub and LangSmith, seeded with demo data")
    parser.add_argument("--config", type=Path, default=None,
                        help="bridge.yaml path (default: $BRIDGE_CONFIG, else bridge.yaml beside app.py)")
    parser.add_argument("--host", default=None, help="interface to listen on (default: gradio's, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT") or 7860))
    parser.add_argument("--no-share", action="store_true", help="do not open a gradio.live tunnel")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_EXPERIMENTAL_WARNING", "1")  # WebhooksServer is marked experimental
    from bridge.runtime import configure_logging

    configure_logging()
    env = dict(os.environ)
    sandbox = None
    if args.sandbox:
        from bridge.sandbox.demo import start_sandbox

        sandbox = start_sandbox(env)
        env.update(sandbox.env)
    try:
        settings = Settings.from_env(env, args.config or (sandbox.config_path if sandbox else None))
    except ConfigError as exc:
        print(f"error: invalid configuration: {exc}", file=sys.stderr)
        return 2

    from bridge.access import launch_options
    from bridge.flows import hub_webhook
    from bridge.runtime import add_routes, build_runtime, build_server
    from bridge.ui import build_ui

    runtime = build_runtime(settings)
    if sandbox:
        runtime.extras["sandbox"] = sandbox.links()  # the Overview's sandbox panel and the forms' defaults
    ui = build_ui(runtime)
    server = build_server(runtime, ui)
    share = not args.no_share and settings.space_id is None
    with contextlib.redirect_stdout(io.StringIO()):  # WebhooksServer prints its own URL list; ours follows
        server.launch(prevent_thread_lock=True, share=share, server_name=args.host, server_port=args.port,
                      show_error=True, quiet=True, **launch_options(runtime, args.host, share))
    add_routes(server, runtime)
    # Everything built so far lives as long as the process: keep the collector from walking it again and again,
    # which showed up as 100-160 ms pauses in webhook acknowledgements.
    gc.collect()
    gc.freeze()
    # Webhook acknowledgements wait for the GIL whenever a job is mapping rows; at Python's default 5 ms a 2 ms
    # acknowledgement took 50-200 ms under load (bench/ack.py). Shorter slices cost CPU-bound jobs about 1%.
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    runtime.set_reachable_url(settings.reachable_url(ui.share_url, ui.local_url, sandbox=bool(sandbox)),
                              ui.local_url.rstrip("/"))
    hub_webhook.schedule_at_start(runtime)  # now that the URL the Hub can call is known
    runtime.start_workers(process=settings.config.jobs.process, env=env)  # they need that URL too
    print_urls(runtime, ui.local_url)
    if sandbox:
        sandbox.connect(runtime, ui.local_url)
    try:
        ui.block_thread()
    finally:
        runtime.stop()
    return 0


def print_urls(runtime, local_url: str) -> None:
    urls = runtime.webhook_urls()
    print(f"\nhub-langsmith-bridge is running: {runtime.public_url or local_url}")
    print(f"  Hub webhook URL:       {urls['hub']}")
    print(f"  LangSmith webhook URL: {urls['langsmith']}")
    print(f"  Health:                {(runtime.public_url or local_url).rstrip('/')}/healthz\n", flush=True)


if __name__ == "__main__":
    sys.exit(main())
