"""2 and 4. Export throughput and upstream calls: rule deliveries of offloaded runs -> rows committed to a dataset.

The bridge gets the deliveries over HTTP from a load process (4 at a time) and works with its default 2 job
workers; the time runs from the first delivery sent to the moment its job queue is empty (every flush done),
polled every 0.1 s. The baseline (`bench.baseline`) does the same work the Modal example's way, on the same
emulators, right after. Request counts come from the emulators' logs.
"""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq

from bridge.objects import ObjectFetcher  # noqa: F401 - quoted in the latency note

from . import ROOT, load, payloads, profile
from .report import Report, median, ms, percentile
from .stack import HF_TOKEN, LANGSMITH_WEBHOOK_SECRET, LS_KEY, USER, Stack, base_env, stack, wait_until

REPO = f"{USER}/export-feedback"
BASELINE_REPO = f"{USER}/baseline-feedback"
FLUSH_SECONDS = 5
TARGET_ROWS_PER_SECOND = 2000
TARGET_CPU_PER_ROW = 0.6e-3            # seconds of app CPU (web + job process, user + system) per committed row
TARGET_RATIO = {False: 1.5, True: 10.0}  # rows/s vs the baseline in the same run: no latency / +50 ms
UUID_PATH = re.compile(r"^(/api/v1)?/runs/[0-9a-f-]{36}$")
COMMIT_TITLE = re.compile(r"\bAdd (\d+) run\(s\)$")  # "[hub-langsmith-bridge] Add 5000 run(s)"


@dataclass
class Outcome:
    """One side's run: time, rows and the upstream requests it made."""

    deliveries: int
    seconds: float
    rows: int
    smith: Counter
    hub: Counter
    commit_times: list[float]
    started: float = 0.0                   # when the first delivery was sent
    acks: list[float] = field(default_factory=list)  # the deliveries' acknowledgement latencies (bridge only)
    commits: list[tuple[float, int]] = field(default_factory=list)  # (when, runs) of the bridge's commits
    cpu: float = math.nan                  # user + system CPU seconds of the app (or baseline) process meanwhile
    system: float = math.nan               # of which system
    buffered: float = math.nan             # seconds from the first delivery until no export job was left (bridge)

    @property
    def full_batches(self) -> int:
        """Commits of max_rows_per_commit rows: made as soon as that many rows wait, whatever the window."""
        return sum(1 for _, runs in self.commits if runs >= payloads.MAX_ROWS_PER_COMMIT)

    @property
    def window_commits(self) -> list[float]:
        """When the other commits landed: those the flush window governs."""
        return [at for at, runs in self.commits if runs < payloads.MAX_ROWS_PER_COMMIT]

    @property
    def runs(self) -> int:
        return self.deliveries * 100

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else math.nan

    @property
    def cpu_per_row(self) -> float:
        return self.cpu / self.rows if self.rows else math.nan

    @property
    def api_requests(self) -> int:
        """LangSmith API requests: everything but object-store fetches (which stand in for S3, not the API)."""
        return sum(self.smith.values()) - self.smith["objects"]

    def per_100_runs(self, count: float) -> float:
        return count * 100 / self.runs


def classify_smith(method: str, path: str) -> str:
    if "/_objects/" in path:
        return "objects"
    if method == "GET" and re.fullmatch(r"(/api/v1)?/feedback", path):
        return "feedback list"
    if method == "POST" and re.fullmatch(r"(/api/v1)?/feedback/tokens", path):
        return "feedback tokens"
    if method == "POST" and re.fullmatch(r"(/api/v1)?/runs/query", path):
        return "runs query"
    if method == "GET" and UUID_PATH.fullmatch(path):
        return "run reads"
    return "other"


def counts(stack: Stack) -> tuple[Counter, Counter, list[float], Counter]:
    smith, statuses = Counter(), Counter()
    for r in list(stack.smith.recorder.requests):
        smith[classify_smith(r.method, r.path)] += 1
        statuses[r.status] += 1
    hub = Counter()
    commit_times = []
    for r in list(stack.hub.recorder.requests):
        kind = "commits" if r.method == "POST" and "/commit/" in r.path else "other"
        hub[kind] += 1
        if kind == "commits":
            commit_times.append(r.at)
        statuses[r.status] += 1
    return smith, hub, commit_times, statuses


