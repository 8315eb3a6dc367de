"""Numbers to text: percentiles, machine facts, the console table and the Markdown for the README."""

from __future__ import annotations

import math
import os
import platform
import statistics
from dataclasses import dataclass, field
from importlib import metadata

PACKAGES = ("gradio", "huggingface_hub", "langsmith", "pyarrow", "fastapi", "uvicorn", "requests")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: an observed value, never an interpolation between two."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def median(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def ms(seconds: float) -> str:
    return "–" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def ratio(a: float, b: float) -> str:
    return "–" if not b or math.isnan(a) or math.isnan(b) else f"{a / b:.2f}×"


def mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    facts = {"cores": f"{len(os.sched_getaffinity(0))} usable of {os.cpu_count()} ({cpu})",
             "python": platform.python_version(), "os": platform.platform(terse=True),
             "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    for name in PACKAGES:
        try:
            facts[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            facts[name] = "not installed"
    return facts


@dataclass
class Row:
    """One line of the results table: what was measured, the figure, what it is compared with, the target."""

    section: str
    what: str
    value: str
    reference: str = ""
    target: str = ""
    ok: bool | None = None

    def verdict(self) -> str:
        return "" if self.ok is None else mark(self.ok)


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profiles: list[list[str]] = field(default_factory=list)  # Markdown blocks (bench.profile.summary)

    def add(self, section: str, what: str, value: str, reference: str = "", target: str = "",
            ok: bool | None = None) -> None:
        self.rows.append(Row(section, what, value, reference, target, ok))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def console(self, facts: dict[str, str]) -> str:
        lines = ["", "Machine: " + "; ".join(f"{k} {v}" for k, v in facts.items()), ""]
        widths = [max(len(getattr(r, name)) for r in self.rows + [Row(*HEAD)]) for name in COLUMNS]
        lines.append(_line(HEAD + ("",), widths))
        lines.append("  ".join("-" * w for w in widths) + "  --")
        for row in self.rows:
            lines.append(_line((row.section, row.what, row.value, row.reference, row.target, row.verdict()), widths))
        lines += ["", *[f"* {n}" for n in self.notes]]
        for block in self.profiles:
            lines += ["", *block]
        return "\n".join(lines)

    def markdown(self, facts: dict[str, str], title: str) -> str:
        lines = [f"### {title}", "",
                 "Machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()) + ".", "",
                 "| benchmark | measure | bridge | reference | target | |", "|---|---|---|---|---|---|"]
        for row in self.rows:
            cells = (row.section, row.what, row.value, row.reference, row.target, row.verdict())
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines += ["", *[f"- {n}" for n in self.notes], ""]
        if self.profiles:
            lines += ["#### Profiles (the app: its web process, and for exports its job process too)", ""]
            for block in self.profiles:
                lines += [*block, ""]
        return "\n".join(lines)


COLUMNS = ("section", "what", "value", "reference", "target")
HEAD = ("benchmark", "measure", "bridge", "reference", "target")


def _line(cells: tuple, widths: list[int]) -> str:
    return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths + [0]))
