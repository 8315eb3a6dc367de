"""Job kinds `export` and `flush`: LangSmith runs -> rows buffered in the state dir -> few commits to a Hub dataset.

`export` (one per delivery) completes the runs (object URLs, else batched /runs/query), joins their feedback by
run id, adds presigned feedback links, redacts, maps every preset and buffers the rows durably. `flush` (one per
repo per flush window) commits what is buffered as new parquet shards.

Exactly once (see `ledger`): a run is buffered at most once per repo and never once the repo holds it, a batch
never holds an exported run, and a landed commit is recorded in one transaction. Whenever the repo's head is not
the one the ledger recorded (a wiped state dir, a commit whose answer was lost), the new `runs` shards are read
before anything is committed, so their runs are never committed twice.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import pyarrow.parquet as pq

from .. import __version__
from ..errors import FormatError, UpstreamError
from ..feedback_watch import remember_projects
from ..formats.card import render_card, shard_path
from ..formats.redact import Redactor
from ..formats.run_text import feedback_preview
from ..formats.runs import (feedback_entry, feedback_fingerprint, feedback_page_url, group_feedback,
                            offloaded_payload_urls, run_row, run_web_url)
from ..formats.training import (CONFIGS, SCHEMAS, TRAINING_PRESETS, presets_rows, split_configs, to_parquet_bytes,
                               to_table)
from ..formats.upgrade import is_old_format, upgrade_rows
from ..ledger import decode_rows, iso_time
from ..settings import ExportTarget
from ..objects import ObjectRefused
from ..smith import EXPORT_SELECTS, batches
from ..tracing import step

log = logging.getLogger("bridge.flows.exports")

FLUSH = "flush"
RUNS_PREFIX = "runs/"


# ---------------------------------------------------------------- export: runs -> buffered rows


def parse_json(data: bytes | str) -> Any:
    """A stored body or a fetched object, by msgspec (several times faster than json on these sizes). What msgspec
    does not take (NaN, a lone surrogate escape) is left to json, which decides as before (ValueError)."""
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return json.loads(data)


def fetch_objects(runtime: Any, runs: list[dict], counts: dict) -> list[dict]:
    """Fills offloaded inputs/outputs from their object URLs, many at once; returns the runs still missing some."""
    fetcher = runtime.smith.objects
    wanted = [(run, field, url) for run in runs for field, url in offloaded_payload_urls(run).items()
              if run.get(field) is None]

    def fetch(item: tuple[dict, str, str]) -> bool:
        run, field, url = item
        try:
            run[field] = parse_json(fetcher.fetch(url))
            return True
        except ObjectRefused as exc:  # falls back to the runs query, like any failed fetch; the reason is shown
            refused = counts.setdefault("objects_refused", {})
            refused[exc.reason] = refused.get(exc.reason, 0) + 1
            return False
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


def feedback_links(runtime: Any, target: ExportTarget, runs: list[dict]) -> dict[str, list[dict]]:
    """Feedback links per run: the bridge's own page for each presigned token (`<public URL>/feedback/<token id>`),
    never the token URL itself, which records feedback on a plain GET (link scanners would vote). Tokens made before
    (a retried export, a run in two repos) are reused while they have at least half their validity left, so a retry
    never mints a second set. No public URL: no links (nothing could open them). `runs` are already redacted: the
    page shows what the dataset shows."""
    links = target.feedback_links
    # What upstreams and people outside can open (BRIDGE_PUBLIC_URL, before launch too); never the local URL.
    base = runtime.reachable_url or runtime.settings.public_url
    if not links or not runs or not base:
        return {}
    by_id = {str(r["id"]): r for r in runs}
    now = datetime.fromtimestamp(runtime.store.clock(), timezone.utc)
    stored = runtime.ledger.feedback_links(list(by_id), links.keys,
                                           (now + timedelta(hours=links.expires_hours / 2)).isoformat())
    expires = (now + timedelta(hours=links.expires_hours)).isoformat()
    wanted = [{"run_id": rid, "feedback_key": key, "expires_at": expires}
              for rid in by_id for key in links.keys if (rid, key) not in stored]
    created = runtime.smith.create_tokens(wanted) if wanted else []
    if created:
        runtime.ledger.save_feedback_links([{**t, "preview": feedback_preview(by_id[t["run_id"]])} for t in created])
    grouped: dict[str, list[dict]] = {}
    for token in [*stored.values(), *created]:
        grouped.setdefault(token["run_id"], []).append(
            {"key": token["feedback_key"], "url": feedback_page_url(base, token["id"]),
             "expires_at": token["expires_at"]})
    return grouped


def rows_for_target(runtime: Any, target: ExportTarget, rule_id: str, runs: list[dict],
                    feedback: dict[str, list[dict]], counts: dict) -> list[tuple[str, dict, str | None]]:
    redactor = Redactor(target.redact)
    # Text only: ids, dotted orders and times stay exactly as LangSmith sent them (recovery reads them back).
    clean_runs = [redactor.apply_run(run) for run in runs]
    links = feedback_links(runtime, target, clean_runs)
    web = runtime.smith.web_url
    exported_at = datetime.fromtimestamp(runtime.store.clock(), timezone.utc)
    out = []
    for run, clean_run in zip(runs, clean_runs):
        rid = str(run["id"])
        clean_feedback = [redactor.apply_feedback(f) for f in feedback.get(rid, [])]
        try:
            per_preset = {"runs": [run_row(clean_run, rule_id=rule_id, feedback=clean_feedback,
                                           feedback_urls=links.get(rid, []), web_url=run_web_url(web, run),
                                           exported_at=exported_at)]}
        except FormatError as exc:
            counts["skipped"][str(exc)] = counts["skipped"].get(str(exc), 0) + 1
            continue
        training = [p for p in target.presets if p != "runs"]
        built = presets_rows(training, clean_run, clean_feedback, positive_threshold=target.positive_threshold)
        for preset, (rows, reason) in built.items():
            per_preset[preset] = rows
            if reason:
                counts["preset_skips"].setdefault(preset, {})
                counts["preset_skips"][preset][reason] = counts["preset_skips"][preset].get(reason, 0) + 1
        out.append((rid, per_preset, per_preset["runs"][0].get("end_time")))
    for kind, n in redactor.counts.items():
        counts["redactions"][kind] = counts["redactions"].get(kind, 0) + n
    return out


def flush_delay(target: ExportTarget, now: float) -> float:
    """Seconds until the current flush window closes: at most one commit per repo per window."""
    if target.flush_seconds <= 0:
        return 0.0
    window = math.floor(now / target.flush_seconds)
    return (window + 1) * target.flush_seconds - now


def schedule_flush(runtime: Any, target: ExportTarget, trigger: str, exclude: int | None = None) -> int | None:
    """Makes sure a flush of the repo is queued for the end of the window (now, when a full commit waits).

    One queued flush per repo: asking again returns it, moved earlier when a full commit waits. `exclude` is the
    flush asking for its successor (it is still running). None when nothing is buffered."""
    pending = runtime.ledger.pending(target.repo)
    if not pending:
        return None
    delay = 0.0 if pending >= target.max_rows_per_commit else flush_delay(target, runtime.store.clock())
    # Priority 0: once due, committing what waits goes before mapping more runs into the buffer.
    job, _ = runtime.store.enqueue_once(FLUSH, target.repo, {"repo": target.repo}, trigger=trigger, delay=delay,
                                        priority=0, advance=True, exclude=exclude)
    return job.id


def delivery_runs(runtime: Any, payload: dict) -> tuple[str, list, list]:
    try:
        body = parse_json(runtime.store.delivery(payload["delivery_id"])["body"])
    except RecursionError:
        raise FormatError(f"delivery {payload['delivery_id']}", None, "the body is nested too deeply") from None
    return body["rule_id"], body.get("runs") or [], body.get("threads") or []


def new_counts(runs: int = 0, threads: int = 0) -> dict:
    return {"runs": runs, "without_id": 0, "already_exported": 0, "objects_fetched": 0, "runs_queried": 0,
            "feedback": 0, "buffered": 0, "refreshed": 0, "redactions": {}, "preset_skips": {}, "skipped": {}, "threads": threads}


CHUNK = 200  # runs completed, mapped and buffered at a time: fetched objects of a large delivery are not all held


def unique_runs(raw_runs: list, counts: dict) -> list[dict]:
    runs, seen = [], set()
    for run in raw_runs:
        if not isinstance(run, dict) or not run.get("id"):
            counts["without_id"] += 1
        elif str(run["id"]) not in seen:
            seen.add(str(run["id"]))
            runs.append(run)
    return runs


def fingerprints(target: ExportTarget, run_ids: list[str], feedback: dict[str, list[dict]]) -> dict[str, str | None]:
    """Each run's feedback fingerprint as the target's `runs` row would hold it (redacted, in row form)."""
    redactor = Redactor(target.redact)
    prints: dict[str, str | None] = {}
    for rid in run_ids:
        try:
            prints[rid] = feedback_fingerprint([feedback_entry(redactor.apply_feedback(f))
                                                for f in feedback.get(rid, [])])
        except FormatError:
            prints[rid] = None  # unreadable feedback: the run is skipped when mapped
    return prints


def export_chunk(rt: Any, rule_id: str | None, chunk: list[dict], targets: list[ExportTarget], job: Any,
                 counts: dict) -> None:
    """Maps and buffers the chunk's runs each repo does not hold yet, and refreshes the rows of runs it holds whose
    feedback changed since they were mapped (a rule delivering a run again, a reconcile finding new feedback)."""
    ids = [str(r["id"]) for r in chunk]
    read_at = rt.store.clock()  # feedback listed from now on: a row of feedback read earlier never replaces it
    with step("read feedback", "retriever", runs=len(ids)):
        feedback_items = rt.smith.feedback_for(ids)
    counts["feedback"] += len(feedback_items)
    feedback = group_feedback(feedback_items)
    new, changed = {}, {}
    for target in targets:
        held = rt.ledger.fingerprints(target.repo, ids)
        now = fingerprints(target, list(held), feedback)  # only runs held: a new run's comes with its row
        new[target.repo] = [r for r in chunk if str(r["id"]) not in held]
        changed[target.repo] = [r for r in chunk if str(r["id"]) in held and held[str(r["id"])] != now[str(r["id"])]]
        counts["already_exported"] += len(held) - len(changed[target.repo])
    needed = {str(r["id"]): dict(r) for todo in (new, changed) for rs in todo.values() for r in rs}  # filled in
    if not needed:
        return
    with step("read runs", "retriever", runs=len(needed)):
        complete_runs(rt, list(needed.values()), counts)
    for target in targets:
        for todo, store in ((new, rt.ledger.buffer), (changed, rt.ledger.refresh)):
            runs = [needed[str(r["id"])] for r in todo[target.repo]]
            if not runs:
                continue
            with step(f"map rows for {target.repo}", repo=target.repo):
                rows = rows_for_target(rt, target, rule_id or target.current_rule_id, runs, feedback, counts)
            # A run a flush committed since `held` was read is not buffered again: `buffer` checks in its
            # transaction, and `refresh` turns a row for a run exported meanwhile into a rewrite.
            stored = store(target.repo, rows, job.id, read_at=read_at)
            counts["buffered" if store == rt.ledger.buffer else "refreshed"] += stored


def export_runs(rt: Any, rule_id: str | None, raw_runs: list, targets: list[ExportTarget], job: Any,
                counts: dict, schedule: bool = True) -> list[int]:
    """The one path every run takes to a dataset (webhook deliveries and back-fills alike); returns flush job ids.

    With `schedule=False` a flush is only scheduled once a full commit's worth of rows waits (a back-fill
    schedules its own at the end, instead of one per page)."""
    runs = unique_runs(raw_runs, counts)
    for chunk in batches(runs, CHUNK):
        export_chunk(rt, rule_id, chunk, targets, job, counts)
    due = [t for t in targets if rt.ledger.pending(t.repo) >= (1 if schedule else t.max_rows_per_commit)]
    return [fid for fid in (schedule_flush(rt, t, job.trigger) for t in due) if fid is not None]


def refresh_runs(rt: Any, targets: list[ExportTarget], runs: list[dict], job: Any, counts: dict) -> list[int]:
    """Re-maps runs whose feedback may have changed (found by a reconcile, or rated on the Review page) in the
    repos that hold them, and schedules the flushes that rewrite their rows. `runs` need `id`, `session_id` and
    `start_time`: they are read again (a run's own fields, as exported), then go the way a delivery's runs go, so an
    unchanged fingerprint costs nothing more. A repo that does not hold a run is not given it."""
    if not runs:
        return []
    full = rt.smith.runs_by_id(runs, selects=EXPORT_SELECTS)
    counts["runs_queried"] += len(runs)
    flushes: list[int] = []
    for target in targets:
        held = rt.ledger.known(target.repo, [str(r["id"]) for r in full])
        if held:
            flushes += export_runs(rt, None, [r for r in full if str(r["id"]) in held], [target], job, counts)
    return flushes


def refresh_rated_run(rt: Any, run_id: str, job: Any) -> dict:
    """After a rating sent from the bridge, the run's rows are refreshed at once (the bridge knows of the change),
    in every repo whose recent runs show it. A failure here leaves the rating recorded; the next reconcile finds
    the change instead."""
    rows = rt.ledger.recent_run(run_id)
    targets = [t for t in (rt.settings.config.repo_target(r["repo"]) for r in rows) if t is not None]
    if not rows or not targets:
        return {}
    counts = new_counts(1)
    run = {"id": run_id, "session_id": rows[0].get("session_id"), "start_time": rows[0].get("start_time")}
    try:
        flushes = refresh_runs(rt, targets, [run], job, counts)
    except UpstreamError as exc:
        log.warning("run %s: rows not refreshed after the rating (%s); the next reconcile will", run_id, exc)
        return {"dataset": f"Not refreshed yet ({exc}); the next reconcile will pick the change up."}
    return {"refreshed": counts["refreshed"], "flush_jobs": flushes}


def run_export(job: Any, ctx: Any) -> dict:
    rt = ctx.services
    rule_id, raw_runs, threads = delivery_runs(rt, job.payload)
    targets = rt.settings.config.exports_for(rule_id)
    counts = new_counts(len(raw_runs), len(threads))
    remember_projects(rt.store, [t.repo for t in targets], raw_runs)  # where its late feedback is looked for
    flush_jobs = export_runs(rt, rule_id, raw_runs, targets, job, counts)
    return {"rule_id": rule_id, "targets": [t.repo for t in targets], "counts": counts, "flush_jobs": flush_jobs}


# ---------------------------------------------------------------- flush: buffered rows -> one commit


def shard_id(run_ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(run_ids)).encode()).hexdigest()[:16]


def read_shard_runs(runtime: Any, repo: str, head: str, path: str) -> tuple[list[tuple], bool]:
    """The runs a `runs` shard holds, each as (run id, end time, feedback fingerprint), and whether the shard was
    written in an older format."""
    data = runtime.hub.read_bytes(repo, "dataset", head, path)
    table = pq.read_table(io.BytesIO(data), columns=["run_id", "end_time", "feedback"])
    ends = [iso_time(e) for e in table.column("end_time").to_pylist()]
    prints = [feedback_fingerprint(f or []) for f in table.column("feedback").to_pylist()]
    stale = not pq.read_schema(io.BytesIO(data)).equals(SCHEMAS["runs"], check_metadata=False)
    return list(zip(table.column("run_id").to_pylist(), ends, prints)), stale


def sync_repo(runtime: Any, repo: str) -> str | None:
    """Catches the ledger up with the repo and returns its head.

    While only the bridge writes, the head is the commit it recorded and nothing is listed: a flush's cost does not
    grow with the repo. A different head (a wiped state dir, a commit whose answer was lost, a person's commit) lists
    the top level (which presets exist) and every preset folder, forgets shards that are gone, and reads the run
    ids of every `runs` shard not read before."""
    ledger, hub = runtime.ledger, runtime.hub
    head = hub.head(repo)
    state = ledger.repo_state(repo)
    if head is None or head == state.head:
        return head
    top = set(hub.list_paths(repo, head, None, recursive=False))
    presets = {p for p in CONFIGS if p in top}
    listed = [path for preset in sorted(presets) for path in hub.list_paths(repo, head, preset)
              if path.endswith(".parquet")]
    ledger.learn_paths(repo, listed)
    shards = [p for p in listed if p.startswith(RUNS_PREFIX)]
    for path in ledger.unknown_shards(repo, shards):
        entries, stale = read_shard_runs(runtime, repo, head, path)
        ledger.learn_shard(repo, path, entries, stale=stale)
    ledger.set_head(repo, head, presets)
    return head


def build_shards(target: ExportTarget, rows: list[Any]) -> dict[str, bytes]:
    """One parquet shard per preset that has rows (`runs` always), named after the run ids they hold."""
    sid = shard_id([r["run_id"] for r in rows])
    when = datetime.fromtimestamp(rows[0]["created_at"], timezone.utc)
    decoded = [decode_rows(r["rows"]) for r in rows]
    files = {}
    for preset in target.presets:
        preset_rows_ = [row for per_run in decoded for row in per_run.get(preset, [])]
        # A training preset's rows go to two configs: runs without tools and runs with them (training.py says why).
        for config, config_rows in split_configs(preset, preset_rows_).items():
            if config_rows or config == "runs":
                files[shard_path(config, when, sid)] = to_parquet_bytes(to_table(config, config_rows))
    return files


def build_card(target: ExportTarget, rule_ids: list[str], presets: set[str]) -> str:
    """The dataset card lists a config only for presets that have a shard, so every config loads."""
    return render_card(target.repo, sorted(presets), rule_ids, __version__,
                       positive_threshold=target.positive_threshold,
                       redaction=[r if isinstance(r, str) else "custom pattern" for r in target.redact])


REWRITE_GROUPS = 8  # shard groups rewritten per commit: a rewrite reads and writes whole shards


@dataclass
class Rewritten:
    files: dict[str, bytes]  # the group's new shards
    deleted: list[str]  # its old shards
    runs_path: str  # its new `runs` shard
    run_ids: list[str]  # every run the group holds
    applied: list[Any]  # the pending rewrites it applied


def stored_rows(tables: dict[str, Any]) -> dict[str, list[dict]]:
    """A shard group's rows by config, in the current format: columns added since are null, and training shards
    written before the chat-template message shapes are upgraded (`formats.upgrade`; an old `sft` shard names the
    tools each run was offered, which old `preference` and `kto` shards do not)."""
    old_sft = tables.get("sft")
    tools = ({r["run_id"]: r.get("tools") for r in old_sft.to_pylist()}
             if old_sft is not None and is_old_format(old_sft.schema) else None)
    out: dict[str, list[dict]] = {}
    for config, table in tables.items():
        if config in TRAINING_PRESETS and is_old_format(table.schema):
            for new_config, rows in upgrade_rows(config, table.to_pylist(), tools).items():
                out.setdefault(new_config, []).extend(rows)
        else:
            out.setdefault(config, []).extend(table.to_pylist())
    return out


def by_config(per_preset: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """A run's rows by preset -> by config (a training preset's rows go to its plain or its `_tools` config)."""
    return {config: rows for preset, preset_rows_ in per_preset.items()
            for config, rows in split_configs(preset, preset_rows_).items()}


def rewrite_group(runtime: Any, repo: str, head: str, runs_path: str, updates: list[Any],
                  now: datetime) -> Rewritten:
    """The group of shards `runs_path` leads, written again: rows of runs with a pending rewrite replaced by their
    new rows in every config the rewrite maps (a run may leave `sft` or join `preference`), the other rows as they
    were, in the current format. `exported_at` stays the first export; `updated_at` is now. A config's shard left
    empty is dropped, unless it is the config's last one (the config must keep loading)."""
    old_paths = runtime.ledger.group_paths(repo, runs_path)
    tables = {path.split("/", 1)[0]: pq.read_table(io.BytesIO(runtime.hub.read_bytes(repo, "dataset", head, path)))
              for path in old_paths}
    rows = stored_rows(tables)
    first_export = {row["run_id"]: row.get("exported_at") for row in rows.get("runs", [])}
    applied = [u for u in updates if u["run_id"] in first_export]  # the others are not in this shard any more
    changed = {u["run_id"]: by_config(decode_rows(u["rows"])) for u in applied}
    for config in {c for per_run in changed.values() for c in per_run}:
        kept = [row for row in rows.get(config, []) if row["run_id"] not in changed]
        fresh = [row for per_run in changed.values() for row in per_run.get(config, [])]
        if config == "runs":
            fresh = [{**row, "exported_at": first_export[row["run_id"]] or row.get("exported_at"),
                      "updated_at": now} for row in fresh]
        rows[config] = kept + fresh
    run_ids = [row["run_id"] for row in rows["runs"]]
    sid = shard_id([*run_ids, now.isoformat()])  # never the old name, even on the same day
    counts = runtime.ledger.preset_shard_counts(repo)
    files = {shard_path(config, now, sid): to_parquet_bytes(to_table(config, config_rows))
             for config, config_rows in rows.items()
             if config_rows or (config in tables and counts.get(config, 0) <= 1)}
    return Rewritten(files, old_paths, shard_path("runs", now, sid), run_ids, applied)


def flush_once(runtime: Any, target: ExportTarget, rule_ids: list[str], counts: dict) -> bool:
    """Commits one batch of new rows and up to `REWRITE_GROUPS` shard rewrites; returns True when more waits (a
    full batch, more rewrites), False when nothing or all that waited was committed.

    Syncing first drops from the buffer every run the repo already holds, including a batch whose commit landed
    just before a crash, so what is committed here is always new; a rewrite adds each group's new shards and
    deletes its old ones in the same commit, so every run stays in exactly one shard per config.
    """
    ledger, hub, repo = runtime.ledger, runtime.hub, target.repo
    head = sync_repo(runtime, repo)
    batch = ledger.batch(repo, target.max_rows_per_commit, target.max_bytes_per_commit)
    rewrites = ledger.rewrites(repo, REWRITE_GROUPS)
    drop_rewrites(runtime, repo, rewrites.orphans, counts)
    if not batch.rows and not rewrites.groups:
        return False
    files = build_shards(target, batch.rows) if batch.rows else {}
    placed = {p: [r["run_id"] for r in batch.rows] for p in files if p.startswith(RUNS_PREFIX)}
    now = datetime.fromtimestamp(runtime.store.clock(), timezone.utc)
    deleted, applied = [], []
    for runs_path, updates in rewrites.groups.items():
        group = rewrite_group(runtime, repo, head, runs_path, updates, now)
        files.update(group.files)
        deleted += group.deleted
        placed[group.runs_path] = group.run_ids
        applied += group.applied
        done = {u["id"] for u in group.applied}
        drop_rewrites(runtime, repo, [u for u in updates if u["id"] not in done], counts)
    shards = list(files)
    state = ledger.repo_state(repo)
    presets = set(state.presets) | {path.split("/", 1)[0] for path in files}
    card = build_card(target, rule_ids, presets)
    if card != state.card and (head is None or hub.read_text(repo, "README.md", head) != card):
        files["README.md"] = card.encode()
    with step(f"commit to {repo}", repo=repo, files=len(files), runs=len(batch.rows), rewritten=len(applied)):
        oid = hub.commit(repo, files, commit_message(len(batch.rows), len(applied), len(rewrites.groups)),
                         parent=head, deleted=deleted)
    runtime.store.remember_commit(oid, repo)
    ledger.record_commit(repo, oid, shards, presets, card, batch.rows, deleted=deleted, updates=applied,
                         placed=placed)
    runtime.metrics.rows_exported(repo, len(batch.rows))
    counts["commits"] += 1
    counts["runs_committed"] += len(batch.rows)
    counts["runs_rewritten"] += len(applied)
    counts["shards_rewritten"] += len(rewrites.groups)
    counts["commit_oid"] = oid
    return batch.full or rewrites.full


def commit_message(added: int, rewritten: int, groups: int) -> str:
    parts = [f"Add {added} run(s)"] if added else []
    if rewritten:
        parts.append(f"update {rewritten} run(s) with newer feedback")
    elif groups:
        parts.append(f"rewrite {groups} shard group(s) in the current format")
    text = ", ".join(parts)
    return text[0].upper() + text[1:]


def drop_rewrites(runtime: Any, repo: str, updates: list[Any], counts: dict) -> None:
    """Rewrites of runs no shard of the repo holds any more (someone deleted or rewrote it): nothing to update."""
    if updates:
        log.warning("%s: %d run(s) with newer feedback are no longer in any shard; not rewritten", repo, len(updates))
        runtime.ledger.drop_updates([u["id"] for u in updates])
        counts["rewrites_dropped"] = counts.get("rewrites_dropped", 0) + len(updates)


_flush_locks: dict[str, threading.Lock] = {}
_flush_locks_guard = threading.Lock()


def repo_lock(repo: str) -> threading.Lock:
    """One flush per repo at a time: two workers flushing one repo would build the same shards twice."""
    with _flush_locks_guard:
        return _flush_locks.setdefault(repo, threading.Lock())


def run_flush(job: Any, ctx: Any) -> dict:
    with repo_lock(job.payload["repo"]):
        return flush_repo(job, ctx)


def commit_batches(rt: Any, target: ExportTarget, rule_ids: list[str], counts: dict) -> None:
    """Full batches at once, a partial one at most once per flush window. A flush started early for a full batch
    may find less (a running flush's rows were still counted when it was scheduled, or the full batch is gone):
    when this window already had its partial commit, the rest waits for the next one."""
    repo = target.repo
    partial_windows = rt.extras.setdefault("partial_windows", {})  # repo -> window of its last partial commit
    while True:
        window = math.floor(rt.store.clock() / target.flush_seconds) if target.flush_seconds > 0 else None
        if (window is not None and partial_windows.get(repo) == window
                and rt.ledger.pending(repo) < target.max_rows_per_commit):
            return
        before = counts["commits"]
        if flush_once(rt, target, rule_ids, counts):
            continue  # a full batch: the next one may go now too
        if counts["commits"] > before and window is not None:
            partial_windows[repo] = window
        return


def flush_repo(job: Any, ctx: Any) -> dict:
    rt, repo = ctx.services, job.payload["repo"]
    target = rt.settings.config.repo_target(repo)
    if target is None:
        return {"repo": repo, "note": "no exports entry writes to this repo any more; rows stay buffered"}
    rt.hub.ensure_dataset(repo, target.private)
    counts = {"commits": 0, "runs_committed": 0, "runs_rewritten": 0, "shards_rewritten": 0}
    rule_ids = sorted({t.current_rule_id for t in rt.settings.config.exports
                       if t.repo == repo and t.current_rule_id})
    for attempt in range(3):
        try:
            commit_batches(rt, target, rule_ids, counts)
            break
        except UpstreamError as exc:
            if exc.status not in (409, 412):
                raise
            if attempt == 2:  # someone keeps committing: nothing is wrong with the rows, so the queue tries later
                raise UpstreamError(exc.target, f"{repo} moved on every try while committing; the flush is tried "
                                    f"again later ({exc})", status=exc.status, transient=True, sentence=True) from exc
            log.info("%s moved while committing; rebasing onto the new head", repo)
    schedule_flush(rt, target, job.trigger, exclude=job.id)
    oid = counts.pop("commit_oid", None)  # the link names the commit this flush made (the last one when several)
    links = {"commit": oid, "commit_url": rt.hub.web_url(repo, "dataset", f"/commit/{oid}")} if oid else {}
    return {"repo": repo, **counts, **links, "pending": rt.ledger.pending(repo)}


def resume(runtime: Any, trigger: str = "reconcile") -> list[int]:
    """Buffered rows whose flush job is gone (state from an older run, a flush that failed) get one scheduled."""
    scheduled = []
    for repo in runtime.ledger.repos_with_buffer():
        target = runtime.settings.config.repo_target(repo)
        if target is not None:
            job_id = schedule_flush(runtime, target, trigger)
            if job_id is not None:
                scheduled.append(job_id)
    return scheduled

