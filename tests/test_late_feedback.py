"""Late feedback reaches the dataset: a run's rows are rewritten in place (the shard holding them replaced, the old
one deleted in the same commit) when its feedback changes after export, and every run stays once per config.

Real SDK clients against both emulators; feedback is changed through the LangSmith SDK as a reviewer would.
"""

import io
import shutil

import pyarrow as pa
import pyarrow.parquet as pq

from bridge.flows.exports import refresh_runs
from bridge.formats.runs import RUNS_SCHEMA, feedback_fingerprint
from conftest import LS_KEY, run_jobs
from test_flow_exports import REPO, RULE, bridge_commits, config, deliver, read_rows, seed, shards


def ls_client(smith):
    from langsmith import Client

    return Client(api_url=smith.url, api_key=LS_KEY, auto_batch_tracing=False)


def by_run(hub, preset):
    rows = read_rows(hub, preset)
    ids = [r["run_id"] for r in rows]
    assert len(ids) == len(set(ids)), f"a run twice in {preset}"
    return {r["run_id"]: r for r in rows}


def export(runtime, smith, ids):
    deliver(runtime, smith.webhook_payload(RULE, ids))
    jobs = run_jobs(runtime)
    assert all(j.state == "succeeded" for j in jobs), [j.last_error for j in jobs]
    return jobs


def runs_project(smith, run_id):
    return smith.get_run(run_id)["session_id"]


def feedback_of(smith, run_id, key):
    return next(f for f in smith.feedback_for(run_id) if f["key"] == key)


def test_changed_feedback_rewrites_the_rows_and_flips_preset_membership(hub, smith, make_bridge):
    runtime = make_bridge(config())
    ids = seed(smith, 4, feedback=False)
    smith.add_feedback(ids[1], "user_score", score=1)  # good: in sft, kto label true
    smith.add_feedback(ids[2], "user_score", score=0)  # bad: not in sft, kto label false
    export(runtime, smith, ids)
    before_runs, before_shards = by_run(hub, "runs"), shards(hub)
    assert set(by_run(hub, "sft")) == {ids[1]} and by_run(hub, "kto")[ids[1]]["label"] is True
    assert all(r["updated_at"] is None for r in before_runs.values())

    client = ls_client(smith)
    client.update_feedback(feedback_of(smith, ids[1], "user_score")["id"], score=0)  # a later thumbs down
    client.create_feedback(ids[3], key="correction", session_id=runs_project(smith, ids[3]), correction={"output": "the better answer"})  # a new correction
    client.update_feedback(feedback_of(smith, ids[2], "user_score")["id"], score=1)  # changed their mind
    jobs = export(runtime, smith, ids[::-1])  # the rule delivers the runs again (another delivery)

    [exported, flush] = jobs
    assert exported.result["counts"]["refreshed"] == 3 and exported.result["counts"]["already_exported"] == 1
    assert flush.result["runs_rewritten"] == 3 and flush.result["commits"] == 1
    runs, sft, kto = by_run(hub, "runs"), by_run(hub, "sft"), by_run(hub, "kto")
    assert set(runs) == set(ids)
    assert set(sft) == {ids[2], ids[3]}  # ids[1] left sft, ids[2] joined, the correction made ids[3] a demonstration
    assert kto[ids[1]]["label"] is False and kto[ids[2]]["label"] is True
    [pair] = by_run(hub, "preference").values()
    assert pair["run_id"] == ids[3] and pair["chosen"][0]["content"] == "the better answer"
    assert [f["score"] for f in runs[ids[1]]["feedback"]] == [0.0]
    for rid in ids[1:]:  # the first export time stays; the rewrite time is recorded
        assert runs[rid]["exported_at"] == before_runs[rid]["exported_at"] and runs[rid]["updated_at"] is not None
    assert runs[ids[0]]["updated_at"] is None
    assert len(shards(hub)) == len(before_shards) and not set(shards(hub)) & set(before_shards)  # replaced
    assert "update 3 run(s) with newer feedback" in bridge_commits(hub)[0]["title"].lower()


