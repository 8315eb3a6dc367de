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

from pathlib import Path

from . import load, payloads, profile
from .report import Report, median, ms, percentile, ratio
from .stack import LANGSMITH_WEBHOOK_SECRET, USER, WEBHOOK_SECRET, Process, Stack, wait_until

CONCURRENCY = (1, 16, 32)
TARGET_P50, TARGET_P99 = 2.0, 1.5  # × the bare server's, in the same run
TARGETED = ("langsmith", (16, 32))  # where the p50 target applies: the 100-run rule delivery at c=16 and c=32
BACKGROUND_FEED_INTERVAL = 0.05  # seconds between the background export's deliveries (100 runs each): mapping one
# takes about 0.08 s, so the export is never idle while the acknowledgements are measured
LANGSMITH_TIMEOUT = 5.0
BACKGROUND_MAX = 1.0  # "never near 5 s": the slowest acknowledgement must keep a 5× margin


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


def profiled(stack: Stack, where: Path | None, report: Report, title: str, work):
    """`work()`, with py-spy sampling the bridge meanwhile when `where` is given (its top lines go to the report)."""
    if where is None:
        return work()
    profiler = profile.Profiler(stack.app.pid, where, rate=500)  # a short measurement: more samples per second
    try:
        return work()
    finally:
        report.profiles.append(profile.summary(profiler.stop(), title))


def quiet(endpoints: list[Endpoint], sizes, stack: Stack, profile_dir: Path | None = None,
          report: Report | None = None) -> dict:
    """results[(endpoint, server, concurrency)] = one measurement per round. With `profile_dir`, the first round's
    LangSmith acknowledgements at c=32 are sampled."""
    results: dict = {}
    for round_no in range(sizes.rounds):
        servers = ("bare", "bridge") if round_no % 2 == 0 else ("bridge", "bare")
        for endpoint in endpoints:
            for concurrency in CONCURRENCY:
                for server in servers:
                    sampled = (profile_dir if round_no == 0 and server == "bridge" and concurrency == 32
                               and endpoint.name == "langsmith" else None)
                    found = profiled(stack, sampled and sampled / "ack-quiet-c32.txt", report,
                                     f"1 ack, quiet: {endpoint.label}, c=32, the bridge's web process (the jobs run in its job process)",
                                     lambda: measure(endpoint, server, concurrency, sizes))
                    results.setdefault((endpoint.name, server, concurrency), []).append(found)
    return results


def targeted(endpoint: str, concurrency: int) -> bool:
    return endpoint == TARGETED[0] and concurrency in TARGETED[1]


def add_p50(report: Report, section: str, what: str, endpoint: str, concurrency: int, p50: float,
            ref50: float) -> None:
    if targeted(endpoint, concurrency):
        report.add(section, f"{what}: p50", f"{ms(p50)} ({ratio(p50, ref50)})", f"bare {ms(ref50)}",
                   f"p50 ≤ {TARGET_P50:g}× bare", p50 <= TARGET_P50 * ref50)
    else:
        report.add(section, f"{what}: p50", f"{ms(p50)} ({ratio(p50, ref50)})", f"bare {ms(ref50)}")


def report_quiet(endpoints: list[Endpoint], results: dict, report: Report, rounds: int) -> None:
    for endpoint in endpoints:
        for concurrency in CONCURRENCY:
            bridge = results[(endpoint.name, "bridge", concurrency)]
            bare = results[(endpoint.name, "bare", concurrency)]
            what = f"{endpoint.label}, c={concurrency}, median of {rounds} round(s) × {bridge[0]['n']}"
            p50, ref50 = median([m["p50"] for m in bridge]), median([m["p50"] for m in bare])
            add_p50(report, "1 ack, quiet", what, endpoint.name, concurrency, p50, ref50)
            p99, ref99 = median([m["p99"] for m in bridge]), median([m["p99"] for m in bare])
            slowest, ref_slowest = max(m["max"] for m in bridge), max(m["max"] for m in bare)
            report.add("1 ack, quiet", f"{what}: p99 (slowest)", f"{ms(p99)} ({ratio(p99, ref99)}); {ms(slowest)}",
                       f"bare {ms(ref99)}; {ms(ref_slowest)}", f"p99 ≤ {TARGET_P99:g}× bare",
                       p99 <= TARGET_P99 * ref99)
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
    """The background export: `bg_deliveries` rule deliveries of 100 offloaded runs (10,000 rows in a full run),
    one every BACKGROUND_FEED_INTERVAL seconds."""
    ids = payloads.seed_runs(stack.smith, sizes.bg_deliveries * 100, offload=True, first=800_000)
    paths = payloads.write_bodies(stack.root / "background", payloads.delivery_bodies(stack.smith, ids))
    feeder = load.start({"url": f"{stack.app.url}/webhooks/langsmith?secret={LANGSMITH_WEBHOOK_SECRET}",
                         "bodies": paths, "concurrency": 1, "requests": len(paths),
                         "interval": BACKGROUND_FEED_INTERVAL})
    return feeder, len(paths)


