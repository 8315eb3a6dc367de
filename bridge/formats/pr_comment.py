"""Pure: the Markdown comment a pull request gets after its eval results were uploaded.

Every string that came from a file or a payload (task, model and score names) goes through `md_escape`, so it
cannot break the table, open a link or inject HTML.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

MARKER = "<!-- hub-langsmith-bridge:pr-comment:{sha} -->"
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~<])")


def md_escape(text: object) -> str:
    flat = " ".join(str(text).split())  # no newlines: one cell, one line
    return _MD_SPECIAL.sub(r"\\\1", html.escape(flat, quote=True))


def marker(sha: str) -> str:
    return MARKER.format(sha=re.sub(r"[^0-9a-f]", "", sha.lower()))


@dataclass
class Side:
    name: str
    url: str | None
    rows: int
    scores: dict[str, float]
    id: str | None = None


@dataclass
class TaskResult:
    task: str
    model: str | None
    pr: Side
    baseline: Side | None = None
    compare_url: str | None = None
    notes: list[str] = field(default_factory=list)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _delta(new: float | None, old: float | None) -> str:
    if new is None or old is None:
        return "–"
    diff = new - old
    arrow = "▲" if diff > 0 else "▼" if diff < 0 else "="
    return f"{arrow} {diff:+.4g}"


def _link(label: str, url: str | None) -> str:
    return f"[{md_escape(label)}](<{url}>)" if url else md_escape(label)


def _task_section(result: TaskResult) -> list[str]:
    lines = [f"### {md_escape(result.task)}" + (f" · {md_escape(result.model)}" if result.model else "")]
    base = result.baseline
    if base is None:
        lines.append("No baseline yet: `main` has no experiment in this dataset, so there is nothing to compare to.")
    lines += ["", "| score | this PR | main | Δ |", "|---|---:|---:|---:|"]
    keys = sorted(set(result.pr.scores) | set(base.scores if base else {}))
    for key in keys:
        new, old = result.pr.scores.get(key), base.scores.get(key) if base else None
        lines.append(f"| {md_escape(key)} | {_fmt(new)} | {_fmt(old)} | {_delta(new, old)} |")
    lines.append(f"| rows | {result.pr.rows} | {base.rows if base else '–'} | |")
    links = [_link("PR experiment", result.pr.url)]
    if base:
        links.append(_link("main experiment", base.url))
    if result.compare_url:
        links.append(_link("compare", result.compare_url))
    lines += ["", " · ".join(links)]
    lines += [f"> {md_escape(note)}" for note in result.notes]
    return lines + [""]


def render_comment(sha: str, pr: int, results: list[TaskResult], failures: list[str] | None = None) -> str:
    lines = [marker(sha), f"## Eval results for `{sha[:7]}` (PR #{pr}) in LangSmith", ""]
    for result in results:
        lines += _task_section(result)
    for failure in failures or []:
        lines.append(f"- ⚠️ {md_escape(failure)}")
    lines.append("\n<sub>Posted by hub-langsmith-bridge. One comment per PR revision.</sub>")
    return "\n".join(lines)
