"""Nothing leaks: the whole app as a subprocess with distinctive secret values, then every surface is searched.

One scenario (module fixture) runs both directions with the canary credentials: eval results on main and in a PR
(with HTML in the task and model names), LangSmith runs with offloaded inputs (two behind object URLs that redirect
to `file://` and `ftp://`), a job for a repo that does not exist, and two jobs failing with an upstream 401 whose
body echoes the token. The tests then look for the canaries in the logs, pages, gradio API, /healthz, /metrics,
the SQLite store, the exported dataset and the sandbox experiments, and check redirects and HTML escaping.
"""

from __future__ import annotations

import io
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow.parquet as pq
import pytest
import requests

from bridge.formats.pr_comment import marker
from bridge.sandbox.demo import QUESTIONS, lm_eval_files
from conftest import wait_for
from hub_payloads import content_push
from test_crash import App
from test_flow_exports import RULE, chat_run

HF = "hf_LEAKCANARY_hub_token_9q"
LS = "lsv2_LEAKCANARY_ls_key_7w"
HUB_SECRET = "LEAKCANARY_hub_secret_3e"
LS_SECRET = "LEAKCANARY_ls_secret_5r"
ADMIN_PW = "LEAKCANARY_admin_pw_1t"
# Whole values, and their tails: a value masked by keeping its start ("lsv2_LEAK...key_7w") still counts as a leak.
CANARIES = [HF, LS, HUB_SECRET, LS_SECRET, ADMIN_PW, "LEAKCANARY",
            "hub_token_9q", "ls_key_7w", "hub_secret_3e", "ls_secret_5r", "admin_pw_1t"]
XSS = "<img src=x onerror=alert(1)>"
EVAL_REPO, EXPORT_REPO = "acme/leak-evals", "acme/leak-feedback"
TRACES = "leak-traces"  # the bridge traces its own jobs there (BRIDGE_TRACE_PROJECT)
MANAGED_PROJECT = "leak-managed"  # the bridge creates and keeps its own rule on it
CONFIG = f"""
experiments:
  - repo: "acme/*-evals"
    files: ["**/samples_*.jsonl"]
exports:
  - rule_id: "{RULE}"
    repo: "{EXPORT_REPO}"
    presets: [runs, sft, preference, kto]
    flush_seconds: 0
    redact: [emails, secrets]
    feedback_links: {{keys: [user_score], expires_hours: 24}}
  - repo: acme/leak-managed
    rule: {{project: {MANAGED_PROJECT}}}
jobs: {{backoff_seconds: 0.2, max_backoff_seconds: 1}}
reconcile_minutes: 0
"""


PERIODIC = ("scores", "housekeeping", "hub_webhook", "rules")  # start-up and upkeep jobs, checked below


def leaks(text: str) -> list[str]:
    return [c for c in CANARIES if c in text]


# ---------------------------------------------------------------- a loopback server that redirects object URLs


class Redirects(BaseHTTPRequestHandler):
    """`/file` answers 302 to file:///etc/passwd, `/ftp` to ftp://; every request's headers are kept."""

    seen: list[dict] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        Redirects.seen.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
        target = {"/file": "file:///etc/passwd", "/ftp": "ftp://127.0.0.1/etc/passwd"}.get(self.path)
        self.send_response(302 if target else 404)
        if target:
            self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def redirect_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirects)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------- the scenario, run once


@dataclass
class Outcome:
    """Everything the scenario left behind, collected while the app ran and after it stopped."""

    hub: object
    smith: object
    logs: str = ""
    http: dict[str, tuple[int, str]] = field(default_factory=dict)
    gradio: dict[str, str] = field(default_factory=dict)
    jobs: list = field(default_factory=list)
    attempts: dict[int, list] = field(default_factory=dict)
    state_files: dict[str, bytes] = field(default_factory=dict)
    pr: tuple = ()
    redirect_runs: list[str] = field(default_factory=list)


