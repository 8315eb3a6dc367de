"""Redaction of run and feedback text before anything is serialised or leaves the bridge.

Rules: the presets `emails` and `secrets`, and custom `{"pattern": regex}` items (optionally with a `name`), all
compiled once. `Redactor.apply` returns a redacted copy of any JSON-like value (strings inside dicts, lists and
tuples; dict keys are left alone so structures keep their shape) and counts replacements per kind in `counts`.
It works on Python values rather than JSON text: JSON escaping (`\\n` in a PEM key, `\\u00e9` in a name) would
otherwise hide matches.

Each match becomes `[REDACTED:<kind>]` (`[REDACTED:custom]` or `[REDACTED:<name>]` for custom patterns, which
are never written into the data); a `Bearer` token keeps its `Bearer ` prefix so the text still reads. Counts are
keyed by kind: `email`, `private_key`, `bearer_token`, `openai_key`, `hf_token`, `langsmith_key`,
`aws_access_key`, and `custom:<pattern>` (or the rule's name).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.errors import ConfigError
from bridge.formats.runs import as_dict


@dataclass(frozen=True)
class Rule:
    kind: str
    pattern: re.Pattern
    replacement: str
    # What every match contains (a substring, any of several, or a cheap pattern): skips the full regex on most
    # strings, which is most of redaction's cost on long prompts.
    hint: str | tuple[str, ...] | re.Pattern | None = None

    def may_match(self, value: str) -> bool:
        hint = self.hint
        if hint is None:
            return True
        if isinstance(hint, str):
            return hint in value
        if isinstance(hint, tuple):
            return any(h in value for h in hint)
        return hint.search(value) is not None


def _rule(kind: str, regex: str, *, flags: int = 0, hint: str | tuple[str, ...] | None = None) -> Rule:
    return Rule(kind, re.compile(regex, flags), f"[REDACTED:{kind}]", hint)


# Bounded repetitions keep the email scan linear on long strings without an "@" (e.g. base64 blobs).
_EMAIL = r"(?<![\w.%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}\b"

PRESET_RULES: dict[str, tuple[Rule, ...]] = {
    "emails": (_rule("email", _EMAIL, hint="@"),),
    "secrets": (
        # PEM first: a key body may contain anything; a truncated key (no END line) is redacted to the end.
        _rule("private_key",
              r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY-----.*?(?:-----END[A-Z0-9 ]{0,40}PRIVATE KEY-----|\Z)",
              flags=re.DOTALL, hint="PRIVATE KEY"),
        # Before the vendor keys, so `Bearer sk-...` counts once, as a bearer token.
        Rule("bearer_token", re.compile(r"\b(Bearer)[ \t]+[A-Za-z0-9\-._~+/]{16,}=*", re.IGNORECASE),
             r"\1 [REDACTED:bearer_token]", re.compile("bearer", re.IGNORECASE)),
        _rule("openai_key", r"\bsk-[A-Za-z0-9_\-]{20,}", hint="sk-"),            # sk-..., sk-proj-..., sk-ant-...
        _rule("hf_token", r"\bhf_[A-Za-z0-9]{30,}", hint="hf_"),
        _rule("langsmith_key", r"\b(?:lsv2_[A-Za-z0-9_]{20,}|ls__[A-Za-z0-9]{20,})", hint="ls"),
        _rule("aws_access_key", r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b", hint=("AKIA", "ASIA")),
    ),
}


def _custom_rule(index: int, item: Mapping, key: str) -> Rule:
    where = f"{key}[{index}]"
    unknown = set(item) - {"pattern", "name"}
    pattern = item.get("pattern")
    if unknown or not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"a custom redaction rule is {{pattern: regex}} (optionally with name), got {dict(item)!r}",
                          key=where)
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"redaction pattern {pattern!r} is not a valid regular expression: {exc}",
                          key=f"{where}.pattern") from None
    if compiled.search("") is not None:  # would insert a marker between every character
        raise ConfigError(f"redaction pattern {pattern!r} matches the empty string", key=f"{where}.pattern")
    name = str(item.get("name") or "custom")
    # The marker never shows the pattern (it may name customers); the count key does, for the operator.
    kind = name if item.get("name") else f"custom:{pattern}"
    return Rule(kind, compiled, f"[REDACTED:{name}]".replace("\\", "\\\\"))


def compile_rules(rules: list[str | Mapping] | None, *, key: str = "redact") -> tuple[Rule, ...]:
    """Rules in the order given. Raises ConfigError naming the item for unknown presets and bad patterns."""
    compiled: list[Rule] = []
    for index, item in enumerate(rules or []):
        if isinstance(item, str):
            if item not in PRESET_RULES:
                raise ConfigError(f"unknown redaction preset {item!r}: expected one of "
                                  f"{', '.join(PRESET_RULES)} or {{pattern: regex}}", key=f"{key}[{index}]")
            compiled.extend(PRESET_RULES[item])
        elif isinstance(item, Mapping):
            compiled.append(_custom_rule(index, item, key))
        else:
            raise ConfigError(f"expected a preset name or {{pattern: regex}}, got {item!r}", key=f"{key}[{index}]")
    return tuple(compiled)


_SCALARS = (int, float, bool, type(None))

# Run fields that carry user or model text; ids, times and links are left alone.
RUN_TEXT_FIELDS = ("inputs", "outputs", "error", "extra", "tags")
FEEDBACK_TEXT_FIELDS = ("comment", "correction", "value")


class Redactor:
    """`Redactor(["emails", "secrets", {"pattern": r"ACME-\\d+"}])`; `apply(value)` returns a redacted copy."""

    def __init__(self, rules: list[str | Mapping] | None, *, key: str = "redact") -> None:
        self.rules = compile_rules(rules, key=key)
        self.counts: dict[str, int] = {rule.kind: 0 for rule in self.rules}

    def __bool__(self) -> bool:
        return bool(self.rules)

    def text(self, value: str) -> str:
        for rule in self.rules:
            if not rule.may_match(value):
                continue
            value, found = rule.pattern.subn(rule.replacement, value)
            if found:
                self.counts[rule.kind] += found
        return value

    def apply(self, value: Any) -> Any:
        if not self.rules:
            return value
        return self._walk(value)

    def _walk(self, value: Any) -> Any:
        kind = type(value)  # exact types first: JSON gives only these, and ABC checks cost more than the rest
        if kind is str:
            return self.text(value)
        if kind is dict:
            return {k: self._walk(v) for k, v in value.items()}
        if kind is list:
            return [self._walk(v) for v in value]
        if kind in _SCALARS:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self._walk(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._walk(v) for v in value]
        return value

    def _fields(self, item: Any, fields: tuple[str, ...]) -> dict:
        copy = as_dict(item)
        for field in fields:
            if field in copy:
                copy[field] = self.apply(copy[field])
        return copy

    def apply_run(self, run: Any) -> dict:
        """A copy of the run with its text fields (inputs, outputs, error, extra incl. metadata, tags) redacted."""
        return self._fields(run, RUN_TEXT_FIELDS)

    def apply_feedback(self, feedback: Any) -> dict:
        """A copy of one feedback item with comment, correction and value redacted."""
        return self._fields(feedback, FEEDBACK_TEXT_FIELDS)
