"""Job kind `experiment`: eval result files at one revision of a Hub repo -> LangSmith experiments (+ PR comment).

Idempotent end to end: an experiment with the same name in the same dataset counts as uploaded (LangSmith is asked,
not the local state), and a PR revision's comment carries a marker that is looked for before posting.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__, scores
from ..errors import FormatError, PartialFailure, UpstreamError
from ..formats.evals import UnrecognizedFormat, sidecar_candidates
from ..formats.upload import Spool, experiment_name, iso, name_fields, render, window, write_body
from ..globs import matches, unmatched_note
from ..routing import match_rule
from ..settings import ExperimentRule
from ..tracing import step
from . import eval_results
from .pr_review import DONE, comment_on_pr
from .reading import Reader

log = logging.getLogger("bridge.flows.experiments")
NULL_SHA = "0" * 40


@dataclass
class Target:
    """Where one job reads from."""

    repo: str
    repo_type: str
    ref: str
    sha: str
    pr: int | None

    @property
    def commit_url_path(self) -> str:
        return f"/commit/{self.sha}"


def resolve_rule(config: Any, payload: dict) -> ExperimentRule:
    rule = match_rule(config, payload["repo"], payload["repo_type"])
    if rule is None:
        rule = ExperimentRule(repo=payload["repo"], repo_type=payload["repo_type"])  # manual upload, no rule
    overrides = {k: payload[k] for k in ("format",) if payload.get(k)}
    return rule.model_copy(update=overrides) if overrides else rule


def select_files(hub: Any, target: Target, rule: ExperimentRule, payload: dict,
                 tree: dict[str, str]) -> tuple[list[str], list[str]]:
    """(the result files to upload, the changed files no `files` glob matched): named ones, else those matching the
    rule that changed since the old revision."""
    if payload.get("files"):
        return list(payload["files"]), []
    matching = [p for p in tree if matches(p, rule.files)]
    # Files a reader uses beside another (lm-eval's results_*.json) are part of that file, not results of their own.
    companions = {s for p in matching for s in sidecar_candidates(p, list(tree))}
    candidates = sorted(p for p in matching if p not in companions)
    old = payload.get("old_sha")
    if payload.get("all_files") or (target.pr is None and (not old or old == NULL_SHA)):
        return candidates, []
    base = hub.tree(target.repo, target.repo_type, old if old and old != NULL_SHA else "main")
    changed = [p for p in sorted(tree) if base.get(p) != tree[p]]
    unmatched = [p for p in changed if p not in matching and p not in companions]
    return [p for p in candidates if p in changed], unmatched


class Upload:
    """Uploads the files of one job, one experiment per file."""

    def __init__(self, runtime: Any, target: Target, rule: ExperimentRule, tree: dict[str, str], workdir: Path,
                 commit_time: datetime | None) -> None:
        self.rt, self.target, self.rule, self.tree, self.workdir = runtime, target, rule, tree, workdir
        self.commit_time = commit_time or datetime.now(timezone.utc)
        self.reader = Reader(runtime.hub, target.repo, target.repo_type, target.sha, tree, rule, workdir)

    def read(self, path: str) -> Any:
        return self.reader.read(path)

    def one(self, path: str) -> dict:
        with step(f"upload {path}", file=path) as out:
            out.update(self._one(path))
        self.rt.metrics.experiment(out["status"])
        return out

    def _one(self, path: str) -> dict:
        try:
            evals = self.read(path)
        except UnrecognizedFormat as exc:
            return {"file": path, "status": "skipped", "reason": str(exc)}
        except FormatError as exc:
            return {"file": path, "status": "failed", "error": str(exc)}
        t = self.target
        fields = name_fields(t.repo, t.ref, t.sha, t.pr, evals.task, evals.model)
        dataset = render(self.rule.dataset_name, fields)
        name = experiment_name(self.rule.experiment_name, fields)
        if "{task}" not in self.rule.experiment_name:
            name = f"{name} · {evals.task}"  # experiment names are unique per LangSmith workspace
        outcome = {"file": path, "task": evals.task, "model": evals.model, "format": evals.format,
                   "dataset": dataset, "experiment": name}
        existing = self.existing(dataset, path)
        if existing is not None:
            return {**outcome, **existing, "status": "exists"}
        reused = self.same_content(dataset, path)
        if reused is not None:
            return {**outcome, **reused, "status": "reused"}
        try:
            uploaded = self.upload(evals, dataset, name)
        except FormatError as exc:
            return {**outcome, "status": "failed", "error": str(exc)}
        return {**outcome, **uploaded, "status": "uploaded"}

    def existing(self, dataset: str, path: str) -> dict | None:
        """The experiment already made from this file at this revision, found by its source, not its name: one
        revision may hold two result files of the same task and model."""
        dataset_id = self.rt.smith.find_dataset(dataset)
        if dataset_id is None:
            return None
        found = self.rt.smith.experiments(dataset_id, metadata={"hf_revision": self.target.sha, "hf_file": path})
        return self.described(dataset_id, found[0]) if found else None

    def same_content(self, dataset: str, path: str) -> dict | None:
        """An experiment made from the same file with the same content (git blob id) at another revision of this
        repo: an unchanged file uploaded again (a manual "upload at revision") reuses it instead of a copy."""
        blob = self.tree.get(path)
        dataset_id = self.rt.smith.find_dataset(dataset)
        if blob is None or dataset_id is None:
            return None
        found = [s for s in self.rt.smith.experiments(dataset_id, metadata={"hf_repo": self.target.repo,
                                                                           "hf_file": path, "hf_blob": blob})
                 if self.reusable((s.extra or {}).get("metadata", {}))]
        if not found:
            return None
        revision = (found[0].extra or {}).get("metadata", {}).get("hf_revision", "")
        return {**self.described(dataset_id, found[0]), "reused_from": revision,
                "note": f"same content as at {revision[:7]}: reused its experiment"}

    def reusable(self, meta: dict) -> bool:
        """A PR reuses only its own experiments; a branch only its own (a merged PR's file becomes a new experiment
        of `main`, which later PRs are compared with); a bare sha any branch's."""
        t, ref = self.target, meta.get("hf_ref") or ""
        if t.pr is not None:
            return meta.get("hf_pr") == t.pr
        if t.ref.startswith("refs/heads/"):
            return ref == t.ref
        return ref.startswith("refs/heads/") or ref == t.ref

    def described(self, dataset_id: str, session: Any) -> dict:
        meta = (session.extra or {}).get("metadata", {})
        started = session.start_time.isoformat() if session.start_time else None
        return {"experiment": session.name, "run_date": meta.get("bridge_run_date"), "started_at": started,
                **self.links(dataset_id, str(session.id), meta.get("bridge_rows"), meta.get("bridge_scores", {}))}

    def links(self, dataset_id: str, experiment_id: str, rows: Any, scores: dict) -> dict:
        smith = self.rt.smith
        return {"dataset_id": dataset_id, "experiment_id": experiment_id, "rows": rows, "scores": scores,
                "experiment_url": smith.compare_url(dataset_id, [experiment_id]),
                "dataset_url": smith.dataset_url(dataset_id)}

    def metadata(self, evals: Any, path: str) -> dict:
        t, hub = self.target, self.rt.hub
        return {"hf_repo": t.repo, "hf_repo_type": t.repo_type, "hf_revision": t.sha, "hf_ref": t.ref,
                "hf_pr": t.pr, "hf_file": path, "hf_blob": self.tree.get(path),
                "hf_commit_url": hub.web_url(t.repo, t.repo_type, t.commit_url_path),
                "format": evals.format, "model": evals.model, "task": evals.task, "bridge_version": __version__}

    def upload(self, evals: Any, dataset: str, name: str) -> dict:
        spool = Spool(dataset)
        for row in evals.rows:
            spool.add(row)
        if spool.rows == 0:
            raise FormatError(evals.path, None, "the file has no rows")
        start, end = window(spool, evals.started_at, evals.finished_at, self.commit_time)
        meta = {**self.metadata(evals, evals.path), "bridge_rows": spool.rows, "bridge_scores": spool.means(),
                "bridge_run_date": iso(evals.finished_at or start)}
        header = {"experiment_name": name, "dataset_name": dataset, "experiment_metadata": meta,
                  "experiment_description": f"{evals.task} from {self.target.repo}@{self.target.sha[:7]} ({evals.path})",
                  "dataset_description": f"Eval results from the Hugging Face repo {self.target.repo}"}
        response = self.send(spool, header, start, end, evals.path)
        return {"experiment": response["experiment"]["name"], "run_date": meta["bridge_run_date"],
                "started_at": start.isoformat(),
                **self.links(str(response["dataset"]["id"]), str(response["experiment"]["id"]), spool.rows,
                             spool.means())}

    def send(self, spool: Spool, header: dict, start: datetime, end: datetime, path: str) -> dict:
        """Uploads; when LangSmith says the name is taken (names are unique per workspace) by an experiment of
        another file, the name gets a short hash of this file's path, which is stable across retries."""
        try:
            return self.send_as(spool, header, start, end)
        except UpstreamError as exc:
            if exc.status != 409:
                raise
        unique = f"{header['experiment_name']} · {hashlib.sha256(path.encode()).hexdigest()[:8]}"
        return self.send_as(spool, {**header, "experiment_name": unique}, start, end)

    def send_as(self, spool: Spool, header: dict, start: datetime, end: datetime) -> dict:
        with tempfile.TemporaryFile() as body:
            write_body(spool, header, start, end, body)
            body.seek(0)
            return self.rt.smith.upload_experiment(body)


