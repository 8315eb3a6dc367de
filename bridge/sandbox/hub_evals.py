"""Eval Results on the Hub emulator: `.eval_results/*.yaml` checked on commit, and benchmark leaderboards.

`HubEvals` is a mixin of `HubEmulator` (hub.py). A model repo's `.eval_results/*.yaml` file is a YAML list of
entries (huggingface_hub 2.4 `EvalResultEntry`): `dataset.id` and `dataset.task_id` (a task of that benchmark
dataset's `eval.yaml`) and `value` required; `date` a quoted ISO date or datetime; `source.url` required when
`source` is given. A commit adding a bad file is refused with 400 naming the file and the entry, the way the Hub
refuses invalid README metadata. `GET /api/datasets/{id}/leaderboard` ranks the entries of every public model repo's
`main` (and open PRs, flagged with `pullRequest`) for a benchmark dataset, best value first.
"""

from __future__ import annotations

from datetime import date, datetime

import yaml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.sandbox.hub_http import HubHTTPError
from bridge.sandbox.hub_store import EntryNotFound, HubStore, Repo, object_id

EVAL_RESULTS_FOLDER = ".eval_results/"


class HubEvals:
    store: HubStore

    # ---- validation on commit ----
    def _benchmark_tasks(self, dataset_id: str) -> set[str] | None:
        """Task ids of a benchmark dataset's `eval.yaml`; None when the dataset is not a benchmark."""
        repo = self.store.repos.get(("dataset", dataset_id))
        if repo is None or "refs/heads/main" not in repo.refs:
            return None
        try:
            spec = yaml.safe_load(self.store.read(repo, repo.refs["refs/heads/main"], "eval.yaml"))
        except (EntryNotFound, yaml.YAMLError):
            return None
        tasks = spec.get("tasks") if isinstance(spec, dict) else None
        return {str(t.get("id")) for t in tasks or [] if isinstance(t, dict) and t.get("id")}

    def _entry_problem(self, entry: object) -> str | None:
        if not isinstance(entry, dict):
            return "an entry must be a mapping"
        dataset = entry.get("dataset")
        if not isinstance(dataset, dict) or not isinstance(dataset.get("id"), str):
            return "`dataset.id` is required"
        if not isinstance(dataset.get("task_id"), str):
            return "`dataset.task_id` is required"
        if "value" not in entry or isinstance(entry["value"], bool) or not isinstance(entry["value"], (int, float)):
            return "`value` is required and must be a number"
        if "date" in entry and not _iso_date(entry["date"]):
            return f"`date` must be a quoted ISO date or datetime, got {entry['date']!r}"
        source = entry.get("source")
        if source is not None and (not isinstance(source, dict) or not isinstance(source.get("url"), str)):
            return "`source.url` is required when `source` is given"
        tasks = self._benchmark_tasks(dataset["id"])
        if tasks is None:
            return f"dataset {dataset['id']} is not a benchmark on the Hub (no eval.yaml)"
        if dataset["task_id"] not in tasks:
            known = ", ".join(sorted(tasks))
            return f"task {dataset['task_id']!r} is not in the eval.yaml of {dataset['id']} ({known})"
        return None

    def _check_eval_results(self, additions: dict[str, bytes]) -> None:
        for path, content in additions.items():
            if not (path.startswith(EVAL_RESULTS_FOLDER) and path.endswith((".yaml", ".yml"))):
                continue
            try:
                entries = yaml.safe_load(content)
            except yaml.YAMLError as exc:
                raise HubHTTPError(400, f"Invalid eval results in {path}: not valid YAML ({exc})") from None
            if not isinstance(entries, list) or not entries:
                raise HubHTTPError(400, f"Invalid eval results in {path}: expected a non-empty list of entries")
            for number, entry in enumerate(entries, 1):
                problem = self._entry_problem(entry)
                if problem:
                    raise HubHTTPError(400, f"Invalid eval results in {path}, entry {number}: {problem}")

    # ---- leaderboard ----
    def _results_of(self, repo: Repo, oid: str) -> list[tuple[str, dict]]:
        found = []
        for path in sorted(self.store.files(repo, oid)):
            if path.startswith(EVAL_RESULTS_FOLDER) and path.endswith((".yaml", ".yml")):
                try:
                    entries = yaml.safe_load(self.store.read(repo, oid, path))
                except yaml.YAMLError:
                    continue
                found += [(path.removeprefix(EVAL_RESULTS_FOLDER), e) for e in entries or [] if isinstance(e, dict)]
        return found

    async def leaderboard_route(self, request: Request, repo: str) -> Response:
        found, _ = self._readable(request, "datasets", repo)
        if self._benchmark_tasks(found.id) is None:
            raise HubHTTPError(404, f"Dataset {found.id} has no leaderboard")
        rows = []
        with self.store.lock:
            models = [r for (t, _), r in sorted(self.store.repos.items()) if t == "model" and not r.private]
        for model in models:
            heads = [(None, model.refs["refs/heads/main"])] if "refs/heads/main" in model.refs else []
            heads += [(n, model.refs[f"refs/pr/{n}"]) for n, d in sorted(model.discussions.items())
                      if d["isPullRequest"] and d["status"] == "open" and f"refs/pr/{n}" in model.refs]
            for pr, oid in heads:
                rows += [(model, pr, name, e) for name, e in self._results_of(model, oid)
                         if (e.get("dataset") or {}).get("id") == found.id]
        rows.sort(key=lambda r: -float(r[3].get("value") or 0))
        return JSONResponse([self._leaderboard_entry(rank, *row) for rank, row in enumerate(rows, 1)])

    @staticmethod
    def _leaderboard_entry(rank: int, model: Repo, pr: int | None, filename: str, entry: dict) -> dict:
        author = {"_id": object_id(f"account:{model.namespace}"), "name": model.namespace, "type": "user",
                  "avatarUrl": f"/avatars/{model.namespace}.svg", "fullname": model.namespace, "isPro": False}
        item = {"rank": rank, "modelId": model.id, "value": entry.get("value"), "filename": filename,
                "verified": False, "author": author, "notes": entry.get("notes")}
        if entry.get("source"):
            item["source"] = {**entry["source"], "isExternal": True}
        if pr is not None:
            item["pullRequest"] = pr
        return item


def _iso_date(value: object) -> bool:
    """The Hub wants a quoted ISO string; YAML turns an unquoted one into a date, which is refused."""
    if isinstance(value, (date, datetime)) or not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True
