"""1. Acknowledgement latency of the two webhook endpoints, next to a bare WebhooksServer started the same way.

Quiet phase: the bodies were delivered once beforehand, so every measured request re-delivers known work and is
answered `duplicate` after the same authentication, body read, parse, routing and SQLite transaction as a new one;
nothing new is queued, so no background work competes. Rounds alternate which server goes first.
Background phase: the same measurement while an experiment upload and export deliveries are being processed.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass

from . import load, payloads
from .report import Report, median, ms, percentile, ratio
from .stack import LANGSMITH_WEBHOOK_SECRET, USER, WEBHOOK_SECRET, Process, Stack, wait_until

CONCURRENCY = (1, 32)
LANGSMITH_TIMEOUT = 5.0
BACKGROUND_MAX = 1.0  # "never near 5 s": the slowest acknowledgement must keep a 5× margin
BACKGROUND_INTERVAL = 0.5


@dataclass
class Endpoint:
    name: str
    label: str
    path: str  # the body file
    bridge_url: str
    bare_url: str
    headers: dict

    def url(self, server: str) -> str:
        return self.bridge_url if server == "bridge" else self.bare_url


def prepare(stack: Stack, bare: Process) -> list[Endpoint]:
    """A 100-run rule delivery and a real push delivery, each delivered once so that re-deliveries are known."""
    folder = stack.root / "ack"
    ids = payloads.seed_runs(stack.smith, 100, offload=False, first=900_000)
    [ls_path] = payloads.write_bodies(folder / "langsmith", payloads.delivery_bodies(stack.smith, ids))
    hub_path = folder / "hub.json"
    hub_path.write_text(json.dumps(push_payload(stack)))
    size = (folder / "langsmith" / "body-0000.json").stat().st_size
    endpoints = [
        Endpoint("langsmith", f"LangSmith rule, 100 runs ({size // 1024} KB)", ls_path,
                 f"{stack.app.url}/webhooks/langsmith?secret={LANGSMITH_WEBHOOK_SECRET}",
                 f"{bare.url}/webhooks/langsmith", {}),
        Endpoint("hub", f"Hub push, v3 ({hub_path.stat().st_size} B)", str(hub_path), f"{stack.app.url}/webhooks/hub",
                 f"{bare.url}/webhooks/hub", {"X-Webhook-Secret": WEBHOOK_SECRET}),
    ]
    for endpoint in endpoints:  # the first delivery queues the work; what follows is measured as re-deliveries
        load.drive({"url": endpoint.bridge_url, "bodies": [endpoint.path], "headers": endpoint.headers,
                    "concurrency": 1, "requests": 1})
    stack.wait_idle(120)
    return endpoints


def push_payload(stack: Stack) -> dict:
    """The payload the sandbox Hub sent the bridge for a real push of lm-eval results (webhook version 3)."""
    repo = f"{USER}/ack-evals"
    stack.hub.create_repo(repo)
    stack.hub.commit(repo, payloads.lm_eval_push(6, "bench-org/tiny-1b", "2026-11-21T10-00-00.000000"),
                     message="Add results", author=USER)
    stack.hub.wait_for_deliveries(30)
    pushes = [d for d in stack.hub.deliveries if d["scope"] == "repo.content" and d["repo"] == repo]
    return pushes[-1]["payload"]


def measure(endpoint: Endpoint, server: str, concurrency: int, sizes) -> dict:
    total = sizes.c1_requests if concurrency == 1 else concurrency * sizes.c32_per_worker
    started = time.time()
    result = load.drive({"url": endpoint.url(server), "bodies": [endpoint.path], "headers": endpoint.headers,
                         "concurrency": concurrency, "requests": total, "warmup": sizes.warmup})
    latencies = result["latencies"]
    return {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "max": max(latencies),
            "n": len(latencies), "statuses": Counter(result["statuses"]), "window": (started, time.time())}


def quiet(endpoints: list[Endpoint], sizes) -> dict:
    """results[(endpoint, server, concurrency)] = one measurement per round."""
    results: dict = {}
    for round_no in range(sizes.rounds):
        servers = ("bare", "bridge") if round_no % 2 == 0 else ("bridge", "bare")
        for endpoint in endpoints:
            for concurrency in CONCURRENCY:
                for server in servers:
                    results.setdefault((endpoint.name, server, concurrency), []).append(
                        measure(endpoint, server, concurrency, sizes))
    return results


def report_quiet(endpoints: list[Endpoint], results: dict, report: Report, rounds: int) -> None:
    for endpoint in endpoints:
        for concurrency in CONCURRENCY:
            bridge = results[(endpoint.name, "bridge", concurrency)]
            bare = results[(endpoint.name, "bare", concurrency)]
            what = f"{endpoint.label}, c={concurrency}, median of {rounds} round(s) × {bridge[0]['n']}"
            p50, ref50 = median([m["p50"] for m in bridge]), median([m["p50"] for m in bare])
            report.add("1 ack, quiet", f"{what}: p50", f"{ms(p50)} ({ratio(p50, ref50)})", f"bare {ms(ref50)}")
            p99, ref99 = median([m["p99"] for m in bridge]), median([m["p99"] for m in bare])
            slowest, ref_slowest = max(m["max"] for m in bridge), max(m["max"] for m in bare)
            report.add("1 ack, quiet", f"{what}: p99 (slowest)", f"{ms(p99)} ({ratio(p99, ref99)}); {ms(slowest)}",
                       f"bare {ms(ref99)}; {ms(ref_slowest)}", "p99 ≤ 1.5× bare", p99 <= 1.5 * ref99)
            statuses = sum((m["statuses"] for m in bridge), Counter())
            if set(statuses) != {200}:
                report.note(f"{endpoint.name} c={concurrency}: the bridge answered {dict(statuses)}")


# ---------------------------------------------------------------- background phase
class JobSampler(threading.Thread):
    """Polls /healthz twice a second, to show that background work was really going on while we measured."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack, self.samples, self.stopped = stack, [], threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                jobs = self.stack.app.jobs()
                self.samples.append((time.time(), jobs["running"], jobs["queued"]))
            except Exception:  # a slow /healthz answer is itself a data point, not a reason to stop
                pass
            self.stopped.wait(0.5)

    def busy_share(self, window: tuple[float, float]) -> float:
        inside = [running for at, running, _ in self.samples if window[0] <= at <= window[1]]
        return sum(1 for r in inside if r > 0) / len(inside) if inside else 0.0