def test_a_delivery_with_unchanged_feedback_rewrites_nothing(hub, smith, make_bridge):
    runtime = make_bridge(config())
    ids = seed(smith, 3)
    export(runtime, smith, ids)
    assert export(runtime, smith, ids[::-1]) == []  # the same runs with the same feedback: a duplicate delivery
    ids += seed(smith, 1)
    [again, flush] = export(runtime, smith, ids)  # the same runs among others: fetched feedback, nothing changed
    assert again.result["counts"]["already_exported"] == 3 and again.result["counts"]["refreshed"] == 0
    assert flush.result["runs_committed"] == 1 and flush.result["runs_rewritten"] == 0


def test_refresh_by_id_after_feedback_given_later(hub, smith, make_bridge):
    """What a reconcile (or a rating on the Review page) hands over: run ids with their project and start."""
    runtime = make_bridge(config())
    ids = seed(smith, 3, feedback=False)
    export(runtime, smith, ids)
    ls_client(smith).create_feedback(ids[0], key="user_score", score=1, session_id=runs_project(smith, ids[0]))
    runs = [{"id": rid, "session_id": row["session_id"], "start_time": row["start_time"].isoformat()}
            for rid, row in by_run(hub, "runs").items()]
    job = runtime.store.list(kind="export")[0]
    counts = {"runs": 0, "without_id": 0, "already_exported": 0, "objects_fetched": 0, "runs_queried": 0,
              "feedback": 0, "buffered": 0, "refreshed": 0, "redactions": {}, "preset_skips": {}, "skipped": {}}
    assert refresh_runs(runtime, runtime.settings.config.exports_for(RULE), runs, job, counts)
    assert counts["refreshed"] == 1 and counts["already_exported"] == 2
    run_jobs(runtime)
    assert set(by_run(hub, "sft")) == {ids[0]} and set(by_run(hub, "runs")) == set(ids)


def test_a_run_still_buffered_gets_its_buffered_row_replaced(hub, smith, make_bridge):
    runtime = make_bridge(config(flush=3600))
    ids = seed(smith, 2, feedback=False)
    deliver(runtime, smith.webhook_payload(RULE, ids))
    run_jobs(runtime)  # buffered; the flush waits for its window
    smith.add_feedback(ids[0], "user_score", score=1)
    deliver(runtime, smith.webhook_payload(RULE, ids[::-1]))
    [again] = run_jobs(runtime)
    assert again.result["counts"]["refreshed"] == 1 and runtime.ledger.pending(REPO) == 2
    runtime.store.clock = lambda: 10**10  # the window closes
    run_jobs(runtime)
    assert set(by_run(hub, "sft")) == {ids[0]} and len(by_run(hub, "runs")) == 2
    assert all(r["updated_at"] is None for r in by_run(hub, "runs").values())  # first export, not a rewrite


def test_rewrite_after_a_wiped_state_dir(hub, smith, make_bridge, tmp_path):
    runtime = make_bridge(config(), state=tmp_path / "s")
    ids = seed(smith, 4, feedback=False)
    export(runtime, smith, ids[:2])
    export(runtime, smith, ids[2:])  # two shard groups
    shutil.rmtree(tmp_path / "s")
    wiped = make_bridge(config(), state=tmp_path / "s")
    smith.add_feedback(ids[3], "user_score", score=1)
    export(wiped, smith, ids)
    # The wiped ledger learned which shard holds which run from the repo, and rewrote only the group of ids[3];
    # runs learned from the repo have no known fingerprint, so their rows were written again as they are.
    assert set(by_run(hub, "runs")) == set(ids) and set(by_run(hub, "sft")) == {ids[3]}
    assert by_run(hub, "kto")[ids[3]]["label"] is True
    commits = len(bridge_commits(hub))
    export(wiped, smith, ids[::-1])  # now the fingerprints are known: nothing more to rewrite
    assert len(bridge_commits(hub)) == commits


