"""Hub webhook payloads (version 3) in the shapes the Hub sends, built in code for tests."""

from __future__ import annotations

import copy

SHA_A = "a" * 40
SHA_B = "b" * 40


def content_push(repo: str = "acme/llama-evals", repo_type: str = "dataset", refs: list | None = None,
                 head: str = SHA_B) -> dict:
    owner = repo.split("/")[0]
    prefix = {"dataset": "datasets/", "space": "spaces/"}.get(repo_type, "")
    return copy.deepcopy({
        "event": {"action": "update", "scope": "repo.content"},
        "repo": {
            "type": repo_type, "name": repo, "id": "6560b0e5b4a1c2d3e4f50617", "private": False,
            "url": {"web": f"https://huggingface.co/{prefix}{repo}",
                    "api": f"https://huggingface.co/api/{prefix or 'models/'}{repo}"},
            "owner": {"id": "5e9ecfc04957053f60648a3e"}, "headSha": head, "subdomain": None,
            "tags": [owner],
        },
        "webhook": {"id": "6560b0f2a1b2c3d4e5f60718", "version": 3},
        "updatedRefs": refs if refs is not None else [{"ref": "refs/heads/main", "oldSha": SHA_A, "newSha": SHA_B}],
    })


def new_pr(num: int = 3, sha: str = SHA_B, **kw) -> dict:
    return content_push(refs=[{"ref": f"refs/pr/{num}", "oldSha": None, "newSha": sha}], **kw)


def discussion_comment() -> dict:
    body = content_push()
    body["event"] = {"action": "create", "scope": "discussion.comment"}
    body.pop("updatedRefs")
    body["discussion"] = {"id": "65", "num": 4, "title": "Great", "status": "open", "isPullRequest": False,
                          "author": {"id": "x"}, "url": {"web": "w", "api": "a"}, "changes": {"base": "refs/heads/main"}}
    body["comment"] = {"id": "c1", "author": {"id": "x"}, "hidden": False, "content": "hi", "url": {"web": "w"}}
    return body
