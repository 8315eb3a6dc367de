"""LangSmith -> Hub: real clients against both emulators, counting the emulators' requests."""

import io
import json
import shutil
from datetime import datetime, timedelta, timezone

import pyarrow.parquet as pq
import requests

from bridge.routing import Ignored, route_rule
from bridge.events import parse_rule_delivery
from conftest import HF_TOKEN, run_jobs

RULE = "d75d7417-0c57-4655-88fe-1db3cda3a47a"
REPO = "acme/prod-feedback"


def config(flush=0, presets="[runs, sft, preference, kto]", extra=""):
    return f"""
exports:
  - rule_id: "{RULE}"
    repo: "{REPO}"
    presets: {presets}
    flush_seconds: {flush}
    redact: [emails, secrets]
{extra}
jobs: {{backoff_seconds: 0.01, max_backoff_seconds: 0.05}}
"""


def chat_run(i, answer="Sure, here it is.", **extra):
    start = datetime(2026, 11, 20, 10, tzinfo=timezone.utc) + timedelta(minutes=i)
    return {"name": "ChatOpenAI", "run_type": "llm", "session_name": "prod",
            "start_time": start.isoformat(), "end_time": (start + timedelta(seconds=1)).isoformat(),
            "inputs": {"messages": [{"role": "user", "content": f"question {i} from bob@example.com"}]},
            "outputs": {"generations": [[{"text": answer, "message": {"type": "ai", "data": {"content": answer}}}]]},
            "extra": {"metadata": {"ls_model_name": "gpt-4o-mini"}}, "tags": ["prod"], **extra}


def seed(smith, n, offload=False, feedback=True):
    ids = []
    for i in range(n):
        run = smith.add_run(chat_run(i), offload=offload)
        if feedback:
            smith.add_feedback(run["id"], "user_score", score=i % 2)
            if i % 3 == 0:
                smith.add_feedback(run["id"], "correction", correction={"output": f"corrected {i}"})
        ids.append(run["id"])
    return ids


def deliver(runtime, body):
    """What the web handler does with a delivery: route it and store it with its job."""
    routed = route_rule(parse_rule_delivery(body), runtime.settings.config)
    if isinstance(routed, Ignored):
        return runtime.store.record_delivery("langsmith", json.dumps(body), None, routed.reason)
    return runtime.store.record_delivery("langsmith", json.dumps(body), routed)


def shards(hub, preset="runs"):
    return sorted(p for p in hub.list_files(REPO) if p.startswith(f"{preset}/") and p.endswith(".parquet"))


def read_rows(hub, preset="runs"):
    rows = []
    for path in shards(hub, preset):
        rows += pq.read_table(io.BytesIO(hub.read_file(REPO, path))).to_pylist()
    return rows


def bridge_commits(hub):
    return [c for c in hub.commits(REPO) if "[hub-langsmith-bridge]" in c["title"]]


def test_seed_payload_exported_end_to_end(hub, smith, make_bridge):
    runtime = make_bridge(config())
    hub.create_repo(REPO, private=True)
    ids = seed(smith, 3)
    body = smith.webhook_payload(RULE, ids)
    outcome, job_ids = deliver(runtime, body)
    assert outcome == "queued"
    jobs = run_jobs(runtime)
    assert [j.kind for j in jobs] == ["export", "flush"] and all(j.state == "succeeded" for j in jobs), \
        [j.last_error for j in jobs]
    rows = read_rows(hub)
    assert sorted(r["run_id"] for r in rows) == sorted(ids)
    row = next(r for r in rows if r["run_id"] == ids[0])
    assert row["rule_id"] == RULE and row["model"] == "gpt-4o-mini" and row["is_root"] is True
    assert "[REDACTED" in row["inputs"] and "bob@example.com" not in json.dumps(rows, default=str)
    assert {f["key"] for f in row["feedback"]} == {"user_score", "correction"}
    assert row["run_url"].startswith(smith.url)
    assert jobs[0].result["counts"]["redactions"]["email"] == 3
    assert "README.md" in hub.list_files(REPO)
    card = hub.read_file(REPO, "README.md").decode()
    assert "config_name: runs" in card and "config_name: preference" in card
    assert len(bridge_commits(hub)) == 1


