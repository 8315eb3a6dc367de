"""Thin client over huggingface_hub: endpoint and token injected, request timeout set, errors typed.

`hub_errors()` is the one place that turns what huggingface_hub raises into `UpstreamError` (transient or not).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx2
from huggingface_hub import CommitOperationAdd, HfApi, constants, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError
from huggingface_hub.utils import set_client_factory
from huggingface_hub.utils._http import default_client_factory

from .errors import MissingCredential, UpstreamError, is_transient_status, parse_retry_after

TARGET = "Hugging Face Hub"
BRIDGE_MARK = "[hub-langsmith-bridge]"


class TimeoutCap(httpx2.BaseTransport):
    """Caps every phase of every request at `seconds`. A client-level timeout is not enough: huggingface_hub passes
    `timeout=None` for paginated listings and its own 10 s for downloads, and both override the client's."""

    def __init__(self, inner: httpx2.BaseTransport, seconds: float) -> None:
        self.inner, self.seconds = inner, seconds

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        given = request.extensions.get("timeout") or {}
        request.extensions["timeout"] = {phase: min(v, self.seconds) if v is not None else self.seconds
                                         for phase, v in {**dict.fromkeys(("connect", "read", "write", "pool")),
                                                          **given}.items()}
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def install_timeout(seconds: float, on_client: Callable[[httpx2.Client], object] | None = None) -> None:
    """huggingface_hub's shared HTTP client has no timeout by default; a stuck call must not hang a worker forever.
    `on_client` sees every client the library builds (it rebuilds the shared one after a factory change)."""

    def factory() -> httpx2.Client:
        hooks = default_client_factory().event_hooks  # keep the library's own request hooks
        client = httpx2.Client(event_hooks=hooks, follow_redirects=True, timeout=httpx2.Timeout(seconds),
                               transport=TimeoutCap(httpx2.HTTPTransport(), seconds))
        if on_client:
            on_client(client)
        return client

    set_client_factory(factory)


def _server_message(exc: HfHubHTTPError) -> str:
    return (getattr(exc, "server_message", None) or str(exc).splitlines()[0]).strip()


def _status_in_chain(exc: BaseException) -> int | None:
    seen: BaseException | None = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        if response is not None and getattr(response, "status_code", None):
            return response.status_code
        seen = seen.__cause__ or seen.__context__
    return None


def _cause_text(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, HfHubHTTPError):
        return _server_message(cause)
    return str(exc) or "the download failed"


@contextmanager
def hub_errors(action: str) -> Iterator[None]:
    """Translate huggingface_hub exceptions raised while doing `action` (e.g. "commit to acme/x")."""
    try:
        yield
    except HfHubHTTPError as exc:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        retry_after = parse_retry_after(response.headers.get("retry-after")) if response is not None else None
        raise UpstreamError(TARGET, f"{action} failed: {_server_message(exc)}", status=status,
                            transient=is_transient_status(status), retry_after=retry_after) from exc
    except LocalEntryNotFoundError as exc:
        # hf_hub_download wraps what went wrong on the wire; a refused answer (4xx) must not look like a lost network
        status = _status_in_chain(exc)
        raise UpstreamError(TARGET, f"{action} failed: {_cause_text(exc)}", status=status,
                            transient=status is None or is_transient_status(status)) from exc
    except (httpx2.TransportError, ConnectionError, TimeoutError) as exc:
        words = ("no answer in time (timeout)" if isinstance(exc, (httpx2.TimeoutException, TimeoutError))
                 else "the connection failed (refused or cut off)")
        raise UpstreamError(TARGET, f"{action} failed: {words}", transient=True) from exc


