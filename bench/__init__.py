"""Benchmarks of hub-langsmith-bridge: `python -m bench` (add `--quick` for a smoke run).

Every benchmark starts the two sandbox emulators in this process (so their request logs can be counted), runs
`python app.py --no-share` as a subprocess pointed at them, and drives load from separate processes
(`bench.load`, `bench.baseline`). Only loopback addresses are used.
"""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def end_process(proc: subprocess.Popen, sig: int, timeout: float) -> None:
    """Sends `sig` and waits; a process that does not end in `timeout` seconds is killed."""
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