def xss_files(day: datetime, questions) -> dict[str, bytes]:
    """An lm-eval pair whose task (from the file name) and model (from results json) are HTML."""
    files = lm_eval_files(day, "acme/xss-model", questions)
    out = {}
    for path, data in files.items():
        folder, name = path.split("/")
        if name.startswith("results_"):
            results = json.loads(data)
            results["model_name"] = XSS
            results["results"] = {XSS: results["results"]["demo_qa"]}
            data = json.dumps(results).encode()
        out[f"{folder}/{name.replace('demo_qa', XSS)}"] = data
    return out


@pytest.fixture(scope="module")
def outcome(tmp_path_factory, redirect_server):
    from bridge.sandbox.hub import HubEmulator
    from bridge.sandbox.langsmith_emu import LangSmithEmulator

    root = tmp_path_factory.mktemp("secrets")
    hub = HubEmulator(root / "hub", tokens={HF: "acme"})
    smith = LangSmithEmulator({LS}, rate_limits=False)
    handles = [hub.serve(), smith.serve()]
    app = App(root, hub, smith, CONFIG, HF_TOKEN=HF, LANGSMITH_API_KEY=LS, WEBHOOK_SECRET=HUB_SECRET,
              LANGSMITH_WEBHOOK_SECRET=LS_SECRET, BRIDGE_ADMIN_PASSWORD=ADMIN_PW, BRIDGE_TRACE_PROJECT=TRACES)
    # A public URL: the bridge manages its Hub webhook and its LangSmith rule, both carrying the canary secrets.
    app.env["BRIDGE_PUBLIC_URL"] = app.base
    smith.create_project(MANAGED_PROJECT)
    result = Outcome(hub, smith)
    try:
        app.start(root / "state")
        run_scenario(app, hub, smith, result, redirect_server)
        collect_http(app, result)
    finally:
        app.stop()
        for handle in handles:
            handle.stop()
    collect_state(app, result)
    yield result


def run_scenario(app: App, hub, smith, result: Outcome, redirect_server: str) -> None:
    hub.add_webhook(app.base + "/webhooks/hub", watched=[{"type": "user", "name": "acme"}], secret=HUB_SECRET)
    day = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
    for repo in (EVAL_REPO, "acme/leak401-evals"):
        hub.create_repo(repo)
    # the Hub answers 401 with a body that repeats the token it was given
    hub.recorder.add_fault(r"/api/datasets/acme/leak401-evals/tree/", status=401,
                           body=f"Invalid credentials in Authorization header: Bearer {HF} is not a valid token")
    smith.recorder.add_fault("upload-experiment", method="POST", drop=True, times=1)
    hub.recorder.add_fault(r"/discussions/\d+/comment", method="POST", drop=True, times=1)
    hub.commit(EVAL_REPO, xss_files(day, QUESTIONS), message="results", author="acme")
    hub.commit("acme/leak401-evals", lm_eval_files(day, "acme/m401", QUESTIONS), message="results", author="acme")
    num, sha = hub.open_pr(EVAL_REPO, xss_files(day + timedelta(days=1), [(q, a, a) for q, a, _ in QUESTIONS]),
                           author="acme")
    result.pr = (EVAL_REPO, num, sha)
    # connection errors on both sides too: their texts (the SDKs' can quote the key) end up in attempts and logs
    assert hub.wait_for_deliveries(timeout=30)
    # an upload for a repo that does not exist
    ghost = content_push(repo="acme/ghost-evals")
    assert requests.post(app.base + "/webhooks/hub", json=ghost, headers={"X-Webhook-Secret": HUB_SECRET},
                         timeout=10).status_code == 202

    # LangSmith -> Hub: offloaded runs, two of them behind object URLs that redirect to other schemes
    ids = [seed_run(smith, i) for i in range(4)]
    body = smith.webhook_payload(RULE, ids)
    for run, path in zip(body["runs"][:2], ("/file", "/ftp")):
        run["inputs_s3_urls"] = {"ROOT": {"presigned_url": redirect_server + path}}
        result.redirect_runs.append(str(run["id"]))
    assert post_langsmith(app, body) == 202
    wait_for(app.idle, timeout=60, interval=0.3, what="the first jobs to finish")
    # then a LangSmith 401 whose body repeats the API key, on the next delivery's feedback listing
    smith.recorder.add_fault(r"/feedback$", method="GET", status=401, times=1,
                             body=f"Invalid API key {LS} (x-api-key: {LS})")
    assert post_langsmith(app, smith.webhook_payload(RULE, [seed_run(smith, 10)])) == 202
    wait_for(app.idle, timeout=60, interval=0.3, what="every job to finish")


