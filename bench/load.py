"""Load generator, always run in its own process so its CPU use is not billed to the emulators' process.

    python -m bench.load < spec.json > result.json

spec: {"url", "headers", "bodies": [paths], "concurrency", "requests", "warmup", "timeout", "interval"}. Request
k sends bodies[k % len(bodies)]; a worker waits `interval` seconds after each request (a steady trickle). Each
worker thread has its own keep-alive session; `warmup` requests per worker are sent and discarded before all
workers start together. Result: per-request send time, latency and status.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from . import ROOT


def worker(spec: dict, bodies: list[bytes], counter: itertools.count, lock: threading.Lock,
           barrier: threading.Barrier, results: list) -> None:
    session = requests.Session()
    session.trust_env = False
    headers = {"Content-Type": "application/json", **spec.get("headers", {})}
    timeout = spec.get("timeout", 30.0)
    for i in range(spec.get("warmup", 0)):
        send(session, spec["url"], bodies[i % len(bodies)], headers, timeout)
    barrier.wait()
    while True:
        with lock:
            k = next(counter)
        if k >= spec["requests"]:
            return
        started = time.time()
        status, seconds = send(session, spec["url"], bodies[k % len(bodies)], headers, timeout)
        results.append((started, seconds, status))
        time.sleep(spec.get("interval", 0))


def send(session: requests.Session, url: str, body: bytes, headers: dict, timeout: float) -> tuple[int, float]:
    start = time.perf_counter()
    try:
        response = session.post(url, data=body, headers=headers, timeout=timeout)
        response.content  # the acknowledgement is only complete once its body has arrived
        status = response.status_code
    except requests.RequestException:
        status = -1
    return status, time.perf_counter() - start


def run(spec: dict) -> dict:
    bodies = [Path(p).read_bytes() for p in spec["bodies"]]
    counter, lock = itertools.count(), threading.Lock()
    barrier = threading.Barrier(spec["concurrency"])
    results: list = []
    threads = [threading.Thread(target=worker, args=(spec, bodies, counter, lock, barrier, results))
               for _ in range(spec["concurrency"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.sort()
    return {"sent_at": [r[0] for r in results], "latencies": [r[1] for r in results],
            "statuses": [r[2] for r in results]}


# ---------------------------------------------------------------- used by the benchmarks
def start(spec: dict) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "bench.load"], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    proc.stdin.write(json.dumps(spec))
    proc.stdin.close()
    return proc


def collect(proc: subprocess.Popen, timeout: float = 600.0) -> dict:
    out = proc.stdout.read()
    proc.wait(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed with {proc.returncode}")
    return json.loads(out)


def drive(spec: dict, timeout: float = 600.0) -> dict:
    return collect(start(spec), timeout)


if __name__ == "__main__":
    json.dump(run(json.load(sys.stdin)), sys.stdout)