def push_results(stack: Stack, rows: int, number: int) -> None:
    """A push of `rows` lm-eval rows to a watched repo: the bridge answers it with an experiment upload."""
    repo = f"{USER}/bg{number}-evals"
    stack.hub.create_repo(repo)
    stack.hub.commit(repo, payloads.lm_eval_push(rows, f"bench-org/bg{number}-7b", "2026-11-21T11-00-00.000000"),
                     message="Add results", author=USER)


def background(stack: Stack, endpoints: list[Endpoint], sizes, report: Report,
               profile_dir: Path | None = None) -> None:
    """The quiet measurement again while an export runs (the LangSmith endpoint: the export alone; the Hub endpoint:
    the export and an experiment upload pushed just before)."""
    sampler = JobSampler(stack)
    sampler.start()
    feeder, count = feed_exports(stack, sizes)
    results = {}
    for number, endpoint in enumerate(endpoints):
        if endpoint.name == "hub":
            push_results(stack, sizes.bg_upload_rows, number)
        wait_until(lambda: stack.app.jobs()["running"] > 0, 60, "background jobs to start", interval=0.05)
        for concurrency in CONCURRENCY:
            for server in ("bridge", "bare"):
                sampled = profile_dir if (server, concurrency, endpoint.name) == ("bridge", 32, "langsmith") else None
                results[(endpoint.name, server, concurrency)] = profiled(
                    stack, sampled and sampled / "ack-background-c32.txt", report,
                    f"1 ack, during the export: {endpoint.label}, c=32, the bridge's web process (the jobs run in its job process)",
                    lambda: measure(endpoint, server, concurrency, sizes))
    queued = load.collect(feeder)
    sampler.stopped.set()
    report_background(endpoints, results, sampler, report)
    report_new_deliveries(queued, count, report)
    drained_at = time.time()
    stack.wait_idle(900)
    report.note(f"Background phase: an export of {count} rule deliveries of 100 offloaded runs "
                f"({count * 100:,} rows), one delivery every {BACKGROUND_FEED_INTERVAL} s; the Hub endpoint's "
                f"measurements also run after a {sizes.bg_upload_rows:,}-row experiment upload was pushed; the "
                f"queue drained {time.time() - drained_at:.0f} s after the last measurement.")


def report_background(endpoints: list[Endpoint], results: dict, sampler: JobSampler, report: Report) -> None:
    for endpoint in endpoints:
        for concurrency in CONCURRENCY:
            ours, bare = results[(endpoint.name, "bridge", concurrency)], results[(endpoint.name, "bare", concurrency)]
            busy = sampler.busy_share(ours["window"])
            work = "the export" if endpoint.name == "langsmith" else "the export and an upload"
            what = f"{endpoint.label}, c={concurrency}, while {work} runs (jobs running in {busy:.0%} of samples)"
            add_p50(report, "1 ack, background", what, endpoint.name, concurrency, ours["p50"], bare["p50"])
            if targeted(endpoint.name, concurrency):
                report.add("1 ack, background", f"{what}: p99", f"{ms(ours['p99'])} ({ratio(ours['p99'], bare['p99'])})",
                           f"bare {ms(bare['p99'])}", f"p99 ≤ {TARGET_P99:g}× bare",
                           ours["p99"] <= TARGET_P99 * bare["p99"])
            report.add("1 ack, background", f"{what}: p99 / slowest",
                       f"{ms(ours['p99'])} / {ms(ours['max'])}", f"bare {ms(bare['p99'])} / {ms(bare['max'])}",
                       f"slowest ≤ {BACKGROUND_MAX:.0f} s (LangSmith gives up at {LANGSMITH_TIMEOUT:.0f} s)",
                       ours["max"] <= BACKGROUND_MAX)


def report_new_deliveries(result: dict, count: int, report: Report) -> None:
    latencies = result["latencies"]
    statuses = Counter(result["statuses"])
    report.add("1 ack, background", f"the {count} new export deliveries themselves (202 queued, c=1): p50 / p99",
               f"{ms(percentile(latencies, 50))} / {ms(percentile(latencies, 99))}", f"statuses {dict(statuses)}")
