"""Pure: the Markdown comment a pull request gets after its eval results were uploaded.

The first line is a verdict (no regressions, or how many tasks and rows regressed); each task then has its row
counts, the mean scores against `main`, the regressed rows (input, expected, main's and the PR's output, each with a
link to that example in LangSmith's comparison view) and the fixed rows in a collapsed block.

Every string that came from a file or a payload (task, model and score names, row snippets) goes through
`md_escape`, so it cannot break the table, open a link or inject HTML.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

MARKER = "<!-- hub-langsmith-bridge:pr-comment:{sha} -->"
MARKER_PREFIX = "<!-- hub-langsmith-bridge:pr-comment:"
SUPERSEDED = "<!-- hub-langsmith-bridge:superseded -->"
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~<@])")


def md_escape(text: object) -> str:
    flat = " ".join(str(text).split())  # no newlines: one cell, one line
    # quotes stay: in Markdown text they are harmless, and an escaped entity (`&\#x27;`) would show verbatim
    return _MD_SPECIAL.sub(r"\\\1", html.escape(flat, quote=False))


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
    comparison: dict | None = None  # compare.as_dict(): counts and the first regressed / fixed rows


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


def counts_line(comparison: dict) -> str:
    text = (f"▼ {comparison['regressed']} regressed · ▲ {comparison['fixed']} fixed · "
            f"{comparison['unchanged']} unchanged")
    extra = [f"{comparison[k]} only in {side}" for k, side in (("only_pr", "this PR"), ("only_main", "main"))
             if comparison.get(k)]
    return text + (f" ({', '.join(extra)})" if extra else "")


def row_url(compare_url: str | None, row_id: str) -> str | None:
    """That example opened in LangSmith's comparison view (`peek` names the example; the bridge's row_id)."""
    return f"{compare_url}&peek={row_id}" if compare_url else None


def _rows_table(rows: list[dict], compare_url: str | None) -> list[str]:
    lines = ["| example | input | expected | main | this PR | scores |", "|---|---|---|---|---|---|"]
    for i, row in enumerate(rows, 1):
        cells = [_link(f"row {i}", row_url(compare_url, row["row_id"])), *(md_escape(row[k]) or "–" for k in
                 ("input", "expected", "main_output", "pr_output")), md_escape(", ".join(row["keys"]))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _rows_section(result: TaskResult) -> list[str]:
    comparison = result.comparison
    if not comparison:
        return []
    lines = [f"**{counts_line(comparison)}**", ""]
    shown = comparison["regressed_rows"]
    if shown:
        more = comparison["regressed"] - len(shown)
        lines += ["Regressed rows" + (f" (first {len(shown)}; {more} more in LangSmith)" if more else "") + ":", ""]
        lines += _rows_table(shown, result.compare_url) + [""]
    if comparison["fixed_rows"]:
        lines += [f"<details><summary>▲ {comparison['fixed']} fixed row(s)</summary>", ""]
        lines += _rows_table(comparison["fixed_rows"], result.compare_url) + ["", "</details>", ""]
    return lines


def verdict(results: list[TaskResult]) -> str:
    regressed = [r.comparison["regressed"] for r in results if r.comparison and r.comparison["regressed"]]
    if not regressed:
        compared = sum(1 for r in results if r.comparison is not None)
        return "✅ no regressions" + ("" if compared else " (no baseline to compare with yet)")
    return f"⚠️ {len(regressed)} of {len(results)} task(s) regressed ({sum(regressed)} row(s))"


def render_comment(sha: str, pr: int, results: list[TaskResult], failures: list[str] | None = None) -> str:
    lines = [verdict(results), marker(sha), "", f"## Eval results for `{sha[:7]}` (PR #{pr}) in LangSmith", ""]
    for result in results:
        section = _task_section(result)
        lines += section[:1] + [""] + _rows_section(result) + section[1:]
    for failure in failures or []:
        lines.append(f"- ⚠️ {md_escape(failure)}")
    lines.append("\n<sub>Posted by hub-langsmith-bridge. One comment per PR revision.</sub>")
    return "\n".join(lines)



def our_sha(text: str) -> str | None:
    """The revision a comment of ours is about, None for anybody else's comment."""
    found = re.search(re.escape(MARKER_PREFIX) + r"([0-9a-f]+) -->", text)
    return found.group(1) if found else None


def supersede(text: str, sha: str) -> str | None:
    """An older revision's comment with one line on top saying which revision replaced it (None: already said)."""
    if SUPERSEDED in text:
        return None
    line = f"> ⏭️ Superseded by the results for `{sha[:7]}` below; this comment is kept as it was. {SUPERSEDED}"
    return f"{line}\n\n{text}"
