"""Crashes and lost state, with the real app as a subprocess: `python app.py --no-share --port P --config Y`.

A. SIGKILL while jobs are queued, running (uploads and a commit held open by the emulators) and rows are buffered;
   restart on the same state dir -> every delivery answered 2xx ends up in LangSmith / the Hub exactly once.
B. A restart with an EMPTY state dir, then every delivery again (the same LangSmith bodies, and the Hub's recorded
   push payloads re-POSTed) -> no duplicate experiment, dataset row, commit or PR comment.

The emulators run in this process (fixtures `hub`, `smith`); the app reaches them over loopback.
"""

from __future__ import annotations

import io
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
import requests

from bridge.formats.pr_comment import marker
from bridge.sandbox.demo import QUESTIONS, lm_eval_files
from apps import AppProcess, emulator_env
from conftest import wait_for
from test_flow_exports import RULE, chat_run

HUB_SECRET = "crash-test-hub-secret"
LS_SECRET = "crash-test-ls-secret"
EXPORT_REPO = "acme/crash-feedback"
EVAL_REPOS = [f"acme/crash{i}-evals" for i in range(3)]
PUSHES = 3  # per eval repo, then one PR: 10 experiment jobs
LS_DELIVERIES = 16  # of 4 runs each, overlapping by one run: 49 runs
BETTER = [(q, a, a) for q, a, _ in QUESTIONS]


def config(flush_seconds: float) -> str:
    return f"""
experiments:
  - repo: "acme/*-evals"
    files: ["**/samples_*.jsonl"]
exports:
  - rule_id: "{RULE}"
    repo: "{EXPORT_REPO}"
    presets: [runs, sft]
    flush_seconds: {flush_seconds}
    redact: [emails]
jobs: {{backoff_seconds: 0.2, max_backoff_seconds: 1, workers: 2}}
reconcile_minutes: 0
"""


