"""3. Experiment upload: an lm-eval samples file pushed to the sandbox Hub, uploaded by the bridge to LangSmith.

Time is from the end of the push (the Hub then sends its webhook) to the bridge's job succeeding. Memory is the
app's resident set (web + job process) from /proc: sampled every 50 ms, plus the kernel's high-water mark (VmHWM), which
catches a peak between two samples.
"""

from __future__ import annotations

import threading
import time

from . import payloads
from .report import Report, median
from .stack import USER, Stack, wait_until

RSS_LIMIT_MB = 300
DATASET = "upload-evals/mmlu_generative_philosophy"  # the rule's default dataset name: {repo_name}/{task}


class RssSampler(threading.Thread):
    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack, self.samples, self.stopped = stack, [], threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.samples.append(self.stack.app.memory_kib()["VmRSS"])
            self.stopped.wait(0.05)


DONE = ("succeeded", "failed", "dead")


def finished(stack: Stack, before: dict) -> bool:
    """One more job has ended (the push's experiment job: nothing else runs meanwhile)."""
    jobs = stack.app.jobs()
    return sum(jobs[state] for state in DONE) > sum(before[state] for state in DONE)


def run(stack: Stack, sizes, report: Report) -> None:
    rows = sizes.upload_rows
    files = payloads.lm_eval_push(rows, "bench-org/upload-7b", "2026-11-21T12-00-00.000000")
    size = sum(len(data) for path, data in files.items() if path.endswith(".jsonl"))
    repo = f"{USER}/upload-evals"
    stack.hub.create_repo(repo)
    stack.wait_idle(120)
    idle = idle_rss(stack)
    high_before = stack.app.memory_kib()["VmHWM"]
    sampler = RssSampler(stack)
    sampler.start()
    stack.clear_logs()
    jobs_before = stack.app.jobs()
    stack.hub.commit(repo, files, message="Add results", author=USER)
    pushed = time.time()
    wait_until(lambda: finished(stack, jobs_before), 600, "the experiment upload", interval=0.05)
    seconds = time.time() - pushed
    sampler.stopped.set()
    sampler.join()
    high_after = stack.app.memory_kib()["VmHWM"]
    peak = max(max(sampler.samples), high_after if high_after > high_before else 0)
    report_upload(stack, report, rows, size, seconds, idle, peak, pushed)


def idle_rss(stack: Stack) -> int:
    samples = []
    for _ in range(20):
        samples.append(stack.app.memory_kib()["VmRSS"])
        time.sleep(0.05)
    return int(median(samples))


def report_upload(stack: Stack, report: Report, rows: int, size: int, seconds: float, idle: int, peak: int,
                  pushed: float) -> None:
    uploads = [r for r in stack.smith.recorder.requests if r.path.endswith("/datasets/upload-experiment")]
    experiments = stack.smith.experiments(DATASET)
    uploaded = len(experiments[0]["rows"]) if experiments else 0
    body = sum(r.body_bytes for r in uploads)
    api = len(stack.smith.recorder.requests)
    hub = len(stack.hub.recorder.requests)
    section = "3 upload"
    report.add(section, f"{rows:,}-row lm-eval file ({size / 1e6:.1f} MB): push → experiment uploaded",
               f"{seconds:.1f} s", f"{rows / seconds:,.0f} rows/s")
    if uploads:  # the emulator records a request when it arrives: what follows is the emulator storing 20,000 rows
        sent = uploads[0].at - pushed
        report.add(section, "  of which push → upload request sent (webhook, download, parse, body)", f"{sent:.1f} s",
                   f"the emulator's handling: {seconds - sent:.1f} s")
    report.add(section, "rows in the LangSmith experiment", f"{uploaded:,}", f"of {rows:,}", f"= {rows:,}",
               uploaded == rows)
    delta = (peak - idle) / 1024
    report.add(section, "app peak RSS above idle", f"{delta:.0f} MB", f"idle {idle / 1024:.0f} MB, "
               f"peak {peak / 1024:.0f} MB", f"< {RSS_LIMIT_MB} MB above idle", delta < RSS_LIMIT_MB)
    report.add(section, "upload request body", f"{body / 1e6:.1f} MB in {len(uploads)} request(s)",
               f"{body / max(rows, 1):,.0f} B/row; file {size / 1e6:.1f} MB")
    report.add(section, "upstream requests", f"LangSmith {api}, Hub {hub}")