class Hub:
    """The bridge's view of the Hub. Built from settings, never from import-time globals."""

    def __init__(self, endpoint: str, token: str | None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.token = token
        self.api = HfApi(endpoint=self.endpoint, token=token or False, library_name="hub-langsmith-bridge")

    def require_token(self, why: str) -> None:
        if not self.token:
            raise MissingCredential(f"HF_TOKEN is not set: it is needed to {why}")

    def check(self) -> str:
        """A connection check for the landing page: who the token belongs to, or that the Hub answers."""
        with hub_errors("connection check"):
            if self.token:
                return f"connected as {self.api.whoami()['name']}"
            self.api.list_datasets(limit=1)
            return "reachable (no token)"

    def web_url(self, repo_id: str, repo_type: str, path: str = "") -> str:
        prefix = constants.REPO_TYPES_URL_PREFIXES.get(repo_type, "")
        return f"{self.endpoint}/{prefix}{repo_id}{path}"

    # ---- reading a revision ----
    def tree(self, repo: str, repo_type: str, revision: str) -> dict[str, str]:
        """path -> git blob id of every file at `revision` (one paginated listing)."""
        with hub_errors(f"list files of {repo}@{revision[:12]}"):
            entries = self.api.list_repo_tree(repo, repo_type=repo_type, revision=revision, recursive=True)
            return {e.path: e.blob_id for e in entries if hasattr(e, "blob_id")}

    def revision_info(self, repo: str, repo_type: str, revision: str) -> tuple[str, datetime | None]:
        """(full sha, commit time) of a branch, sha or refs/pr/N."""
        with hub_errors(f"resolve {repo}@{revision}"):
            info = self.api.repo_info(repo, repo_type=repo_type, revision=revision)
        return info.sha, getattr(info, "last_modified", None)

    def download(self, repo: str, repo_type: str, revision: str, path: str, local_dir: Path) -> Path:
        with hub_errors(f"download {path} from {repo}@{revision[:12]}"):
            return Path(hf_hub_download(repo, path, repo_type=repo_type, revision=revision, local_dir=local_dir,
                                        endpoint=self.endpoint, token=self.token or False))

    # ---- pull requests ----
    def comments(self, repo: str, repo_type: str, num: int) -> list[str]:
        with hub_errors(f"read discussion #{num} of {repo}"):
            details = self.api.get_discussion_details(repo, num, repo_type=repo_type)
        return [e.content for e in details.events if getattr(e, "type", "") == "comment" and e.content]

    def comment(self, repo: str, repo_type: str, num: int, text: str) -> str:
        self.require_token(f"comment on {repo} #{num}")
        with hub_errors(f"comment on {repo} #{num}"):
            posted = self.api.comment_discussion(repo, num, text, repo_type=repo_type)
        return self.web_url(repo, repo_type, f"/discussions/{num}#{posted.id}")

    # ---- writing a dataset ----
    def ensure_dataset(self, repo: str, private: bool) -> None:
        self.require_token(f"write to {repo}")
        with hub_errors(f"read dataset {repo}"):
            try:
                self.api.repo_info(repo, repo_type="dataset")
                return
            except RepositoryNotFoundError:
                pass
        # Only reached when the repo is missing: huggingface_hub 2.4's create_repo(exist_ok=True) answers a 403 on
        # an existing repo by building a RepoUrl without the endpoint, which fails for any host but huggingface.co.
        with hub_errors(f"create dataset {repo} (needs a token with write access to {repo.split('/')[0]})"):
            self.api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)

    def commit(self, repo: str, files: dict[str, bytes], message: str, parent: str | None) -> str:
        """One commit adding `files`, pinned to `parent` so a concurrent commit makes it fail instead of mixing."""
        operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=data) for path, data in files.items()]
        with hub_errors(f"commit to {repo} (needs write access)"):
            info = self.api.create_commit(repo, operations, repo_type="dataset", parent_commit=parent,
                                          commit_message=f"{BRIDGE_MARK} {message}",
                                          commit_description="Written by hub-langsmith-bridge.")
        return info.oid

    def head_and_tree(self, repo: str, repo_type: str = "dataset") -> tuple[str | None, dict[str, str]]:
        """The head of `main` and its files; (None, {}) for a repo without commits."""
        try:
            head, _ = self.revision_info(repo, repo_type, "main")
        except UpstreamError as exc:
            if exc.status == 404:
                return None, {}
            raise
        return head, self.tree(repo, repo_type, head)

    def read_bytes(self, repo: str, repo_type: str, revision: str, path: str) -> bytes:
        with tempfile.TemporaryDirectory(prefix="bridge-read-") as tmp:
            return self.download(repo, repo_type, revision, path, Path(tmp)).read_bytes()

    def read_text(self, repo: str, path: str, tree: dict[str, str], repo_type: str = "dataset") -> str | None:
        if path not in tree:
            return None
        return self.read_bytes(repo, repo_type, "main", path).decode("utf-8", errors="replace")

    def expand_sha(self, repo: str, repo_type: str, prefix: str) -> str | None:
        """The full sha of a commit on `main` that starts with `prefix` (the Hub does not resolve short shas)."""
        with hub_errors(f"list commits of {repo}"):
            for commit in self.api.list_repo_commits(repo, repo_type=repo_type, revision="main"):
                if commit.commit_id.startswith(prefix.lower()):
                    return commit.commit_id
        return None

    def list_repos(self, owner: str, repo_type: str) -> list[str]:
        lister = {"dataset": self.api.list_datasets, "model": self.api.list_models, "space": self.api.list_spaces}
        with hub_errors(f"list the {repo_type} repos of {owner}"):
            return [info.id for info in lister[repo_type](author=owner)]
