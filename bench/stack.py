"""The system under test, started the way a user starts it.

Both emulators run in this process, so their request logs (`recorder.requests`) and stores can be read directly;
the bridge is `python app.py --no-share --port N --config <yaml>` in a subprocess whose environment points at them,
and the bare `WebhooksServer` it is compared with is started the same way (`bench.bare_server`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from bridge.sandbox.hub import HubEmulator
from bridge.sandbox.langsmith_emu import LangSmithEmulator
from bridge.sandbox.server import ServerHandle

from . import ROOT, end_process, profile

USER = "bench-user"
HF_TOKEN = "hf_bench_token_7c1d0e"
LS_KEY = "lsv2_bench_key_3a9f5b"
WEBHOOK_SECRET = "bench-hub-secret-51f0"
LANGSMITH_WEBHOOK_SECRET = "bench-ls-secret-9e2a"
START_TIMEOUT = 90.0

# No tracing, analytics or telemetry, and no proxy between us and loopback.
QUIET_ENV = {"LANGSMITH_TRACING": "false", "LANGCHAIN_TRACING_V2": "false", "GRADIO_ANALYTICS_ENABLED": "False",
             "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_EXPERIMENTAL_WARNING": "1",
             "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # loopback only, never through a proxy from the environment
    return session


def serve(hub: HubEmulator, smith: LangSmithEmulator) -> list[ServerHandle]:
    """Both emulators on loopback, each on its own `ServerHandle` (sockets with TCP_NODELAY: no delayed-ACK stall)."""
    return [hub.serve(), smith.serve()]


class Process:
    """A server subprocess on a loopback port, with its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, port: int) -> None:
        self.port, self.log_path = port, log_path
        self.url = f"http://127.0.0.1:{port}"
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def wait_ready(self, probe: Callable[[], bool]) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.log_path.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                return probe()
            except requests.RequestException:
                return False
        wait_until(ready, START_TIMEOUT, f"{self.url} to answer", interval=0.2)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def memory_kib(self) -> dict[str, int]:
        """VmRSS (now) and VmHWM (peak since start) from /proc, in KiB, summed over the process and its children
        (the app's job process)."""
        values = {"VmRSS": 0, "VmHWM": 0}
        for pid in profile.family(self.pid):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:  # ended meanwhile
                continue
            for line in status.splitlines():
                key, _, rest = line.partition(":")
                if key in values:
                    values[key] += int(rest.split()[0])
        return values

    def stop(self) -> None:
        if self.proc.poll() is None:
            end_process(self.proc, signal.SIGTERM, 15)
        self._log.close()


class App(Process):
    def healthz(self) -> dict:
        with http() as session:
            return session.get(f"{self.url}/healthz", timeout=10).json()

    def jobs(self) -> dict[str, int]:
        return self.healthz()["jobs"]

    def idle(self) -> bool:
        """Nothing due or running, and nothing buffered: a flush waiting for its window is `scheduled`, not queued."""
        health = self.healthz()
        jobs = health["jobs"]
        return jobs["queued"] == 0 and jobs["running"] == 0 and health.get("buffered_rows", 0) == 0


@dataclass
class Stack:
    root: Path
    hub: HubEmulator
    smith: LangSmithEmulator
    app: App

    def clear_logs(self) -> None:
        """Forget the requests recorded so far (the counts that follow belong to one measurement). Through the
        admin API: `Recorder.clear()` would also reset the latency and faults."""
        with http() as session:
            for url in (self.hub.base_url, self.smith.url):
                session.delete(f"{url}/_admin/requests", timeout=10).raise_for_status()

    def set_latency(self, seconds: float) -> None:
        self.hub.recorder.latency = seconds
        self.smith.recorder.latency = seconds

    def wait_idle(self, timeout: float) -> None:
        wait_until(self.app.idle, timeout, "the bridge's job queue to drain", interval=0.2)


def base_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(QUIET_ENV)
    env["PYTHONPATH"] = str(ROOT)
    env["HOME"] = str(root / "home")  # the SDKs' caches and token files stay in the benchmark's temp folder
    env["HF_HOME"] = str(root / "home" / "hf")
    return env


def start_app(root: Path, hub_url: str, smith_url: str, config: str) -> App:
    config_path = root / "bridge.yaml"
    config_path.write_text(config)
    env = base_env(root)
    env.update({"HF_ENDPOINT": hub_url, "HF_TOKEN": HF_TOKEN, "LANGSMITH_ENDPOINT": smith_url,
                "LANGSMITH_API_KEY": LS_KEY, "LANGSMITH_WEB_URL": smith_url,
                "WEBHOOK_SECRET": WEBHOOK_SECRET, "LANGSMITH_WEBHOOK_SECRET": LANGSMITH_WEBHOOK_SECRET,
                "BRIDGE_STATE_DIR": str(root / "state"), "BRIDGE_CONFIG": str(config_path)})
    port = free_port()
    app = App([sys.executable, "app.py", "--no-share", "--port", str(port), "--config", str(config_path)],
              env, root / "app.log", port)
    app.wait_ready(lambda: http().get(f"{app.url}/healthz", timeout=2).status_code == 200)
    return app


def start_bare(root: Path) -> Process:
    port = free_port()
    server = Process([sys.executable, "-m", "bench.bare_server", "--port", str(port)], base_env(root),
                     root / "bare.log", port)
    server.wait_ready(lambda: http().post(f"{server.url}/webhooks/hub", data=b"{}", timeout=2).status_code == 200)
    return server


@contextmanager
def stack(config: str, *, rate_limits: bool = True) -> Iterator[Stack]:
    """Both emulators here, the bridge in a subprocess, the sandbox Hub's webhook pointed at the bridge."""
    root = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    hub = HubEmulator(root / "hub", tokens={HF_TOKEN: USER})
    smith = LangSmithEmulator({LS_KEY}, rate_limits=rate_limits)
    handles = serve(hub, smith)
    app = None
    try:
        app = start_app(root, handles[0].url, handles[1].url, config)
        hub.add_webhook(f"{app.url}/webhooks/hub", watched=[{"type": "user", "name": USER}], secret=WEBHOOK_SECRET)
        yield Stack(root, hub, smith, app)
    finally:
        if app is not None:
            app.stop()
        handles[0].stop()
        smith.stop()  # stops handles[1] and forgets it
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(root, ignore_errors=True)