def seed_run(smith, i: int) -> str:
    run = smith.add_run(chat_run(i), offload=True)
    smith.add_feedback(run["id"], "user_score", score=i % 2)
    return run["id"]


def post_langsmith(app: App, body: dict) -> int:
    return requests.post(app.base + "/webhooks/langsmith", params={"secret": LS_SECRET}, json=body,
                         timeout=10).status_code


def collect_http(app: App, result: Outcome) -> None:
    for path in ("/", "/config", "/gradio_api/info", "/healthz", "/metrics"):
        answer = requests.get(app.base + path, timeout=10)
        result.http[path] = (answer.status_code, answer.text)
    config = json.loads(result.http["/config"][1])
    jobs = requests.get(app.base + "/healthz", timeout=10).json()["jobs"]
    for dep in config.get("dependencies", []):
        name = dep.get("api_name")
        if not dep.get("inputs"):  # page loads: overview, settings, review, who is here
            result.gradio[f"{name}"] = call_gradio(app.base, dep["id"], [])
    show = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "show_job")
    listing = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "list_jobs")
    result.gradio["list_jobs"] = call_gradio(app.base, listing, ["all", "all", "all", None, 1])
    for job_id in range(1, sum(jobs.values()) + 1):
        result.gradio[f"show_job {job_id}"] = call_gradio(app.base, show, [job_id])


def call_gradio(base: str, fn_index: int, data: list) -> str:
    """A handler called the way a script can, straight through gradio's queue; returns the completed message."""
    session = uuid.uuid4().hex
    joined = requests.post(base + "/gradio_api/queue/join", timeout=10,
                           json={"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None,
                                 "trigger_id": None})
    assert joined.status_code == 200, joined.text
    with requests.get(base + "/gradio_api/queue/data", params={"session_hash": session}, stream=True,
                      timeout=30) as stream:
        for line in stream.iter_lines():
            message = json.loads(line[5:]) if line.startswith(b"data:") else {}
            if message.get("msg") == "process_completed":
                return json.dumps(message)
    raise AssertionError("the gradio queue stream ended without a result")


def collect_state(app: App, result: Outcome) -> None:
    """After the app stopped: its logs, its store (through the bridge's own classes) and every state file."""
    from bridge.db import Database
    from bridge.jobs import JobStore

    result.logs = app.log_text()
    store = JobStore(Database(app.state / "bridge.sqlite3"))
    result.jobs = store.list(limit=1000)
    result.attempts = {job.id: store.attempts(job.id) for job in result.jobs}
    store.db.close()
    result.state_files = {str(p.relative_to(app.state)): p.read_bytes() for p in app.state.rglob("*") if p.is_file()}


# ---------------------------------------------------------------- the scenario did what it should


def test_scenario_ran_both_directions_and_the_failures(outcome):
    # each fresh start also rebuilds the Experiments page's scores from LangSmith (a `scores` job, issue 16)
    assert all(j.state == "succeeded" for j in outcome.jobs if j.kind == "scores")
    states = sorted((j.kind, j.state) for j in outcome.jobs if j.kind not in PERIODIC)
    assert states == sorted([("experiment", "succeeded"), ("experiment", "succeeded"), ("experiment", "failed"),
                             ("experiment", "failed"), ("export", "succeeded"), ("export", "failed"),
                             ("flush", "succeeded")]), [(j.kind, j.state, j.last_error) for j in outcome.jobs]
    errors = " | ".join(j.last_error or "" for j in outcome.jobs)
    assert "acme/ghost-evals" in errors and "401" in errors and "***" in errors, errors  # the echo was scrubbed
    retried = [a["error"] for attempts in outcome.attempts.values() for a in attempts if a["outcome"] == "retry"]
    assert len(retried) == 2 and all("onnection" in e for e in retried), retried  # the two dropped connections