def test_a_row_refreshed_while_its_commit_is_made_is_kept_for_the_next_flush(hub, smith, make_bridge):
    runtime = make_bridge(config(flush=3600, presets="[runs]"))
    ids = seed(smith, 1, feedback=False)
    deliver(runtime, smith.webhook_payload(RULE, ids))
    run_jobs(runtime)
    batch = runtime.ledger.batch(REPO, 100, 10**9)  # what a flush read before committing
    newer = {"runs": [{"run_id": ids[0], "feedback": [{"key": "user_score", "score": 1.0}]}]}
    runtime.ledger.refresh(REPO, [(ids[0], newer, None)], 0)  # meanwhile
    runtime.ledger.record_commit(REPO, "c0ffee", ["runs/2026/12/04/x.parquet"], {"runs"}, "card", batch.rows,
                                 placed={"runs/2026/12/04/x.parquet": ids})
    assert runtime.ledger.pending(REPO) == 1  # the newer row waits, as a rewrite of the exported run
    assert runtime.ledger.fingerprints(REPO, ids) == {ids[0]: feedback_fingerprint(newer["runs"][0]["feedback"])}
    [group] = runtime.ledger.rewrites(REPO, 8).groups.items()
    assert group[0] == "runs/2026/12/04/x.parquet" and group[1][0]["run_id"] == ids[0]


def test_old_format_shards_are_rewritten_in_the_current_format(hub, smith, make_bridge, tmp_path):
    """A repo written before `updated_at` existed: the next commit rewrites its shards, so every shard of a config
    shares one schema and `datasets` loads it."""
    first = make_bridge(config(presets="[runs]"), state=tmp_path / "old")
    ids = seed(smith, 3, feedback=False)
    export(first, smith, ids[:2])
    [path] = shards(hub)
    old = pq.read_table(io.BytesIO(hub.read_file(REPO, path))).drop_columns(["updated_at"])
    old_bytes = io.BytesIO()
    pq.write_table(old.cast(pa.schema([f for f in RUNS_SCHEMA if f.name != "updated_at"])), old_bytes)
    first.hub.commit(REPO, {path: old_bytes.getvalue()}, "an older bridge wrote this", parent=None)
    # A state dir of an older version forgets every shard when upgraded (schema migration 8), as a new one has none.
    runtime = make_bridge(config(presets="[runs]"), state=tmp_path / "new")
    export(runtime, smith, ids[2:])
    assert len(shards(hub)) == 2 and path not in shards(hub)
    for shard in shards(hub):
        assert pq.read_schema(io.BytesIO(hub.read_file(REPO, shard))).equals(RUNS_SCHEMA, check_metadata=False)
    assert set(by_run(hub, "runs")) == set(ids)
    from datasets import load_dataset

    local = tmp_path / "copy"
    for name in [*shards(hub), "README.md"]:
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(hub.read_file(REPO, name))
    loaded = load_dataset(str(local), "runs", split="train", cache_dir=str(tmp_path / "cache"))
    assert sorted(loaded["run_id"]) == sorted(ids)


def test_pending_rewrites_keep_the_bridge_busy_until_committed(hub, smith, make_bridge):
    runtime = make_bridge(config(flush=3600, presets="[runs]"))
    clock = [1_800_000_000.0 + 10]
    runtime.store.clock = lambda: clock[0]
    ids = seed(smith, 1, feedback=False)
    deliver(runtime, smith.webhook_payload(RULE, ids))
    run_jobs(runtime)
    clock[0] += 3600
    assert [j.kind for j in run_jobs(runtime)] == ["flush"] and len(by_run(hub, "runs")) == 1
    smith.add_feedback(ids[0], "user_score", score=1)
    deliver(runtime, smith.webhook_payload(RULE, ids))
    assert [j.kind for j in run_jobs(runtime)] == ["export"]  # the rewrite waits for the window
    assert runtime.ledger.total_pending() == 1 and REPO in runtime.ledger.repos_with_buffer()
    clock[0] += 3600
    [flush] = run_jobs(runtime)
    assert flush.result["runs_rewritten"] == 1 and runtime.ledger.total_pending() == 0
    assert by_run(hub, "runs")[ids[0]]["feedback"][0]["score"] == 1.0


