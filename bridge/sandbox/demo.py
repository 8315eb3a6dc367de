"""`python app.py --sandbox`: both emulators in-process, demo data, and a bridge pointed at them.

Nothing here needs an account or the network. The state lives in a fresh temporary folder unless
BRIDGE_STATE_DIR is set. Once the bridge listens it creates its own webhook on the sandbox Hub (as on the real Hub),
then one push is made, and once `main`'s experiment exists a pull request that regresses one row. On the LangSmith
side the bridge creates its own rule (the demo's exports entry uses `rule:`), the sandbox LangSmith runs that rule
every few seconds like LangSmith does, and a few conversations are traced into the project with the real SDK's
`@traceable`, so both directions show finished jobs within seconds of starting. Any app pointed at the sandbox
LangSmith (the console prints LANGSMITH_ENDPOINT and a key) has its traces exported the same way.
"""

from __future__ import annotations

import json
import logging
import secrets
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from langsmith import Client, traceable
from langsmith.run_helpers import tracing_context

from .hub import HubEmulator
from .langsmith_emu import LangSmithEmulator

log = logging.getLogger("bridge.sandbox")

USER = "sandbox-user"
EVAL_REPO = f"{USER}/demo-evals"
EXPORT_REPO = f"{USER}/demo-feedback"
RULE_INTERVAL = 2.0  # seconds between two passes of the sandbox LangSmith's rule worker
PROJECT = "demo-support-bot"
MODEL = "demo-org/tiny-chat-1b"
BENCHMARK = "demo-org/demo-qa"  # a benchmark dataset (it has an eval.yaml) with a leaderboard
RIVAL = "demo-org/small-chat-3b"  # already on that leaderboard
CREDENTIALS_FILE = "sandbox-credentials.json"

CONFIG = f"""\
# Demo configuration written by `python app.py --sandbox`.
experiments:
  - repo: "{USER}/*-evals"
    files: ["**/samples_*.jsonl", "**/*.csv"]
    eval_results:                 # the scores also go to the model's page (a PR on {MODEL})
      benchmarks:
        "demo_qa": {{dataset: {BENCHMARK}, task_id: default, score: exact_match}}
exports:
  - repo: "{EXPORT_REPO}"
    rule:  # the bridge creates this rule in the sandbox LangSmith and keeps it
      project: "{PROJECT}"
    presets: [runs, sft, preference, kto]
    feedback_links: {{keys: [user_score], expires_hours: 168}}
    redact: [emails, secrets]
    flush_seconds: 5
jobs:
  backoff_seconds: 1
"""

QUESTIONS = [
    ("What is the capital of France?", "Paris", "Paris"),
    ("How many legs does a spider have?", "8", "8"),
    ("What colour do you get by mixing blue and yellow?", "green", "green"),
    ("Who wrote 'Pride and Prejudice'?", "Jane Austen", "Charlotte Brontë"),
    ("What is 12 times 12?", "144", "144"),
    ("Which planet is known as the red planet?", "Mars", "Jupiter"),
]
# The demo pull request: a model change that fixes Austen and breaks the spider (and the escaping of "<legs>").
PR_QUESTIONS = [QUESTIONS[0], ("How many legs does a spider have?", "8", "6 <legs> | **bold**"), QUESTIONS[2],
                ("Who wrote 'Pride and Prejudice'?", "Jane Austen", "Jane Austen"), *QUESTIONS[4:]]


