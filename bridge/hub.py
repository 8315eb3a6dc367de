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
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants, hf_hub_download
from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                    RepositoryNotFoundError)
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
    def pull_request(self, repo: str, repo_type: str, num: int) -> tuple[str, list[tuple[str, str]]]:
        """(status: open, draft, closed or merged; (comment id, text) of every comment, oldest first) of PR `num`."""
        with hub_errors(f"read discussion #{num} of {repo}"):
            details = self.api.get_discussion_details(repo, num, repo_type=repo_type)
        return details.status, [(e.id, e.content) for e in details.events
                                if getattr(e, "type", "") == "comment" and e.content]

    def comments(self, repo: str, repo_type: str, num: int) -> list[str]:
        return [text for _, text in self.pull_request(repo, repo_type, num)[1]]

    def edit_comment(self, repo: str, repo_type: str, num: int, comment_id: str, text: str) -> None:
        self.require_token(f"edit a comment on {repo} #{num}")
        with hub_errors(f"edit a comment on {repo} #{num}"):
            self.api.edit_discussion_comment(repo, num, comment_id, text, repo_type=repo_type)

    def comment(self, repo: str, repo_type: str, num: int, text: str) -> str:
        self.require_token(f"comment on {repo} #{num}")
        with hub_errors(f"comment on {repo} #{num}"):
            posted = self.api.comment_discussion(repo, num, text, repo_type=repo_type)
        return self.web_url(repo, repo_type, f"/discussions/{num}#{posted.id}")

    def open_pull_requests(self, repo: str, repo_type: str) -> list[tuple[int, str]]:
        """(number, title) of the repo's open pull requests."""
        with hub_errors(f"list the pull requests of {repo}"):
            found = self.api.get_repo_discussions(repo, repo_type=repo_type, discussion_type="pull_request",
                                                  discussion_status="open")
            return [(d.num, d.title) for d in found]

    def commit_files(self, repo: str, repo_type: str, files: dict[str, bytes], message: str, description: str,
                     revision: str | None = None, create_pr: bool = False) -> tuple[str, str | None]:
        """One commit of `files` on `revision` (default main), or a new PR with them; (commit sha, PR url)."""
        self.require_token(f"write to {repo}")
        operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=data) for path, data in files.items()]
        with hub_errors(f"commit to {repo} (needs write access, or a token that may open a pull request)"):
            info = self.api.create_commit(repo, operations, repo_type=repo_type, revision=revision,
                                          create_pr=create_pr, commit_message=f"{BRIDGE_MARK} {message}",
                                          commit_description=description)
        return info.oid, info.pr_url

    def leaderboard(self, dataset: str) -> list:
        """The benchmark's leaderboard entries, best first ([] when the dataset has none)."""
        try:
            with hub_errors(f"read the leaderboard of {dataset}"):
                return self.api.get_dataset_leaderboard(dataset)
        except UpstreamError as exc:
            if exc.status in (400, 404):
                return []
            raise

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

    def commit(self, repo: str, files: dict[str, bytes], message: str, parent: str | None,
               deleted: list[str] = ()) -> str:
        """One commit adding `files` and deleting `deleted`, pinned to `parent` so a concurrent commit makes it fail
        instead of mixing."""
        operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=data) for path, data in files.items()]
        operations += [CommitOperationDelete(path_in_repo=path) for path in deleted]
        with hub_errors(f"commit to {repo} (needs write access)"):
            info = self.api.create_commit(repo, operations, repo_type="dataset", parent_commit=parent,
                                          commit_message=f"{BRIDGE_MARK} {message}",
                                          commit_description="Written by hub-langsmith-bridge.")
        return info.oid

    def head(self, repo: str, repo_type: str = "dataset") -> str | None:
        """The head of `main`; None for a repo that does not exist or has no commits."""
        try:
            return self.revision_info(repo, repo_type, "main")[0]
        except UpstreamError as exc:
            if exc.status == 404:
                return None
            raise

    def list_paths(self, repo: str, revision: str, folder: str | None = None, recursive: bool = True,
                   repo_type: str = "dataset") -> list[str]:
        """Paths (files and folders) under `folder` at `revision`; [] when the folder does not exist."""
        where = f"{repo}/{folder or ''}@{revision[:12]}"
        with hub_errors(f"list {where}"):
            try:
                return [e.path for e in self.api.list_repo_tree(repo, path_in_repo=folder, repo_type=repo_type,
                                                                revision=revision, recursive=recursive)]
            except EntryNotFoundError:
                return []

    def read_bytes(self, repo: str, repo_type: str, revision: str, path: str) -> bytes:
        with tempfile.TemporaryDirectory(prefix="bridge-read-") as tmp:
            return self.download(repo, repo_type, revision, path, Path(tmp)).read_bytes()

    def read_text(self, repo: str, path: str, revision: str, repo_type: str = "dataset") -> str | None:
        """A text file at `revision`; None when it does not exist."""
        try:
            return self.read_bytes(repo, repo_type, revision, path).decode("utf-8", errors="replace")
        except UpstreamError as exc:
            if exc.status == 404:
                return None
            raise

    def list_repos(self, owner: str, repo_type: str) -> list[str]:
        lister = {"dataset": self.api.list_datasets, "model": self.api.list_models, "space": self.api.list_spaces}
        with hub_errors(f"list the {repo_type} repos of {owner}"):
            return [info.id for info in lister[repo_type](author=owner)]

    # ---- the bridge's own webhook ----
    def whoami(self) -> dict:
        self.require_token("ask the Hub who the token belongs to")
        with hub_errors("ask the Hub who the token belongs to"):
            return self.api.whoami()

    def webhooks(self) -> list:
        """The token owner's webhooks (huggingface_hub `WebhookInfo`s)."""
        self.require_token("manage the Hub webhook")
        with hub_errors("list the Hub webhooks"):
            return self.api.list_webhooks()

    def create_webhook(self, url: str, watched: list[dict], domains: list[str], secret: str):
        with hub_errors("create the Hub webhook"):
            return self.api.create_webhook(url=url, watched=watched, domains=domains, secret=secret)

    def update_webhook(self, webhook_id: str, url: str, watched: list[dict], domains: list[str], secret: str):
        with hub_errors("update the Hub webhook"):
            return self.api.update_webhook(webhook_id, url=url, watched=watched, domains=domains, secret=secret)

    def enable_webhook(self, webhook_id: str):
        with hub_errors("re-enable the Hub webhook"):
            return self.api.enable_webhook(webhook_id)
