"""Tiny stand-ins for the LangSmith web pages the bridge links to, served by the sandbox LangSmith emulator.

The bridge builds links to LangSmith's web app: a dataset, the comparison view of experiments, and a run. In the
sandbox those pages would not exist, so a person (or a browser test) following a link would land nowhere. These
pages show what the real ones would: the experiment name, its rows and its scores; the run and its feedback.

Served without an API key (like the real web app behind its own login), for GET on `/o/...` only. `WebPages` wraps
the emulator's ASGI app: those paths are answered here, everything else goes on to the API.
"""

from __future__ import annotations

import html
import json
from statistics import mean
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

STYLE = """body{font:15px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;padding:0 16px;color:#1f2937}
h1{font-size:1.4rem;margin:0 0 4px} .muted{color:#6b7280} table{border-collapse:collapse;width:100%;margin:12px 0}
th,td{border-bottom:1px solid #e5e7eb;padding:6px 8px;text-align:left;vertical-align:top;font-size:.9rem}
pre{white-space:pre-wrap;margin:0;font-size:.82rem} .score{font-weight:600}
.tag{background:#eef2ff;border-radius:6px;padding:1px 6px;font-size:.8rem;margin-right:4px}
header{border-bottom:1px solid #e5e7eb;margin-bottom:16px;padding-bottom:8px}"""


def esc(value: Any) -> str:
    return "" if value is None else html.escape(str(value), quote=True)


def compact(value: Any, limit: int = 400) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return esc(text if len(text) <= limit else text[:limit] + "…")


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)} · LangSmith sandbox"
                        f"</title><style>{STYLE}</style></head><body><header class='muted'>LangSmith (sandbox "
                        f"emulator)</header>{body}</body></html>", status_code=status)


def not_found(what: str) -> HTMLResponse:
    return page("Not found", f"<h1>Not found</h1><p class='muted'>No {esc(what)} with this id in the sandbox.</p>", 404)


def score_means(store: Any, run_ids: set[str]) -> dict[str, float]:
    by_key: dict[str, list[float]] = {}
    for row in store._feedback_of_runs(run_ids):
        if isinstance(row.get("score"), (int, float)):
            by_key.setdefault(row["key"], []).append(float(row["score"]))
    return {key: mean(values) for key, values in sorted(by_key.items())}


def scores_text(scores: dict[str, float]) -> str:
    tags = [f"<span class='tag'>{esc(k)} <span class='score'>{v:.3g}</span></span>" for k, v in scores.items()]
    return " ".join(tags) or "<span class='muted'>no scores</span>"


def session_runs(store: Any, session_id: str) -> list[dict]:
    return [r for r in store.runs.values() if r["session_id"] == session_id]