# ---------------------------------------------------------------- no canary anywhere


def test_logs_hold_no_secret(outcome):
    assert "hub-langsmith-bridge is running" in outcome.logs
    assert leaks(outcome.logs) == [], [line for line in outcome.logs.splitlines() if leaks(line)][:5]


@pytest.mark.parametrize("path", ["/", "/config", "/gradio_api/info", "/healthz"])
def test_pages_and_gradio_api_hold_no_secret(outcome, path):
    status, text = outcome.http[path]
    assert status == 200 and leaks(text) == []


def test_metrics_hold_no_secret(outcome):
    status, text = outcome.http["/metrics"]
    assert status == 200 and "bridge_" in text and leaks(text) == []


def test_every_gradio_handler_answer_holds_no_secret(outcome):
    assert "show_job 1" in outcome.gradio and len(outcome.gradio) > 5
    leaked = {name: leaks(text) for name, text in outcome.gradio.items() if leaks(text)}
    assert leaked == {}


def test_store_jobs_payloads_errors_results_attempts_hold_no_secret(outcome):
    for job in outcome.jobs:
        seen = json.dumps([job.payload, job.last_error, job.result, outcome.attempts[job.id]], default=str)
        assert leaks(seen) == [], (job.id, job.kind, leaks(seen))


def test_no_state_file_holds_a_secret(outcome):
    """The raw bytes of the SQLite database, its WAL and anything else in the state dir."""
    leaked = {name: leaks(data.decode("latin-1")) for name, data in outcome.state_files.items()}
    assert {name: found for name, found in leaked.items() if found} == {}


def test_exported_dataset_files_hold_no_secret(outcome):
    hub = outcome.hub
    files = hub.list_files(EXPORT_REPO)
    assert any(p.endswith(".parquet") for p in files)
    for path in files:
        data = hub.read_file(EXPORT_REPO, path)
        text = data.decode("latin-1")
        if path.endswith(".parquet"):  # compressed pages: look at the decoded values
            text = json.dumps(pq.read_table(io.BytesIO(data)).to_pylist(), default=str)
        assert leaks(text) == [], path


def test_no_dataset_file_holds_a_presigned_feedback_url(outcome):
    """A GET on LangSmith's token URL records feedback, so rows link the bridge's page and never the token URL."""
    hub, tokens = outcome.hub, list(outcome.smith.store.tokens)
    assert tokens, "the scenario made feedback links"
    texts = {}
    for path in hub.list_files(EXPORT_REPO):
        data = hub.read_file(EXPORT_REPO, path)
        texts[path] = (json.dumps(pq.read_table(io.BytesIO(data)).to_pylist(), default=str)
                       if path.endswith(".parquet") else data.decode("latin-1"))
    assert not [p for p, text in texts.items() if "/feedback/tokens" in text]
    runs = "".join(t for p, t in texts.items() if p.startswith("runs/"))
    assert all(f"/feedback/{token}" in runs for token in tokens)


def test_experiments_metadata_holds_no_secret(outcome):
    experiments = outcome.smith.experiments(f"leak-evals/{XSS}")
    assert len(experiments) == 2
    for experiment in experiments:
        assert leaks(json.dumps(experiment, default=str)) == [], experiment["name"]


