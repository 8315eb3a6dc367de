"""CPU accounting and sampling profiles of a process, for the benchmarks.

`cpu_seconds(pid)`: user + system CPU time of a process and its children so far (the bridge's job process), from
/proc/<pid>/stat (all their threads).
`Profiler(pid, path)`: py-spy (requirements-dev.txt) samples the process (and with `subprocesses` its children)
until `stop()`, non-blocking, only the
thread holding the GIL (the Python work that makes the others wait; C code that releases it, such as zstd or SQLite
I/O, is not seen), written as collapsed stacks; `top(path)` turns them into the lines the results show: the functions where the samples were
(self) and the functions on the stack (total), as shares of all samples.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from . import end_process

TICKS = os.sysconf("SC_CLK_TCK")
PLUMBING = ("(threading.py)", "(concurrent/futures/thread.py)", "(bridge/workers.py)", "(bridge/jobs.py)",
            "(bridge/tracing.py)")  # on every stack of their thread: left out of "total"
FRAMEWORK = ("asyncio/", "uvicorn/", "starlette/", "fastapi/", "anyio/", "gradio/", "h11/")  # the server's layers


def _plumbing(frame: str) -> bool:
    """Frames every request or job passes through, left out of "total" (they would fill it); with --subprocesses
    each stack starts with its process."""
    return frame.endswith(PLUMBING) or frame.rpartition(" (")[2].startswith(FRAMEWORK) or frame.startswith("process ")


FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def family(pid: int) -> list[int]:
    """`pid` and its descendants now (the app and its job process), from /proc/<pid>/task/*/children."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo += [int(child) for child in task.read_text().split()]
            except OSError:  # the task ended meanwhile
                continue
    return found


def _own_cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) in seconds: fields 14 and 15 of /proc/<pid>/stat (the command name may hold spaces, so the
    fields are counted after its closing ')'); 0 for a process that ended meanwhile."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def cpu_times(pid: int | None = None) -> tuple[float, float]:
    """(user, system) CPU seconds of `pid` (default: this process) and its live descendants, all threads."""
    times = [_own_cpu_times(p) for p in family(pid or os.getpid())]
    return sum(t[0] for t in times), sum(t[1] for t in times)


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of the process and its children so far (all their threads)."""
    return sum(cpu_times(pid))


class Profiler:
    """py-spy attached to `pid` until `stop()`; a no-op (and `path` None) when py-spy is not installed."""

    def __init__(self, pid: int, path: Path, rate: int = 100, subprocesses: bool = False) -> None:
        self.path, self.proc, self.rate = path, None, rate
        # Installed beside this Python (a virtual environment run without activating it), or on PATH.
        exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
        if exe is None:
            self.path = None
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--format", "raw", "--output", str(path),
                                      "--rate", str(rate), "--nonblocking", "--gil",
                                      *(["--subprocesses"] if subprocesses else [])],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> Path | None:
        if self.proc is None:
            return None
        end_process(self.proc, signal.SIGINT, 60)  # SIGINT: py-spy writes what it sampled, then exits
        return self.path if self.path and self.path.exists() else None


def _short(frame: str) -> str:
    found = FRAME.match(frame.strip())
    if not found:
        return frame.strip()
    file = found["file"]
    for marker in ("site-packages/", "/lib/python3", "wt-", "/work/"):
        if marker in file:
            file = file.split(marker, 1)[1].split("/", 1)[-1] if marker != "site-packages/" else file.split(marker, 1)[1]
            break
    return f"{found['func']} ({file})"


def top(path: Path, n: int = 12) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    """(samples, [(function, self share)], [(function, total share)]), biggest first."""
    own, total, samples = Counter(), Counter(), 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        weight = int(count)
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        samples += weight
        own[frames[-1]] += weight
        for frame in set(frames):
            if not _plumbing(frame):
                total[frame] += weight
    share = (lambda c: [(name, k / samples) for name, k in c.most_common(n)]) if samples else (lambda c: [])
    return samples, share(own), share(total)


def summary(path: Path | None, title: str, n: int = 12) -> list[str]:
    """Markdown lines for bench/results.md: the profile's top functions by self and by total samples."""
    if path is None:
        return [f"{title}: no profile (py-spy is not installed: pip install -r requirements-dev.txt)"]
    samples, own, total = top(path, n)
    lines = [f"**{title}** ({samples:,} samples of the thread holding the GIL, py-spy --gil --nonblocking)",
             "",
             "| self | function | | total | function |", "|---|---|---|---|---|"]
    for i in range(max(len(own), len(total))):
        a = own[i] if i < len(own) else ("", 0.0)
        b = total[i] if i < len(total) else ("", 0.0)
        lines.append(f"| {a[1]:.1%} | `{a[0]}` | | {b[1]:.1%} | `{b[0]}` |")
    return lines
