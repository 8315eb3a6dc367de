"""The Hub emulator, driven by the real huggingface_hub client (no mocks).

huggingface_hub reads HF_ENDPOINT at import time, so every call passes `endpoint=` explicitly, and every call passes
`token=` (a string, or False for anonymous) so the user's saved token is never picked up.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download
from huggingface_hub.errors import (HfHubHTTPError, RemoteEntryNotFoundError, RepositoryNotFoundError,
                                    RevisionNotFoundError)
from huggingface_hub.utils.sha import git_hash
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge.sandbox.hub import HubEmulator
from bridge.sandbox.server import ServerHandle
from conftest import wait_for

TOKEN = "hf_sandbox_token"        # sandbox-user, member of org "acme"
OTHER = "hf_other_token"          # other-user, no orgs
READ_ONLY = "hf_read_sandbox"     # sandbox-user, read-only
USERS = {TOKEN: "sandbox-user", OTHER: "other-user", READ_ONLY: "sandbox-user"}
REPO = "sandbox-user/evals"


@dataclass
class Sandbox:
    hub: HubEmulator
    url: str
    tmp: Path

    def api(self, token: str | bool = TOKEN) -> HfApi:
        return HfApi(endpoint=self.url, token=token)

    def download(self, filename: str, *, revision: str | None = None, token: str | bool = TOKEN,
                 repo_id: str = REPO) -> bytes:
        path = hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision, endpoint=self.url,
                               token=token, cache_dir=self.tmp / "hf-cache")
        return Path(path).read_bytes()


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    hub = HubEmulator(tmp_path / "hub", tokens=USERS, orgs={"acme": ["sandbox-user"]}, tree_page_size=3)
    handle = hub.serve()
    hub.create_repo(REPO)
    yield Sandbox(hub, handle.url, tmp_path)
    handle.stop()


@dataclass
class Receiver:
    """A tiny loopback webhook endpoint that keeps what it receives."""
    handle: ServerHandle
    received: list[dict] = field(default_factory=list)
    status: int = 200

    @property
    def url(self) -> str:
        return f"{self.handle.url}/webhooks/hub"


@pytest.fixture
def receiver():
    box: dict[str, Any] = {}

    async def hook(request: Request) -> JSONResponse:
        secret = request.headers.get("x-webhook-secret")
        box["receiver"].received.append({"body": await request.json(), "secret": secret})
        return JSONResponse({"ok": True}, box["receiver"].status)

    handle = ServerHandle(Starlette(routes=[Route("/webhooks/hub", hook, methods=["POST"])])).start()
    box["receiver"] = Receiver(handle)
    yield box["receiver"]
    handle.stop()


def upload(sandbox: Sandbox, path: str, content: bytes, token: str | bool = TOKEN, **kwargs: Any):
    return sandbox.api(token).upload_file(path_or_fileobj=content, path_in_repo=path, repo_id=REPO,
                                          repo_type="dataset", **kwargs)


# ---------------------------------------------------------------- account and repos

def test_whoami_reports_user_orgs_and_token_role(sandbox: Sandbox) -> None:
    me = sandbox.api().whoami()
    assert (me["type"], me["name"], [o["name"] for o in me["orgs"]]) == ("user", "sandbox-user", ["acme"])
    assert me["auth"]["accessToken"]["role"] == "write"
    assert sandbox.api(READ_ONLY).whoami()["auth"]["accessToken"]["role"] == "read"
    with pytest.raises(HfHubHTTPError) as err:
        sandbox.api("hf_unknown").whoami()
    assert err.value.response.status_code == 401


def test_create_repo_conflict_and_exist_ok(sandbox: Sandbox) -> None:
    api = sandbox.api()
    url = api.create_repo("acme/shared", repo_type="dataset", private=True)
    assert (url.repo_id, url.repo_type) == ("acme/shared", "dataset")
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("acme/shared", repo_type="dataset")
    assert err.value.response.status_code == 409
    assert api.create_repo("acme/shared", repo_type="dataset", exist_ok=True).repo_id == "acme/shared"
    assert api.dataset_info("acme/shared").private is True
    with pytest.raises(HfHubHTTPError) as err:
        sandbox.api(OTHER).create_repo("acme/intruder", repo_type="dataset")
    assert err.value.response.status_code == 403


def test_repo_info_at_branch_and_sha(sandbox: Sandbox) -> None:
    first = sandbox.hub.commit(REPO, {"a.txt": b"1"})
    second = sandbox.hub.commit(REPO, {"b.txt": b"2"})
    api = sandbox.api()
    info = api.dataset_info(REPO, files_metadata=True)
    assert info.sha == second == sandbox.hub.head(REPO)
    assert {s.rfilename: (s.size, s.blob_id) for s in info.siblings}["b.txt"] == (1, git_hash(b"2"))
    assert [s.rfilename for s in api.dataset_info(REPO, revision=first).siblings] == [".gitattributes", "a.txt"]
    assert api.repo_info(REPO, repo_type="dataset", revision=first).sha == first


@pytest.mark.parametrize("repo_id, revision, token, error", [
    ("sandbox-user/missing", None, TOKEN, RepositoryNotFoundError),
    (REPO, "no-such-branch", TOKEN, RevisionNotFoundError),
    ("acme/secret", None, False, RepositoryNotFoundError),
    ("acme/secret", None, OTHER, RepositoryNotFoundError),
], ids=["missing-repo", "missing-revision", "private-anonymous", "private-other-user"])
def test_repo_info_errors(sandbox: Sandbox, repo_id: str, revision: str | None, token: Any, error: type) -> None:
    sandbox.hub.create_repo("acme/secret", private=True)
    with pytest.raises(error):
        sandbox.api(token).dataset_info(repo_id, revision=revision)
    assert sandbox.api(TOKEN).dataset_info("acme/secret").id == "acme/secret"  # a member sees it


def test_list_datasets_by_author_paginates(sandbox: Sandbox) -> None:
    for name in ("run-1", "run-2", "run-3", "other-1"):
        sandbox.hub.create_repo(f"acme/{name}")
    sandbox.hub.create_repo("acme/hidden", private=True)
    sandbox.hub.create_repo("elsewhere/run-9")
    sandbox.hub.recorder.clear()
    public = sorted(d.id for d in sandbox.api(False).list_datasets(author="acme"))
    assert public == ["acme/other-1", "acme/run-1", "acme/run-2", "acme/run-3"]
    assert sandbox.hub.recorder.count("GET", r"^/api/datasets$") == 2  # page size 3 -> two pages
    assert "acme/hidden" in {d.id for d in sandbox.api(TOKEN).list_datasets(author="acme")}
    assert sorted(d.id for d in sandbox.api().list_datasets(author="acme", search="run")) == [
        "acme/run-1", "acme/run-2", "acme/run-3"]


def test_delete_repo(sandbox: Sandbox) -> None:
    sandbox.api().delete_repo(REPO, repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        sandbox.api().dataset_info(REPO)
    sandbox.api().delete_repo(REPO, repo_type="dataset", missing_ok=True)


# ---------------------------------------------------------------- trees and downloads

def test_list_repo_tree_paginates_with_git_oids(sandbox: Sandbox) -> None:
    files = {f"data/{i}.jsonl": f"row {i}\n".encode() for i in range(5)} | {"data/sub/x.txt": b"x", "README.md": b"hi"}
    sandbox.hub.commit(REPO, files)
    sandbox.hub.recorder.clear()
    entries = list(sandbox.api().list_repo_tree(REPO, repo_type="dataset", recursive=True))
    assert sandbox.hub.recorder.count("GET", "/tree/") == 4  # 10 entries, 3 per page
    by_path = {e.path: e for e in entries}
    assert set(by_path) == set(files) | {".gitattributes", "data", "data/sub"}
    assert all(by_path[p].blob_id == git_hash(c) and by_path[p].size == len(c) for p, c in files.items())
    assert len(by_path["data/sub"].tree_id) == 40
    top = {e.path for e in sandbox.api().list_repo_tree(REPO, "data", repo_type="dataset")}
    assert top == {f"data/{i}.jsonl" for i in range(5)} | {"data/sub"}
    assert sorted(sandbox.api().list_repo_files(REPO, repo_type="dataset")) == sorted(files | {".gitattributes": b""})
    with pytest.raises(RemoteEntryNotFoundError):
        list(sandbox.api().list_repo_tree(REPO, "nope", repo_type="dataset"))


def test_list_repo_tree_expand_gives_last_commit(sandbox: Sandbox) -> None:
    first = sandbox.hub.commit(REPO, {"a.txt": b"1"}, message="add a")
    sandbox.hub.commit(REPO, {"b.txt": b"2"}, message="add b")
    entries = {e.path: e for e in sandbox.api().list_repo_tree(REPO, repo_type="dataset", expand=True)}
    assert (entries["a.txt"].last_commit.oid, entries["a.txt"].last_commit.title) == (first, "add a")
    assert entries["b.txt"].last_commit.title == "add b"


def test_paths_info_file_exists_and_commit_listing(sandbox: Sandbox) -> None:
    oids = [sandbox.hub.commit(REPO, {f"d/{i}.txt": b"%d" % i}, message=f"c{i}") for i in range(4)]
    api = sandbox.api()
    info = api.get_paths_info(REPO, ["d/1.txt", "d", "nope"], repo_type="dataset")
    assert sorted((type(e).__name__, e.path) for e in info) == [("RepoFile", "d/1.txt"), ("RepoFolder", "d")]
    assert api.file_exists(REPO, "d/2.txt", repo_type="dataset")
    assert not api.file_exists(REPO, "d/9.txt", repo_type="dataset")
    listed = api.list_repo_commits(REPO, repo_type="dataset")  # 5 commits, 3 per page
    assert [c.commit_id for c in listed][:4] == oids[::-1] and listed[-1].title == "initial commit"
    assert [c.commit_id for c in api.list_repo_commits(REPO, repo_type="dataset", revision=oids[1])][:2] == [
        oids[1], oids[0]]


@pytest.mark.parametrize("revision", ["branch", "sha", "pr-ref"])
def test_hf_hub_download_at(sandbox: Sandbox, revision: str) -> None:
    old = sandbox.hub.commit(REPO, {"runs/r.json": b'{"v": 1}'})
    sandbox.hub.commit(REPO, {"runs/r.json": b'{"v": 2}'})
    num, _ = sandbox.hub.open_pr(REPO, {"runs/r.json": b'{"v": 3}'})
    rev, expected = {"branch": ("main", b'{"v": 2}'), "sha": (old, b'{"v": 1}'),
                     "pr-ref": (f"refs/pr/{num}", b'{"v": 3}')}[revision]
    assert sandbox.download("runs/r.json", revision=rev) == expected
    assert sandbox.hub.recorder.count("HEAD", "/resolve/") == 1


def test_hf_hub_download_missing_file_and_private_repo(sandbox: Sandbox) -> None:
    with pytest.raises(RemoteEntryNotFoundError):
        sandbox.download("nope.txt")
    sandbox.hub.create_repo("acme/secret", private=True)
    sandbox.hub.commit("acme/secret", {"s.txt": b"s"})
    with pytest.raises(RepositoryNotFoundError):
        sandbox.download("s.txt", repo_id="acme/secret", token=False)
    assert sandbox.download("s.txt", repo_id="acme/secret") == b"s"


def test_resolve_accepts_unencoded_pr_ref_and_ranges(sandbox: Sandbox) -> None:
    import httpx2  # huggingface_hub's own HTTP client
    num, head = sandbox.hub.open_pr(REPO, {"p.txt": b"0123456789"})
    answer = httpx2.get(f"{sandbox.url}/datasets/{REPO}/resolve/refs/pr/{num}/p.txt", headers={"Range": "bytes=4-"})
    assert (answer.status_code, answer.content, answer.headers["X-Repo-Commit"]) == (206, b"456789", head)


@pytest.mark.parametrize("repo_type, extra", [("model", {}), ("dataset", {}), ("space", {"space_sdk": "gradio"})],
                         ids=["model", "dataset", "space"])
def test_every_repo_type_round_trips(sandbox: Sandbox, repo_type: str, extra: dict) -> None:
    api = sandbox.api()
    url = api.create_repo("acme/thing", repo_type=repo_type, **extra)
    assert (url.repo_type, url.repo_id) == (repo_type, "acme/thing")
    info = api.upload_file(path_or_fileobj=b"body", path_in_repo="f.txt", repo_id="acme/thing", repo_type=repo_type)
    assert api.repo_info("acme/thing", repo_type=repo_type).sha == info.oid
    path = hf_hub_download("acme/thing", "f.txt", repo_type=repo_type, endpoint=sandbox.url, token=TOKEN,
                           cache_dir=sandbox.tmp / "hf-cache")
    assert Path(path).read_bytes() == b"body"
    assert sandbox.hub.read_file("acme/thing", "f.txt", repo_type=repo_type) == b"body"


# ---------------------------------------------------------------- commits

def test_create_commit_adds_deletes_and_skips_unchanged(sandbox: Sandbox) -> None:
    api = sandbox.api()
    api.create_commit(REPO, [CommitOperationAdd("a.txt", b"a"), CommitOperationAdd("d/b.txt", b"b")],
                      commit_message="two files", commit_description="why", repo_type="dataset")
    api.create_commit(REPO, [CommitOperationDelete("d/")], commit_message="drop d", repo_type="dataset")
    assert sandbox.hub.list_files(REPO) == [".gitattributes", "a.txt"]
    assert [(c["title"], c["author"]) for c in sandbox.hub.commits(REPO)[:2]] == [
        ("drop d", "sandbox-user"), ("two files", "sandbox-user")]
    assert sandbox.hub.commits(REPO)[1]["message"] == "why"
    sandbox.hub.recorder.clear()
    upload(sandbox, "a.txt", b"a")  # unchanged: the client drops it after preupload, no commit call
    assert sandbox.hub.recorder.count("POST", "/commit/") == 0
    with pytest.raises(RemoteEntryNotFoundError):
        api.create_commit(REPO, [CommitOperationDelete("ghost.txt")], commit_message="x", repo_type="dataset")


def test_create_commit_parent_commit_conflict(sandbox: Sandbox) -> None:
    api = sandbox.api()
    parent = sandbox.hub.head(REPO)
    upload(sandbox, "one.txt", b"1", parent_commit=parent)
    with pytest.raises(HfHubHTTPError) as err:
        upload(sandbox, "two.txt", b"2", parent_commit=parent)
    assert err.value.response.status_code == 412
    assert "A commit has happened since" in str(err.value)
    upload(sandbox, "two.txt", b"2", parent_commit=api.dataset_info(REPO).sha[:7])  # short shas work too
    assert sandbox.hub.list_files(REPO) == [".gitattributes", "one.txt", "two.txt"]


def test_create_commit_with_create_pr(sandbox: Sandbox) -> None:
    main = sandbox.hub.head(REPO)
    info = sandbox.api(OTHER).create_commit(REPO, [CommitOperationAdd("fix.txt", b"fix")], commit_message="Fix",
                                            repo_type="dataset", create_pr=True)
    assert (info.pr_num, info.pr_revision) == (1, "refs/pr/1")
    assert sandbox.hub.head(REPO) == main  # main did not move
    assert sandbox.hub.read_file(REPO, "fix.txt", revision="refs/pr/1") == b"fix"
    details = sandbox.api().get_discussion_details(REPO, 1, repo_type="dataset")
    assert (details.is_pull_request, details.status, details.author) == (True, "open", "other-user")
    assert [e.type for e in details.events] == ["comment", "commit"]
    assert "+fix" in details.diff
    # The PR's author may push more commits to refs/pr/1.
    upload(sandbox, "more.txt", b"m", token=OTHER, revision="refs/pr/1")
    assert "more.txt" in sandbox.hub.list_files(REPO, revision="refs/pr/1")
    refs = sandbox.api().list_repo_refs(REPO, repo_type="dataset", include_pull_requests=True)
    assert [r.ref for r in refs.pull_requests] == ["refs/pr/1"]


def test_validate_yaml_and_card_data(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="Invalid metadata"):
        upload(sandbox, "README.md", b"---\nconfigs: [\n---\n")
    upload(sandbox, "README.md", b"---\nconfigs:\n- config_name: runs\n  data_files: runs/*.parquet\n---\n# Hi\n")
    assert sandbox.api().dataset_info(REPO).card_data["configs"][0]["config_name"] == "runs"


# ---------------------------------------------------------------- discussions

def test_discussions_pull_requests_and_comments(sandbox: Sandbox) -> None:
    api = sandbox.api(OTHER)
    discussion = api.create_discussion(REPO, "Question about runs", description="Where is run 3?",
                                       repo_type="dataset")
    pr = api.create_pull_request(REPO, "Add run 4", repo_type="dataset")
    assert (discussion.num, discussion.is_pull_request, pr.num, pr.status) == (1, False, 2, "draft")
    assert sandbox.hub.head(REPO, revision="refs/pr/2") == sandbox.hub.head(REPO)
    comment = sandbox.api().comment_discussion(REPO, 1, "It is in runs/3", repo_type="dataset")
    assert (comment.content, comment.author) == ("It is in runs/3", "sandbox-user")
    assert [c["content"] for c in sandbox.hub.comments(REPO, 1)] == ["Where is run 3?", "It is in runs/3"]
    listed = {d.num: d.is_pull_request for d in sandbox.api().get_repo_discussions(REPO, repo_type="dataset")}
    assert listed == {1: False, 2: True}
    status = sandbox.api().change_discussion_status(REPO, 1, "closed", repo_type="dataset")
    assert status.new_status == "closed"
    with pytest.raises(RepositoryNotFoundError):
        sandbox.api(False).comment_discussion(REPO, 1, "anonymous", repo_type="dataset")


# ---------------------------------------------------------------- auth failures

@pytest.mark.parametrize("token, error, status", [
    (False, RepositoryNotFoundError, 401),
    (OTHER, HfHubHTTPError, 403),
    (READ_ONLY, HfHubHTTPError, 403),
    ("hf_unknown", HfHubHTTPError, 401),
], ids=["anonymous", "not-a-member", "read-only-token", "invalid-token"])
def test_writes_need_a_writer(sandbox: Sandbox, token: Any, error: type, status: int) -> None:
    with pytest.raises(error) as err:
        upload(sandbox, "x.txt", b"x", token=token)
    assert err.value.response.status_code == status
    assert sandbox.hub.list_files(REPO) == [".gitattributes"]


def test_org_members_write_to_org_repos(sandbox: Sandbox) -> None:
    sandbox.hub.create_repo("acme/team")
    sandbox.api().upload_file(path_or_fileobj=b"t", path_in_repo="t.txt", repo_id="acme/team", repo_type="dataset")
    assert sandbox.hub.read_file("acme/team", "t.txt") == b"t"


# ---------------------------------------------------------------- webhooks

def test_webhook_delivers_content_and_discussion_events(sandbox: Sandbox, receiver: Receiver) -> None:
    webhook = sandbox.api().create_webhook(url=receiver.url, watched=[{"type": "user", "name": "sandbox-user"}],
                                           secret="s3cret")
    assert [w.id for w in sandbox.api().list_webhooks()] == [webhook.id]
    assert sandbox.api().get_webhook(webhook.id).watched[0].name == "sandbox-user"
    assert sandbox.api(OTHER).list_webhooks() == []  # webhooks belong to their creator
    old = sandbox.hub.head(REPO)
    new = upload(sandbox, "r.json", b"{}").oid
    first = wait_for(lambda: receiver.received)[0]
    assert first["secret"] == "s3cret"
    body = first["body"]
    assert body["event"] == {"action": "update", "scope": "repo.content"}
    assert body["updatedRefs"] == [{"ref": "refs/heads/main", "oldSha": old, "newSha": new}]
    assert (body["repo"]["name"], body["repo"]["type"], body["repo"]["headSha"]) == (REPO, "dataset", new)
    assert body["webhook"] == {"id": webhook.id, "version": 3}
    assert body["repo"]["url"]["web"] == f"{sandbox.url}/datasets/{REPO}"

    receiver.received.clear()
    sandbox.api(OTHER).create_pull_request(REPO, "Add run", repo_type="dataset")
    sandbox.api().comment_discussion(REPO, 1, "thanks", repo_type="dataset")
    events = wait_for(lambda: len(receiver.received) >= 3 and receiver.received)
    scopes = [(e["body"]["event"]["scope"], e["body"]["event"]["action"]) for e in events]
    assert scopes == [("discussion", "create"), ("repo.content", "update"), ("discussion.comment", "create")]
    assert events[1]["body"]["updatedRefs"] == [{"ref": "refs/pr/1", "oldSha": None, "newSha": new}]
    assert events[0]["body"]["discussion"]["isPullRequest"] is True
    assert "headSha" not in events[2]["body"]["repo"]
    assert events[2]["body"]["comment"]["content"] == "thanks"

    sandbox.api().delete_webhook(webhook.id)
    sandbox.hub.commit(REPO, {"after.txt": b"a"})
    assert sandbox.hub.wait_for_deliveries() and len(receiver.received) == 3


def test_webhook_filters_by_watched_and_domain(sandbox: Sandbox, receiver: Receiver) -> None:
    sandbox.hub.create_repo("acme/other")
    sandbox.hub.add_webhook(receiver.url, watched=[{"type": "dataset", "name": REPO}], domains=["discussion"])
    sandbox.hub.commit(REPO, {"a": b"a"})                  # repo domain: not watched
    sandbox.hub.create_repo("acme/else")
    sandbox.hub.open_pr("acme/other", {"b": b"b"})          # other repo: not watched
    sandbox.hub.open_pr(REPO, {"c": b"c"})                  # watched
    assert sandbox.hub.wait_for_deliveries()
    assert [(e["body"]["event"]["scope"], e["body"]["repo"]["name"]) for e in receiver.received] == [
        ("discussion", REPO)]


def test_webhook_failures_are_recorded_not_raised(sandbox: Sandbox, receiver: Receiver) -> None:
    receiver.status = 500
    with socket.socket() as closed:  # bound but not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{closed.getsockname()[1]}/hook"
        sandbox.hub.add_webhook(receiver.url, watched=[{"type": "user", "name": "sandbox-user"}])
        sandbox.hub.add_webhook(dead_url, watched=[{"type": "user", "name": "sandbox-user"}])
        assert upload(sandbox, "x.txt", b"x").oid  # the commit itself succeeds
        assert sandbox.hub.wait_for_deliveries()
    outcome = {d["url"]: (d["status"], d["error"] is not None) for d in sandbox.hub.deliveries}
    assert outcome == {receiver.url: (500, False), dead_url: (None, True)}


# ---------------------------------------------------------------- recorder, faults, persistence

def test_recorder_counts_and_injected_fault_surfaces(sandbox: Sandbox) -> None:
    sandbox.hub.recorder.clear()
    upload(sandbox, "a.txt", b"a")
    assert sandbox.hub.recorder.count("POST", "/preupload/") == 1
    assert sandbox.hub.recorder.count("POST", "/commit/main$", status=200) == 1
    sandbox.hub.recorder.add_fault("/commit/", method="POST", status=503)
    with pytest.raises(HfHubHTTPError) as err:
        upload(sandbox, "b.txt", b"b")
    assert err.value.response.status_code == 503
    upload(sandbox, "b.txt", b"b")  # the fault fired once only
    assert sandbox.hub.list_files(REPO) == [".gitattributes", "a.txt", "b.txt"]


def test_store_survives_a_restart(sandbox: Sandbox, receiver: Receiver) -> None:
    sandbox.hub.create_repo("acme/private", private=True)
    oid = sandbox.hub.commit(REPO, {"keep.txt": b"kept"})
    num, pr_head = sandbox.hub.open_pr(REPO, {"pr.txt": b"p"}, title="A PR")
    sandbox.hub.add_webhook(receiver.url, watched=[{"type": "dataset", "name": REPO}])
    again = HubEmulator(sandbox.tmp / "hub", tokens=USERS)
    assert again.head(REPO) == oid and again.head(REPO, revision=f"refs/pr/{num}") == pr_head
    assert again.read_file(REPO, "keep.txt") == b"kept"
    assert [c["title"] for c in again.commits(REPO)][:1] == [sandbox.hub.commits(REPO)[0]["title"]]
    assert again.comments(REPO, num)[0]["content"] == "A PR"
    assert again.store.repos[("dataset", "acme/private")].private is True
    again.commit(REPO, {"after.txt": b"a"})
    assert again.wait_for_deliveries() and len(receiver.received) == 1
