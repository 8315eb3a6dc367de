"""Which eval format a file is, from its name and first bytes (the head may be cut anywhere)."""

from __future__ import annotations

import csv
import json
import posixpath
import re

from .table import INPUT_NAMES, LIST_KEYS

_LM_EVAL_KEYS = {"doc", "resps", "filtered_resps", "arguments"}
_PROMPTFOO_KEYS = {"testCase", "promptIdx", "testIdx"}


def detect_format(path: str, head: bytes) -> str | None:
    """The format of an eval result file, or None when it is not one (results summaries, configs, other data)."""
    name = posixpath.basename(path)
    lower = name.lower()
    if lower.endswith(".eval"):
        return "inspect" if head.startswith(b"PK\x03\x04") else None
    if lower.endswith(".parquet"):
        if not head.startswith(b"PAR1"):
            return None
        return "lighteval" if name.startswith("details_") else "table"
    text = head.decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
    if lower.endswith(".jsonl"):
        return _sniff_lines(text)
    if lower.endswith(".json"):
        return _sniff_document(text)
    if lower.endswith((".csv", ".tsv")):
        return _sniff_csv(text, "\t" if lower.endswith(".tsv") else ",")
    return None


def _sniff_lines(text: str) -> str | None:
    if text.startswith("["):
        return _sniff_array(text)
    keys = top_level_keys(text.split("\n", 1)[0])
    if "spec" in keys or "final_report" in keys or {"run_id", "event_id", "type"} <= keys.keys():
        return "openai-evals"
    if "doc_id" in keys and _LM_EVAL_KEYS & keys.keys():
        return "lm-eval"
    if len(_PROMPTFOO_KEYS & keys.keys()) >= 2:
        return "promptfoo"
    return "table" if _has_input(keys) else None


def _sniff_document(text: str) -> str | None:
    if text.startswith("["):
        return _sniff_array(text)
    keys = top_level_keys(text)
    if "evalId" in keys or (keys.get("results") == "{" and "shareableUrl" in keys):
        return "promptfoo"
    if keys.get("eval") == "{" and ("status" in keys or "version" in keys):
        return "inspect"
    if any(keys.get(key) == "[" for key in LIST_KEYS):
        return "table"
    return None


def _sniff_array(text: str) -> str | None:
    start = text.find("{")
    if start < 0 or text[1:start].strip():
        return None
    keys = top_level_keys(text[start:])
    if "doc_id" in keys and _LM_EVAL_KEYS & keys.keys():
        return "lm-eval"  # lm-eval <= 0.4.2 wrote its samples as a pretty-printed JSON array
    return "table" if _has_input(keys) else None


def _sniff_csv(text: str, delimiter: str) -> str | None:
    header = next(csv.reader([text.split("\n", 1)[0]], delimiter=delimiter), [])
    return "table" if _has_input(dict.fromkeys(header, "")) else None


def _has_input(keys: dict) -> bool:
    return any(key.lower() in INPUT_NAMES for key in keys)


def top_level_keys(text: str) -> dict[str, str]:
    """Keys of the JSON object `text` starts with, each mapped to the first character of its value.

    Works on a truncated head: it stops where the text ends.
    """
    keys: dict[str, str] = {}
    if not text.startswith("{"):
        return keys
    depth, pos, expect_key, pending = 0, 0, False, None
    while pos < len(text):
        char = text[pos]
        if char == '"':
            end = _string_end(text, pos)
            if end < 0:
                break
            if depth == 1 and expect_key:
                pending, expect_key = json.loads(text[pos:end]), False
            pos = end
            continue
        if char in "{[":
            depth += 1
            expect_key = depth == 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                break
        elif depth == 1 and char == ",":
            expect_key = True
        elif depth == 1 and char == ":" and pending is not None:
            value = re.match(r"\s*(\S)", text[pos + 1 :])
            if value:
                keys[pending] = value.group(1)
            pending = None
        pos += 1
    return keys


def _string_end(text: str, start: int) -> int:
    """Index just after the closing quote of the string opening at `start`, or -1 if the text ends first."""
    pos = start + 1
    while pos < len(text):
        if text[pos] == "\\":
            pos += 2
        elif text[pos] == '"':
            return pos + 1
        else:
            pos += 1
    return -1
