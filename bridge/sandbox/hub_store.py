"""On-disk store behind the Hub emulator: repos, git-like commits, refs, discussions and webhooks.

Layout under `root` (plain files, so a sandbox survives a restart on the same root):

    blobs/<oid[:2]>/<oid[2:]>                  file contents, keyed by their git blob sha1
    repos/<type>s/<namespace>/<name>/repo.json metadata + refs
    repos/<type>s/<namespace>/<name>/commits/<oid>.json
    repos/<type>s/<namespace>/<name>/discussions/<num>.json
    webhooks.json

Object ids are real git ids: a file's oid is its git blob sha1, a folder's oid its git tree sha1 and a commit's oid
the sha1 of a git commit object, so they look and behave like the Hub's. Every snapshot keeps the full flat file
map (`path -> [blob oid, size]`), which is simple and fast enough for sandbox-sized repos.

The store knows nothing about HTTP, users or webhooks; it raises `StoreError` subclasses that the routes translate.
"""

from __future__ import annotations

import difflib
import hashlib
import html
import json
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_TYPES = ("model", "dataset", "space")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.arrow filter=lfs diff=lfs merge=lfs -text\n"


class StoreError(Exception):
    """Base of the errors the routes turn into Hub error responses."""


class RepoNotFound(StoreError):
    pass


class RepoExists(StoreError):
    pass


class RevisionNotFound(StoreError):
    pass


class EntryNotFound(StoreError):
    pass


class ParentMismatch(StoreError):
    pass


class InvalidName(StoreError):
    pass


def now_iso() -> str:
    """The Hub's timestamp format: millisecond precision, UTC, `Z` suffix."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def object_id(seed: str) -> str:
    """A stable 24-hex id shaped like the Hub's Mongo ObjectIds."""
    return hashlib.sha1(seed.encode()).hexdigest()[:24]


def random_id() -> str:
    return uuid.uuid4().hex[:24]


def git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def git_tree_oids(files: dict[str, list]) -> dict[str, str]:
    """Git tree sha1 of every folder ("" is the root) of a flat `path -> [blob oid, size]` map."""
    children: dict[str, dict[str, tuple[str, str]]] = {"": {}}
    for path, (oid, _size) in files.items():
        parent, _, name = path.rpartition("/")
        children.setdefault(parent, {})[name] = ("100644", oid)
        while parent:  # register ancestors that hold only folders
            parent = parent.rpartition("/")[0]
            children.setdefault(parent, {})
    oids: dict[str, str] = {}
    # Deepest folders first, so a folder's oid is known before its parent's entry list is hashed.
    for folder in sorted(children, key=lambda d: d.count("/") if d else -1, reverse=True):
        # git orders entries bytewise, folders as if their name ended with "/".
        entries = sorted(children[folder].items(), key=lambda e: e[0] + ("/" if e[1][0] == "40000" else ""))
        body = b"".join(f"{mode} {name}".encode() + b"\0" + bytes.fromhex(oid) for name, (mode, oid) in entries)
        oids[folder] = hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()
        if folder:
            parent, _, name = folder.rpartition("/")
            children[parent][name] = ("40000", oids[folder])
    return oids


def git_commit_oid(tree: str, parents: list[str], author: str, timestamp: int, title: str, message: str) -> str:
    who = f"{author} <{author}@users.noreply.huggingface.co> {timestamp} +0000"
    lines = [f"tree {tree}", *(f"parent {p}" for p in parents), f"author {who}", f"committer {who}"]
    text = "\n".join(lines) + "\n\n" + title + ("\n\n" + message if message else "") + "\n"
    body = text.encode()
    return hashlib.sha1(b"commit %d\0" % len(body) + body).hexdigest()


def check_repo_id(repo_id: str) -> tuple[str, str]:
    """`namespace/name`, both Hub-valid (also keeps paths inside the store)."""
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(_NAME.match(p) and ".." not in p for p in parts):
        raise InvalidName(f"Invalid repo id {repo_id!r}: expected 'namespace/name' with letters, digits, '.', '_', '-'")
    return parts[0], parts[1]


