"""The Experiments page: for each eval repo and task, the headline score of every `main` revision over time (a line)
and of pull-request revisions (points), each labelled with a link to its LangSmith experiment; beside it, a table
of the latest scores.

The data is what the bridge uploaded (`bridge.scores`, in the state dir); nothing is read from LangSmith to draw it.
Gradio's own plots cannot mix a line with separate points nor link a point, so the chart is a plotly figure.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import gradio as gr
import plotly.graph_objects as go

from .. import actions
from ..scores import Score
from .common import locked, on, require, viewer
from .html import empty, esc, link, notice, table, ts

MAX_LABELS = 30  # per series: beyond this the links stay in the hover text and the table only
COLORS = ["#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2", "#65a30d", "#db2777"]


def series_name(score: Score) -> str:
    return f"{score.repo} · {score.task}" if score.task else score.repo


def group(scores: list[Score]) -> dict[str, list[Score]]:
    """Points per series, oldest first. One eval run uploaded again at a later revision (a manual upload of every
    file at main's head) is one point, the revision that brought it, not two labels drawn on top of each other."""
    found: dict[str, dict[tuple, Score]] = {}
    for score in scores:
        if score.score is not None:
            found.setdefault(series_name(score), {}).setdefault((score.at, score.pr), score)
    return {name: sorted(points.values(), key=lambda p: p.at) for name, points in found.items()}


def label(score: Score) -> str:
    return f"PR #{score.pr}" if score.pr is not None else score.revision[:7]


def anchor(score: Score) -> str:
    """A plotly text label that links to the experiment (plotly keeps href and target on `<a>` in text)."""
    text = esc(label(score))
    return f'<a href="{esc(score.url)}" target="_blank">{text}</a>' if score.url else text


def when_of(score: Score) -> datetime:
    return datetime.fromtimestamp(score.at, timezone.utc)


def trace(name: str, points: list[Score], color: str, pr: bool) -> go.Scatter:
    labelled = len(points) <= MAX_LABELS
    return go.Scatter(
        x=[when_of(p) for p in points], y=[p.score for p in points], name=f"{name} ({'PRs' if pr else 'main'})",
        mode=("markers" if pr else "lines+markers") + ("+text" if labelled else ""),
        text=[anchor(p) for p in points] if labelled else None, textposition="top center",
        marker={"color": color, "size": 11 if pr else 7, "symbol": "diamond-open" if pr else "circle",
                "line": {"width": 2, "color": color}},
        line={"color": color, "width": 2}, legendgroup=name,
        customdata=[[p.experiment, p.metric or "", label(p)] for p in points],
        hovertemplate="%{customdata[2]} · %{customdata[0]}<br>%{customdata[1]} = %{y:.3g}<extra></extra>")


def figure(scores: list[Score]) -> go.Figure:
    fig = go.Figure()
    for i, (name, points) in enumerate(sorted(group(scores).items())):
        color = COLORS[i % len(COLORS)]
        main = [p for p in points if p.is_main]
        prs = [p for p in points if p.pr is not None]
        if main:
            fig.add_trace(trace(name, main, color, pr=False))
        if prs:
            fig.add_trace(trace(name, prs, color, pr=True))
    fig.update_layout(height=420, margin={"l": 50, "r": 20, "t": 40, "b": 40}, template="plotly_white",
                      title={"text": "Headline score per revision", "font": {"size": 15}},
                      yaxis_title="score", legend={"orientation": "h", "y": -0.18})
    return fig


def latest_table(scores: list[Score]) -> str:
    if not any(s.score is not None for s in scores):
        return empty("No experiments yet. They appear here when the bridge uploads eval results pushed to a watched "
                     "repo (or started on Run a job).")
    rows = []
    for name, points in sorted(group(scores).items()):
        main = [p for p in points if p.is_main]
        last = main[-1] if main else points[-1]
        newer_prs = [p for p in points if p.pr is not None and p.at >= last.at]
        pr = newer_prs[-1] if newer_prs else None
        pr_cell = (f'<b>{pr.score:.3g}</b> <span class="muted">({pr.score - last.score:+.3g})</span><br>'
                   f'{link(pr.url, f"PR #{pr.pr}", "pill")}' if pr and last.is_main else "—")
        rows.append([f'<b>{esc(name)}</b><div class="use">{esc(last.metric or "")}</div>',
                     f'<b>{last.score:.3g}</b> {link(last.url, label(last), "pill")}<div class="use">{ts(last.at)}'
                     '</div>', pr_cell])
    return table(["Repo · task, metric", "Latest main", "Newer PR"], rows, "tbl latest")


def build(runtime: Any) -> dict:
    book, store = runtime.scores, runtime.store
    with gr.Row(elem_classes="toolbar"):
        gr.HTML('<p class="muted">The headline score of each experiment the bridge uploaded: a line per eval repo '
                'and task for <code>main</code>, diamonds for pull requests. Labels link to the experiment in '
                'LangSmith.</p>')
        rebuild = gr.Button("Rebuild from LangSmith", size="sm", elem_id="experiments-rebuild", scale=0,
                            min_width=190)
    status = gr.HTML(elem_id="experiments-status")
    with gr.Row(equal_height=False):
        chart = gr.Plot(elem_id="experiments-chart", show_label=False, scale=3)
        with gr.Column(scale=2, min_width=380, elem_classes="card"):
            gr.HTML("<h3>Latest scores</h3>")
            latest = gr.HTML(elem_id="experiments-latest")

    def load_experiments(request: gr.Request, profile: gr.OAuthProfile | None) -> tuple:
        who = viewer(runtime, request, profile)
        if not who.allowed:
            return None, locked(who), ""
        scores = book.all()
        return figure(scores), latest_table(scores), ""

    def rebuild_scores(request: gr.Request, profile: gr.OAuthProfile | None) -> str:
        require(runtime, request, profile, "rebuild of the experiment scores")
        job = actions.submit_scores_recovery(store)
        return notice(f"Queued job #{job.id}: it reads the experiments' metadata from LangSmith (no runs). Open "
                      "this page again when it has finished.", "ok")

    on(rebuild.click, rebuild_scores, None, status)
    return {"load": (load_experiments, [chart, latest, status])}