def committed_rows(stack: Stack, repo: str) -> tuple[int, int]:
    """(rows, distinct run ids) in the repo's `runs` parquet shards; (0, 0) before the bridge made the repo."""
    if ("dataset", repo) not in stack.hub.store.repos:
        return 0, 0
    ids = []
    for path in stack.hub.list_files(repo):
        if path.startswith("runs/") and path.endswith(".parquet"):
            table = pq.read_table(io.BytesIO(stack.hub.read_file(repo, path)), columns=["run_id"])
            ids += table.column("run_id").to_pylist()
    return len(ids), len(set(ids))


def repo_commits(stack: Stack, repo: str) -> dict[str, tuple[float, int]]:
    """oid -> (when, runs) of every commit made on the repo's main branch (not the Hub's own initial commit), from
    the Hub's store; runs from the bridge's "Add N run(s)" title, 0 for any other (it counts against the window)."""
    hub = stack.hub.store
    with hub.lock:
        if ("dataset", repo) not in hub.repos:
            return {}
        found = hub.repos[("dataset", repo)]
        history = hub.history(found, hub.resolve(found, "main"))
    out = {}
    for commit in history:
        if commit["author"] == "system":
            continue  # the Hub's "initial commit" of a new repo, not a commit request
        title = COMMIT_TITLE.search(commit["title"])
        when = datetime.fromisoformat(commit["date"].replace("Z", "+00:00")).timestamp()
        out[commit["oid"]] = (when, int(title.group(1)) if title else 0)
    return out


def bridge_run(stack: Stack, paths: list[str], report: Report, section: str,
               profile_to: Path | None = None) -> Outcome:
    stack.wait_idle(120)
    before, _ = committed_rows(stack, REPO)
    old_commits = repo_commits(stack, REPO)
    stack.clear_logs()
    profiler = profile.Profiler(stack.app.pid, profile_to, subprocesses=True) if profile_to else None
    cpu_before = profile.cpu_times(stack.app.pid)
    sent = load.drive({"url": f"{stack.app.url}/webhooks/langsmith?secret={LANGSMITH_WEBHOOK_SECRET}",
                       "bodies": paths, "concurrency": 4, "requests": len(paths)})
    first = min(sent["sent_at"])
    wait_until(lambda: jobs_done(stack), 1800, "the export jobs to finish", interval=0.1)
    buffered = time.time() - first
    stack.wait_idle(1800)
    seconds = time.time() - first
    user, system = (after - before for after, before in zip(profile.cpu_times(stack.app.pid), cpu_before))
    if profiler:
        profiler.stop()
    smith, hub, commit_times, statuses = counts(stack)
    rows, distinct = committed_rows(stack, REPO)
    if rows != distinct:
        report.note(f"{section}: the bridge's dataset holds {rows} rows for {distinct} distinct runs (duplicates).")
    if statuses.get(429):
        report.note(f"{section}: the bridge was answered 429 {statuses[429]} time(s).")
    commits = sorted(c for oid, c in repo_commits(stack, REPO).items() if oid not in old_commits)
    if len(commits) != hub["commits"]:
        report.note(f"{section}: {hub['commits']} commit request(s) for {len(commits)} new commit(s) on {REPO}.")
    return Outcome(len(paths), seconds, rows - before, smith, hub, commit_times, first, sent["latencies"], commits,
                   user + system, system, buffered)


def jobs_done(stack: Stack) -> bool:
    """No job queued or running: every row is mapped and buffered; the flush waits for its window (`scheduled`)."""
    jobs = stack.app.jobs()
    return jobs["queued"] == 0 and jobs["running"] == 0


