"""`python app.py --sandbox`: both emulators in-process, demo data, and a bridge pointed at them.

Nothing here needs an account or the network. The state lives in a fresh temporary folder unless
BRIDGE_STATE_DIR is set. Once the bridge listens it creates its own webhook on the sandbox Hub (as on the real Hub),
then one push is made and the demo LangSmith rule "fires" once, so both directions show a finished job within
seconds of starting.
"""

from __future__ import annotations

import json
import logging
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import requests

from .hub import HubEmulator
from .langsmith_emu import LangSmithEmulator

log = logging.getLogger("bridge.sandbox")

USER = "sandbox-user"
EVAL_REPO = f"{USER}/demo-evals"
EXPORT_REPO = f"{USER}/demo-feedback"
RULE_ID = "d75d7417-0c57-4655-88fe-1db3cda3a47a"
PROJECT = "demo-support-bot"
MODEL = "demo-org/tiny-chat-1b"
BENCHMARK = "demo-org/demo-qa"  # a benchmark dataset (it has an eval.yaml) with a leaderboard
RIVAL = "demo-org/small-chat-3b"  # already on that leaderboard

CONFIG = f"""\
# Demo configuration written by `python app.py --sandbox`.
experiments:
  - repo: "{USER}/*-evals"
    files: ["**/samples_*.jsonl", "**/*.csv"]
    eval_results:                 # the scores also go to the model's page (a PR on {MODEL})
      benchmarks:
        "demo_qa": {{dataset: {BENCHMARK}, task_id: default, score: exact_match}}
exports:
  - rule_id: "{RULE_ID}"
    repo: "{EXPORT_REPO}"
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


def demo_runs(now: datetime) -> list[dict]:
    conversations = [
        ("How do I reset my password?", "Go to Settings → Security → Reset password.", 1, None),
        ("Can I export my data as CSV?", "No, only JSON is supported.", 0, "Yes: Settings → Export → CSV."),
        ("What are your opening hours?", "We are open 9:00–17:00 CET, Monday to Friday.", 1, None),
        ("My invoice shows the wrong VAT number, write to me at jane@example.com",
         "I have forwarded this to billing.", 1, None),
        ("Is there a mobile app?", "There is no mobile app.", 0, "Yes, for iOS and Android."),
    ]
    runs = []
    for i, (question, answer, score, correction) in enumerate(conversations):
        start = now - timedelta(minutes=30 - i)
        runs.append({"name": "ChatOpenAI", "run_type": "llm", "start_time": start.isoformat(),
                     "end_time": (start + timedelta(seconds=2)).isoformat(),
                     "inputs": {"messages": [{"role": "system", "content": "You are a helpful support agent."},
                                             {"role": "user", "content": question}]},
                     "outputs": {"generations": [[{"text": answer, "message": {"type": "ai", "data": {"content": answer}}}]]},
                     "extra": {"metadata": {"ls_model_name": "gpt-4o-mini", "ls_provider": "openai"}},
                     "tags": ["support", "demo"], "prompt_tokens": 40 + i, "completion_tokens": 12,
                     "total_tokens": 52 + i, "_feedback": (score, correction)})
    return runs


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
        and fires the LangSmith rule once."""
        base = local_url.rstrip("/")
        threading.Thread(target=self._demo_traffic, args=(base,), daemon=True, name="sandbox-demo").start()
        print_guide(self, base)

    def _demo_traffic(self, base: str) -> None:
        if not self._wait_for_bridge_webhook(f"{base}/webhooks/hub"):
            log.warning("the bridge did not create its Hub webhook (see the Overview); adding one for the demo")
            self.hub.add_webhook(f"{base}/webhooks/hub", watched=[{"type": "user", "name": USER}],
                                 secret=self.env["WEBHOOK_SECRET"])
        day = datetime.now(timezone.utc)
        self.hub.commit(EVAL_REPO, lm_eval_files(day, MODEL, QUESTIONS), repo_type="dataset",
                        message="Add demo_qa results", author=USER)
        self._fire_rule(base)
        self._open_pr(day)

    def _wait_for_bridge_webhook(self, url: str, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(h["url"] == url and not h["disabled"] for h in list(self.hub.store.webhooks)):
                return True
            time.sleep(0.1)
        return False

    def _fire_rule(self, base: str) -> None:
        body = self.smith.webhook_payload(RULE_ID, self.run_ids)
        try:
            requests.post(f"{base}/webhooks/langsmith", json=body, timeout=10,
                          params={"secret": self.env["LANGSMITH_WEBHOOK_SECRET"]})
        except requests.RequestException as exc:
            log.warning("sandbox LangSmith rule delivery failed: %s", exc)

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


def seed_langsmith(smith: LangSmithEmulator) -> list[str]:
    smith.create_project(PROJECT)
    ids = []
    for i, run in enumerate(demo_runs(datetime.now(timezone.utc))):
        score, correction = run.pop("_feedback")
        stored = smith.add_run({**run, "session_name": PROJECT}, offload=(i == 2))
        smith.add_feedback(stored["id"], "user_score", score=score)
        if correction:
            smith.add_feedback(stored["id"], "correction", correction={"output": correction}, source_type="app")
        ids.append(stored["id"])
    return ids


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
    credentials = root / "sandbox-credentials.json"  # sandbox-only tokens, for people who want to push by hand
    credentials.write_text(json.dumps({k: sandbox_env[k] for k in ("HF_ENDPOINT", "HF_TOKEN", "LANGSMITH_ENDPOINT",
                                                                   "LANGSMITH_API_KEY", "WEBHOOK_SECRET",
                                                                   "LANGSMITH_WEBHOOK_SECRET")}, indent=2))
    credentials.chmod(0o600)
    return Sandbox(root, hub, smith, sandbox_env, config_path, seed_langsmith(smith), handles)


def print_guide(sandbox: Sandbox, base: str) -> None:
    print(f"""
Sandbox ready (no account, no network). State: {sandbox.root}
  Sandbox Hub:       {sandbox.env['HF_ENDPOINT']}  (user {USER}, dataset {EVAL_REPO})
  Sandbox LangSmith: {sandbox.env['LANGSMITH_ENDPOINT']}  (project {PROJECT}, rule {RULE_ID})
  Config:            {sandbox.config_path}
One push to {EVAL_REPO} and one LangSmith rule delivery were just sent: watch the Jobs on {base}/
Push more results with huggingface_hub: HfApi(endpoint=..., token=...) with the values in
  {sandbox.root / 'sandbox-credentials.json'}
""", flush=True)
