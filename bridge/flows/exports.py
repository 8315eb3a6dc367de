"""Job kinds `export` and `flush`: LangSmith runs -> rows buffered in the state dir -> few commits to a Hub dataset.

`export` (one per delivery) completes the runs (object URLs, else batched /runs/query), joins their feedback by
run id, adds presigned feedback links, redacts, maps every preset and buffers the rows durably. `flush` (one per
repo per flush window) commits what is buffered as new parquet shards.

Exactly once: a run id is buffered at most once per repo (UNIQUE), skipped when already exported, and the exported
set is rebuilt from the repo's own `runs` shards when the state dir is new. A shard's name is derived from the run
ids it holds, so a flush retried after a crash finds its shard already in the repo instead of writing it twice.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow.parquet as pq

from .. import __version__
from ..errors import FormatError, UpstreamError
from ..formats.card import render_card, shard_path
from ..formats.redact import Redactor
from ..formats.runs import group_feedback, offloaded_payload_urls, run_row, run_web_url
from ..formats.training import preset_rows, to_parquet_bytes, to_table
from ..ledger import iso_time
from ..settings import ExportTarget
from ..tracing import step

log = logging.getLogger("bridge.flows.exports")

FLUSH = "flush"
RUNS_PREFIX = "runs/"


# ---------------------------------------------------------------- export: runs -> buffered rows


def fetch_objects(runtime: Any, runs: list[dict], counts: dict) -> list[dict]:
    """Fills offloaded inputs/outputs from their object URLs, many at once; returns the runs still missing some."""
    fetcher = runtime.smith.objects
    wanted = [(run, field, url) for run in runs for field, url in offloaded_payload_urls(run).items()
              if run.get(field) is None]

    def fetch(item: tuple[dict, str, str]) -> bool:
        run, field, url = item
        try:
            run[field] = json.loads(fetcher.fetch(url))
            return True
        except (UpstreamError, ValueError) as exc:
            log.info("object URL for run %s %s failed (%s); will query the run", run["id"], field, exc)
            return False

    if wanted:
        counts["objects_fetched"] += sum(fetcher.map(fetch, wanted))
    return [run for run in runs if run.get("inputs") is None or run.get("outputs") is None]


def complete_runs(runtime: Any, runs: list[dict], counts: dict) -> list[dict]:
    """Fills inputs/outputs that LangSmith offloaded: object URLs first, then one run query per 1000 runs."""
    missing = fetch_objects(runtime, runs, counts)
    if missing:
        fetched = {str(r["id"]): r for r in runtime.smith.runs_by_id(missing)}
        counts["runs_queried"] += len(missing)
        for run in missing:
            full = fetched.get(str(run["id"]), {})
            for field in ("inputs", "outputs"):
                if run.get(field) is None:
                    run[field] = full.get(field)
    return runs


def feedback_links(runtime: Any, target: ExportTarget, run_ids: list[str]) -> dict[str, list[dict]]:
    links = target.feedback_links
    if not links or not run_ids:
        return {}
    expires = datetime.now(timezone.utc) + timedelta(hours=links.expires_hours)
    entries = [{"run_id": rid, "feedback_key": key, "expires_at": expires.isoformat()}
               for rid in run_ids for key in links.keys]
    grouped: dict[str, list[dict]] = {}
    for token in runtime.smith.create_tokens(entries):
        grouped.setdefault(token["run_id"], []).append(
            {"key": token["feedback_key"], "url": token["url"], "expires_at": token["expires_at"]})
    return grouped


def rows_for_target(runtime: Any, target: ExportTarget, rule_id: str, runs: list[dict],
                    feedback: dict[str, list[dict]], counts: dict) -> list[tuple[str, dict, str | None]]:
    redactor = Redactor(target.redact)
    links = feedback_links(runtime, target, [str(r["id"]) for r in runs])
    web = runtime.smith.web_url
    out = []
    for run in runs:
        rid = str(run["id"])
        clean_run = redactor.apply(run)
        clean_feedback = [redactor.apply(f) for f in feedback.get(rid, [])]
        try:
            per_preset = {"runs": [run_row(clean_run, rule_id=rule_id, feedback=clean_feedback,
                                           feedback_urls=links.get(rid, []), web_url=run_web_url(web, run))]}
        except FormatError as exc:
            counts["skipped"][str(exc)] = counts["skipped"].get(str(exc), 0) + 1
            continue
        for preset in target.presets:
            if preset == "runs":
                continue
            rows, reason = preset_rows(preset, clean_run, clean_feedback,
                                       positive_threshold=target.positive_threshold)
            per_preset[preset] = rows
            if reason:
                counts["preset_skips"].setdefault(preset, {})
                counts["preset_skips"][preset][reason] = counts["preset_skips"][preset].get(reason, 0) + 1
        out.append((rid, per_preset, per_preset["runs"][0].get("end_time")))
    for kind, n in redactor.counts.items():
        counts["redactions"][kind] = counts["redactions"].get(kind, 0) + n
    return out


def flush_delay(target: ExportTarget, now: float) -> tuple[str, float]:
    """(window id, seconds until the window closes): at most one commit per repo per window."""
    if target.flush_seconds <= 0:
        return f"now-{now:.6f}", 0.0
    window = math.floor(now / target.flush_seconds)
    return str(window), (window + 1) * target.flush_seconds - now


def schedule_flush(runtime: Any, target: ExportTarget, trigger: str) -> int:
    store, ledger = runtime.store, runtime.ledger
    window, delay = flush_delay(target, store.clock())
    if ledger.pending(target.repo) >= target.max_rows_per_commit:
        window, delay = f"full-{ledger.buffered(target.repo, 1)[0]['id']}", 0.0
    # Priority 0: once due, committing what waits goes before mapping more runs into the buffer.
    job, _ = store.enqueue(FLUSH, f"{FLUSH}:{target.repo}:{window}", {"repo": target.repo}, trigger=trigger,
                           subject=target.repo, delay=delay, priority=0)
    return job.id


def delivery_runs(runtime: Any, payload: dict) -> tuple[str, list, list]:
    try:
        body = json.loads(runtime.store.delivery(payload["delivery_id"])["body"])
    except RecursionError:
        raise FormatError(f"delivery {payload['delivery_id']}", None, "the body is nested too deeply") from None
    return body["rule_id"], body.get("runs") or [], body.get("threads") or []


def new_counts(runs: int = 0, threads: int = 0) -> dict:
    return {"runs": runs, "without_id": 0, "already_exported": 0, "objects_fetched": 0, "runs_queried": 0,
            "feedback": 0, "buffered": 0, "redactions": {}, "preset_skips": {}, "skipped": {}, "threads": threads}


def export_runs(rt: Any, rule_id: str | None, raw_runs: list, targets: list[ExportTarget], job: Any,
                counts: dict, schedule: bool = True) -> list[int]:
    """The one path every run takes to a dataset (webhook deliveries and back-fills alike); returns flush job ids.

    With `schedule=False` a flush is only scheduled once a full commit's worth of rows waits (a back-fill
    schedules its own at the end, instead of one per page)."""
    runs, seen = [], set()
    for run in raw_runs:
        if not isinstance(run, dict) or not run.get("id"):
            counts["without_id"] += 1
        elif str(run["id"]) not in seen:
            seen.add(str(run["id"]))
            runs.append(dict(run))
    ids = [str(r["id"]) for r in runs]
    todo = {}
    for target in targets:
        known = rt.ledger.known(target.repo, ids) if ids else set()
        todo[target.repo] = [r for r in runs if str(r["id"]) not in known]
        counts["already_exported"] += len(known)
    needed = {str(r["id"]): r for rs in todo.values() for r in rs}
    if needed:
        with step("read runs", "retriever", runs=len(needed)):
            complete_runs(rt, list(needed.values()), counts)
        with step("read feedback", "retriever", runs=len(needed)):
            feedback_items = rt.smith.feedback_for(list(needed))
        counts["feedback"] += len(feedback_items)
        feedback = group_feedback(feedback_items)
        for target in targets:
            with step(f"map rows for {target.repo}", repo=target.repo):
                rows = rows_for_target(rt, target, rule_id or target.current_rule_id, todo[target.repo], feedback, counts)
            counts["buffered"] += rt.ledger.buffer(target.repo, rows, job.id)
    due = [t for t in targets if rt.ledger.pending(t.repo) >= (1 if schedule else t.max_rows_per_commit)]
    return [schedule_flush(rt, t, job.trigger) for t in due]


def run_export(job: Any, ctx: Any) -> dict:
    rt = ctx.services
    rule_id, raw_runs, threads = delivery_runs(rt, job.payload)
    targets = rt.settings.config.exports_for(rule_id)
    counts = new_counts(len(raw_runs), len(threads))
    flush_jobs = export_runs(rt, rule_id, raw_runs, targets, job, counts)
    return {"rule_id": rule_id, "targets": [t.repo for t in targets], "counts": counts, "flush_jobs": flush_jobs}


# ---------------------------------------------------------------- flush: buffered rows -> one commit


def shard_id(run_ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(run_ids)).encode()).hexdigest()[:16]


def sync_exported(runtime: Any, repo: str, head: str | None, tree: dict[str, str]) -> None:
    """Learns which runs the repo already holds by reading the run_id column of `runs` shards not seen yet."""
    ledger, hub = runtime.ledger, runtime.hub
    synced, card = ledger.repo_state(repo)
    shards = {p for p in tree if p.startswith(RUNS_PREFIX) and p.endswith(".parquet")}
    for path in sorted(shards - synced):
        data = hub.read_bytes(repo, "dataset", head or "main", path)
        table = pq.read_table(io.BytesIO(data), columns=["run_id", "end_time"])
        ends = [iso_time(e) for e in table.column("end_time").to_pylist()]
        ledger.mark_exported(repo, list(zip(table.column("run_id").to_pylist(), ends)))
    ledger.save_repo_state(repo, shards | synced, card)


def build_shards(target: ExportTarget, rows: list[Any]) -> dict[str, bytes]:
    """One parquet shard per preset that has rows (`runs` always), named after the run ids they hold."""
    sid = shard_id([r["run_id"] for r in rows])
    when = datetime.fromtimestamp(rows[0]["created_at"], timezone.utc)
    decoded = [json.loads(r["rows"]) for r in rows]
    files = {}
    for preset in target.presets:
        preset_rows_ = [row for per_run in decoded for row in per_run.get(preset, [])]
        if preset_rows_ or preset == "runs":
            files[shard_path(preset, when, sid)] = to_parquet_bytes(to_table(preset, preset_rows_))
    return files


def build_card(target: ExportTarget, rule_ids: list[str], paths: set[str]) -> str:
    """The dataset card lists a config only for presets that have a shard, so every config loads."""
    presets = [p for p in target.presets if any(path.startswith(f"{p}/") for path in paths)]
    return render_card(target.repo, presets, rule_ids, __version__, positive_threshold=target.positive_threshold,
                       redaction=[r if isinstance(r, str) else "custom pattern" for r in target.redact])


def flush_once(runtime: Any, target: ExportTarget, rule_ids: list[str], counts: dict) -> bool:
    """Commits one batch; returns False when nothing was left to commit.

    Syncing first drops from the buffer every run the repo already holds, including a batch whose commit landed
    just before a crash, so what is committed here is always new.
    """
    ledger, hub, repo = runtime.ledger, runtime.hub, target.repo
    head, tree = hub.head_and_tree(repo)
    sync_exported(runtime, repo, head, tree)
    rows = ledger.buffered(repo, target.max_rows_per_commit)
    if not rows:
        return False
    files = build_shards(target, rows)
    card = build_card(target, rule_ids, set(tree) | set(files))
    synced, known_card = ledger.repo_state(repo)
    if card != known_card and hub.read_text(repo, "README.md", tree) != card:
        files["README.md"] = card.encode()
    with step(f"commit to {repo}", repo=repo, files=len(files), runs=len(rows)):
        oid = hub.commit(repo, files, f"Add {len(rows)} run(s)", parent=head)
    runtime.store.remember_commit(oid, repo)
    shards = {p for p in files if p.startswith(RUNS_PREFIX)}
    ledger.save_repo_state(repo, synced | shards, card)
    ledger.mark_exported(repo, [(r["run_id"], r["end_time"]) for r in rows])
    ledger.remember_recent(repo, rows)
    runtime.metrics.rows_exported(repo, len(rows))
    counts["commits"] += 1
    counts["runs_committed"] += len(rows)
    return True


_flush_locks: dict[str, threading.Lock] = {}
_flush_locks_guard = threading.Lock()


def repo_lock(repo: str) -> threading.Lock:
    """One flush per repo at a time: two workers flushing one repo would build the same shards twice."""
    with _flush_locks_guard:
        return _flush_locks.setdefault(repo, threading.Lock())


def run_flush(job: Any, ctx: Any) -> dict:
    with repo_lock(job.payload["repo"]):
        return flush_repo(job, ctx)


def flush_repo(job: Any, ctx: Any) -> dict:
    rt, repo = ctx.services, job.payload["repo"]
    targets = [t for t in rt.settings.config.exports if t.repo == repo]
    if not targets:
        return {"repo": repo, "note": "no exports entry writes to this repo any more; rows stay buffered"}
    target = targets[0]
    rt.hub.ensure_dataset(repo, target.private)
    counts = {"commits": 0, "runs_committed": 0}
    rule_ids = sorted({t.current_rule_id for t in targets if t.current_rule_id})
    for attempt in range(3):
        try:
            while flush_once(rt, target, rule_ids, counts):
                if rt.ledger.pending(repo) < target.max_rows_per_commit:
                    break  # the rest waits for the next window: at most one commit per window
            break
        except UpstreamError as exc:
            if exc.status not in (409, 412) or attempt == 2:
                raise
            log.info("%s moved while committing; rebasing onto the new head", repo)
    if rt.ledger.pending(repo):
        schedule_flush(rt, target, job.trigger)
    return {"repo": repo, **counts, "commit_url": rt.hub.web_url(repo, "dataset", "/tree/main"),
            "pending": rt.ledger.pending(repo)}


def resume(runtime: Any) -> None:
    """At start: buffered rows whose flush job is gone (state from an older run) get one scheduled."""
    for repo in runtime.ledger.repos_with_buffer():
        targets = [t for t in runtime.settings.config.exports if t.repo == repo]
        if targets:
            schedule_flush(runtime, targets[0], "reconcile")

