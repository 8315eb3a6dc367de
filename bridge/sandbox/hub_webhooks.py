"""Webhooks of the Hub emulator: registration, payload-v3 building, and delivery from one background thread.

`HubWebhooks` is a mixin of `HubEmulator` (hub.py). Every write, by a route or by a seeding helper, calls `_emit`,
which queues one delivery per enabled webhook that watches the repo in that domain and whose owner may read it.
A single daemon thread posts them in order, so a receiver sees events in the order they happened; it exits when
idle and the next delivery starts a new one. `deliveries` records every attempt (status or error) for tests, and
`wait_for_deliveries` blocks until the queue is drained. The `/api/settings/webhooks` routes live here too.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Any

import requests
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.sandbox.hub_http import URL_PREFIX, HubHTTPError
from bridge.sandbox.hub_store import HubStore, Repo, object_id, random_id

log = logging.getLogger("bridge.sandbox.hub")  # the emulator's one logger, named as before hub.py was split

DELIVERY_TIMEOUT = 5.0


class HubWebhooks:
    """Webhook state, payloads, the delivery thread and the webhook routes; `HubEmulator` provides `store` and
    `base_url`, `HubHTTP` the auth checks."""

    store: HubStore
    base_url: str | None

    def _init_webhooks(self) -> None:
        self.deliveries: list[dict] = []
        self._deliveries_lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._pending = 0
        self._idle = threading.Condition()
        self._worker: threading.Thread | None = None
        self._http = requests.Session()
        self._http.trust_env = False  # a proxy from the environment must never see loopback deliveries

    def add_webhook(self, url: str, *, watched: list[dict], secret: str | None = None,
                    domains: tuple | list = ("repo", "discussion")) -> str:
        return self._add_webhook(url, watched, list(domains), secret, owner=None)["id"]

    def wait_for_deliveries(self, timeout: float = 10.0) -> bool:
        """Block until every queued webhook delivery was attempted; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def _add_webhook(self, url: str, watched: list[dict], domains: list[str], secret: str | None,
                     owner: str | None) -> dict:
        hook = {"id": random_id(), "url": url, "watched": [{"type": w["type"], "name": w["name"]} for w in watched],
                "domains": domains, "secret": secret, "disabled": False, "owner": owner}
        with self.store.lock:
            self.store.webhooks.append(hook)
            self.store.save_webhooks()
        return hook

    # ================= payloads and deliveries =================

    def _base(self) -> str:
        return self.base_url or "http://127.0.0.1"

    def _repo_payload(self, repo: Repo, base: str, with_head: bool) -> dict:
        url = {"web": f"{base}/{URL_PREFIX[repo.type]}{repo.id}", "api": f"{base}/api/{repo.type}s/{repo.id}"}
        payload = {"type": repo.type, "name": repo.id, "id": repo.object_id, "private": repo.private, "url": url,
                   "owner": {"id": object_id(f"account:{repo.namespace}")}}
        if with_head:  # the Hub sends headSha (main's sha) on repo* scopes only
            payload["headSha"] = repo.refs.get("refs/heads/main")
        return payload

    def _emit_discussion(self, repo: Repo, discussion: dict, action: str, base: str, comment: dict | None = None,
                         scope: str = "discussion") -> None:
        web = f"{base}/{URL_PREFIX[repo.type]}{repo.id}/discussions/{discussion['num']}"
        body = {"id": discussion["id"], "num": discussion["num"], "title": discussion["title"],
                "url": {"web": web, "api": f"{base}/api/{repo.type}s/{repo.id}/discussions/{discussion['num']}"},
                "status": discussion["status"], "author": {"id": object_id(f"account:{discussion['author']}")},
                "isPullRequest": discussion["isPullRequest"]}
        if discussion["isPullRequest"]:
            body["changes"] = {"base": discussion["base"]}
        extra: dict[str, Any] = {"discussion": body}
        if comment is not None:
            extra["comment"] = {"id": comment["id"], "author": {"id": object_id(f"account:{comment['author']}")},
                                "content": comment["data"]["latest"]["raw"], "hidden": False,
                                "url": {"web": f"{web}#{comment['id']}"}}
        self._emit(repo, scope, action, base, **extra)

    def _emit(self, repo: Repo, scope: str, action: str, base: str, **extra: Any) -> None:
        """Queue a payload-v3 delivery for every enabled webhook watching this repo in this domain."""
        domain = scope.split(".")[0]
        event = {"event": {"action": action, "scope": scope},
                 "repo": self._repo_payload(repo, base, scope.startswith("repo")), **extra}
        for hook in list(self.store.webhooks):
            if hook["disabled"] or domain not in hook["domains"] or not self._watches(hook, repo):
                continue
            if hook["owner"] is not None and not self._can_read(hook["owner"], repo):
                continue
            self._enqueue(hook, {**event, "webhook": {"id": hook["id"], "version": 3}})

    @staticmethod
    def _watches(hook: dict, repo: Repo) -> bool:
        for item in hook["watched"]:
            if item["type"] in ("user", "org") and item["name"] == repo.namespace:
                return True
            if item["type"] == repo.type and item["name"] == repo.id:
                return True
        return False

    def _enqueue(self, hook: dict, payload: dict) -> None:
        with self._idle:  # queue and count together, so an idle worker never exits with work queued
            self._pending += 1
            self._queue.put((hook, payload))
            if self._worker is None:
                self._worker = threading.Thread(target=self._deliver_loop, daemon=True, name="hub-webhooks")
                self._worker.start()

    def _deliver_loop(self) -> None:
        while True:
            try:
                hook, payload = self._queue.get(timeout=1.0)
            except queue.Empty:
                with self._idle:  # idle: let the thread go; the next delivery starts a new one
                    if self._pending == 0:
                        self._worker = None
                        return
                continue
            try:
                self._deliver(hook, payload)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _deliver(self, hook: dict, payload: dict) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "hub-sandbox-webhooks/1.0"}
        if hook["secret"]:
            headers["X-Webhook-Secret"] = hook["secret"]
        record = {"webhook_id": hook["id"], "url": hook["url"], "scope": payload["event"]["scope"],
                  "action": payload["event"]["action"], "repo": payload["repo"]["name"], "payload": payload,
                  "status": None, "error": None, "at": time.time()}
        try:
            answer = self._http.post(hook["url"], data=json.dumps(payload), headers=headers, timeout=DELIVERY_TIMEOUT)
            record["status"] = answer.status_code
            if not answer.ok:
                log.warning("webhook %s to %s answered %s", hook["id"], hook["url"], answer.status_code)
        except requests.RequestException as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
            log.warning("webhook %s to %s failed: %s", hook["id"], hook["url"], exc)
        with self._deliveries_lock:
            self.deliveries.append(record)

    # ================= routes =================

    @staticmethod
    def _webhook_json(hook: dict) -> dict:
        return {k: hook[k] for k in ("id", "url", "watched", "domains", "secret", "disabled")}

    def _signed_in(self, request: Request) -> str:
        user = self._user(request)
        if user is None:
            raise HubHTTPError(401, "You must be authenticated to manage webhooks")
        return user

    async def webhooks_route(self, request: Request) -> Response:
        user = self._signed_in(request)
        if request.method == "GET":
            return JSONResponse([self._webhook_json(h) for h in self.store.webhooks if h["owner"] in (None, user)])
        body = await self._json(request)
        if not body.get("url") or not body.get("watched"):
            raise HubHTTPError(400, "A webhook needs a url and at least one watched item")
        domains = body.get("domains") or ["repo", "discussion"]
        hook = self._add_webhook(body["url"], body["watched"], domains, body.get("secret"), owner=user)
        return JSONResponse({"webhook": self._webhook_json(hook)})

    async def webhook_route(self, request: Request, hook: str) -> Response:
        user = self._signed_in(request)
        found = next((h for h in self.store.webhooks if h["id"] == hook and h["owner"] in (None, user)), None)
        if found is None:
            raise HubHTTPError(404, "Webhook not found")
        if request.method == "DELETE":
            with self.store.lock:
                self.store.webhooks.remove(found)
                self.store.save_webhooks()
            return Response(status_code=200)
        return JSONResponse({"webhook": self._webhook_json(found)})