def test_offloaded_inputs_come_from_object_urls_not_per_run_reads(hub, smith, make_bridge):
    runtime = make_bridge(config())
    ids = seed(smith, 5, offload=True)
    body = smith.webhook_payload(RULE, ids)
    assert all(r["inputs"] is None for r in body["runs"])
    smith.recorder.clear()
    deliver(runtime, body)
    run_jobs(runtime)
    rows = read_rows(hub)
    assert all("question" in r["inputs"] for r in rows)
    assert smith.recorder.count("GET", r"/_objects/") == 10  # inputs + outputs of 5 runs
    assert smith.recorder.count("GET", r"/runs/[0-9a-f-]{36}$") == 0
    assert smith.recorder.count("POST", r"/runs/query") == 0
    assert smith.recorder.count("GET", r"/feedback$") == 1
    object_requests = [r for r in smith.recorder.requests if "/_objects/" in r.path]
    assert object_requests and not any("x-api-key" in r.headers for r in object_requests)


def test_broken_object_urls_fall_back_to_one_batched_query(hub, smith, make_bridge):
    runtime = make_bridge(config())
    ids = seed(smith, 4, offload=True)
    body = smith.webhook_payload(RULE, ids)
    smith.recorder.clear()
    smith.recorder.add_fault(r"/_objects/", status=403, times=100)
    deliver(runtime, body)
    run_jobs(runtime)
    assert all("question" in r["inputs"] for r in read_rows(hub))
    assert smith.recorder.count("POST", r"/runs/query") == 1
    assert smith.recorder.count("GET", r"/runs/[0-9a-f-]{36}$") == 0


def test_feedback_in_another_order_lands_on_the_right_rows(hub, smith, make_bridge):
    runtime = make_bridge(config(presets="[runs]"))
    ids = [smith.add_run(chat_run(i))["id"] for i in range(4)]
    for i, run_id in reversed(list(enumerate(ids))):  # feedback created in the opposite order
        smith.add_feedback(run_id, "user_score", score=1 if i % 2 else 0, comment=f"for run {i}")
    deliver(runtime, smith.webhook_payload(RULE, ids))
    run_jobs(runtime)
    by_id = {r["run_id"]: r for r in read_rows(hub)}
    for i, run_id in enumerate(ids):
        [fb] = by_id[run_id]["feedback"]
        assert fb["comment"] == f"for run {i}" and fb["score"] == (1 if i % 2 else 0)


def test_presets_on_real_message_shapes(hub, smith, make_bridge):
    runtime = make_bridge(config())
    ids = seed(smith, 6)
    deliver(runtime, smith.webhook_payload(RULE, ids))
    [export, _] = run_jobs(runtime)
    preference = read_rows(hub, "preference")
    assert len(preference) == 2  # runs 0 and 3 carry a correction
    assert preference[0]["chosen"][0]["content"].startswith("corrected")
    assert preference[0]["rejected"][0]["content"] == "Sure, here it is."
    sft = read_rows(hub, "sft")
    assert {r["run_id"] for r in sft} >= {ids[0], ids[3]}
    assert all(m["messages"][-1]["role"] == "assistant" for m in sft)
    kto = read_rows(hub, "kto")
    assert {r["label"] for r in kto} == {True, False}
    assert export.result["counts"]["preset_skips"]


