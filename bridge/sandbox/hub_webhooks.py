"""Webhooks of the Hub emulator: management routes, payload-v3 building, delivery with retries and suspension.

`HubWebhooks` is a mixin of `HubEmulator` (hub.py). Every write, by a route or by a seeding helper, calls `_emit`,
which queues one delivery per enabled webhook that watches the repo in that domain and whose owner may read it.
A single daemon thread posts them in order, so a receiver sees events in the order they happened; it exits when
idle and the next delivery starts a new one. `deliveries` records every attempt (status or error) for tests, and
`wait_for_deliveries` blocks until the queue is drained.

Like the Hub, a delivery that does not get a 2xx is retried with backoff (`webhook_retry_seconds`, one entry per
retry), and a webhook whose deliveries keep failing (`webhook_suspend_after` events in a row, every attempt failed)
is **suspended**: it shows `disabled: true` and gets nothing until `enable_webhook` turns it back on. The Hub does
not document its numbers; the defaults here (2 retries after 0.2 s and 1 s, suspension after 5 failed events) keep
the sandbox quick, and tests set their own.

Management routes (huggingface_hub 2.4 `list_webhooks`, `get_webhook`, `create_webhook`, `update_webhook`,
`enable_webhook`, `disable_webhook`, `delete_webhook`):

    GET    /api/settings/webhooks              -> [webhook, ...]        (the caller's own)
    POST   /api/settings/webhooks              {watched, url, domains?, secret?} -> {"webhook": ...}
    GET    /api/settings/webhooks/{id}         -> {"webhook": ...}
    POST   /api/settings/webhooks/{id}         {watched, url?, domains?, secret?} -> {"webhook": ...}
    POST   /api/settings/webhooks/{id}/enable|disable -> {"webhook": ...}
    DELETE /api/settings/webhooks/{id}

A webhook is `{id, url, job, watched: [{type, name}], domains, secret, disabled}`. Tokens listed in
`webhook_denied` stand for fine-grained tokens without the webhooks permission (403 on every route); read-only
tokens may list but not change.
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

from bridge.sandbox.hub_http import READ_ONLY_TOKEN, URL_PREFIX, HubHTTPError
from bridge.sandbox.hub_store import HubStore, Repo, object_id, random_id

log = logging.getLogger("bridge.sandbox.hub")  # the emulator's one logger, named as before hub.py was split

DELIVERY_TIMEOUT = 5.0
WATCH_TYPES = ("user", "org", "model", "dataset", "space", "bucket")
DOMAINS = ("repo", "discussion")


class HubWebhooks:
    """Webhook state, payloads, the delivery thread and the webhook routes; `HubEmulator` provides `store` and
    `base_url`, `HubHTTP` the auth checks."""

    store: HubStore
    base_url: str | None

    def _init_webhooks(self, retry_seconds: tuple[float, ...] = (0.2, 1.0), suspend_after: int = 5,
                       denied: tuple | list | set = ()) -> None:
        self.webhook_retry_seconds = tuple(retry_seconds)
        self.webhook_suspend_after = suspend_after
        self.webhook_denied = set(denied)
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
                "domains": domains, "secret": secret, "disabled": False, "owner": owner, "failures": 0}
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
            if discussion.get("mergeCommitId"):
                body["changes"]["mergeCommitId"] = discussion["mergeCommitId"]
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
        """One event to one webhook: the first attempt, then a retry after each of `webhook_retry_seconds` while
        it fails; when every attempt failed, one more failure in a row towards suspension."""
        if hook["disabled"]:
            return  # suspended or disabled since the event was queued
        for attempt, pause in enumerate((0.0, *self.webhook_retry_seconds), start=1):
            time.sleep(pause)
            if self._attempt(hook, payload, attempt):
                self._delivered(hook, ok=True)
                return
        self._delivered(hook, ok=False)

    def _delivered(self, hook: dict, ok: bool) -> None:
        with self.store.lock:
            hook["failures"] = 0 if ok else hook.get("failures", 0) + 1
            if not ok and hook["failures"] >= self.webhook_suspend_after:
                hook["disabled"] = True
                log.warning("webhook %s suspended after %s failed deliveries in a row", hook["id"], hook["failures"])
            self.store.save_webhooks()

    def _attempt(self, hook: dict, payload: dict, attempt: int) -> bool:
        headers = {"Content-Type": "application/json", "User-Agent": "hub-sandbox-webhooks/1.0"}
        if hook["secret"]:
            headers["X-Webhook-Secret"] = hook["secret"]
        record = {"webhook_id": hook["id"], "url": hook["url"], "scope": payload["event"]["scope"],
                  "action": payload["event"]["action"], "repo": payload["repo"]["name"], "payload": payload,
                  "status": None, "error": None, "attempt": attempt, "at": time.time()}
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
        return record["status"] is not None and 200 <= record["status"] < 300

    # ================= routes =================

    @staticmethod
    def _webhook_json(hook: dict) -> dict:
        return {"id": hook["id"], "url": hook["url"], "job": None, "watched": hook["watched"],
                "domains": hook["domains"], "secret": hook["secret"], "disabled": hook["disabled"]}

    def _signed_in(self, request: Request, change: bool = False) -> str:
        user = self._user(request)
        if user is None:
            raise HubHTTPError(401, "You must be authenticated to manage webhooks")
        token = self._token(request)
        if token in self.webhook_denied:
            raise HubHTTPError(403, "This fine-grained access token does not have the permission to manage "
                                    "webhooks")
        if change and READ_ONLY_TOKEN.search(token):
            raise HubHTTPError(403, "A read access token cannot manage webhooks")
        return user

    @staticmethod
    def _checked(body: dict, partial: bool) -> dict:
        """The fields of a create / update body, validated like the Hub (400 naming what is wrong)."""
        fields: dict[str, Any] = {}
        if not partial or body.get("url") is not None:
            url = body.get("url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise HubHTTPError(400, '"url" must be a valid http(s) URL')
            fields["url"] = url
        watched = body.get("watched")
        if not isinstance(watched, list) or not watched or not all(
                isinstance(w, dict) and w.get("type") in WATCH_TYPES and w.get("name") for w in watched):
            raise HubHTTPError(400, f'"watched" must list at least one {{type, name}}, type one of '
                                    f'{", ".join(WATCH_TYPES)}')
        fields["watched"] = [{"type": w["type"], "name": str(w["name"])} for w in watched]
        if body.get("domains") is not None or not partial:
            domains = body.get("domains") or list(DOMAINS)
            if not isinstance(domains, list) or not domains or any(d not in DOMAINS for d in domains):
                raise HubHTTPError(400, f'"domains" must be a non-empty subset of {", ".join(DOMAINS)}')
            fields["domains"] = domains
        if body.get("secret") is not None:
            fields["secret"] = str(body["secret"]) or None
        return fields

    async def webhooks_route(self, request: Request) -> Response:
        user = self._signed_in(request, change=request.method == "POST")
        if request.method == "GET":
            return JSONResponse([self._webhook_json(h) for h in self.store.webhooks if h["owner"] in (None, user)])
        fields = self._checked(await self._json(request), partial=False)
        hook = self._add_webhook(fields["url"], fields["watched"], fields["domains"], fields.get("secret"),
                                 owner=user)
        return JSONResponse({"webhook": self._webhook_json(hook)})

    def _own_webhook(self, user: str, hook_id: str) -> dict:
        found = next((h for h in self.store.webhooks if h["id"] == hook_id and h["owner"] in (None, user)), None)
        if found is None:
            raise HubHTTPError(404, "Webhook not found")
        return found

    async def webhook_route(self, request: Request, hook: str) -> Response:
        user = self._signed_in(request, change=request.method != "GET")
        found = self._own_webhook(user, hook)
        if request.method == "DELETE":
            with self.store.lock:
                self.store.webhooks.remove(found)
                self.store.save_webhooks()
            return Response(status_code=200)
        if request.method == "POST":
            fields = self._checked(await self._json(request), partial=True)
            with self.store.lock:
                found.update(fields)
                self.store.save_webhooks()
        return JSONResponse({"webhook": self._webhook_json(found)})

    async def webhook_switch_route(self, request: Request, hook: str, switch: str) -> Response:
        """`enable_webhook` (also how a suspended webhook is turned back on) / `disable_webhook`."""
        user = self._signed_in(request, change=True)
        found = self._own_webhook(user, hook)
        with self.store.lock:
            found["disabled"] = switch == "disable"
            found["failures"] = 0
            self.store.save_webhooks()
        return JSONResponse({"webhook": self._webhook_json(found)})