def feed_exports(stack: Stack, sizes) -> tuple:
    """A steady trickle of export deliveries (100 offloaded runs each, one every BACKGROUND_INTERVAL seconds)."""
    ids = payloads.seed_runs(stack.smith, sizes.bg_deliveries * 100, offload=True, first=800_000)
    paths = payloads.write_bodies(stack.root / "background", payloads.delivery_bodies(stack.smith, ids))
    feeder = load.start({"url": f"{stack.app.url}/webhooks/langsmith?secret={LANGSMITH_WEBHOOK_SECRET}",
                         "bodies": paths, "concurrency": 1, "requests": len(paths), "interval": BACKGROUND_INTERVAL})
    return feeder, len(paths)


def push_results(stack: Stack, rows: int, number: int) -> None:
    """A push of `rows` lm-eval rows to a watched repo: the bridge answers it with an experiment upload."""
    repo = f"{USER}/bg{number}-evals"
    stack.hub.create_repo(repo)
    stack.hub.commit(repo, payloads.lm_eval_push(rows, f"bench-org/bg{number}-7b", "2026-11-21T11-00-00.000000"),
                     message="Add results", author=USER)


def background(stack: Stack, endpoints: list[Endpoint], sizes, report: Report) -> None:
    """The quiet measurement again while export deliveries trickle in and experiment uploads run (a new push
    before each endpoint's measurements)."""
    sampler = JobSampler(stack)
    sampler.start()
    feeder, count = feed_exports(stack, sizes)
    results = {}
    for number, endpoint in enumerate(endpoints):
        push_results(stack, sizes.bg_upload_rows, number)
        wait_until(lambda: stack.app.jobs()["running"] > 0, 60, "background jobs to start", interval=0.05)
        for concurrency in CONCURRENCY:
            for server in ("bridge", "bare"):
                results[(endpoint.name, server, concurrency)] = measure(endpoint, server, concurrency, sizes)
    queued = load.collect(feeder)
    sampler.stopped.set()
    report_background(endpoints, results, sampler, report)
    report_new_deliveries(queued, count, report)
    drained_at = time.time()
    stack.wait_idle(900)
    report.note(f"Background phase: {count} export deliveries of 100 offloaded runs, one every "
                f"{BACKGROUND_INTERVAL} s, and a {sizes.bg_upload_rows:,}-row experiment upload pushed before each "
                f"endpoint's measurements; the queue drained {time.time() - drained_at:.0f} s after the last "
                "measurement.")


def report_background(endpoints: list[Endpoint], results: dict, sampler: JobSampler, report: Report) -> None:
    for endpoint in endpoints:
        for concurrency in CONCURRENCY:
            ours, bare = results[(endpoint.name, "bridge", concurrency)], results[(endpoint.name, "bare", concurrency)]
            busy = sampler.busy_share(ours["window"])
            report.add("1 ack, background", f"{endpoint.label}, c={concurrency}, jobs running in {busy:.0%} of "
                       f"/healthz samples: p99 / slowest",
                       f"{ms(ours['p99'])} / {ms(ours['max'])}", f"bare {ms(bare['p99'])} / {ms(bare['max'])}",
                       f"slowest ≤ {BACKGROUND_MAX:.0f} s (LangSmith gives up at {LANGSMITH_TIMEOUT:.0f} s)",
                       ours["max"] <= BACKGROUND_MAX)


def report_new_deliveries(result: dict, count: int, report: Report) -> None:
    latencies = result["latencies"]
    statuses = Counter(result["statuses"])
    report.add("1 ack, background", f"the {count} new export deliveries themselves (202 queued, c=1): p50 / p99",
               f"{ms(percentile(latencies, 50))} / {ms(percentile(latencies, 99))}", f"statuses {dict(statuses)}")
