"""Path globs for files inside a repo: `*` and `?` stay within one folder, `**/` spans any number of folders.

fnmatch would let `*` cross `/` and would not let `**/x` match a root-level `x`, so a rule's `files` would not mean
what people who write .gitignore-style globs expect.
"""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=256)
def compile_glob(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def matches(path: str, patterns: list[str]) -> bool:
    return any(compile_glob(p).match(path) for p in patterns)


def unmatched_note(unmatched: list[str], limit: int = 5) -> str:
    shown = ", ".join(unmatched[:limit]) + (f", … ({len(unmatched) - limit} more)" if len(unmatched) > limit else "")
    return f"{len(unmatched)} changed file(s) not matched by `files`: {shown}"