def test_many_deliveries_in_one_window_make_one_commit(hub, smith, make_bridge):
    runtime = make_bridge(config(flush=3600, presets="[runs]"))
    clock = [1_800_000_000.0 + 10]
    runtime.store.clock = lambda: clock[0]
    ids = seed(smith, 200, feedback=False)
    for i in range(100):
        deliver(runtime, smith.webhook_payload(RULE, ids[2 * i:2 * i + 2]))
    jobs = run_jobs(runtime, limit=200)
    assert [j.kind for j in jobs] == ["export"] * 100  # the flush waits for the window to close
    assert len({j.result["flush_jobs"][0] for j in jobs}) == 1
    clock[0] += 3600
    [flush] = run_jobs(runtime)
    assert flush.kind == "flush" and flush.result["commits"] == 1 and flush.result["runs_committed"] == 200
    assert len(bridge_commits(hub)) == 1 and len(read_rows(hub)) == 200
    made = hub.head(flush.result["repo"])  # the "HF commit" link names the commit the flush made, and opens it
    assert flush.result["commit"] == made and flush.result["commit_url"].endswith(f"/commit/{made}")
    page = requests.get(flush.result["commit_url"], headers={"authorization": f"Bearer {HF_TOKEN}"}, timeout=10)
    assert page.status_code == 200 and made in page.text  # a private repo: its owner's page


def test_same_delivery_twice_and_after_wiping_state_no_duplicates(hub, smith, make_bridge, tmp_path):
    runtime = make_bridge(config(presets="[runs, sft]"), state=tmp_path / "s")
    ids = seed(smith, 5)
    body = smith.webhook_payload(RULE, ids)
    deliver(runtime, body)
    run_jobs(runtime)
    assert deliver(runtime, body)[0] == "duplicate"
    shutil.rmtree(tmp_path / "s")
    wiped = make_bridge(config(presets="[runs, sft]"), state=tmp_path / "s")
    deliver(wiped, body)
    deliver(wiped, smith.webhook_payload(RULE, ids[:2] + seed(smith, 1)))  # overlapping, with one new run
    jobs = run_jobs(wiped)
    assert all(j.state == "succeeded" for j in jobs), [j.last_error for j in jobs]
    rows = read_rows(hub)
    assert len(rows) == len({r["run_id"] for r in rows}) == 6
    assert len({r["run_id"] for r in read_rows(hub, "sft")}) == len(read_rows(hub, "sft"))


def test_commit_failure_rows_go_out_with_the_next_commit(hub, smith, make_bridge):
    runtime = make_bridge(config(flush=3600, presets="[runs]"))
    clock = [1_800_000_000.0 + 10]
    runtime.store.clock = lambda: clock[0]
    ids = seed(smith, 3)
    hub.recorder.add_fault(r"/commit/", status=500, times=1)
    deliver(runtime, smith.webhook_payload(RULE, ids))
    assert [j.kind for j in run_jobs(runtime)] == ["export"]
    clock[0] += 3600
    [flush] = run_jobs(runtime)
    assert (flush.kind, flush.state) == ("flush", "queued")  # transient: retried later
    more = seed(smith, 2)
    deliver(runtime, smith.webhook_payload(RULE, more))  # arrives while the failed batch still waits
    assert [j.kind for j in run_jobs(runtime)] == ["export"]
    clock[0] += 3600
    run_jobs(runtime)
    assert sorted(r["run_id"] for r in read_rows(hub)) == sorted(ids + more)
    assert len(bridge_commits(hub)) == 1


def test_a_partial_batch_goes_at_most_once_per_window(hub, smith, make_bridge):
    """Full batches go at once; what is left after them waits for the next window when this window already had
    its partial commit (the flush window's promise: one commit per repo per window, full batches aside)."""
    runtime = make_bridge(config(flush=60, presets="[runs]", extra="    max_rows_per_commit: 3"))
    clock = [1_800_000_000.0 + 10]
    runtime.store.clock = lambda: clock[0]
    first = seed(smith, 1)
    deliver(runtime, smith.webhook_payload(RULE, first))
    run_jobs(runtime)
    clock[0] += 60  # the next window: the waiting run goes out, a partial commit
    run_jobs(runtime)
    assert len(bridge_commits(hub)) == 1
    more = seed(smith, 4)
    deliver(runtime, smith.webhook_payload(RULE, more))  # a full batch and one run more, in the same window
    run_jobs(runtime)
    assert [c["title"].split("] ")[-1] for c in bridge_commits(hub)] in (["Add 3 run(s)", "Add 1 run(s)"],
                                                                          ["Add 1 run(s)", "Add 3 run(s)"])
    assert runtime.ledger.pending(REPO) == 1
    clock[0] += 60
    run_jobs(runtime)
    assert len(bridge_commits(hub)) == 3 and runtime.ledger.pending(REPO) == 0
    assert sorted(r["run_id"] for r in read_rows(hub)) == sorted(first + more)


