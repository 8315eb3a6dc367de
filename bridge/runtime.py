"""Assembles the running bridge: state, clients, workers, webhook endpoints and UI on one WebhooksServer."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import WebhooksServer

from .activity import AckLog
from .db import Database
from .hub import Hub, install_timeout
from .jobprocess import METRICS_FILE, JobProcess, worker_command
from .jobs import JobStore, RetryPolicy, Scrubber
from .ledger import Ledger
from .scores import ScoreBook
from .metrics import Metrics, instrument_httpx_client, metrics_route
from .settings import Settings
from .smith import Smith
from .web import feedback_routes, healthz, hub_endpoint, langsmith_endpoint
from .workers import WorkerPool

log = logging.getLogger("bridge")

HUB_PATH = "/webhooks/hub"
LANGSMITH_PATH = "/webhooks/langsmith"


@dataclass
class Runtime:
    settings: Settings
    store: JobStore
    hub: Hub
    smith: Smith
    handlers: dict = field(default_factory=dict)
    ledger: Any = None
    tracer: Any = None
    metrics: Metrics = field(default_factory=Metrics)
    pool: WorkerPool | None = None  # the workers as threads of this process ...
    job_process: JobProcess | None = None  # ... or in a process of their own (`jobs.process`)
    public_url: str | None = None  # shown to people (the local URL when nothing else is known)
    reachable_url: str | None = None  # what upstreams can call back; None when nothing outside can reach us
    url_known: bool = False  # reachable_url is decided (after launch): managed rules wait for it
    rule_states: Any = None  # rule_state.RuleStates: the LangSmith rules, for the Wiring panel
    extras: dict[str, Any] = field(default_factory=dict)
    acks: AckLog | None = None  # acknowledgement latency per delivery, for the Overview's chart
    scores: Any = None  # `scores.ScoreBook`: headline scores of the experiments uploaded, for the Experiments page

    def on_answer(self, source: str, outcome: str, seconds: float) -> None:
        """`WebhookEndpoint.on_answer`: the metrics, and the latency kept for the chart."""
        self.metrics.on_answer(source, outcome, seconds)
        if self.acks is not None:
            self.acks.record(source, seconds)

    def webhook_urls(self) -> dict[str, str]:
        base = (self.public_url or "http://localhost:7860").rstrip("/")
        return {"hub": base + HUB_PATH, "langsmith": base + LANGSMITH_PATH + "?secret=<LANGSMITH_WEBHOOK_SECRET>"}

    def schedule_startup_jobs(self) -> None:
        """Flushes for rows an earlier process buffered, and a reconcile pass for what webhooks missed."""
        from .flows import exports, housekeeping, reconcile, scores

        exports.resume(self)
        reconcile.schedule_at_start(self)
        housekeeping.schedule_next(self, at_start=True)
        scores.schedule_at_start(self)

    def set_reachable_url(self, url: str | None, shown: str | None) -> None:
        """Once launched: the URL upstreams can reach (None: nothing outside can), and a check of the LangSmith
        rules the bridge manages, which needed it."""
        from .flows import rules

        self.reachable_url, self.url_known = url, True
        self.public_url = url or shown
        config = self.settings.config
        # Managed rules are kept at once; named rules' logs are read at start only when reconciling is on
        # (`schedule` itself skips a config that names or declares no rule).
        if config.reconcile_minutes > 0 or any(t.rule is not None for t in config.exports):
            rules.schedule(self, "at start")

    def start_workers(self, process: bool = False, env: dict[str, str] | None = None) -> None:
        """Threads here (tests, the benchmarks' in-process runs), or with `process` the job process, which gets
        `env` (the settings' environment) and this runtime's URLs."""
        self.schedule_startup_jobs()
        if not process:
            self.pool = WorkerPool(self.store, self.handlers, workers=self.settings.config.jobs.workers,
                                   services=self).start()
            return
        self.metrics.follow(self.settings.state_dir / METRICS_FILE)
        command = worker_command(self.settings.config_path.resolve(), self.reachable_url, self.public_url)
        child_env = dict(env if env is not None else os.environ)
        # Same working directory as this process (a relative BRIDGE_STATE_DIR must name the same store), and the
        # project on the import path wherever that is.
        root = str(Path(__file__).resolve().parent.parent)
        child_env["PYTHONPATH"] = os.pathsep.join(p for p in (root, child_env.get("PYTHONPATH")) if p)
        self.job_process = JobProcess(command, child_env).start()
        self.store.on_wake.append(self.job_process.wake)

    def workers_status(self) -> dict:
        """For /healthz: where the workers run and whether they are alive."""
        if self.job_process is not None:
            return self.job_process.status()
        return {"mode": "threads", "alive": self.pool is not None and self.pool.alive()}

    def stop(self) -> None:
        if self.job_process:
            self.job_process.stop()
        if self.pool:
            self.pool.stop()
        if self.acks is not None:
            self.acks.flush()
        self.smith.close()


def configure_logging() -> None:
    """One format for the web process and the job process (their lines interleave in the Space's log)."""
    logging.basicConfig(level=os.environ.get("BRIDGE_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(process)d %(name)s %(message)s")
    # Request logs of the HTTP clients would print URLs with query strings; keep them at warnings.
    for noisy in ("httpx", "httpx2", "urllib3", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def build_runtime(settings: Settings) -> Runtime:
    from .flows import handlers  # flows import the clients; keep them out of the web layer's imports
    from .flows.rules import restore_rule_ids
    from .rule_state import RuleStates

    metrics = Metrics()
    install_timeout(settings.request_timeout, lambda client: instrument_httpx_client(client, "hub", metrics))
    jobs = settings.config.jobs
    store = JobStore(Database(settings.state_dir / "bridge.sqlite3"),
                     RetryPolicy(jobs.max_attempts, jobs.backoff_seconds, jobs.max_backoff_seconds),
                     Scrubber(settings.secret_values()))
    secret = settings.hf_token.get_secret_value() if settings.hf_token else None
    key = settings.langsmith_api_key.get_secret_value() if settings.langsmith_api_key else None
    runtime = Runtime(settings, store, Hub(settings.hf_endpoint, secret),
                      Smith(settings.langsmith_endpoint, key, settings.langsmith_workspace_id,
                            settings.request_timeout, settings.langsmith_web_url, metrics.session_hook,
                            lambda status: metrics.upstream("objects", status),
                            lambda client: instrument_httpx_client(client, "langsmith", metrics),
                            object_hosts=settings.config.object_hosts),
                      metrics=metrics.watch(store))
    runtime.handlers = handlers()
    runtime.ledger = Ledger(store)
    runtime.rule_states = RuleStates(store.db, store.clock)
    restore_rule_ids(runtime)
    settings.config.reload_rule_ids_with(lambda: restore_rule_ids(runtime))
    runtime.acks = AckLog(store.db)
    runtime.scores = ScoreBook(store.db)
    if settings.trace_project:
        from .tracing import Tracer

        runtime.tracer = Tracer(lambda: runtime.smith.client, settings.trace_project, store.scrub)
    return runtime


def warn_open_endpoints(settings: Settings) -> list[str]:
    warnings = []
    if settings.webhook_secret is None:
        warnings.append(f"WEBHOOK_SECRET is not set: {HUB_PATH} accepts deliveries from anyone.")
    if settings.langsmith_webhook_secret is None:
        warnings.append(f"LANGSMITH_WEBHOOK_SECRET is not set: {LANGSMITH_PATH} accepts deliveries from anyone.")
    for warning in warnings:
        log.warning(warning)
    return warnings


def build_server(runtime: Runtime, ui: Any) -> WebhooksServer:
    with contextlib.redirect_stdout(io.StringIO()):  # it prints advice about WEBHOOK_SECRET that does not apply here
        server = WebhooksServer(ui=ui)
    # WebhooksServer would wrap every route in its own header-only, non-constant-time check of WEBHOOK_SECRET,
    # which breaks LangSmith's ?secret= deliveries. Each endpoint checks its own source's secret instead.
    server.webhook_secret = None
    settings = runtime.settings
    on_answer = runtime.on_answer
    server.add_webhook("hub")(hub_endpoint(runtime.store, settings.config, settings.webhook_secret,
                                           on_answer=on_answer))
    server.add_webhook("langsmith")(langsmith_endpoint(runtime.store, settings.config,
                                                       settings.langsmith_webhook_secret, on_answer=on_answer))
    return server


def add_routes(server: WebhooksServer, runtime: Runtime) -> None:
    """Plain routes, added to gradio's FastAPI app once it exists (after launch): health, metrics, and the feedback
    page the dataset rows link to (no login: its token is the authorisation)."""
    app = server.fastapi_app
    app.get("/healthz")(healthz(runtime.store, runtime.settings.missing, runtime.ledger.total_pending,
                                runtime.workers_status))
    show, submit = feedback_routes(runtime)
    app.get("/feedback/{token_id}", include_in_schema=False)(show)
    app.post("/feedback/{token_id}", include_in_schema=False)(submit)
    app.get("/metrics", include_in_schema=False)(
        metrics_route(runtime.metrics, runtime.settings.metrics_token))
    webhooks_first(app)


def webhooks_first(app: Any) -> None:
    """The two webhook routes move to the front of the router: Starlette tries routes in order, and gradio's own
    (dozens, each a regex) would otherwise be tried before every delivery. No gradio route serves /webhooks/, so
    nothing is shadowed."""
    ours = [r for r in app.router.routes if getattr(r, "path", "") in (HUB_PATH, LANGSMITH_PATH)]
    app.router.routes[:] = ours + [r for r in app.router.routes if r not in ours]