def baseline_run(stack: Stack, paths: list[str], repo: str, workers: int = 2) -> Outcome:
    stack.smith.limiter.enabled = False  # GET /runs/{id} is limited to 30 per minute: see the note printed
    stack.clear_logs()
    spec = {"bodies": paths, "workers": workers, "repo": repo, "hub_url": stack.hub.base_url,
            "hub_token": HF_TOKEN, "langsmith_url": stack.smith.url, "langsmith_key": LS_KEY}
    proc = subprocess.Popen([sys.executable, "-m", "bench.baseline"], cwd=ROOT, env=base_env(stack.root),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(json.dumps(spec), timeout=1800)
    stack.smith.limiter.enabled = True
    if proc.returncode != 0:
        raise RuntimeError(f"baseline failed with {proc.returncode}")
    result = json.loads(out)
    smith, hub, commit_times, _ = counts(stack)
    files = [p for p in stack.hub.list_files(repo) if p.startswith("deliveries/")]
    return Outcome(len(paths), result["finished"] - result["started"], len(files), smith, hub, commit_times,
                   cpu=result["cpu"], system=result["system"])


def run(sizes, report: Report, latency: float = 0.0, profile_dir: Path | None = None) -> None:
    """`repeats` rounds, each on its own runs: the bridge's deliveries, then the baseline's. With `profile_dir`,
    py-spy samples the app during the bridge's rounds and the report gets the profile's top lines."""
    bridge_n = sizes.latency_bridge_deliveries if latency else sizes.export_deliveries
    baseline_n = sizes.latency_baseline_deliveries if latency else sizes.export_deliveries
    repeats = sizes.latency_repeats if latency else sizes.export_repeats
    section = f"4 export, +{latency * 1000:.0f} ms" if latency else "2 export"
    per_round = max(bridge_n, baseline_n)
    bridges, baselines = [], []
    with stack(payloads.bridge_config(REPO, FLUSH_SECONDS)) as s:
        ids = payloads.seed_runs(s.smith, repeats * per_round * 100, offload=True)
        paths = payloads.write_bodies(s.root / "deliveries", payloads.delivery_bodies(s.smith, ids))
        s.set_latency(latency)
        for round_no in range(repeats):
            chunk = paths[round_no * per_round:(round_no + 1) * per_round]
            where = profile_dir / f"export-{'latency-' if latency else ''}{round_no}.txt" if profile_dir else None
            bridges.append(bridge_run(s, chunk[:bridge_n], report, section, where))
            if where is not None:
                report.profiles.append(profile.summary(where if where.exists() else None,
                                                       f"{section}, round {round_no + 1}: the bridge's web and job processes"))
            baselines.append(baseline_run(s, chunk[:baseline_n], f"{BASELINE_REPO}-{round_no}"))
        s.set_latency(0.0)
    report_export(report, section, bridges, baselines, latency)


def windows_max(commit_times: list[float]) -> int:
    """The most commits that landed in one flush window (windows are aligned on the epoch, as the bridge's)."""
    per_window = Counter(math.floor(at / FLUSH_SECONDS) for at in commit_times)
    return max(per_window.values(), default=0)


def spread(values: list) -> str:
    """All repeats' values when they differ, so drift is visible; one value when they agree."""
    shown = [f"{v:,}" if isinstance(v, int) else f"{v:g}" if isinstance(v, float) else str(v) for v in values]
    return shown[0] if len(set(shown)) == 1 else "/".join(shown)


def report_export(report: Report, section: str, bridges: list[Outcome], baselines: list[Outcome],
                  latency: float) -> None:
    b, base = bridges[0], baselines[0]
    scale = b.deliveries / base.deliveries
    scaled = f" (measured on {base.deliveries}, ×{scale:g})" if scale != 1 else ""
    rounds = f"median of {len(bridges)}" if len(bridges) > 1 else "1 run"
    seconds, base_seconds = median([o.seconds for o in bridges]), median([o.seconds for o in baselines])
    report.add(section, f"{b.deliveries} deliveries × 100 offloaded runs: first delivery → all committed ({rounds})",
               f"{seconds:.1f} s", f"baseline {base_seconds * scale:.1f} s{scaled}")
    speed, base_speed = median([o.rows_per_second for o in bridges]), median([o.rows_per_second for o in baselines])
    report.add(section, f"rows per second ({rounds})", f"{speed:,.0f}",
               f"baseline {base_speed:,.0f} (bridge {speed / base_speed:.2f}×)",
               *((f"≥ {TARGET_ROWS_PER_SECOND:,}", speed >= TARGET_ROWS_PER_SECOND) if not latency else ("", None)))
    mapped = median([o.rows / o.buffered for o in bridges if o.buffered > 0])
    report.add(section, f"  rows per second until every row was mapped and buffered, the flush window's wait left out "
                        f"({rounds})", f"{mapped:,.0f}", f"baseline {base_speed:,.0f} (bridge {mapped / base_speed:.2f}×)")
    report_cpu(report, section, rounds, bridges, baselines)
    ratio = speed / base_speed
    report.add(section, f"rows per second, bridge ÷ baseline ({rounds})", f"{ratio:.2f}×", "",
               f"≥ {TARGET_RATIO[bool(latency)]:g}×", ratio >= TARGET_RATIO[bool(latency)])
    acks = [a for o in bridges for a in o.acks]
    report.add(section, "the deliveries' acknowledgements (c=4): p50 / p99 / slowest",
               f"{ms(percentile(acks, 50))} / {ms(percentile(acks, 99))} / {ms(max(acks))}")
    first_commit = [min(o.commit_times) - o.started for o in bridges if o.commit_times]
    report.add(section, "first Hub commit, after the first delivery",
               spread([round(t, 1) for t in first_commit]) + " s", f"flush window {FLUSH_SECONDS} s")
    report.add(section, "rows committed, every round", spread([o.rows for o in bridges]),
               f"baseline {spread([o.rows for o in baselines])}", f"= {b.runs:,}",
               all(o.rows == o.runs for o in bridges))
    worst = max(windows_max(o.window_commits) for o in bridges)
    report.add(section, f"Hub commits per round (flush window {FLUSH_SECONDS} s; max_rows_per_commit "
                        f"{payloads.MAX_ROWS_PER_COMMIT:,}, the default)",
               f"{spread([o.hub['commits'] for o in bridges])}, of which full batches "
               f"{spread([o.full_batches for o in bridges])}",
               f"baseline {spread([o.hub['commits'] * scale for o in baselines])}")
    report.add(section, f"  most commits in one flush window, full {payloads.MAX_ROWS_PER_COMMIT:,}-row batches "
                        "excluded (they go at once, by design)",
               f"{worst}", "", "≤ 1 per repo per window", worst <= 1)
    feedback = [o.per_100_runs(o.smith["feedback list"]) for o in bridges]
    report.add(section, "GET /feedback per 100 runs", spread(feedback),
               f"baseline {spread([o.per_100_runs(o.smith['feedback list']) for o in baselines])}", "≤ 1",
               max(feedback) <= 1)
    reads = [o.smith["run reads"] for o in bridges]
    report.add(section, "per-run reads GET /runs/{id}; POST /runs/query",
               f"{spread(reads)}; {spread([o.smith['runs query'] for o in bridges])}",
               f"baseline {spread([o.smith['run reads'] * scale for o in baselines])}; "
               f"{spread([o.smith['runs query'] * scale for o in baselines])}", "0", max(reads) == 0)
    report_api_ratio(report, section, bridges, baselines)
    objects = [o.smith["objects"] / o.runs for o in bridges]
    report.add(section, "object fetches per offloaded run (apart from API requests)", spread(objects),
               f"baseline {spread([o.smith['objects'] / o.runs for o in baselines])}", "≤ 2", max(objects) <= 2)
    report.add(section, "Hub requests per 100 runs (all kinds)",
               spread([o.per_100_runs(sum(o.hub.values())) for o in bridges]),
               f"baseline {spread([o.per_100_runs(sum(o.hub.values())) for o in baselines])}")


def report_cpu(report: Report, section: str, rounds: str, bridges: list[Outcome],
               baselines: list[Outcome]) -> None:
    ours, theirs = median([o.cpu_per_row for o in bridges]), median([o.cpu_per_row for o in baselines])
    system = median([o.system / o.rows for o in bridges if o.rows])
    base_system = median([o.system / o.rows for o in baselines if o.rows])
    report.add(section, f"app CPU per committed row (web + job process), user + system from /proc/<pid>/stat ({rounds})",
               f"{ours * 1000:.2f} ms ({spread([round(o.cpu_per_row * 1000, 2) for o in bridges])}), "
               f"of which system {system * 1000:.2f} ms",
               f"baseline script {theirs * 1000:.2f} ms, of which system {base_system * 1000:.2f} ms",
               f"≤ {TARGET_CPU_PER_ROW * 1000:g} ms", ours <= TARGET_CPU_PER_ROW)


def report_api_ratio(report: Report, section: str, bridges: list[Outcome], baselines: list[Outcome]) -> None:
    ours = max(o.per_100_runs(o.api_requests) for o in bridges)
    theirs = min(o.per_100_runs(o.api_requests) for o in baselines)
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(bridges[0].smith.items()) if k != "objects")
    report.add(section, f"LangSmith API requests per 100 runs (round 1: {kinds})", f"{ours:g}",
               f"baseline {theirs:g} (bridge 1/{theirs / ours:.0f})", "≤ 1/50 of baseline", ours * 50 <= theirs)
    # Feedback links are a feature the baseline does not have; without their token requests the work is the same.
    same_work = max(o.per_100_runs(o.api_requests - o.smith["feedback tokens"]) for o in bridges)
    report.add(section, "  the same, without POST /feedback/tokens (feedback links; the baseline makes none)",
               f"{same_work:g}", f"baseline {theirs:g} (bridge 1/{theirs / same_work:.0f})")
