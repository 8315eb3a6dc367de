"""Pure: the `.eval_results/*.yaml` files a model repo gets from an eval repo's results (huggingface_hub 2.4's
`EvalResultEntry` / `eval_result_entries_to_yaml`), and how the bridge's pull request for them is recognised.

One file per benchmark dataset (`.eval_results/<dataset name>.yaml`), holding one entry per task of it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from typing import Any

import yaml
from huggingface_hub import EvalResultEntry, eval_result_entries_to_yaml
from huggingface_hub.constants import EVAL_RESULTS_FOLDER

MARKER = "<!-- hub-langsmith-bridge:eval-results:{repo} -->"


def marker(eval_repo: str) -> str:
    return MARKER.format(repo=eval_repo)


def pr_title(eval_repo: str) -> str:
    return f"Eval results from {eval_repo}"


def pr_description(eval_repo: str, sha: str, commit_url: str) -> str:
    return (f"{marker(eval_repo)}\nEvaluation scores from [{eval_repo}@{sha[:7]}]({commit_url}), written by "
            "hub-langsmith-bridge. Later eval revisions update this pull request until it is merged.")


def benchmark_for(task: str, benchmarks: dict[str, Any]) -> Any | None:
    """The first mapping whose glob matches the task name (`gsm8k*`, `arc_easy`)."""
    for pattern, benchmark in benchmarks.items():
        if fnmatch.fnmatchcase(task, pattern):
            return benchmark
    return None


def file_path(dataset_id: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset_id.split("/", 1)[-1]).strip("._") or "benchmark"
    return f"{EVAL_RESULTS_FOLDER}/{name.lower()}.yaml"


def render_files(entries: list[EvalResultEntry]) -> dict[str, bytes]:
    """{path: YAML bytes}; entries of one benchmark share its file, in a stable order."""
    grouped: dict[str, list[EvalResultEntry]] = {}
    for entry in sorted(entries, key=lambda e: (e.dataset_id, e.task_id)):
        grouped.setdefault(file_path(entry.dataset_id), []).append(entry)
    return {path: yaml.safe_dump(eval_result_entries_to_yaml(group), sort_keys=False, allow_unicode=True).encode()
            for path, group in grouped.items()}


def git_blob_id(content: bytes) -> str:
    """The id the Hub's tree listing gives a regular file with this content (git's blob sha1)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