class Pages:
    def __init__(self, store: Any) -> None:
        self.store = store

    async def home(self, request: Request) -> HTMLResponse:
        """The workspace: tracing projects and datasets (the sandbox panel of the bridge links here)."""
        base = f"/o/{request.path_params['tenant']}"
        with self.store.lock:
            projects = [s for s in self.store.sessions.values() if not s.get("reference_dataset_id")]
            datasets = list(self.store.datasets.values())
            project_rows = "".join(
                f"<tr><td><a class='project' href='{esc(base)}/projects/p/{esc(s['id'])}'>{esc(s['name'])}</a></td>"
                f"<td>{len(session_runs(self.store, s['id']))} run(s)</td></tr>" for s in projects)
            dataset_rows = "".join(
                f"<tr><td><a class='dataset' href='{esc(base)}/datasets/{esc(d['id'])}'>{esc(d['name'])}</a></td>"
                f"<td>{sum(1 for x in self.store.sessions.values() if x.get('reference_dataset_id') == d['id'])}"
                f" experiment(s)</td></tr>" for d in datasets)
        body = (f"<h1>Workspace</h1><h3>Tracing projects</h3><table>{project_rows}</table>"
                f"<h3>Datasets and experiments</h3><table>{dataset_rows}</table>")
        return page("Workspace", body)

    async def project(self, request: Request) -> HTMLResponse:
        base = f"/o/{request.path_params['tenant']}/projects/p/{request.path_params['session_id']}"
        with self.store.lock:
            session = self.store.sessions.get(request.path_params["session_id"])
            if session is None:
                return not_found("project")
            runs = sorted(session_runs(self.store, session["id"]), key=lambda r: r["start_time"], reverse=True)
            rows = "".join(f"<tr><td><a href='{esc(base)}/r/{esc(r['id'])}'>{esc(r['name'])}</a></td>"
                           f"<td>{esc(r['start_time'])}</td><td><pre>{compact(r.get('inputs'), 200)}</pre></td>"
                           f"<td>{scores_text(score_means(self.store, {r['id']}))}</td></tr>" for r in runs[:200])
        body = (f"<h1>Project {esc(session['name'])}</h1><p class='muted'>{len(runs)} run(s)</p>"
                f"<table><tr><th>Run</th><th>Started</th><th>Input</th><th>Feedback</th></tr>{rows}</table>")
        return page(session["name"], body)

    async def dataset(self, request: Request) -> HTMLResponse:
        with self.store.lock:
            dataset = self.store.datasets.get(request.path_params["dataset_id"])
            if dataset is None:
                return not_found("dataset")
            sessions = [s for s in self.store.sessions.values() if s["reference_dataset_id"] == dataset["id"]]
            rows = "".join(self.experiment_row(request, dataset, s) for s in sessions)
        body = (f"<h1>Dataset {esc(dataset['name'])}</h1><p class='muted'>{esc(dataset.get('description'))}</p>"
                f"<p>{len(dataset['_rows'])} example(s), {len(sessions)} experiment(s)</p>"
                f"<table><tr><th>Experiment</th><th>Rows</th><th>Scores</th></tr>{rows}</table>")
        return page(dataset["name"], body)

    def experiment_row(self, request: Request, dataset: dict, session: dict) -> str:
        runs = session_runs(self.store, session["id"])
        href = f"{request.url.path.rstrip('/')}/compare?selectedSessions={session['id']}"
        return (f"<tr><td><a href='{esc(href)}'>{esc(session['name'])}</a></td><td>{len(runs)}</td>"
                f"<td>{scores_text(score_means(self.store, {r['id'] for r in runs}))}</td></tr>")

    async def compare(self, request: Request) -> HTMLResponse:
        wanted = [s for s in request.query_params.get("selectedSessions", "").split(",") if s]
        with self.store.lock:
            dataset = self.store.datasets.get(request.path_params["dataset_id"])
            sessions = [self.store.sessions[s] for s in wanted if s in self.store.sessions]
            if dataset is None or not sessions:
                return not_found("dataset or experiment")
            peek = request.query_params.get("peek")  # one example (the bridge's row_id) opened in the view
            example = dataset["_rows"].get(peek, peek) if peek else None
            body = "".join(self.experiment_section(s, example) for s in sessions)
        return page(sessions[0]["name"], f"<p class='muted'>Dataset {esc(dataset['name'])}</p>{body}")

    def experiment_section(self, session: dict, example: str | None = None) -> str:
        runs = sorted(session_runs(self.store, session["id"]), key=lambda r: r["start_time"])
        if example:
            runs = [r for r in runs if r.get("reference_example_id") == example]
        meta = (session.get("extra") or {}).get("metadata") or {}
        facts = " · ".join(f"{esc(k)}: {esc(meta[k])}" for k in ("model", "hf_repo", "hf_ref", "format")
                           if meta.get(k))
        rows = "".join(self.result_row(r) for r in runs)
        scores = scores_text(score_means(self.store, {r["id"] for r in runs}))
        return (f"<section class='experiment'><h1>{esc(session['name'])}</h1><p class='muted'>{facts}</p>"
                f"<p><b class='rows'>{len(runs)} row(s)</b> · {scores}</p><table><tr><th>Input</th>"
                f"<th>Reference</th><th>Output</th><th>Scores</th></tr>{rows}</table></section>")

    def result_row(self, run: dict) -> str:
        example = self.store.examples.get(run.get("reference_example_id") or "", {})
        scores = scores_text(score_means(self.store, {run["id"]}))
        cells = [compact(run.get("inputs")), compact(example.get("outputs")), compact(run.get("outputs"))]
        return "<tr>" + "".join(f"<td><pre>{c}</pre></td>" for c in cells) + f"<td>{scores}</td></tr>"

    async def run(self, request: Request) -> HTMLResponse:
        with self.store.lock:
            run = self.store.runs.get(request.path_params["run_id"])
            if run is None:
                return not_found("run")
            feedback = self.store._feedback_of_runs({run["id"]})
            project = self.store.sessions.get(run["session_id"], {}).get("name")
        rows = "".join(f"<tr><td>{esc(f['key'])}</td><td class='score'>{esc(f.get('score'))}</td>"
                       f"<td>{compact(f.get('value'))}</td><td>{esc(f.get('comment'))}</td>"
                       f"<td>{esc((f.get('feedback_source') or {}).get('type'))}</td></tr>" for f in feedback)
        body = (f"<h1>{esc(run['name'])}</h1><p class='muted'>{esc(run['run_type'])} · {esc(run['status'])} · "
                f"project {esc(project)} · started {esc(run['start_time'])}</p>"
                f"<h3>Inputs</h3><pre>{compact(run.get('inputs'), 4000)}</pre>"
                f"<h3>Outputs</h3><pre>{compact(run.get('outputs'), 4000)}</pre>"
                f"<h3>Feedback</h3><table class='feedback'><tr><th>Key</th><th>Score</th><th>Value</th><th>Comment</th>"
                f"<th>Source</th></tr>{rows}</table>")
        return page(run["name"], body)


def is_web_path(method: str, path: str) -> bool:
    return method in ("GET", "HEAD") and path.startswith("/o/")


class WebPages:
    """ASGI wrapper: the web pages for `/o/...`, the wrapped API app for everything else."""

    def __init__(self, app: Any, store: Any) -> None:
        pages = Pages(store)
        self.app = app
        self.pages = Starlette(routes=[
            Route("/o/{tenant}", pages.home, methods=["GET"]),
            Route("/o/{tenant}/projects", pages.home, methods=["GET"]),
            Route("/o/{tenant}/projects/p/{session_id}", pages.project, methods=["GET"]),
            Route("/o/{tenant}/datasets/{dataset_id}", pages.dataset, methods=["GET"]),
            Route("/o/{tenant}/datasets/{dataset_id}/compare", pages.compare, methods=["GET"]),
            Route("/o/{tenant}/projects/p/{session_id}/r/{run_id}", pages.run, methods=["GET"]),
        ])

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and is_web_path(scope["method"], scope["path"]):
            await self.pages(scope, receive, send)
            return
        await self.app(scope, receive, send)