def lm_eval_files(day: datetime, model: str, questions: list[tuple[str, str, str]]) -> dict[str, bytes]:
    """An lm-evaluation-harness `--log_samples` pair (samples + results) in the current (v0.4.7+) shape."""
    stamp = day.strftime("%Y-%m-%dT%H-%M-%S.%f")
    folder = model.replace("/", "__")
    lines = []
    for doc_id, (question, answer, prediction) in enumerate(questions):
        prompt = f"Question: {question}\nAnswer:"
        lines.append(json.dumps({
            "doc_id": doc_id, "doc": {"question": question, "answer": answer}, "target": answer,
            "arguments": {"gen_args_0": {"arg_0": prompt, "arg_1": {"until": ["\n"], "do_sample": False}}},
            "resps": [[f" {prediction}"]], "filtered_resps": [prediction], "filter": "none",
            "metrics": ["exact_match"], "exact_match": float(prediction == answer),
            "doc_hash": f"{doc_id:064x}", "prompt_hash": f"{doc_id + 100:064x}", "target_hash": f"{doc_id + 200:064x}",
        }))
    accuracy = sum(p == a for _, a, p in questions) / len(questions)
    results = {"results": {"demo_qa": {"alias": "demo_qa", "exact_match,none": accuracy}},
               "model_name": model, "date": day.timestamp(), "n-samples": {"demo_qa": len(questions)},
               "higher_is_better": {"demo_qa": {"exact_match": True}}}
    return {f"{folder}/samples_demo_qa_{stamp}.jsonl": ("\n".join(lines) + "\n").encode(),
            f"{folder}/results_{stamp}.json": json.dumps(results, indent=2).encode()}


CONVERSATIONS = [  # question, answer, user_score, correction
    ("How do I reset my password?", "Go to Settings → Security → Reset password.", 1, None),
    ("Can I export my data as CSV?", "No, only JSON is supported.", 0, "Yes: Settings → Export → CSV."),
    ("What are your opening hours?", "We are open 9:00–17:00 CET, Monday to Friday.", 1, None),
    ("My invoice shows the wrong VAT number, write to me at jane@example.com",
     "I have forwarded this to billing.", 1, None),
    ("Is there a mobile app?", "There is no mobile app.", 0, "Yes, for iOS and Android."),
]


@traceable(run_type="llm", name="ChatOpenAI", tags=["support", "demo"],
           metadata={"ls_model_name": "gpt-4o-mini", "ls_provider": "openai"})
def support_bot(messages: list[dict], answer: str) -> dict:
    """Stands in for a chat model: what LangSmith records for one LangChain ChatOpenAI call."""
    return {"generations": [[{"text": answer, "message": {"type": "ai", "data": {"content": answer}}}]]}


def trace_conversations(endpoint: str, api_key: str) -> list[str]:
    """Traces the demo conversations into the sandbox LangSmith with the SDK's own tracing, then rates them."""
    client = Client(api_url=endpoint, api_key=api_key)
    ids = []
    with tracing_context(enabled=True, client=client, project_name=PROJECT):
        for question, answer, _, _ in CONVERSATIONS:
            run_id = str(uuid.uuid4())
            support_bot([{"role": "system", "content": "You are a helpful support agent."},
                         {"role": "user", "content": question}], answer, langsmith_extra={"run_id": run_id})
            ids.append(run_id)
    client.flush()
    project_id = client.read_project(project_name=PROJECT).id
    for run_id, (_, _, score, correction) in zip(ids, CONVERSATIONS):
        client.create_feedback(run_id, "user_score", score=score, trace_id=run_id, session_id=project_id)
        if correction:
            client.create_feedback(run_id, "correction", correction={"output": correction}, trace_id=run_id,
                                   session_id=project_id)
    client.flush()
    client.cleanup()
    return ids


