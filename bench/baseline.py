"""The export done the way the LangSmith docs' Modal example does it (seed 000), with the same SDKs as the bridge.

Per delivery: one `list_feedback(run_ids=...)`; per run: one `read_run` (the example reads `inputs` from the
payload, which LangSmith leaves null when it offloaded them) and one file written to the Hub (the example's
`create_example` has no route in the sandbox LangSmith); per delivery: one Hub commit holding those files.
Feedback is joined by run id (the example zips the two lists, which pairs them wrongly; the request count is the
same). Deliveries are handled `workers` at a time, as many as the bridge's job workers.

    python -m bench.baseline < spec.json > result.json
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ["LANGSMITH_TRACING"] = "false"

from huggingface_hub import CommitOperationAdd, HfApi  # noqa: E402
from langsmith import Client  # noqa: E402

from bench.profile import cpu_times  # noqa: E402  (the same /proc/<pid>/stat reading as for the bridge)


def handle(delivery: dict, number: int, ls: Client, hf: HfApi, repo: str) -> int:
    runs = delivery["runs"]
    ids = [r["id"] for r in runs]
    feedback: dict[str, list] = {}
    for item in ls.list_feedback(run_ids=ids):
        feedback.setdefault(str(item.run_id), []).append({"key": item.key, "score": item.score,
                                                          "correction": item.correction})
    operations = []
    for run in runs:
        full = ls.read_run(run["id"])
        row = {"run_id": str(full.id), "inputs": full.inputs, "outputs": full.outputs,
               "feedback": feedback.get(str(full.id), [])}
        operations.append(CommitOperationAdd(f"deliveries/{number:04d}/{full.id}.json",
                                             json.dumps(row, default=str).encode()))
    hf.create_commit(repo, operations, repo_type="dataset", commit_message=f"Delivery {number}")
    return len(runs)


def main(spec: dict) -> dict:
    warnings.simplefilter("ignore")  # read_run is deprecated for client.runs.retrieve, which sends the same GET
    # No tracing thread: this script only reads runs and feedback, as the example does.
    ls = Client(api_url=spec["langsmith_url"], api_key=spec["langsmith_key"], auto_batch_tracing=False)
    hf = HfApi(endpoint=spec["hub_url"], token=spec["hub_token"])
    hf.create_repo(spec["repo"], repo_type="dataset", private=True, exist_ok=True)
    deliveries = [json.loads(Path(p).read_text()) for p in spec["bodies"]]
    started, cpu = time.time(), cpu_times()
    with ThreadPoolExecutor(spec["workers"]) as pool:
        rows = sum(pool.map(lambda item: handle(item[1], item[0], ls, hf, spec["repo"]), enumerate(deliveries)))
    return {"started": started, "finished": time.time(), "rows": rows, "cpu": sum(cpu_times()) - sum(cpu),
            "system": cpu_times()[1] - cpu[1]}


if __name__ == "__main__":
    json.dump(main(json.load(sys.stdin)), sys.stdout)