def test_hub_permission_error_names_repo(hub, smith, make_bridge):
    runtime = make_bridge(config(presets="[runs]"), HF_TOKEN="hf_read_only_token")
    hub.create_repo(REPO)
    deliver(runtime, smith.webhook_payload(RULE, seed(smith, 1)))
    jobs = run_jobs(runtime)
    assert jobs[1].state == "failed" and REPO in jobs[1].last_error and "403" in jobs[1].last_error


def test_run_without_id_is_skipped_and_threads_accepted(hub, smith, make_bridge):
    runtime = make_bridge(config(presets="[runs]"))
    body = smith.webhook_payload(RULE, seed(smith, 2))
    body["runs"].append({"name": "no id"})
    body["threads"] = [{"thread_id": "t-1"}]
    deliver(runtime, body)
    export, _ = run_jobs(runtime)
    assert export.result["counts"]["without_id"] == 1 and export.result["counts"]["threads"] == 1
    assert len(read_rows(hub)) == 2


def test_feedback_links_point_at_the_bridge_page_never_at_the_token(hub, smith, make_bridge):
    runtime = make_bridge(config(presets="[runs]", extra="    feedback_links: {keys: [user_score], expires_hours: 24}"),
                          BRIDGE_PUBLIC_URL="https://bridge.example.org")
    [run_id] = seed(smith, 1, feedback=False)
    deliver(runtime, smith.webhook_payload(RULE, [run_id]))
    run_jobs(runtime)
    [row] = read_rows(hub)
    [link] = row["feedback_urls"]
    assert link["key"] == "user_score" and link["expires_at"] > datetime.now(timezone.utc)
    assert smith.recorder.count("POST", r"/feedback/tokens$") == 1
    [token] = smith.store.tokens.values()
    assert link["url"] == f"https://bridge.example.org/feedback/{token['id']}"
    stored = runtime.ledger.feedback_token(token["id"])
    assert stored["run_id"] == run_id and "/feedback/tokens/" in stored["url"]
    assert "question 0" in json.loads(stored["preview"])["inputs"]
    assert "bob@example.com" not in stored["preview"]  # the page shows the redacted run, like the dataset


def test_no_feedback_links_without_a_public_url(hub, smith, make_bridge):
    runtime = make_bridge(config(presets="[runs]", extra="    feedback_links: {keys: [user_score]}"))
    deliver(runtime, smith.webhook_payload(RULE, seed(smith, 1, feedback=False)))
    run_jobs(runtime)
    [row] = read_rows(hub)
    assert row["feedback_urls"] == [] and smith.recorder.count("POST", r"/feedback/tokens$") == 0


def test_dataset_loads_with_datasets_and_shards_share_schema(hub, smith, make_bridge, tmp_path):
    import datasets

    runtime = make_bridge(config())
    deliver(runtime, smith.webhook_payload(RULE, seed(smith, 3)))
    run_jobs(runtime)
    deliver(runtime, smith.webhook_payload(RULE, seed(smith, 2, feedback=False)))
    run_jobs(runtime)
    out = tmp_path / "download"
    for path in hub.list_files(REPO):
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_bytes(hub.read_file(REPO, path))
    schemas = {pq.read_schema(out / p) for p in shards(hub)}
    assert len(shards(hub)) == 2 and len(schemas) == 1
    loaded = datasets.load_dataset(str(out), "runs", split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.num_rows == 5
    assert datasets.load_dataset(str(out), "sft", split="train", cache_dir=str(tmp_path / "cache")).num_rows >= 1
