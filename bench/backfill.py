"""5. Back-fill: a project's runs -> a dataset through the v2 runs API, and how many run queries that takes.

The bridge runs in this process (its job workers, `build_runtime` as app.py does) against both emulators, with
LangSmith's rate limits ON. The figure that matters is the number of run-query requests: v2 pages hold 1000 runs,
so 10,000 runs need at most 11 (v1's 100 per page needed 100+, at 15 per 10 s).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from pathlib import Path

from bridge.runtime import build_runtime
from bridge.sandbox.hub import HubEmulator
from bridge.sandbox.langsmith_emu import LangSmithEmulator
from bridge.settings import Settings

from .payloads import PROJECT, seed_runs
from .report import Report
from .stack import HF_TOKEN, LS_KEY, USER, wait_until

REPO = f"{USER}/backfill-feedback"
CONFIG = f"""
exports:
  - rule_id: "00000000-0000-4000-8000-00000000b4c1"
    repo: "{REPO}"
    presets: [runs, sft, preference, kto]
    flush_seconds: 0
    max_rows_per_commit: 5000
reconcile_minutes: 0
"""
V2_QUERY = r"/api/v2/runs/query$"
V1_QUERY = r"^(/api/v1)?/runs/query$"


def run(runs: int, report: Report) -> None:
    root = Path(tempfile.mkdtemp(prefix="bridge-bench-backfill-"))
    hub, smith = HubEmulator(root / "hub", tokens={HF_TOKEN: USER}), LangSmithEmulator({LS_KEY})
    handles = [hub.serve(), smith.serve()]
    runtime = None
    try:
        seed_runs(smith, runs, offload=False)
        (root / "bridge.yaml").write_text(CONFIG)
        runtime = build_runtime(Settings.from_env(
            {"HF_ENDPOINT": handles[0].url, "HF_TOKEN": HF_TOKEN, "LANGSMITH_ENDPOINT": handles[1].url,
             "LANGSMITH_API_KEY": LS_KEY, "LANGSMITH_WEB_URL": handles[1].url, "BRIDGE_STATE_DIR": str(root / "state")},
            root / "bridge.yaml"))
        runtime.start_workers()
        started = time.monotonic()
        job, _ = runtime.store.enqueue("backfill", "bench-backfill", {"repo": REPO, "project": PROJECT},
                                       trigger="manual", subject=f"{PROJECT} → {REPO}")
        wait_until(lambda: runtime.store.get(job.id).state in ("succeeded", "failed", "dead")
                   and runtime.ledger.pending(REPO) == 0, timeout=900, what="the back-fill and its flushes")
        seconds = time.monotonic() - started
        report_backfill(report, runs, runtime.store.get(job.id), smith, seconds)
    finally:
        if runtime is not None:
            runtime.stop()
        for handle in handles:
            handle.stop()
        shutil.rmtree(root, ignore_errors=True)


def report_backfill(report: Report, runs: int, job, smith, seconds: float) -> None:
    section = "5 back-fill"
    queries = smith.recorder.count("POST", V2_QUERY) + smith.recorder.count("POST", V1_QUERY)
    limit = math.ceil(runs / 1000) + 1
    exported = (job.result or {}).get("counts", {}).get("runs", 0)
    report.add(section, f"run-query requests for {runs:,} runs", str(queries), "v1: ≥ " + str(math.ceil(runs / 100)),
               f"≤ {limit}", queries <= limit and job.state == "succeeded")
    report.add(section, "runs read; time to every row committed", f"{exported:,}; {seconds:.1f} s",
               "", "", exported == runs)
