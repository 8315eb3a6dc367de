"""What the benchmarks send: LangSmith runs with feedback, rule deliveries, and lm-eval sample files.

Runs have the shape of `tests/test_flow_exports.py` (chat messages, an email to redact, model metadata) with a
realistic system prompt and answer, so a 100-run delivery is about 200 KB like a real one. Feedback follows the
tests too: a `user_score` on every run and a `correction` on every third.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

from bridge.sandbox import demo

from . import ROOT

RULE_ID = "d75d7417-0c57-4655-88fe-1db3cda3a47a"
PROJECT = "bench-support-bot"
SAMPLE = ROOT.parent / "shared" / "samples" / "lm_eval" / "samples_mmlu_generative_philosophy_issue2279.jsonl"
SYSTEM = ("You are a helpful support agent for Acme Cloud. Answer in at most three sentences, cite the relevant "
          "settings page, never invent features, and escalate billing questions to a human. Customers are on the "
          "Free, Team or Enterprise plan; only Enterprise has SSO and audit logs. Be friendly and concise.")
ANSWER = ("You can do this from Settings → Security. Open the page, choose the option you need and confirm with your "
          "password; the change applies to every device within a minute. If the button is greyed out, your "
          "workspace admin has locked it and can unlock it for you.")


def chat_run(i: int) -> dict:
    start = datetime(2026, 11, 20, 10, tzinfo=timezone.utc) + timedelta(seconds=i)
    question = f"Question {i}: how do I change my security settings? Write to me at user{i}@example.com"
    return {"name": "ChatOpenAI", "run_type": "llm", "session_name": PROJECT,
            "start_time": start.isoformat(), "end_time": (start + timedelta(seconds=1)).isoformat(),
            "inputs": {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]},
            "outputs": {"generations": [[{"text": ANSWER, "message": {"type": "ai", "data": {"content": ANSWER}}}]]},
            "extra": {"metadata": {"ls_model_name": "gpt-4o-mini", "ls_provider": "openai"}},
            "tags": ["prod"], "prompt_tokens": 120, "completion_tokens": 60, "total_tokens": 180}


def seed_runs(smith, count: int, *, offload: bool, first: int = 0) -> list[str]:
    """Adds `count` runs (and their feedback) straight into the emulator's store; returns their ids."""
    ids = []
    for i in range(first, first + count):
        run = smith.add_run(chat_run(i), offload=offload)
        smith.add_feedback(run["id"], "user_score", score=i % 2)
        if i % 3 == 0:
            smith.add_feedback(run["id"], "correction", correction={"output": f"corrected answer {i}"})
        ids.append(run["id"])
    return ids


def delivery_bodies(smith, ids: list[str], per_delivery: int = 100) -> list[bytes]:
    """The bodies LangSmith would POST for the rule, `per_delivery` runs each."""
    return [json.dumps(smith.webhook_payload(RULE_ID, ids[i:i + per_delivery])).encode()
            for i in range(0, len(ids), per_delivery)]


def write_bodies(folder: Path, bodies: list[bytes]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, body in enumerate(bodies):
        path = folder / f"body-{i:04d}.json"
        path.write_bytes(body)
        paths.append(str(path))
    return paths


# ---------------------------------------------------------------- lm-eval samples
def sample_lines() -> list[dict]:
    return [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]


def lm_eval_samples(rows: int) -> bytes:
    """`rows` lines in the real sample's shape (lm-eval 0.4.3–0.4.6: no filter/metrics keys), each a new doc."""
    templates = sample_lines()
    lines = []
    for i in range(rows):
        line = json.loads(json.dumps(templates[i % len(templates)]))  # a deep copy that keeps key order
        line["doc_id"] = i
        line["doc"]["question"] = f"{line['doc']['question']} (variant {i})"
        prompt = line["arguments"]["gen_args_0"]["arg_0"]
        line["arguments"]["gen_args_0"]["arg_0"] = f"{prompt} [{i}]"
        line["doc_hash"] = hashlib.sha256(json.dumps(line["doc"]).encode()).hexdigest()
        line["prompt_hash"] = hashlib.sha256(line["arguments"]["gen_args_0"]["arg_0"].encode()).hexdigest()
        line["exact_match"] = float(i % 3 != 0)
        lines.append(json.dumps(line, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode()


def lm_eval_push(rows: int, model: str, stamp: str) -> dict[str, bytes]:
    """A `--log_samples` push: the samples file and its results sidecar, under the model's folder."""
    folder = model.replace("/", "__")
    task = "mmlu_generative_philosophy"
    results = {"results": {task: {"alias": task, "exact_match,none": 2 / 3}}, "model_name": model,
               "date": datetime(2026, 11, 21, tzinfo=timezone.utc).timestamp(), "n-samples": {task: rows},
               "higher_is_better": {task: {"exact_match": True}}}
    return {f"{folder}/samples_{task}_{stamp}.jsonl": lm_eval_samples(rows),
            f"{folder}/results_{stamp}.json": json.dumps(results, indent=2).encode()}


# ---------------------------------------------------------------- the bridge.yaml the benchmarks run with
MAX_ROWS_PER_COMMIT = 5000  # the bridge's default, written out: a full batch is committed at once, window or not


def bridge_config(export_repo: str, flush_seconds: float = 5) -> str:
    """The sandbox demo's configuration (experiments from `*-evals` repos, an export with every preset, feedback
    links and redaction), with the benchmark's own repo names. The periodic reconcile is off: its next run always
    sits in the queue, and the benchmarks read "queue empty" on /healthz as "all work done"."""
    config = yaml.safe_load(demo.CONFIG)
    config.pop("jobs", None)  # the demo's short backoff is for people watching it; the benchmarks keep the default
    config["reconcile_minutes"] = 0
    config["experiments"][0]["repo"] = "bench-user/*-evals"
    config["experiments"][0].pop("eval_results", None)  # the demo's model and benchmark repos are not seeded here
    config["exports"][0].pop("rule", None)  # the demo's managed rule: the benchmarks deliver as a named rule
    config["exports"][0].update(rule_id=RULE_ID, repo=export_repo, flush_seconds=flush_seconds,
                                max_rows_per_commit=MAX_ROWS_PER_COMMIT)
    return yaml.safe_dump(config, sort_keys=False)
