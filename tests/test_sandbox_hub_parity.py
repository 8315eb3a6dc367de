"""What the sandbox Hub gained to match the real one (issue 13), driven by the real huggingface_hub client: short
shas, branches and tags, comment edits, merging, the dataset card's split names, webhook management, retried and
suspended deliveries, and the web pages the bridge links to."""

from __future__ import annotations

import socket

import pytest
import requests
from huggingface_hub.errors import HfHubHTTPError, RevisionNotFoundError

from conftest import wait_for
from test_sandbox_hub import OTHER, READ_ONLY, REPO, TOKEN, USERS, Receiver, Sandbox, receiver, upload  # noqa: F401

from bridge.sandbox.hub import HubEmulator


@pytest.fixture
def strict(tmp_path, monkeypatch):
    """A sandbox whose webhooks retry at once and are suspended after 2 failed events; one denied token."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    hub = HubEmulator(tmp_path / "hub", tokens={**USERS, "hf_fine_grained": "sandbox-user"},
                      orgs={"acme": ["sandbox-user"]}, webhook_retry_seconds=(0, 0), webhook_suspend_after=2,
                      webhook_denied={"hf_fine_grained"}, web_user="sandbox-user")
    handle = hub.serve()
    hub.create_repo(REPO)
    yield Sandbox(hub, handle.url, tmp_path)
    handle.stop()


# ---------------------------------------------------------------- revisions, branches, tags

def test_short_shas_resolve_on_revision_tree_and_resolve_routes_for_any_ref(strict: Sandbox) -> None:
    api = strict.api()
    main = upload(strict, "a.txt", b"main").oid
    num, pr_head = strict.hub.open_pr(REPO, {"b.txt": b"pr"})
    for full in (main, pr_head):  # a PR branch's commit too, which main's history does not hold
        short = full[:7]
        assert api.dataset_info(REPO, revision=short).sha == full
        assert "a.txt" in api.list_repo_files(REPO, repo_type="dataset", revision=short)
        assert strict.download("a.txt", revision=short) == b"main"
    assert strict.download("b.txt", revision=pr_head[:9]) == b"pr"
    with pytest.raises(RevisionNotFoundError):
        api.dataset_info(REPO, revision="abcdef0")
    with pytest.raises(RevisionNotFoundError):
        api.dataset_info(REPO, revision=main[:6])  # fewer than 7 characters is not a sha


def test_create_branch_and_tag_with_webhooks(strict: Sandbox, receiver: Receiver) -> None:
    api = strict.api()
    strict.hub.add_webhook(receiver.url, watched=[{"type": "dataset", "name": REPO}], domains=["repo"])
    head = upload(strict, "a.txt", b"1").oid
    api.create_branch(REPO, repo_type="dataset", branch="release")
    api.create_tag(REPO, repo_type="dataset", tag="v1", revision=head[:7])
    with pytest.raises(HfHubHTTPError) as err:
        api.create_branch(REPO, repo_type="dataset", branch="release")
    assert err.value.response.status_code == 409
    api.create_branch(REPO, repo_type="dataset", branch="release", exist_ok=True)
    with pytest.raises(HfHubHTTPError) as err:
        strict.api(OTHER).create_branch(REPO, repo_type="dataset", branch="mine")
    assert err.value.response.status_code == 403
    refs = api.list_repo_refs(REPO, repo_type="dataset")
    assert {b.name: b.target_commit for b in refs.branches} == {"main": head, "release": head}
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", head)]
    released = api.upload_file(path_or_fileobj=b"2", path_in_repo="b.txt", repo_id=REPO, repo_type="dataset",
                               revision="release").oid
    assert strict.hub.head(REPO) == head and strict.hub.head(REPO, revision="release") == released
    api.delete_branch(REPO, repo_type="dataset", branch="release")
    assert strict.hub.wait_for_deliveries()
    refs_seen = [e["body"]["updatedRefs"][0] for e in receiver.received]
    assert refs_seen[1:] == [{"ref": "refs/heads/release", "oldSha": None, "newSha": head},
                             {"ref": "refs/tags/v1", "oldSha": None, "newSha": head},
                             {"ref": "refs/heads/release", "oldSha": head, "newSha": released},
                             {"ref": "refs/heads/release", "oldSha": released, "newSha": None}]


# ---------------------------------------------------------------- discussions

def test_edit_comment_only_by_its_author_fires_an_update(strict: Sandbox, receiver: Receiver) -> None:
    strict.hub.add_webhook(receiver.url, watched=[{"type": "dataset", "name": REPO}], domains=["discussion"])
    api = strict.api()
    api.create_discussion(REPO, title="Question", repo_type="dataset")
    posted = api.comment_discussion(REPO, 1, "first", repo_type="dataset")
    edited = api.edit_discussion_comment(REPO, 1, posted.id, "second", repo_type="dataset")
    assert (edited.content, edited.edited) == ("second", True)
    with pytest.raises(HfHubHTTPError) as err:
        strict.api(OTHER).edit_discussion_comment(REPO, 1, posted.id, "mine", repo_type="dataset")
    assert err.value.response.status_code == 403
    details = api.get_discussion_details(REPO, 1, repo_type="dataset")
    assert [e.content for e in details.events if e.type == "comment"][1:] == ["second"]
    assert strict.hub.wait_for_deliveries()
    last = receiver.received[-1]["body"]
    assert (last["event"], last["comment"]["content"]) == ({"action": "update", "scope": "discussion.comment"},
                                                           "second")


def test_merge_pull_request_commits_on_main_and_announces_it(strict: Sandbox, receiver: Receiver) -> None:
    strict.hub.add_webhook(receiver.url, watched=[{"type": "dataset", "name": REPO}])
    num, _ = strict.hub.open_pr(REPO, {"pr.txt": b"from the PR"}, author="other-user")
    old_main = strict.hub.head(REPO)
    with pytest.raises(HfHubHTTPError) as err:
        strict.api(OTHER).merge_pull_request(REPO, num, repo_type="dataset")  # not a writer
    assert err.value.response.status_code == 403
    strict.api().merge_pull_request(REPO, num, comment="Thanks!", repo_type="dataset")
    details = strict.api().get_discussion_details(REPO, num, repo_type="dataset")
    merged = strict.hub.head(REPO)
    assert details.status == "merged" and details.merge_commit_oid == merged
    assert strict.hub.read_file(REPO, "pr.txt") == b"from the PR"
    with pytest.raises(HfHubHTTPError):
        strict.api().merge_pull_request(REPO, num, repo_type="dataset")  # only once
    assert strict.hub.wait_for_deliveries()
    tail = [e["body"] for e in receiver.received[-2:]]
    assert tail[0]["updatedRefs"] == [{"ref": "refs/heads/main", "oldSha": old_main, "newSha": merged}]
    assert tail[1]["event"] == {"action": "update", "scope": "discussion"}
    assert tail[1]["discussion"]["status"] == "merged"
    assert tail[1]["discussion"]["changes"] == {"base": "refs/heads/main", "mergeCommitId": merged}


# ---------------------------------------------------------------- dataset card

CARD = """---
configs:
- config_name: runs
  data_files:
  - split: {split}
    path: "runs/*.parquet"