def test_the_bridge_kept_its_own_webhook_and_rule_with_the_secrets_and_recorded_neither(outcome):
    """The managed Hub webhook and LangSmith rule carry the secrets upstream (that is their job) and nowhere else:
    the state files, logs and pages are searched by the other tests; here, that they were really made."""
    hooks = [h for h in outcome.hub.store.webhooks if h["url"].endswith("/webhooks/hub")]
    assert hooks and all(h["secret"] == HUB_SECRET for h in hooks)
    kinds = {(j.kind, j.state) for j in outcome.jobs}
    assert ("hub_webhook", "succeeded") in kinds and ("rules", "succeeded") in kinds
    rules = outcome.smith.rules.list([], outcome.smith.store.session_by_name(MANAGED_PROJECT)["id"])
    assert rules and all(w["headers"]["X-Webhook-Secret"] == LS_SECRET for r in rules for w in r["webhooks"])
    assert all(LS_SECRET not in w["url"] for r in rules for w in r["webhooks"])  # never in the URL


def test_self_traces_hold_no_secret(outcome):
    """The jobs' own traces (errors included: two upstream answers echo a credential) leave the bridge scrubbed."""
    store = outcome.smith.store
    traces = [r for r in store.runs.values() if store.sessions.get(r["session_id"], {}).get("name") == TRACES]
    assert len(traces) > 10 and any(r.get("error") for r in traces)
    for run in traces:
        assert leaks(json.dumps(run, default=str)) == [], run["name"]


# ---------------------------------------------------------------- object URLs


def test_object_url_fetches_carry_no_api_key(outcome):
    fetches = [r for r in outcome.smith.recorder.requests if r.path.startswith("/_objects/")]
    assert fetches, "no object URL was fetched"
    for request in fetches:  # the recorder shows '***' for a credential that was sent
        assert not {"x-api-key", "authorization", "cookie"} & set(request.headers), request.headers
    for seen in Redirects.seen:
        assert not {"x-api-key", "authorization", "cookie"} & set(seen["headers"]), seen


def test_redirects_to_other_schemes_are_refused_and_the_query_fills_in(outcome):
    assert sorted(s["path"] for s in Redirects.seen) == ["/file", "/ftp"]  # each fetched once, never followed
    export = next(j for j in outcome.jobs if j.kind == "export" and j.state == "succeeded")
    assert export.result["counts"]["runs_queried"] == 2
    assert outcome.smith.recorder.count("POST", r"/runs/query") == 1
    rows = {}
    for path in outcome.hub.list_files(EXPORT_REPO):
        if path.startswith("runs/"):
            rows |= {r["run_id"]: r for r in pq.read_table(io.BytesIO(outcome.hub.read_file(EXPORT_REPO, path)))
                     .to_pylist()}
    for run_id in outcome.redirect_runs:
        assert "question" in rows[run_id]["inputs"] and "root:" not in rows[run_id]["inputs"]


# ---------------------------------------------------------------- HTML from file contents stays text


def test_pr_comment_escapes_html_from_task_and_model(outcome):
    repo, num, sha = outcome.pr
    [comment] = [c["content"] for c in outcome.hub.comments(repo, num) if marker(sha) in c["content"]]
    assert XSS not in comment and "<img" not in comment
    assert "&lt;img src=x onerror=alert\\(1\\)&gt;" in comment  # escaped for HTML, then for Markdown


# Regression: an export job's view once failed (its payload refers to the stored delivery since a3591cb).
def test_every_job_view_renders(outcome):
    failed = {job.id: job.kind for job in outcome.jobs  # those stored when the views were read
              if '"success": false' in outcome.gradio.get(f"show_job {job.id}", "")}
    assert sum(f"show_job {job.id}" in outcome.gradio for job in outcome.jobs) >= 8
    assert failed == {}


def test_job_views_escape_html_from_task_and_model(outcome):
    experiment_views = [text for name, text in outcome.gradio.items()
                        if name.startswith("show_job") and "onerror" in text]
    assert experiment_views, "no job view shows the task or model"
    for text in experiment_views:
        assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "<img" not in outcome.gradio["list_jobs"]