@dataclass
class Sandbox:
    root: Path
    hub: HubEmulator
    smith: LangSmithEmulator
    env: dict[str, str]
    config_path: Path
    run_ids: list[str] = field(default_factory=list)
    handles: list[Any] = field(default_factory=list)

    def connect(self, runtime: Any, local_url: str) -> None:
        """Once the bridge has created its webhook on the sandbox Hub (as it would on the real one), makes one push
        and opens a PR; starts the sandbox LangSmith's rule worker and, once the bridge has created its rule, traces
        the demo conversations."""
        base = local_url.rstrip("/")
        threading.Thread(target=self._demo_traffic, args=(base,), daemon=True, name="sandbox-demo").start()
        print_guide(self, base)

    def _demo_traffic(self, base: str) -> None:
        if not self._wait_for_bridge_webhook(f"{base}/webhooks/hub"):
            log.warning("the bridge did not create its Hub webhook (see the Overview); adding one for the demo")
            self.hub.add_webhook(f"{base}/webhooks/hub", watched=[{"type": "user", "name": USER}],
                                 secret=self.env["WEBHOOK_SECRET"])
        day = datetime.now(timezone.utc)
        self.hub.commit(EVAL_REPO, lm_eval_files(day - timedelta(hours=20), MODEL, QUESTIONS[:5]),
                        repo_type="dataset", message="Re-run demo_qa", author=USER)
        self.hub.commit(EVAL_REPO, lm_eval_files(day, MODEL, QUESTIONS), repo_type="dataset",
                        message="Add demo_qa results", author=USER)
        self.smith.rules.start(RULE_INTERVAL)
        threading.Thread(target=self._trace_when_ruled, daemon=True, name="sandbox-traces").start()
        self._open_pr(day)

    def links(self) -> dict[str, str]:
        """What the Overview's sandbox panel shows: the emulators' pages, the demo repos and project, the files."""
        hub, smith = self.env["HF_ENDPOINT"], self.env["LANGSMITH_ENDPOINT"]
        tenant, project = self.smith.store.tenant_id, self.smith.store.session_by_name(PROJECT)
        return {"hub": hub, "langsmith": smith, "eval_repo": EVAL_REPO, "export_repo": EXPORT_REPO,
                "project": PROJECT, "model": MODEL, "eval_repo_url": f"{hub}/datasets/{EVAL_REPO}",
                "export_repo_url": f"{hub}/datasets/{EXPORT_REPO}", "pr_url": f"{hub}/datasets/{EVAL_REPO}/discussions/1",
                "langsmith_home": f"{smith}/o/{tenant}/projects", "project_url": f"{smith}/o/{tenant}/projects/p/"
                                                                                  f"{project['id']}",
                "credentials": str(self.credentials_path),
                "config": str(self.config_path), "state": str(self.root)}

    @property
    def credentials_path(self) -> Path:
        return self.root / CREDENTIALS_FILE

    def _wait_for_bridge_webhook(self, url: str, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(h["url"] == url and not h["disabled"] for h in list(self.hub.store.webhooks)):
                return True
            time.sleep(0.1)
        return False

    def _trace_when_ruled(self, timeout: float = 120.0) -> None:
        """LangSmith applies a rule to runs that arrive after it exists: the traces wait for the bridge's rule."""
        deadline = time.monotonic() + timeout
        project = self.smith.store.session_by_name(PROJECT)
        while not self.smith.rules.list([], project["id"]):
            if time.monotonic() > deadline:
                log.warning("the bridge created no LangSmith rule in %.0f s: no demo traces (see the Overview)", timeout)
                return
            time.sleep(0.5)
        try:
            self.run_ids = trace_conversations(self.env["LANGSMITH_ENDPOINT"], self.env["LANGSMITH_API_KEY"])
        except Exception:  # the demo's traces are a convenience: the bridge keeps running without them
            log.exception("tracing the demo conversations into the sandbox LangSmith failed")

    def _open_pr(self, day: datetime, timeout: float = 120.0) -> None:
        """Once `main`'s experiment exists (the PR is compared with it), a PR whose results regress one row."""
        deadline = time.monotonic() + timeout
        while not self.smith.experiments(f"{EVAL_REPO.split('/')[1]}/demo_qa"):
            if time.monotonic() > deadline:
                log.warning("sandbox: main's demo experiment did not appear; the demo PR is not opened")
                return
            time.sleep(0.5)  # a person is watching the demo: polling twice a second is plenty
        self.hub.open_pr(EVAL_REPO, lm_eval_files(day + timedelta(hours=1), MODEL, PR_QUESTIONS),
                         title="Try the new decoding settings", author=USER)

    def stop(self) -> None:
        for handle in self.handles:
            handle.stop()


def seed_benchmark(hub: HubEmulator) -> None:
    """A benchmark dataset for `demo_qa`, the demo model's repo, and a rival model already on the leaderboard."""
    hub.create_repo(BENCHMARK, repo_type="dataset")
    hub.commit(BENCHMARK, {"eval.yaml": b"name: Demo QA\nevaluation_framework: lm-evaluation-harness\n"
                                        b"tasks:\n  - id: default\n    config: default\n    split: test\n"},
               message="Declare the benchmark", author="demo-org")
    hub.create_repo(MODEL, repo_type="model")
    hub.create_repo(RIVAL, repo_type="model")
    hub.commit(RIVAL, {".eval_results/demo-qa.yaml": f"- dataset: {{id: {BENCHMARK}, task_id: default}}\n"
                                                     "  value: 0.75\n".encode()},
               repo_type="model", message="Eval results", author="demo-org")


def seed_langsmith(smith: LangSmithEmulator) -> None:
    smith.create_project(PROJECT)  # the managed rule's project must exist; the runs come from tracing


def start_sandbox(env: dict[str, str]) -> Sandbox:
    root = Path(env.get("BRIDGE_STATE_DIR") or tempfile.mkdtemp(prefix="bridge-sandbox-"))
    root.mkdir(parents=True, exist_ok=True)
    hf_token, ls_key = f"hf_sandbox_{secrets.token_hex(8)}", f"lsv2_sandbox_{secrets.token_hex(8)}"
    hub = HubEmulator(root / "hub", tokens={hf_token: USER}, web_user=USER)  # its pages show as signed in
    smith = LangSmithEmulator({ls_key}, rate_limits=True)
    handles = [hub.serve(), smith.serve()]
    hub.create_repo(EVAL_REPO, repo_type="dataset")
    before = datetime.now(timezone.utc) - timedelta(days=1)
    hub.commit(EVAL_REPO, {**lm_eval_files(before, MODEL, QUESTIONS[:4]),
                           "README.md": b"# Demo eval results\n\nPushed by the sandbox.\n"},
               repo_type="dataset", message="Initial results", author=USER)
    seed_benchmark(hub)
    config_path = root / "bridge.yaml"
    config_path.write_text(CONFIG)
    sandbox_env = {
        "HF_ENDPOINT": handles[0].url, "HF_TOKEN": hf_token,
        "LANGSMITH_ENDPOINT": handles[1].url, "LANGSMITH_API_KEY": ls_key, "LANGSMITH_WEB_URL": handles[1].url,
        "WEBHOOK_SECRET": env.get("WEBHOOK_SECRET") or secrets.token_urlsafe(16),
        "LANGSMITH_WEBHOOK_SECRET": env.get("LANGSMITH_WEBHOOK_SECRET") or secrets.token_urlsafe(16),
        "BRIDGE_STATE_DIR": str(root / "bridge"), "BRIDGE_CONFIG": str(config_path),
    }
    credentials = root / CREDENTIALS_FILE  # sandbox-only tokens, for people who want to push by hand
    credentials.write_text(json.dumps({k: sandbox_env[k] for k in ("HF_ENDPOINT", "HF_TOKEN", "LANGSMITH_ENDPOINT",
                                                                   "LANGSMITH_API_KEY", "WEBHOOK_SECRET",
                                                                   "LANGSMITH_WEBHOOK_SECRET")}, indent=2))
    credentials.chmod(0o600)
    seed_langsmith(smith)
    return Sandbox(root, hub, smith, sandbox_env, config_path, [], handles)


def print_guide(sandbox: Sandbox, base: str) -> None:
    print(f"""
Sandbox ready (no account, no network). State: {sandbox.root}
  Sandbox Hub:       {sandbox.env['HF_ENDPOINT']}  (user {USER}, dataset {EVAL_REPO})
  Sandbox LangSmith: {sandbox.env['LANGSMITH_ENDPOINT']}  (project {PROJECT}; the bridge creates its rule)
  Config:            {sandbox.config_path}
One push to {EVAL_REPO} was just made and a few conversations are being traced: watch the Jobs on {base}/
Trace your own app into the sandbox LangSmith and watch its runs reach {EXPORT_REPO}:
  LANGSMITH_TRACING=true LANGSMITH_ENDPOINT={sandbox.env['LANGSMITH_ENDPOINT']} \\
  LANGSMITH_API_KEY={sandbox.env['LANGSMITH_API_KEY']} LANGSMITH_PROJECT={PROJECT}
Push more results with huggingface_hub: HfApi(endpoint=..., token=...) with the values in
  {sandbox.credentials_path}
""", flush=True)