---
# Card
"""


def test_validate_yaml_checks_split_names_of_configs(strict: Sandbox) -> None:
    api = strict.api()
    api.upload_file(path_or_fileobj=CARD.format(split="train.v2").encode(), path_in_repo="README.md", repo_id=REPO,
                    repo_type="dataset")
    with pytest.raises(ValueError, match=r"data_files\[0\]\.split.*my split"):
        api.upload_file(path_or_fileobj=CARD.format(split="my split").encode(), path_in_repo="README.md",
                        repo_id=REPO, repo_type="dataset")
    assert "train.v2" in strict.hub.read_file(REPO, "README.md").decode()


# ---------------------------------------------------------------- webhook management and delivery

def test_webhook_management_round_trip_through_the_sdk(strict: Sandbox, receiver: Receiver) -> None:
    api = strict.api()
    hook = api.create_webhook(url=receiver.url, watched=[{"type": "dataset", "name": REPO}], domains=["repo"],
                              secret="one")
    assert (hook.url, hook.domains, hook.secret, hook.disabled, hook.job) == (receiver.url, ["repo"], "one",
                                                                             False, None)
    updated = api.update_webhook(hook.id, watched=[{"type": "user", "name": "sandbox-user"}],
                                 domains=["repo", "discussion"], secret="two")
    assert ([(w.type, w.name) for w in updated.watched], updated.domains, updated.secret, updated.url) == (
        [("user", "sandbox-user")], ["repo", "discussion"], "two", receiver.url)
    assert api.disable_webhook(hook.id).disabled is True
    upload(strict, "quiet.txt", b"q")  # a disabled webhook gets nothing
    assert api.enable_webhook(hook.id).disabled is False
    upload(strict, "heard.txt", b"h")
    assert strict.hub.wait_for_deliveries()
    assert [e["secret"] for e in receiver.received] == ["two"]
    assert [w.id for w in api.list_webhooks()] == [hook.id]
    for bad in ({"watched": []}, {"watched": [{"type": "team", "name": "x"}]}):
        with pytest.raises(HfHubHTTPError) as err:
            api.create_webhook(url=receiver.url, **bad)
        assert err.value.response.status_code == 400
    with pytest.raises(HfHubHTTPError) as err:
        strict.api("hf_fine_grained").list_webhooks()
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as err:
        strict.api(READ_ONLY).create_webhook(url=receiver.url, watched=[{"type": "user", "name": "x"}])
    assert err.value.response.status_code == 403


def test_failed_deliveries_are_retried_then_the_webhook_is_suspended(strict: Sandbox, receiver: Receiver) -> None:
    api = strict.api()
    receiver.status = 503
    hook = api.create_webhook(url=receiver.url, watched=[{"type": "dataset", "name": REPO}], secret="s")
    upload(strict, "one.txt", b"1")
    assert strict.hub.wait_for_deliveries()
    assert len(receiver.received) == 3  # the first attempt and two retries
    assert api.get_webhook(hook.id).disabled is False  # one failed event is not yet a suspension
    receiver.status = 200
    upload(strict, "two.txt", b"2")  # a success resets the count
    receiver.status = 500
    upload(strict, "three.txt", b"3")
    upload(strict, "four.txt", b"4")
    assert strict.hub.wait_for_deliveries()
    assert api.get_webhook(hook.id).disabled is True  # two failed events in a row
    seen = len(receiver.received)
    upload(strict, "five.txt", b"5")  # suspended: no attempt at all
    assert strict.hub.wait_for_deliveries() and len(receiver.received) == seen
    receiver.status = 200
    assert api.enable_webhook(hook.id).disabled is False
    upload(strict, "six.txt", b"6")
    assert strict.hub.wait_for_deliveries() and len(receiver.received) == seen + 1


# ---------------------------------------------------------------- web pages

def test_pages_for_a_commit_a_tree_a_file_and_a_pr_escape_everything(strict: Sandbox) -> None:
    nasty = "<script>alert(1)</script>"
    oid = strict.hub.commit(REPO, {"dir/x.txt": nasty.encode()}, message=f"Add {nasty}")
    num, _ = strict.hub.open_pr(REPO, {"y.txt": b"y"}, title=f"PR {nasty}")
    strict.hub.post_comment(REPO, num, f"| task | score |\n|---|---|\n| gsm8k | **0.5** |\n\n{nasty}\n"
                                       "<!-- hidden marker -->\n[link](javascript:alert(1))")
    base = f"{strict.url}/datasets/{REPO}"
    pages = {name: requests.get(url, timeout=10) for name, url in {
        "commit": f"{base}/commit/{oid[:7]}", "tree": f"{base}/tree/main/dir", "root": base,
        "file": f"{base}/blob/{oid}/dir/x.txt", "pr": f"{base}/discussions/{num}"}.items()}
    for name, answer in pages.items():
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html"), name
        assert nasty not in answer.text and 'href="javascript:' not in answer.text, name
    assert "&lt;script&gt;" in pages["commit"].text and oid in pages["commit"].text
    assert "x.txt" in pages["tree"].text and "dir" in pages["root"].text
    assert "<td><strong>0.5</strong></td>" in pages["pr"].text and "hidden marker" not in pages["pr"].text
    missing = requests.get(f"{base}/discussions/99", timeout=10)
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    strict.hub.create_repo("acme/secret", private=True)
    assert requests.get(f"{strict.url}/datasets/acme/secret", timeout=10).status_code == 200  # the web user
    assert requests.get(f"{strict.url}/datasets/acme/secret", timeout=10,
                        headers={"authorization": f"Bearer {OTHER}"}).status_code == 404