def test_training_shards_of_an_older_bridge_are_upgraded_in_place(hub, smith, make_bridge, tmp_path):
    """A repo written before 0.2.0: five-field message structs in `sft` and no `updated_at` in `runs`. The first
    commit of a new bridge rewrites that shard group in today's format, so the `sft` config loads as one schema and
    its rows hold plain role/content messages."""
    from test_formats_upgrade import OLD_SCHEMAS

    first = make_bridge(config(presets="[runs, sft]"), state=tmp_path / "old")
    ids = seed(smith, 2, feedback=False)
    for rid in ids:
        smith.add_feedback(rid, "user_score", score=1)
    export(first, smith, ids[:1])
    old_files = {}
    for path in shards(hub, "runs") + shards(hub, "sft"):
        table = pq.read_table(io.BytesIO(hub.read_file(REPO, path)))
        if path.startswith("runs/"):
            table = table.drop_columns(["updated_at"])
        else:
            table = pa.Table.from_pylist(table.to_pylist(), schema=OLD_SCHEMAS["sft"])
        old_files[path] = io.BytesIO()
        pq.write_table(table, old_files[path])
    first.hub.commit(REPO, {p: b.getvalue() for p, b in old_files.items()}, "an older bridge wrote these", None)

    runtime = make_bridge(config(presets="[runs, sft]"), state=tmp_path / "new")
    [_, flush] = export(runtime, smith, ids[1:])
    assert flush.result["shards_rewritten"] == 1 and not set(old_files) & set(shards(hub) + shards(hub, "sft"))
    sft_schemas = {pq.read_schema(io.BytesIO(hub.read_file(REPO, p))) for p in shards(hub, "sft")}
    assert len(sft_schemas) == 1 and len(shards(hub, "sft")) == 2
    rows = by_run(hub, "sft")
    assert set(rows) == set(ids) and all(set(m) == {"role", "content"} for r in rows.values() for m in r["messages"])
    assert set(by_run(hub, "runs")) == set(ids)


def test_a_rating_from_the_review_page_reaches_the_dataset_and_the_page_says_when(hub, smith, make_bridge):
    import time

    from bridge import actions
    from bridge.ui import review

    runtime = make_bridge(config(flush=3600, extra="    feedback_links: {keys: [user_score]}\n"),
                          BRIDGE_PUBLIC_URL="https://bridge.example.org")
    ids = seed(smith, 2, feedback=False)
    deliver(runtime, smith.webhook_payload(RULE, ids))
    run_jobs(runtime)
    runtime.store.clock = lambda: time.time() + 3600  # the window closes: the first commit lands
    run_jobs(runtime)
    runtime.store.clock = time.time
    [run] = [r for r in runtime.ledger.recent() if r["run_id"] == ids[0]]
    assert review.feedback_chips(run["feedback"]).count("chip") == 0

    actions.submit_feedback(runtime.store, run, "user_score", 0.0)
    [rated] = run_jobs(runtime)  # the flush waits for the window
    assert rated.kind == "feedback" and rated.result["refreshed"] == 1 and rated.result["flush_jobs"]

    def page() -> str:
        runs = runtime.ledger.recent()
        return review.review_html(runs, review.sent_by_run(runtime.store), time.time(),
                                  runtime.ledger.waiting([r["run_id"] for r in runs]), review.next_flushes(runtime.store))

    card = page().split('data-run="')[1 + [r["run_id"] for r in runtime.ledger.recent()].index(ids[0])]
    assert "user_score 0.0" in card and "rewritten by the next commit (due" in card  # known now, in the dataset soon
    runtime.store.clock = lambda: time.time() + 2 * 3600
    [flush] = run_jobs(runtime)
    assert flush.result["runs_rewritten"] == 1
    assert by_run(hub, "kto")[ids[0]]["label"] is False and by_run(hub, "runs")[ids[0]]["updated_at"] is not None
    runtime.store.clock = time.time
    card = page().split('data-run="')[1 + [r["run_id"] for r in runtime.ledger.recent()].index(ids[0])]
    assert "shows this feedback (rows rewritten" in card
