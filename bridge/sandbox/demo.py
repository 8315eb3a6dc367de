"""`python app.py --sandbox`: both emulators in-process, demo data, and a bridge pointed at them.

Nothing here needs an account or the network. The state lives in a fresh temporary folder unless
BRIDGE_STATE_DIR is set. Once the bridge listens, the sandbox Hub gets a webhook to it and one push is made, and
the demo LangSmith rule "fires" once, so both directions show a finished job within seconds of starting.
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
CREDENTIALS_FILE = "sandbox-credentials.json"
DEMO_PR_TITLE = "Evaluate the fine-tuned checkpoint"

CONFIG = f"""\
# Demo configuration written by `python app.py --sandbox`.
experiments:
  - repo: "{USER}/*-evals"
    files: ["**/samples_*.jsonl", "**/*.csv"]
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
        """Points the sandbox Hub's webhook at the bridge, then pushes two results to `main`, fires the LangSmith
        rule once, and (once the `main` experiments exist, so the comment has a baseline) opens the demo PR."""
        base = local_url.rstrip("/")
        self.hub.add_webhook(f"{base}/webhooks/hub", watched=[{"type": "user", "name": USER}],
                             secret=self.env["WEBHOOK_SECRET"])
        day = datetime.now(timezone.utc)
        self.hub.commit(EVAL_REPO, lm_eval_files(day - timedelta(hours=20), MODEL, QUESTIONS[:5]),
                        repo_type="dataset", message="Re-run demo_qa", author=USER)
        self.hub.commit(EVAL_REPO, lm_eval_files(day, MODEL, QUESTIONS), repo_type="dataset",
                        message="Add demo_qa results", author=USER)
        threading.Thread(target=self._fire_rule, args=(base,), daemon=True, name="sandbox-rule").start()
        threading.Thread(target=self._open_demo_pr, args=(runtime.store, day), daemon=True,
                         name="sandbox-pr").start()
        print_guide(self, base)

    def _open_demo_pr(self, store: Any, day: datetime, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            jobs = store.list(kind="experiment", limit=10)
            if len(jobs) >= 2 and all(j.state in ("succeeded", "failed", "dead", "cancelled") for j in jobs):
                break
            time.sleep(0.5)
        better = [(q, a, a) for q, a, _ in QUESTIONS]  # the PR's model answers every question right
        self.hub.open_pr(EVAL_REPO, lm_eval_files(day + timedelta(minutes=5), MODEL, better),
                         title=DEMO_PR_TITLE, author=USER, description="Results of the fine-tuned checkpoint.")

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

    def _fire_rule(self, base: str) -> None:
        body = self.smith.webhook_payload(RULE_ID, self.run_ids)
        try:
            requests.post(f"{base}/webhooks/langsmith", json=body, timeout=10,
                          params={"secret": self.env["LANGSMITH_WEBHOOK_SECRET"]})
        except requests.RequestException as exc:
            log.warning("sandbox LangSmith rule delivery failed: %s", exc)

    def stop(self) -> None:
        for handle in self.handles:
            handle.stop()


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
    hub = HubEmulator(root / "hub", tokens={hf_token: USER})
    smith = LangSmithEmulator({ls_key}, rate_limits=True)
    handles = [hub.serve(), smith.serve()]
    hub.create_repo(EVAL_REPO, repo_type="dataset")
    before = datetime.now(timezone.utc) - timedelta(days=1)
    hub.commit(EVAL_REPO, {**lm_eval_files(before, MODEL, QUESTIONS[:4]),
                           "README.md": b"# Demo eval results\n\nPushed by the sandbox.\n"},
               repo_type="dataset", message="Initial results", author=USER)
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
    return Sandbox(root, hub, smith, sandbox_env, config_path, seed_langsmith(smith), handles)


def print_guide(sandbox: Sandbox, base: str) -> None:
    print(f"""
Sandbox ready (no account, no network). State: {sandbox.root}
  Sandbox Hub:       {sandbox.env['HF_ENDPOINT']}  (user {USER}, dataset {EVAL_REPO})
  Sandbox LangSmith: {sandbox.env['LANGSMITH_ENDPOINT']}  (project {PROJECT}, rule {RULE_ID})
  Config:            {sandbox.config_path}
One push to {EVAL_REPO} and one LangSmith rule delivery were just sent: watch the Jobs on {base}/
Push more results with huggingface_hub: HfApi(endpoint=..., token=...) with the values in
  {sandbox.credentials_path}
""", flush=True)