def record_scores(runtime: Any, target: Target, outcomes: list[dict]) -> None:
    """The headline scores for the Experiments page, kept in the state dir."""
    if runtime.scores is None:
        return
    found = [scores.from_outcome(o, target.repo, target.ref, target.sha, target.pr) for o in outcomes]
    runtime.scores.add([s for s in found if s is not None])


SHA = re.compile(r"^[0-9a-f]{7,40}$")
PR_NUMBER = re.compile(r"^(?:#|pr[-/ ]?|refs/pr/)?(\d{1,6})$", re.IGNORECASE)  # a bare short number is a PR


def resolve_target(hub: Any, p: dict) -> Target:
    """A webhook names ref and sha; a person may name a branch, a full or short sha, or a PR (`3`, `#3`, `pr/3`)."""
    repo, repo_type = p["repo"], p["repo_type"]
    if p.get("sha"):
        return Target(repo, repo_type, p["ref"], p["sha"], p.get("pr"))
    revision = str(p.get("revision") or "main").strip()
    pr = PR_NUMBER.match(revision)
    if pr:
        ref = f"refs/pr/{int(pr.group(1))}"
        return Target(repo, repo_type, ref, hub.revision_info(repo, repo_type, ref)[0], int(pr.group(1)))
    sha, _ = hub.revision_info(repo, repo_type, revision)  # the Hub resolves short shas of any ref itself
    # A sha is not a branch: its experiment must not become the baseline of `main`.
    ref = revision if revision.startswith("refs/") or SHA.match(revision) else f"refs/heads/{revision}"
    return Target(repo, repo_type, ref, sha, None)


