"""Reading eval files of one revision of a Hub repo: the uploads and the PR comparison read the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..formats.evals import read_eval_file, sidecar_candidates
from ..settings import ExperimentRule


class Reader:
    """Reads eval files of one revision of a repo (downloads into `workdir`, sidecars from the same revision)."""

    def __init__(self, hub: Any, repo: str, repo_type: str, revision: str, tree: dict[str, str],
                 rule: ExperimentRule, workdir: Path) -> None:
        self.hub, self.repo, self.repo_type, self.revision = hub, repo, repo_type, revision
        self.tree, self.rule, self.workdir = tree, rule, workdir

    def fetch(self, path: str) -> Path:
        return self.hub.download(self.repo, self.repo_type, self.revision, path, self.workdir)

    def sidecar(self, path: str) -> bytes | None:
        if path not in self.tree:
            return None
        return self.fetch(path).read_bytes()

    def read(self, path: str) -> Any:
        local = self.fetch(path)
        columns = self.rule.columns.model_dump() if self.rule.columns else None
        wanted = set(sidecar_candidates(path, list(self.tree)))
        return read_eval_file(path, lambda: local.open("rb"), format=self.rule.format, columns=columns,
                              sidecar=lambda p: self.sidecar(p) if p in wanted else None)
