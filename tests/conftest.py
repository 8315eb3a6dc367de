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
