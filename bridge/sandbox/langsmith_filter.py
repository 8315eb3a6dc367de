"""What `POST /runs/query` matches: predicates for its structured fields, and the `filter` mini-language.

`run_checks` turns the body's id / session / trace / type / error / start-time fields into predicates; `parse_filter`
parses LangSmith's `eq(name, "x")`-style expressions and `FilterEval` applies one to a run. Used by
`RunRecords.query_runs` (langsmith_runs.py).
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from bridge.sandbox.langsmith_common import ApiError, as_uuid, parse_time, run_time

_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+(?:\.\d+)?)|(?P<word>[A-Za-z_][\w.]*)'
                    r'|(?P<punct>[(),]))')


def parse_filter(text: str) -> Any:
    """`eq(name, "x")`-style expressions into nested `(op, [args])` tuples; literals stay Python values and bare
    words become `("field", name)`. Raises ApiError(400) on a syntax error, as the real query does."""
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ApiError(400, f"invalid filter at {pos}: {text!r}")
        tokens.append(match)
        pos = match.end()
    expr, rest = _parse_expr(tokens, 0, text)
    if rest != len(tokens):
        raise ApiError(400, f"invalid filter (trailing input): {text!r}")
    return expr


def _parse_expr(tokens: list, i: int, text: str) -> tuple[Any, int]:
    if i >= len(tokens):
        raise ApiError(400, f"invalid filter (unexpected end): {text!r}")
    tok = tokens[i]
    if tok.group("str"):
        return json.loads(tok.group("str")), i + 1
    if tok.group("num"):
        return float(tok.group("num")), i + 1
    word = tok.group("word")
    if not word:
        raise ApiError(400, f"invalid filter: {text!r}")
    if i + 1 < len(tokens) and tokens[i + 1].group("punct") == "(":
        args, i = [], i + 2
        while i < len(tokens) and tokens[i].group("punct") != ")":
            arg, i = _parse_expr(tokens, i, text)
            args.append(arg)
            if i < len(tokens) and tokens[i].group("punct") == ",":
                i += 1
        if i >= len(tokens):
            raise ApiError(400, f"invalid filter (unclosed call): {text!r}")
        return (word.lower(), args), i + 1
    return {"null": None, "true": True, "false": False}.get(word.lower(), ("field", word)), i + 1


class FilterEval:
    """Evaluates a parsed filter on one run. Unsupported operators or fields match everything and are noted in
    `ignored`, so a filter the emulator does not understand widens a query instead of failing it."""

    COMPARE = {"eq": lambda a, b: a == b, "neq": lambda a, b: a != b, "gt": lambda a, b: a > b,
               "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}

    def __init__(self, run: dict, feedback_keys: set[str], ignored: list[str]) -> None:
        self.run, self.feedback_keys, self.ignored = run, feedback_keys, ignored

    def __call__(self, expr: Any) -> bool:
        op, args = expr if isinstance(expr, tuple) and expr[0] != "field" else ("?", [expr])
        if op == "and":
            return all(self(arg) for arg in args)
        if op == "or":
            return any(self(arg) for arg in args)
        if op == "not" and len(args) == 1:
            return not self(args[0])
        if op == "has" and len(args) == 2 and _field_name(args[0]):
            return self._has(_field_name(args[0]), args[1])
        if op in self.COMPARE and len(args) == 2 and _field_name(args[0]):
            return self._compare(op, _field_name(args[0]), args[1])
        self.ignored.append(repr(expr))
        return True

    def _has(self, field: str, value: Any) -> bool:
        if field == "feedback_key":
            return value in self.feedback_keys
        current = self.run.get(field)
        return isinstance(current, (list, dict, str)) and value in current

    def _compare(self, op: str, field: str, value: Any) -> bool:
        if field == "feedback_key" and op in ("eq", "neq"):
            return (value in self.feedback_keys) == (op == "eq")
        if field in ("metadata_key", "metadata_value"):
            metadata = (self.run.get("extra") or {}).get("metadata") or {}
            pool = metadata.keys() if field == "metadata_key" else [str(v) for v in metadata.values()]
            return (str(value) in pool) == (op != "neq")
        if field not in self.run:
            self.ignored.append(f"{op}({field}, ...)")
            return True
        current = self.run[field]
        if field in ("start_time", "end_time") and current is not None and value is not None:
            current, value = parse_time(current), parse_time(value)
        if op in ("eq", "neq") or (current is not None and value is not None):
            try:
                return self.COMPARE[op](current, value)
            except TypeError:
                return False
        return False


def _field_name(expr: Any) -> str | None:
    return expr[1] if isinstance(expr, tuple) and expr[0] == "field" else None


def run_checks(body: dict) -> list[Callable[[dict], bool]]:
    """Predicates for the structured /runs/query fields (everything but `filter`)."""
    checks: list[Callable[[dict], bool]] = []

    def one_of(field: str, values: Any) -> None:
        wanted = {as_uuid(v, field) for v in (values if isinstance(values, list) else [values])}
        checks.append(lambda run: str(run[field]) in wanted)

    for key, field in (("id", "id"), ("session", "session_id"), ("trace", "trace_id"),
                       ("parent_run", "parent_run_id"), ("reference_example", "reference_example_id")):
        if body.get(key):
            one_of(field, body[key])
    if body.get("is_root") is not None:
        checks.append(lambda run: run["is_root"] == bool(body["is_root"]))
    if body.get("run_type"):
        checks.append(lambda run: run["run_type"] == body["run_type"])
    if body.get("error") is not None:
        checks.append(lambda run: bool(run["error"]) == bool(body["error"]))
    if body.get("start_time"):
        try:
            since = run_time(parse_time(body["start_time"]))
        except ValueError as exc:
            raise ApiError(422, f"start_time: {exc}") from None
        checks.append(lambda run: run["start_time"] >= since)
    return checks
