"""`python -m bench [--quick] [--only ack,upload,export,latency,backfill] [--out bench/results.md] [--profile DIR]`

Runs every benchmark, prints one table, and writes the Markdown for the README's "Performance" section (a full run
writes bench/results.md; a --quick run only prints unless --out is given).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ["LANGSMITH_TRACING"] = "false"  # the baseline and the emulators' SDK-facing code must never trace

from . import ROOT, ack, backfill, exports, payloads, upload  # noqa: E402
from .report import Report, machine  # noqa: E402
from .stack import USER, start_bare, stack  # noqa: E402

ALL = ("ack", "upload", "export", "latency", "backfill")
LATENCY = 0.05


@dataclass(frozen=True)
class Sizes:
    rounds: int = 3                       # quiet acknowledgement rounds (medians are over these)
    c1_requests: int = 200                # per round, at concurrency 1
    c32_per_worker: int = 20              # per round, at concurrency 32 (640 requests)
    warmup: int = 3                       # per worker, not measured
    upload_rows: int = 20_000
    bg_deliveries: int = 100              # export deliveries (100 runs each) running in the background phase
    bg_upload_rows: int = 20_000
    export_deliveries: int = 100          # of 100 runs each
    export_repeats: int = 3
    latency_bridge_deliveries: int = 10   # +50 ms per upstream call: fewer, and said so in the table
    latency_baseline_deliveries: int = 10
    latency_repeats: int = 1
    backfill_runs: int = 10_000           # one project's runs, back-filled through the v2 runs API


QUICK = Sizes(rounds=1, c1_requests=40, c32_per_worker=4, warmup=1, upload_rows=2_000, bg_deliveries=10,
              bg_upload_rows=2_000, export_deliveries=10, export_repeats=1, latency_bridge_deliveries=2,
              latency_baseline_deliveries=2, backfill_runs=2_500)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few requests, small files (about a minute)")
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument("--out", type=Path, default=None, help="where to write the Markdown table")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="sample the app with py-spy during the export rounds and the c=32 acknowledgements "
                             "(raw stacks in DIR; the top lines go into the table's Markdown)")
    return parser.parse_args(argv)


def run_shared_stack(chosen: set[str], sizes: Sizes, report: Report, profile_dir: Path | None) -> None:
    """Acknowledgement latency (quiet, then with background work) and the experiment upload share one bridge."""
    with stack(payloads.bridge_config(f"{USER}/ack-feedback")) as s:
        bare = start_bare(s.root)
        try:
            endpoints = ack.prepare(s, bare) if "ack" in chosen else []
            if endpoints:
                step("1 acknowledgement latency, quiet")
                ack.report_quiet(endpoints, ack.quiet(endpoints, sizes, s, profile_dir, report), report, sizes.rounds)
            if "upload" in chosen:
                step("3 experiment upload")
                upload.run(s, sizes, report)
            if endpoints:
                step("1 acknowledgement latency, with background work")
                ack.background(s, endpoints, sizes, report, profile_dir)
        finally:
            bare.stop()


def step(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def notes(report: Report, sizes: Sizes, chosen: set[str]) -> None:
    report.note("Emulators: the sandbox's Hub and LangSmith emulators (bridge.sandbox) run in the benchmark's own "
                "process, each served by its `ServerHandle` (uvicorn on loopback, TCP_NODELAY); their work, e.g. "
                "building an upload's experiment, is part of the times measured.")
    if "ack" in chosen:
        report.note("Acknowledgement: the bridge (`python app.py --no-share`) and a bare `huggingface_hub."
                    "WebhooksServer` with no-op async handlers run as subprocesses on loopback; load comes from "
                    "another process (one keep-alive connection per thread). Quiet-phase requests re-deliver "
                    "known work (answered `duplicate` after the full authenticate/read/parse/route/SQLite path).")
    if {"export", "latency"} & chosen:
        report.note("Export: the bridge runs with the sandbox demo's export settings (presets runs, sft, "
                    "preference, kto; feedback links; redaction; flush window 5 s) and 2 job workers, against the "
                    "LangSmith emulator with its rate limits ON (the bridge got no 429 unless noted). The baseline "
                    "runs with rate limits OFF: LangSmith's real GET /runs/{id} limit is 30 per 60 s per key, so "
                    "its 100 reads per delivery would take ≥ 3 min per delivery (≥ 5.6 h for 10,000 runs); "
                    "POST /runs/query is 15 per 10 s.")
        report.note("Feedback: a user_score on every run and a correction on every third (133 items per 100 runs); "
                    "GET /feedback returns at most 100 items per page, so 100 runs need 2 pages.")
    if "backfill" in chosen:
        report.note("Back-fill: the bridge in the benchmark's process (its 2 job workers) back-fills one project's "
                    "runs (every preset, rate limits ON) through the v2 runs API: 1000 runs per POST "
                    "/api/v2/runs/query, only the fields an export reads; the v1 API pages 100 at a time.")
    if "latency" in chosen:
        report.note(f"Latency: {LATENCY * 1000:.0f} ms added to every request the emulators receive "
                    "(Recorder.latency), for the bridge and the baseline alike, on "
                    f"{sizes.latency_bridge_deliveries} and {sizes.latency_baseline_deliveries} deliveries (not "
                    f"{sizes.export_deliveries}, to keep the run short: a delivery's 200 objects cost the bridge "
                    f"200 round trips, {exports.ObjectFetcher.THREADS} at a time, so ≥ {math.ceil(200 / exports.ObjectFetcher.THREADS)} "
                    f"× {LATENCY * 1000:.0f} ms per delivery).")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = chosen - set(ALL)
    if unknown:
        print(f"error: unknown benchmark(s) {sorted(unknown)}; choose from {', '.join(ALL)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    sizes = QUICK if args.quick else Sizes()
    facts = machine()
    report = Report()
    started = time.time()
    if {"ack", "upload"} & chosen:
        run_shared_stack(chosen, sizes, report, args.profile)
    if "export" in chosen:
        step("2 export throughput and calls")
        exports.run(sizes, report, profile_dir=args.profile)
    if "latency" in chosen:
        step(f"4 export with +{LATENCY * 1000:.0f} ms per upstream call")
        exports.run(sizes, report, latency=LATENCY)
    if "backfill" in chosen:
        step(f"5 back-fill of {sizes.backfill_runs:,} runs")
        backfill.run(sizes.backfill_runs, report)
    notes(report, sizes, chosen)
    elapsed = time.time() - started
    print(report.console(facts))
    print(f"\nTotal time: {elapsed:.0f} s ({'quick' if args.quick else 'full'} run)")
    title = f"Benchmarks ({'quick smoke run' if args.quick else 'python -m bench'}, {time.strftime('%Y-%m-%d')})"
    markdown = report.markdown(facts, title)
    print("\n" + markdown)
    out = args.out or (None if args.quick else ROOT / "bench" / "results.md")
    if out:
        out.write_text(markdown + f"\nTotal time {elapsed:.0f} s.\n", encoding="utf-8")
        print(f"Wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
