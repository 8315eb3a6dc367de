"""Starting the bridge for tests: in-process (fast, reaches the runtime) or as `python app.py` in a subprocess (as a
user runs it, and the only way to SIGKILL it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from conftest import ROOT, wait_for

# Variables of the machine that would point the app elsewhere than the test wants.
OWN_PREFIXES = ("HF_", "LANGSMITH_", "WEBHOOK_", "BRIDGE_", "GRADIO_", "METRICS_")
QUIET = {"LANGSMITH_TRACING": "false", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1",
         "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class InProcessApp:
    runtime: Any
    ui: Any
    base: str

    def close(self) -> None:
        self.ui.close()


def launch_in_process(runtime: Any, host: str = "127.0.0.1", share: bool = False,
                      port: int | None = None) -> InProcessApp:
    """The real WebhooksServer app on a loopback port (`port`, else a free one), workers not started. Access is
    decided as if the app listened on `host` (how it would be exposed)."""
    from bridge import access
    from bridge.runtime import add_routes, build_server
    from bridge.ui import build_ui

    ui = build_ui(runtime)
    server = build_server(runtime, ui)
    server.launch(prevent_thread_lock=True, share=False, server_name="127.0.0.1", server_port=port or free_port(),
                  quiet=True, **access.launch_options(runtime, host, share))
    add_routes(server, runtime)
    return InProcessApp(runtime, ui, ui.local_url.rstrip("/"))


def emulator_env(hub: Any, smith: Any, **env: str) -> dict[str, str]:
    """Environment that points an app subprocess at the in-process emulators (tokens from conftest)."""
    from conftest import HF_TOKEN, LS_KEY

    return {"HF_ENDPOINT": hub.base_url, "HF_TOKEN": HF_TOKEN, "LANGSMITH_ENDPOINT": smith.url,
            "LANGSMITH_API_KEY": LS_KEY, "LANGSMITH_WEB_URL": smith.url, **env}


class AppProcess:
    """`python app.py --no-share --port P <args>` with its own state dir; logs kept per start."""

    def __init__(self, folder: Path, args: list[str], env: dict[str, str] | None = None) -> None:
        self.folder, self.args, self.port = folder, args, free_port()
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(OWN_PREFIXES)}
        self.env = {**inherited, **QUIET, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.state: Path | None = None
        self.logs: list[Path] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, state: Path, timeout: float = 90) -> "AppProcess":
        self.state = state
        log = self.folder / f"app-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen([sys.executable, "app.py", "--no-share", "--port", str(self.port), *self.args],
                                         cwd=ROOT, env={**self.env, "BRIDGE_STATE_DIR": str(state)}, stdout=out,
                                         stderr=subprocess.STDOUT)
        wait_for(self._up, timeout=timeout, interval=0.2, what=f"the app to answer {self.base}/healthz")
        return self

    def _up(self) -> bool:
        assert self.proc.poll() is None, f"the app exited:\n{self.log_text()}"
        try:
            return requests.get(self.base + "/healthz", timeout=2).ok
        except requests.RequestException:
            return False

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def health(self) -> dict:
        return requests.get(self.base + "/healthz", timeout=5).json()

    def idle(self) -> bool:
        health = self.health()  # queued means due now; `scheduled` ones (the hourly housekeeping) wait
        return health["jobs"]["queued"] == 0 and health["jobs"]["running"] == 0 and health["buffered_rows"] == 0

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a Space being evicted."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def webhook_app(state: Path, config: str, **env: str) -> InProcessApp:
    """The app with `config`, its upstreams pointed at a closed port: for tests of what the webhooks answer."""
    from bridge.runtime import build_runtime
    from bridge.settings import Settings

    (state / "bridge.yaml").write_text(config)
    values = {"BRIDGE_STATE_DIR": str(state), "HF_ENDPOINT": "http://127.0.0.1:9",
              "LANGSMITH_ENDPOINT": "http://127.0.0.1:9", **env}
    launched = launch_in_process(build_runtime(Settings.from_env(values, state / "bridge.yaml")))
    launched.runtime.base = launched.base
    return launched