def run(job: Any, ctx: Any) -> dict:
    rt, p = ctx.services, job.payload
    target = resolve_target(rt.hub, p)
    rule = resolve_rule(rt.settings.config, p)
    rt.smith.client  # fail early with the missing-key message before any download
    with step("list files", "retriever", repo=target.repo, revision=target.sha) as out:
        tree = rt.hub.tree(target.repo, target.repo_type, target.sha)
        files, unmatched = select_files(rt.hub, target, rule, p, tree)
        out["files"] = files
    _, commit_time = rt.hub.revision_info(target.repo, target.repo_type, target.sha)
    outcomes = []
    result = {"repo": target.repo, "revision": target.sha, "ref": target.ref, "files": outcomes}
    if unmatched:
        result["unmatched"] = unmatched
    if not files:
        result["note"] = unmatched_note(unmatched) if unmatched else "no result files changed in this revision"
    with tempfile.TemporaryDirectory(prefix="bridge-exp-") as workdir:
        upload = Upload(rt, target, rule, tree, Path(workdir), commit_time)
        for done, path in enumerate(files):
            ctx.progress(done, len(files), "files")
            outcomes.append(upload.one(path) if path in tree else
                            {"file": path, "status": "failed", "error": f"{path} is not in revision {target.sha[:7]}"})
        ctx.progress(len(files), len(files), "files")
        record_scores(rt, target, outcomes)
        if target.pr is not None and any(o["status"] in DONE for o in outcomes):
            result["comment_url"] = comment_on_pr(rt, target, rule, outcomes, upload.reader)
    if eval_results.wanted(rule, target):
        result["eval_results"] = eval_results.publish(rt, target, rule, outcomes, upload.commit_time)
    failed = [o for o in outcomes if o["status"] == "failed"]
    if failed:
        raise PartialFailure(f"{len(failed)} of {len(files)} file(s) failed: " +
                             "; ".join(o["error"] for o in failed), result)
    return result

