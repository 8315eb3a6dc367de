"""A local LangSmith: the HTTP routes the `langsmith` SDK and the bridge use, over `langsmith_store.Store`.

Every route is served both bare (`/sessions`, what the SDK sends against a bare root) and under `/api/v1` (what token
URLs and the docs use). `x-api-key` is required except on presigned feedback-token submissions and stored-object URLs,
which stand in for S3 presigned URLs. Rate limits follow LangSmith cloud (per API key, sliding window, 429 with
`Retry-After`). The app is wrapped in `server.Recorder`, so tests can count requests and inject faults.

The emulator is split by area: langsmith_routes.py (the HTTP API), langsmith_limits.py (API key and rate limits),
langsmith_upload.py (upload-experiment validation), langsmith_multipart.py (multipart ingestion), langsmith_store.py
and langsmith_runs.py (the state), langsmith_web.py (the web pages links lead to).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from bridge.sandbox.langsmith_common import DEFAULT_TENANT_ID, as_uuid, feedback_stats, parse_time
from bridge.sandbox.langsmith_limits import RATE_LIMITS, Gate, RateLimiter, rate_rule
from bridge.sandbox.langsmith_routes import build_app
from bridge.sandbox.langsmith_store import Store
from bridge.sandbox.langsmith_upload import validate_upload
from bridge.sandbox.langsmith_web import WebPages
from bridge.sandbox.server import Recorder, ServerHandle

# The moved names stay importable from here, where tests and other code have always found them.
__all__ = ["LangSmithEmulator", "RATE_LIMITS", "RateLimiter", "rate_rule", "validate_upload"]


class LangSmithEmulator:
    """A LangSmith stand-in on loopback. `api_keys=None` accepts any non-empty key; `rate_limits=False` turns the
    limiter off, `rate_limit_scale` multiplies every limit, `set_rate_limit` overrides one rule; `object_urls`
    chooses absolute or API-root-relative URLs for offloaded run inputs/outputs; `v2=False` serves no v2 runs API
    (404 there, like self-hosted LangSmith before v0.16; `v2_enabled` switches it at any time)."""

    def __init__(self, api_keys: set[str] | None = None, *, rate_limits: bool = True,
                 tenant_id: str = DEFAULT_TENANT_ID, rate_limit_scale: float = 1.0,
                 object_urls: str = "absolute", v2: bool = True) -> None:
        self.store = Store(tenant_id, object_urls=object_urls)
        self.store.v2_enabled = v2
        self.limiter = RateLimiter(enabled=rate_limits, scale=rate_limit_scale)
        self.recorder = Recorder(WebPages(Gate(build_app(self.store), api_keys, self.limiter), self.store))
        self.handle: ServerHandle | None = None

    # ---- serving
    def serve(self) -> ServerHandle:
        if self.handle is None:
            self.handle = ServerHandle(self.recorder).start()
            self.store.base_url = self.handle.url
        return self.handle

    @property
    def url(self) -> str:
        if self.handle is None:
            raise RuntimeError("the emulator is not served yet: call serve()")
        return self.handle.url

    def stop(self) -> None:
        self.rules.stop()
        if self.handle is not None:
            self.handle.stop()
            self.handle = None

    # ---- automation rules (langsmith_rules.py)
    @property
    def rules(self) -> Any:
        """The rule book: `apply()` runs one pass of the rule worker, `start(interval)` runs them on a thread."""
        return self.store.rule_book

    def apply_rules(self) -> int:
        return self.rules.apply()

    def create_rule(self, project: str, *, webhook_url: str | None = None, headers: dict | None = None,
                    sampling_rate: float = 1.0, filter: str | None = None, name: str = "a person's rule") -> dict:
        """A rule made by hand in LangSmith's UI (not by the bridge)."""
        session = self.store.session_by_name(project)
        hooks = [{"url": webhook_url, "headers": headers or {}}] if webhook_url else []
        return self.rules.create({"display_name": name, "session_id": session["id"], "sampling_rate": sampling_rate,
                                  "filter": filter, "webhooks": hooks})

    # ---- knobs for tests
    @property
    def v2_enabled(self) -> bool:
        return self.store.v2_enabled

    @v2_enabled.setter
    def v2_enabled(self, value: bool) -> None:
        self.store.v2_enabled = value

    def set_rate_limit(self, rule: str, *, limit: int, window: float) -> None:
        """Override one rule: "runs_query", "run_read", "feedback_create" or "default"."""
        self.limiter.set(rule, limit=limit, window=window)

    def advance_clock(self, seconds: float) -> None:
        """Move the emulator's clock (token expiry, timestamps) forward without sleeping."""
        with self.store.lock:
            self.store.clock_offset += dt.timedelta(seconds=seconds)

    # ---- seeding and inspection
    def create_project(self, name: str, *, metadata: dict | None = None, description: str | None = None) -> dict:
        return self.store.create_session(name, description=description,
                                         extra={"metadata": metadata} if metadata else None)

    def create_dataset(self, name: str, *, externally_managed: bool = False, description: str | None = None) -> dict:
        return self.store.create_dataset(name, externally_managed=externally_managed, description=description)

    def add_run(self, run: dict, *, offload: bool = False) -> dict:
        """Store a run dict shaped like the webhook payload's (missing fields are derived). `offload=True` keeps
        inputs/outputs behind `/_objects/...` URLs and nulls them in `webhook_payload`."""
        return self.store.add_run(run, offload=offload)

    def add_feedback(self, run_id: str, key: str, *, score: Any = None, value: Any = None, comment: str | None = None,
                     correction: Any = None, source_type: str = "api") -> dict:
        source = {"type": source_type, "metadata": {}, "user_id": None, "user_name": None}
        return self.store.add_feedback({"run_id": run_id, "key": key, "score": score, "value": value,
                                        "comment": comment, "correction": correction, "feedback_source": source})

    def get_run(self, run_id: str) -> dict:
        with self.store.lock:
            return self.store.run_view(self.store.get_run(as_uuid(run_id, "run_id")))

    def feedback_for(self, run_id: str) -> list[dict]:
        return self.store.list_feedback(run_ids=[as_uuid(run_id, "run_id")], keys=[], sources=[], session_ids=[])

    def experiments(self, dataset_name: str) -> list[dict]:
        return self.store.experiments(dataset_name)

    def webhook_payload(self, rule_id: str, run_ids: list[str]) -> dict:
        """The body LangSmith POSTs for an automation rule's webhook (seed 000)."""
        with self.store.lock:
            unknown = [run_id for run_id in run_ids if as_uuid(run_id, "run_id") not in self.store.runs]
            if unknown:
                raise KeyError(f"no such runs: {unknown}")
            runs = [self.store.runs[as_uuid(run_id, "run_id")] for run_id in run_ids]
            starts = [parse_time(r["start_time"]) for r in runs] or [self.store.now()]
            ends = [parse_time(r["end_time"] or r["start_time"]) for r in runs] or [self.store.now()]
            rows = self.store.feedback.of_runs({r["id"] for r in runs})
            return {"rule_id": rule_id, "start_time": min(starts).isoformat(), "end_time": max(ends).isoformat(),
                    "runs": [self.store.run_view(r, for_webhook=True) for r in runs],
                    "feedback_stats": feedback_stats(rows)}