class App(AppProcess):
    """The bridge as a user runs it, as a subprocess pointed at the in-process emulators."""

    def __init__(self, folder: Path, hub, smith, config_text: str, **env: str) -> None:
        self.config = folder / "bridge.yaml"
        self.config.write_text(config_text)
        secrets = {"WEBHOOK_SECRET": HUB_SECRET, "LANGSMITH_WEBHOOK_SECRET": LS_SECRET}
        super().__init__(folder, ["--config", str(self.config)], emulator_env(hub, smith, **{**secrets, **env}))

    def query(self, sql: str) -> list:
        """Reads the app's SQLite store read-only, safe while the app runs (WAL)."""
        conn = sqlite3.connect(f"file:{self.state / 'bridge.sqlite3'}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def post_langsmith(self, body: dict) -> int:
        return requests.post(self.base + "/webhooks/langsmith", params={"secret": LS_SECRET}, json=body,
                             timeout=10).status_code

    def post_hub(self, payload: dict) -> int:
        return requests.post(self.base + "/webhooks/hub", headers={"X-Webhook-Secret": HUB_SECRET}, json=payload,
                             timeout=10).status_code


# ---------------------------------------------------------------- what is sent


class World:
    """The traffic of both scenarios and what it must leave behind."""

    def __init__(self, hub, smith) -> None:
        self.hub, self.smith = hub, smith
        self.ls_answers: list[tuple[dict, int]] = []
        self.pr: tuple[str, int, str] | None = None
        for repo in EVAL_REPOS:
            hub.create_repo(repo)

    def langsmith_bodies(self) -> list[dict]:
        """Deliveries of 4 runs each, overlapping by one run; every 5th run offloaded behind object URLs."""
        ids = []
        for i in range(3 * LS_DELIVERIES + 1):
            run = self.smith.add_run(chat_run(i), offload=i % 5 == 0)
            self.smith.add_feedback(run["id"], "user_score", score=i % 2)
            ids.append(run["id"])
        return [self.smith.webhook_payload(RULE, ids[3 * i:3 * i + 4]) for i in range(LS_DELIVERIES)]

    def deliver_langsmith(self, app: App, bodies: list[dict]) -> None:
        for body in bodies:
            self.ls_answers.append((body, app.post_langsmith(body)))

    def push(self) -> None:
        """Pushes to main of each eval repo, then a PR with better answers on the first one."""
        day = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
        for push in range(PUSHES):
            for i, repo in enumerate(EVAL_REPOS):
                files = lm_eval_files(day + timedelta(days=push), f"acme/crash{i}-model", QUESTIONS)
                self.hub.commit(repo, files, message=f"results {push}", author="acme")
        num, sha = self.hub.open_pr(EVAL_REPOS[0], lm_eval_files(day + timedelta(days=9), "acme/crash0-model",
                                                                 BETTER), author="acme")
        self.pr = (EVAL_REPOS[0], num, sha)

    # ---- what must be true afterwards
    def answered_pushes(self) -> dict[str, set[str]]:
        """repo -> every new sha of an eval repo whose push the app answered 2xx."""
        shas: dict[str, set[str]] = {repo: set() for repo in EVAL_REPOS}
        for d in self.hub.deliveries:
            if d["repo"] in shas and d["scope"] == "repo.content" and d["status"] and 200 <= d["status"] < 300:
                shas[d["repo"]] |= {u["newSha"] for u in d["payload"]["updatedRefs"] if u["newSha"]}
        return shas

    def experiments(self) -> dict[str, list[str]]:
        return {repo: sorted(e["metadata"]["hf_revision"]
                             for e in self.smith.experiments(f"{repo.split('/')[1]}/demo_qa")) for repo in EVAL_REPOS}

    def rows(self, preset: str = "runs") -> list[dict]:
        rows = []
        for path in self.hub.list_files(EXPORT_REPO):
            if path.startswith(f"{preset}/") and path.endswith(".parquet"):
                rows += pq.read_table(io.BytesIO(self.hub.read_file(EXPORT_REPO, path))).to_pylist()
        return rows

    def pr_comments(self) -> int:
        repo, num, sha = self.pr
        return len([c for c in self.hub.comments(repo, num) if marker(sha) in c["content"]])

    def bridge_commits(self) -> int:
        return len([c for c in self.hub.commits(EXPORT_REPO) if "[hub-langsmith-bridge]" in c["title"]])

    def snapshot(self) -> dict:
        return {"experiments": self.experiments(), "run_ids": sorted(r["run_id"] for r in self.rows()),
                "sft_ids": sorted(r["run_id"] for r in self.rows("sft")), "pr_comments": self.pr_comments(),
                "bridge_commits": self.bridge_commits()}

    def check_exactly_once(self) -> dict:
        """Every delivery answered 2xx landed once: experiments per dataset, rows unique by run_id and complete."""
        pushed = self.answered_pushes()
        assert sum(map(len, pushed.values())) == len(EVAL_REPOS) * PUSHES + 1, pushed  # all answered 2xx
        assert self.experiments() == {repo: sorted(shas) for repo, shas in pushed.items()}
        delivered = {str(r["id"]) for body, status in self.ls_answers if 200 <= status < 300 for r in body["runs"]}
        rows = self.rows()
        assert len(rows) == len({r["run_id"] for r in rows}), "a run was exported twice"
        assert {r["run_id"] for r in rows} == delivered
        for row in rows:  # complete: offloaded inputs fetched, feedback joined
            assert "question" in row["inputs"] and "Sure" in row["outputs"], row["run_id"]
            assert [f["key"] for f in row["feedback"]] == ["user_score"], row["run_id"]
        sft = self.rows("sft")
        assert len(sft) == len({r["run_id"] for r in sft})
        assert self.pr_comments() == 1
        return self.snapshot()


PERIODIC = "('housekeeping', 'reconcile')"  # chains that always have their next run scheduled


def job_summary(app: App) -> dict:
    return dict(app.query(f"SELECT state, COUNT(*) FROM jobs WHERE kind NOT IN {PERIODIC} GROUP BY state"))


def settled(app: App) -> bool:
    """No work job waiting (due or scheduled, e.g. a flush for the end of its window) or running."""
    return not app.query(f"SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running') AND kind NOT IN {PERIODIC}")[0][0]


# ---------------------------------------------------------------- A: SIGKILL mid-work


def test_sigkill_with_jobs_queued_running_and_rows_buffered_then_restart(hub, smith, tmp_path):
    world = World(hub, smith)
    app = App(tmp_path, hub, smith, config(flush_seconds=10))
    state, bodies = tmp_path / "state", world.langsmith_bodies()
    try:
        app.start(state)
        hub.add_webhook(app.base + "/webhooks/hub", watched=[{"type": "user", "name": "acme"}], secret=HUB_SECRET)
        # The first flush's commit is performed by the Hub but acknowledged only after 15 s (then dropped):
        # killed meanwhile, its rows are still "buffered" although they are already in the repo.
        hub.recorder.add_fault(r"/commit/", method="POST", after=True, delay=15, drop=True, times=1)
        half = LS_DELIVERIES // 2
        world.deliver_langsmith(app, bodies[:half])
        # Its commit must have been sent (it then holds the first half's rows only) before the second half arrives.
        wait_for(lambda: running(app, "flush") and commit_landed_unanswered(hub), timeout=30,
                 what="the first flush (at the end of its window) to send its commit")
        world.deliver_langsmith(app, bodies[half:])  # buffered for the next window
        assert [s for _, s in world.ls_answers] == [202] * LS_DELIVERIES
        wait_for(lambda: app.query("SELECT COUNT(*) FROM jobs WHERE kind = 'export' AND state = 'succeeded'")[0][0]
                 == LS_DELIVERIES, timeout=30, what="the later exports to buffer their rows")
        # Uploads LangSmith performs but answers only 5 s later (then drops): the other worker is stuck in one,
        # the other experiment jobs wait in the queue.
        smith.recorder.add_fault("upload-experiment", method="POST", after=True, delay=5, drop=True, times=1000)
        world.push()
        assert hub.wait_for_deliveries(timeout=30)

        def mid_work() -> bool:
            jobs = app.health()["jobs"]
            buffered = app.query("SELECT COUNT(*) FROM export_buffer")[0][0]
            return (commit_landed_unanswered(hub) and running(app, "flush") and running(app, "experiment")
                    and jobs["queued"] >= 1 and buffered >= 1)
        wait_for(mid_work, timeout=30, interval=0.05, what="jobs queued and running with rows buffered")
        before = job_summary(app)
        app.kill()
        hub.recorder.faults.clear()
        smith.recorder.faults.clear()

        app.start(state)  # same state dir: running jobs are recovered, buffered rows get a flush
        wait_for(lambda: settled(app) and not app.query("SELECT COUNT(*) FROM export_buffer")[0][0], timeout=90,
                 interval=0.3, what="the restarted app to finish every job")
        after = job_summary(app)
        crashed = dict(app.query("SELECT j.kind, COUNT(*) FROM attempts a JOIN jobs j ON j.id = a.job_id "
                                 "WHERE a.outcome = 'crashed' GROUP BY j.kind"))
    finally:
        app.stop()
    print(f"\nbefore the kill: {before}; after the restart: {after}; attempts cut by the kill: {crashed}")
    assert before.get("queued", 0) >= 1 and crashed.get("flush") == 1 and crashed.get("experiment", 0) >= 1
    assert set(after) == {"succeeded"}, (after, app.log_text()[-3000:])
    world.check_exactly_once()
    # the commit the kill interrupted was found in the repo: one commit for it, one for the rows after it
    assert world.bridge_commits() == 2


def commit_landed_unanswered(hub) -> bool:
    """The Hub holds the first bridge commit, and its answer is still held back by the fault."""
    held = [r for r in hub.recorder.requests if r.method == "POST" and "/commit/" in r.path and r.status == 0]
    return bool(held) and any("[hub-langsmith-bridge]" in c["title"] for c in hub.commits(EXPORT_REPO))


def running(app: App, kind: str) -> bool:
    return app.query(f"SELECT COUNT(*) FROM jobs WHERE kind = '{kind}' AND state = 'running'")[0][0] > 0


# ---------------------------------------------------------------- B: empty state dir, everything delivered again


def test_empty_state_dir_and_every_delivery_again_duplicates_nothing(hub, smith, tmp_path):
    world = World(hub, smith)
    app = App(tmp_path, hub, smith, config(flush_seconds=1))
    try:
        app.start(tmp_path / "first")
        hub.add_webhook(app.base + "/webhooks/hub", watched=[{"type": "user", "name": "acme"}], secret=HUB_SECRET)
        bodies = world.langsmith_bodies()
        world.deliver_langsmith(app, bodies)
        world.push()
        assert hub.wait_for_deliveries(timeout=30)
        wait_for(lambda: settled(app), timeout=90, interval=0.3, what="the first app to finish")
        assert hub.wait_for_deliveries(timeout=30)  # including those of the bridge's own commits
        assert set(job_summary(app)) == {"succeeded"}, app.log_text()[-3000:]
        first = world.check_exactly_once()
        app.stop()

        app.start(tmp_path / "second")  # a Space restarted on a fresh disk
        hub_payloads = [d["payload"] for d in list(hub.deliveries)]
        assert all(200 <= app.post_hub(p) < 300 for p in hub_payloads)
        world.deliver_langsmith(app, bodies)
        assert [s for _, s in world.ls_answers] == [202] * 2 * LS_DELIVERIES  # a fresh store accepts them again
        wait_for(lambda: settled(app), timeout=90, interval=0.3, what="the second app to finish")
        summary = job_summary(app)
    finally:
        app.stop()
    assert set(summary) == {"succeeded"}, (summary, app.log_text()[-3000:])
    assert world.check_exactly_once() == first