def branch_ref(revision: str) -> str:
    """`main` -> `refs/heads/main`; full refs are kept."""
    return revision if revision.startswith("refs/") else f"refs/heads/{revision}"


@dataclass
class Repo:
    type: str
    id: str
    private: bool
    object_id: str
    created_at: str
    refs: dict[str, str]
    dir: Path
    commits: dict[str, dict] = field(default_factory=dict)
    discussions: dict[int, dict] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.id.split("/")[0]

    def meta(self) -> dict[str, Any]:
        return {"type": self.type, "id": self.id, "private": self.private, "objectId": self.object_id,
                "createdAt": self.created_at, "refs": self.refs}


class HubStore:
    """All repos of one emulator, in memory and written through to `root`. Thread-safe (one lock)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self.webhooks: list[dict] = []
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self._load()

    # ---- persistence ----
    def _load(self) -> None:
        for meta_file in sorted((self.root / "repos").glob("*/*/*/repo.json")):
            meta = json.loads(meta_file.read_text())
            repo = Repo(meta["type"], meta["id"], meta["private"], meta["objectId"], meta["createdAt"],
                        meta["refs"], meta_file.parent)
            for path in (repo.dir / "commits").glob("*.json"):
                repo.commits[path.stem] = json.loads(path.read_text())
            for path in (repo.dir / "discussions").glob("*.json"):
                repo.discussions[int(path.stem)] = json.loads(path.read_text())
            self.repos[(repo.type, repo.id)] = repo
        hooks = self.root / "webhooks.json"
        if hooks.exists():
            self.webhooks = json.loads(hooks.read_text())

    def _write(self, path: Path, payload: Any) -> None:
        # Write then rename, so a crash never leaves half a JSON file behind.
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{threading.get_ident()}")
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, path)

    def _save_meta(self, repo: Repo) -> None:
        self._write(repo.dir / "repo.json", repo.meta())

    def save_discussion(self, repo: Repo, discussion: dict) -> None:
        self._write(repo.dir / "discussions" / f"{discussion['num']}.json", discussion)

    def save_webhooks(self) -> None:
        self._write(self.root / "webhooks.json", self.webhooks)

    def _put_blob(self, content: bytes) -> str:
        oid = git_blob_oid(content)
        path = self.root / "blobs" / oid[:2] / oid[2:]
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{threading.get_ident()}")
            tmp.write_bytes(content)
            os.replace(tmp, path)
        return oid

    def blob(self, oid: str) -> bytes:
        return (self.root / "blobs" / oid[:2] / oid[2:]).read_bytes()

    # ---- repos ----
    def get(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise RepoNotFound(f"{repo_type} {repo_id}")
        return repo

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        """A new repo whose `main` holds the Hub's system "initial commit" (a `.gitattributes` file)."""
        namespace, name = check_repo_id(repo_id)
        if repo_type not in REPO_TYPES:
            raise InvalidName(f"Invalid repo type {repo_type!r}")
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise RepoExists(f"{repo_type} {repo_id}")
            created = now_iso()
            repo = Repo(repo_type, repo_id, private, object_id(f"{repo_type}/{repo_id}/{created}"), created, {},
                        self.root / "repos" / f"{repo_type}s" / namespace / name)
            self.repos[(repo_type, repo_id)] = repo
            self.commit(repo, "refs/heads/main", {".gitattributes": GITATTRIBUTES}, (), (), "initial commit", "",
                        "system", create_ref=True)
            return repo

    def delete_repo(self, repo: Repo) -> None:
        with self.lock:
            self.repos.pop((repo.type, repo.id), None)
            shutil.rmtree(repo.dir, ignore_errors=True)

    # ---- revisions and snapshots ----
    def resolve(self, repo: Repo, revision: str) -> str:
        """Commit oid of a branch, tag, `refs/...` ref or full commit sha."""
        for ref in (revision, f"refs/heads/{revision}", f"refs/tags/{revision}"):
            if ref in repo.refs:
                return repo.refs[ref]
        if _HEX40.match(revision) and revision in repo.commits:
            return revision
        raise RevisionNotFound(revision)

    def files(self, repo: Repo, oid: str) -> dict[str, list]:
        return repo.commits[oid]["files"]

    def tree_oids(self, repo: Repo, oid: str) -> dict[str, str]:
        commit = repo.commits[oid]
        if "_trees" not in commit:  # computed lazily, kept in memory only
            commit["_trees"] = git_tree_oids(commit["files"])
        return commit["_trees"]

    def read(self, repo: Repo, oid: str, path: str) -> bytes:
        entry = self.files(repo, oid).get(path)
        if entry is None:
            raise EntryNotFound(path)
        return self.blob(entry[0])

    def history(self, repo: Repo, oid: str) -> list[dict]:
        """Commits reachable from `oid` along first parents, newest first."""
        out = []
        while oid:
            commit = repo.commits[oid]
            out.append(commit)
            oid = commit["parents"][0] if commit["parents"] else ""
        return out

    def last_commit(self, repo: Repo, head: str, path: str, is_dir: bool) -> dict:
        """The newest commit that changed `path` (a file or a folder), for `expand=true` tree listings."""
        def version(oid: str) -> str | None:
            if is_dir:
                return self.tree_oids(repo, oid).get(path)
            entry = self.files(repo, oid).get(path)
            return entry[0] if entry else None

        chain = self.history(repo, head)
        for commit, parent in zip(chain, chain[1:] + [None]):
            if parent is None or version(commit["oid"]) != version(parent["oid"]):
                return commit
        return chain[-1]

    def tree_entries(self, repo: Repo, oid: str, folder: str, recursive: bool) -> list[dict]:
        """Tree-listing entries under `folder` ("" is the root), in the Hub's shape, sorted by path."""
        files, trees = self.files(repo, oid), self.tree_oids(repo, oid)
        if folder and folder not in trees:
            raise EntryNotFound(folder)
        prefix = f"{folder}/" if folder else ""

        def wanted(path: str) -> bool:
            return path.startswith(prefix) and path != prefix and (recursive or "/" not in path[len(prefix):])
        entries = [{"type": "directory", "oid": t, "size": 0, "path": d} for d, t in trees.items() if d and wanted(d)]
        entries += [{"type": "file", "oid": o, "size": s, "path": p} for p, (o, s) in files.items() if wanted(p)]
        return sorted(entries, key=lambda e: e["path"])

    def diff(self, repo: Repo, before_oid: str, after_oid: str) -> str:
        """A git-style unified diff between two commits (text files only; binary ones show as replaced)."""
        before, after = self.files(repo, before_oid), self.files(repo, after_oid)
        out = []
        for path in sorted(set(before) | set(after)):
            old, new = before.get(path), after.get(path)
            if old == new:
                continue
            texts = [self.blob(e[0]).decode("utf-8", "replace").splitlines(True) if e else [] for e in (old, new)]
            out.append(f"diff --git a/{path} b/{path}\n")
            out.extend(difflib.unified_diff(texts[0], texts[1], f"a/{path}" if old else "/dev/null",
                                            f"b/{path}" if new else "/dev/null"))
        return "".join(out)

    # ---- writing ----
    def commit(self, repo: Repo, ref: str, additions: dict[str, bytes], deletions: tuple | list,
               deleted_folders: tuple | list, title: str, message: str, author: str, *,
               parent_commit: str | None = None, create_ref: bool = False,
               base: str | None = None) -> tuple[str | None, str]:
        """Apply a change on `ref`; returns (old sha or None for a new ref, new sha).

        `parent_commit` (full or short sha) must match the ref's head, like the Hub's optimistic concurrency.
        `create_ref` allows a ref that does not exist yet, starting from `base` (a commit oid) or empty.
        """
        with self.lock:
            old = repo.refs.get(ref)
            if old is None and not create_ref:
                raise RevisionNotFound(ref)
            if parent_commit is not None and (old is None or not old.startswith(parent_commit.lower())):
                raise ParentMismatch(ref)
            start = old or base
            files = dict(self.files(repo, start)) if start else {}
            for path in deletions:
                if files.pop(path, None) is None:
                    raise EntryNotFound(path)
            for folder in deleted_folders:
                prefix = folder.rstrip("/") + "/"
                doomed = [p for p in files if p.startswith(prefix)]
                if not doomed:
                    raise EntryNotFound(folder)
                for path in doomed:
                    del files[path]
            for path, content in additions.items():
                files[path] = [self._put_blob(content), len(content)]
            parents = [start] if start else []
            stamp = int(time.time())
            oid = git_commit_oid(git_tree_oids(files)[""], parents, author, stamp, title, message)
            commit = {"oid": oid, "parents": parents, "title": title, "message": message, "author": author,
                      "date": now_iso(), "files": files}
            self._write(repo.dir / "commits" / f"{oid}.json", commit)
            repo.commits[oid] = commit
            repo.refs[ref] = oid
            self._save_meta(repo)
            return old, oid

    def set_ref(self, repo: Repo, ref: str, oid: str) -> str | None:
        with self.lock:
            old = repo.refs.get(ref)
            repo.refs[ref] = oid
            self._save_meta(repo)
            return old

    # ---- discussions ----
    def new_discussion(self, repo: Repo, title: str, author: str, is_pr: bool, status: str) -> dict:
        with self.lock:
            num = max(repo.discussions, default=0) + 1
            discussion = {"num": num, "id": object_id(f"{repo.object_id}/discussion/{num}"), "title": title,
                          "author": author, "isPullRequest": is_pr, "status": status, "createdAt": now_iso(),
                          "base": "refs/heads/main" if is_pr else None, "events": []}
            repo.discussions[num] = discussion
            self.save_discussion(repo, discussion)
            return discussion

    def open_pr(self, repo: Repo, title: str, description: str, author: str, status: str,
                additions: dict[str, bytes], deletions: list | tuple, folders: list | tuple,
                base_oid: str | None) -> tuple[dict, dict, str]:
        """A PR discussion with its opening comment, and `refs/pr/N` at `base_oid` (default: main's head) plus
        the changes committed on it. Returns (discussion, opening comment event, head sha of refs/pr/N)."""
        with self.lock:
            base_oid = base_oid or repo.refs["refs/heads/main"]
            discussion = self.new_discussion(repo, title, author, True, status)
            discussion["baseOid"] = base_oid  # what the PR's diff is computed against
            opening = self.comment(repo, discussion, description, author)
            ref = f"refs/pr/{discussion['num']}"
            if not (additions or deletions or folders):
                self.set_ref(repo, ref, base_oid)
                return discussion, opening, base_oid
            _, head = self.commit(repo, ref, additions, deletions, folders, title, "", author, create_ref=True,
                                  base=base_oid)
            self.add_event(repo, discussion, "commit", author, {"subject": title, "oid": head})
            return discussion, opening, head

    def comment(self, repo: Repo, discussion: dict, text: str, author: str) -> dict:
        data = {"edited": False, "hidden": False, "numEdits": 0, "editors": [author], "reactions": [],
                "latest": {"raw": text, "html": f"<p>{html.escape(text)}</p>", "updatedAt": now_iso()}}
        return self.add_event(repo, discussion, "comment", author, data)

    def edit_comment(self, repo: Repo, discussion: dict, event: dict, text: str, editor: str) -> None:
        with self.lock:
            data = event["data"]
            data.update(edited=True, numEdits=data["numEdits"] + 1,
                        editors=sorted({*data["editors"], editor}),
                        latest={"raw": text, "html": f"<p>{html.escape(text)}</p>", "updatedAt": now_iso()})
            self.save_discussion(repo, discussion)

    def get_discussion(self, repo: Repo, num: int) -> dict:
        discussion = repo.discussions.get(num)
        if discussion is None:
            raise EntryNotFound(f"discussion {num}")
        return discussion

    def add_event(self, repo: Repo, discussion: dict, kind: str, author: str, data: dict) -> dict:
        """Append a discussion event in the Hub's shape (`comment`, `commit`, `status-change`)."""
        with self.lock:
            event = {"id": random_id(), "type": kind, "createdAt": now_iso(), "author": author, "data": data}
            discussion["events"].append(event)
            self.save_discussion(repo, discussion)
            return event
