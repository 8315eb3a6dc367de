"""Shared fixtures. Emulators run on loopback; nothing here reaches the internet."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT.parent / "shared" / "samples"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The SDKs must never trace or phone home from tests.
os.environ["LANGSMITH_TRACING"] = "false"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_EXPERIMENTAL_WARNING", "1")


class Clock:
    """A clock a test moves by hand (`clock.now += 60`) for stores and metrics that take one."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def wait_for(condition: Callable[[], object], timeout: float = 15.0, interval: float = 0.02, what: str = "") -> object:
    """Polls until `condition()` is truthy and returns its value; fails the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


# ---- emulators and a bridge wired to them ----
HF_TOKEN = "hf_test_token_5f2c9a"
LS_KEY = "lsv2_test_key_8d1e4b"
USER = "acme"


@pytest.fixture
def hub(tmp_path):
    from bridge.sandbox.hub import HubEmulator

    emulator = HubEmulator(tmp_path / "hub", tokens={HF_TOKEN: USER, "hf_read_only_token": USER})
    handle = emulator.serve()
    yield emulator
    handle.stop()


@pytest.fixture
def smith():
    from bridge.sandbox.langsmith_emu import LangSmithEmulator

    emulator = LangSmithEmulator({LS_KEY}, rate_limits=False)
    handle = emulator.serve()
    yield emulator
    handle.stop()


@pytest.fixture
def make_bridge(tmp_path, hub, smith):
    """Builds a bridge Runtime (workers not started) from a bridge.yaml text, pointed at both emulators."""
    from bridge.runtime import build_runtime
    from bridge.settings import Settings

    made = []

    def make(config: str, state: Path | None = None, **env: str):
        config_path = tmp_path / f"bridge-{len(made)}.yaml"
        config_path.write_text(config)
        values = {"HF_ENDPOINT": hub.base_url, "HF_TOKEN": HF_TOKEN, "LANGSMITH_ENDPOINT": smith.url,
                  "LANGSMITH_API_KEY": LS_KEY, "LANGSMITH_WEB_URL": smith.url,
                  "BRIDGE_STATE_DIR": str(state or tmp_path / "state"), **env}
        runtime = build_runtime(Settings.from_env(values, config_path))
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.stop()


def run_jobs(runtime, limit: int = 50) -> list:
    """Runs every job that is due, in this thread, until none is left; returns them in order."""
    from bridge.workers import WorkerPool

    pool = WorkerPool(runtime.store, runtime.handlers, services=runtime)
    done = []
    for _ in range(limit):
        job = runtime.store.claim()
        if job is None:
            return done
        done.append(pool.run_one(job))
    pytest.fail(f"more than {limit} jobs ran")
