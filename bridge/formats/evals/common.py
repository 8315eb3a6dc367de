"""Helpers shared by the eval readers: the source being read, JSON streaming, scores, times, column overrides."""

from __future__ import annotations

import codecs
import hashlib
import json
import math
import posixpath
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from itertools import chain
from typing import IO, Any, BinaryIO, Callable, Iterable, Iterator

from bridge.errors import FormatError

from .model import EvalRow, Score

UNIT = {"type": "continuous", "min": 0, "max": 1}
ROLES = ("inputs", "expected", "outputs", "scores", "identity")
MISSING = object()
CHUNK = 1 << 16

# The timestamp lm-eval and lighteval put in file names: datetime.now().isoformat() with ":" replaced by "-".
FILE_STAMP = r"\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d+)?"

# Metric names whose per-row value is 0..1 by definition. Decided by name only: LangSmith wants one feedback_config
# per key, so a per-value decision would give rows of the same key different configs. `f1` and `exact` are left out
# because SQuAD-style tasks report them on 0..100.
_UNIT_WORDS = {"acc", "accuracy", "match", "em", "mc1", "mc2", "correct", "correctness", "success"}
_UNIT_PATTERN = re.compile(r"^(pass|maj)@\d+$")


@dataclass
class Source:
    """The file being read and what the caller passed with it."""

    path: str
    opener: Callable[[], BinaryIO]
    columns: dict[str, list[str]] | None = None
    sidecar: Callable[[str], bytes | None] | None = None
    auto: bool = False  # format was detected, so "not this format after all" is UnrecognizedFormat
    _checked: bool = field(default=False, repr=False)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    def fail(self, location: str | None, message: str) -> FormatError:
        return FormatError(self.path, location, message)

    def sidecar_json(self, candidates: Iterable[str]) -> dict | None:
        """The first candidate the caller can provide that holds a JSON object (sidecars are optional)."""
        if self.sidecar is None:
            return None
        for candidate in candidates:
            data = self.sidecar(candidate)
            if not data:
                continue
            try:
                value = json.loads(data)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
        return None

    def finish(self, raw: Any, row: EvalRow) -> EvalRow:
        """Apply the caller's column mapping (dotted paths into the raw record) over the reader's own choices."""
        if not self.columns:
            return row
        check, self._checked = not self._checked, True
        picked = {role: pick_columns(self, raw, names, role, check) for role, names in self.columns.items()}
        if "inputs" in picked:
            row.inputs = picked["inputs"]
        if "expected" in picked:
            row.expected = picked["expected"]
        if "outputs" in picked:
            row.outputs = picked["outputs"]
        if "scores" in picked:
            row.scores = [score for key, value in picked["scores"].items() if (score := make_score(key, value))]
        if "identity" in picked:
            row.identity = "/".join(str(value) for value in picked["identity"].values())
        return row


def normalize_columns(path: str, columns: dict | None) -> dict[str, list[str]] | None:
    """Roles with no names (None or []) are left to the reader: a config model dumps every role, set or not."""
    normalized = {}
    for role, names in (columns or {}).items():
        if role not in ROLES:
            raise FormatError(path, "columns", f"unknown role {role!r} in the column mapping; use {', '.join(ROLES)}")
        if names:
            normalized[role] = [names] if isinstance(names, str) else [str(name) for name in names]
    return normalized or None


def pick_columns(source: Source, raw: Any, names: list[str], role: str, check: bool) -> dict:
    values = {}
    for name in names:
        value = lookup(raw, name)
        if value is MISSING:
            if check:
                raise source.fail("columns", f"column {name!r} mapped to {role} is not in the file")
            value = None
        values[name] = value
    return values


def lookup(record: Any, path: str) -> Any:
    """`record[path]`, else follow a dotted path through dicts and list indexes; MISSING when absent."""
    if isinstance(record, dict) and path in record:
        return record[path]
    node = record
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and re.fullmatch(r"-?\d+", part) and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            return MISSING
    return node


# ---------------------------------------------------------------------------------------------------------- scores


def unit_config(key: str) -> dict | None:
    words = set(re.split(r"[^a-z0-9@]+", key.lower()))
    if "stderr" in words:
        return None
    if words & _UNIT_WORDS or any(_UNIT_PATTERN.match(word) for word in words):
        return dict(UNIT)
    return None


def make_score(key: str, value: Any, comment: str | None = None) -> Score | None:
    """A Score from a scalar (or a list of booleans, averaged); None for values that are not scores."""
    if value is None:
        return None
    if isinstance(value, bool):
        return Score(key, 1.0 if value else 0.0, comment=comment, feedback_config=dict(UNIT))
    if isinstance(value, (int, float, Decimal)):
        number = float(value)
        if not math.isfinite(number):  # NaN/inf cannot travel as JSON numbers
            return Score(key, value=str(number), comment=comment)
        return Score(key, number, comment=comment, feedback_config=unit_config(key))
    if isinstance(value, str):
        return Score(key, value=value, comment=comment)
    if isinstance(value, (list, tuple)) and value and all(isinstance(item, bool) for item in value):
        # e.g. lm-eval ifeval's inst_level_*_acc: one boolean per instruction
        mean = sum(value) / len(value)
        return Score(key, mean, comment=comment or json.dumps(list(value)), feedback_config=dict(UNIT))
    return None


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


# ----------------------------------------------------------------------------------------------------------- times


def to_utc(value: Any) -> datetime | None:
    """A tz-aware UTC datetime from a datetime or an ISO string; naive values are taken as UTC."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value.strip():
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def from_epoch(value: Any) -> datetime | None:
    """Epoch seconds to UTC; only plausible wall-clock values (2001..2286), so perf_counter numbers never pass."""
    try:
        amount = float(value)
    except (TypeError, ValueError):
        return None
    if not 1e9 <= amount < 1e10:
        return None
    return datetime.fromtimestamp(amount, timezone.utc)


def parse_file_stamp(stamp: str | None) -> datetime | None:
    """`2025-01-28T01-08-13.454441` -> datetime. The writers used local naive time; we take it as UTC."""
    if not stamp:
        return None
    day, _, clock = stamp.partition("T")
    return to_utc(f"{day}T{clock.replace('-', ':')}")


def seconds(value: Any) -> timedelta | None:
    try:
        amount = float(value)
    except (TypeError, ValueError):
        return None
    return timedelta(seconds=amount) if math.isfinite(amount) and amount >= 0 else None


# ------------------------------------------------------------------------------------------------------ identities


def content_id(inputs: Any) -> str:
    """sha256 of the canonical JSON of the inputs: the identity of rows whose file gives no id."""
    canonical = json.dumps(inputs, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def unique_identities(rows: Iterator[EvalRow]) -> Iterator[EvalRow]:
    """Repeated identities get `#2`, `#3`, ... so every row of a file has its own."""
    seen: dict[str, int] = {}
    for row in rows:
        count = seen.get(row.identity, 0) + 1
        seen[row.identity] = count
        if count > 1:
            row.identity = f"{row.identity}#{count}"
        yield row


# ------------------------------------------------------------------------------------------------------------ JSON


def describe(value: Any) -> str:
    kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")
    preview = json.dumps(value, ensure_ascii=False, default=str)
    return f"{kind} ({preview[:60]}{'...' if len(preview) > 60 else ''})"


def parse_object(source: Source, data: bytes | str, location: str) -> dict:
    try:
        value = json.loads(data)
    except ValueError as error:
        raise source.fail(location, f"invalid JSON: {getattr(error, 'msg', error)}") from None
    if not isinstance(value, dict):
        raise source.fail(location, f"expected a JSON object, got {describe(value)}")
    return value


def load_json(source: Source, f: IO[bytes]) -> Any:
    """A whole JSON document (for formats that are one object, e.g. promptfoo and Inspect's .json)."""
    try:
        return json.loads(f.read())
    except ValueError as error:
        where = f"line {error.lineno}" if isinstance(error, json.JSONDecodeError) else None
        raise source.fail(where, f"invalid JSON: {getattr(error, 'msg', error)}") from None


def iter_json_lines(source: Source, lines: Iterable[bytes], first_line: int = 1) -> Iterator[tuple[str, dict]]:
    """(location, object) per non-blank line; one line in memory at a time."""
    for number, line in enumerate(lines, first_line):
        if number == first_line:
            line = line.removeprefix(codecs.BOM_UTF8)
        if line.strip():
            yield f"line {number}", parse_object(source, line, f"line {number}")


def iter_objects(source: Source, f: IO[bytes]) -> Iterator[tuple[str, dict]]:
    """JSON Lines, or a JSON array of objects (lm-eval <= 0.4.2 wrote a pretty-printed array into its .jsonl)."""
    lead = b""
    while (byte := f.read(1)) and byte in b" \t\r\n\xef\xbb\xbf":
        lead += byte
    if byte == b"[":
        yield from iter_json_array(source, f, lead.count(b"\n") + 1)
    elif byte:
        yield from iter_json_lines(source, chain([byte + f.readline()], f), lead.count(b"\n") + 1)


def iter_json_array(source: Source, f: IO[bytes], line: int = 1) -> Iterator[tuple[str, dict]]:
    """Objects of a JSON array whose `[` was already read, decoded one at a time from a growing text buffer."""
    decoder, reader = json.JSONDecoder(), _TextChunks(f)
    buffer, pos, item = "", 0, 0
    while True:
        buffer, pos, line = _skip_space(reader, buffer, pos, line)
        if pos >= len(buffer):
            raise source.fail(f"item {item + 1}, line {line}", "the JSON array is not closed")
        if buffer[pos] == "]":
            return
        if item:
            if buffer[pos] != ",":
                raise source.fail(f"item {item + 1}, line {line}", f"expected ',' or ']', got {buffer[pos]!r}")
            buffer, pos, line = _skip_space(reader, buffer, pos + 1, line)
        item += 1
        location = f"item {item}, line {line}"
        value, buffer, start, pos = _decode_one(source, decoder, reader, buffer, pos, location)
        if not isinstance(value, dict):
            raise source.fail(location, f"expected a JSON object, got {describe(value)}")
        line += buffer.count("\n", start, pos)
        yield location, value


def _decode_one(source, decoder, reader, buffer, pos, location):
    """(value, buffer, start, end): the buffer is only rebuilt when more text is needed, so decoding stays linear."""
    while True:
        try:
            value, end = decoder.raw_decode(buffer, pos)
        except json.JSONDecodeError as error:
            more = reader.read(max(CHUNK, len(buffer) - pos))  # doubling keeps re-decoding linear overall
            if not more:
                raise source.fail(location, f"invalid JSON: {error.msg}") from None
            buffer, pos = buffer[pos:] + more, 0
            continue
        if end == len(buffer) and not isinstance(value, (dict, list, str)):
            more = reader.read(CHUNK)  # a number cut by the chunk boundary may continue
            if more:
                buffer, pos = buffer[pos:] + more, 0
                continue
        return value, buffer, pos, end


def _skip_space(reader, buffer: str, pos: int, line: int) -> tuple[str, int, int]:
    while True:
        while pos < len(buffer) and buffer[pos] in " \t\r\n":
            line += buffer[pos] == "\n"
            pos += 1
        if pos < len(buffer):
            return buffer, pos, line
        more = reader.read(CHUNK)
        if not more:
            return "", 0, line
        buffer, pos = more, 0


class _TextChunks:
    """UTF-8 text in chunks from any object with .read(), without needing a TextIOWrapper-compatible buffer."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.decoder = f, codecs.getincrementaldecoder("utf-8-sig")("replace")

    def read(self, size: int) -> str:
        while True:
            data = self.f.read(size)
            text = self.decoder.decode(data, final=not data)
            if text or not data:
                return text


def text_lines(f: IO[bytes]) -> Iterator[str]:
    """Decoded lines with their endings (for csv), read in chunks."""
    reader, pending = _TextChunks(f), ""
    while chunk := reader.read(CHUNK):
        pending += chunk
        lines = pending.split("\n")
        pending = lines.pop()
        for line in lines:
            yield line + "\n"
    if pending:
        yield pending


# ----------------------------------------------------------------------------------------------------------- files


def seekable(f: IO[bytes]) -> IO[bytes]:
    """zip and parquet need random access; a stream is spooled to a temporary file first."""
    try:
        if f.seekable():
            return f
    except (AttributeError, OSError, ValueError):
        pass
    spool = tempfile.SpooledTemporaryFile(max_size=32 << 20)
    shutil.copyfileobj(f, spool)
    spool.seek(0)
    return spool


def open_parquet(source: Source, f: IO[bytes]):
    import pyarrow.parquet as pq  # imported here: pyarrow is heavy and only parquet files need it

    try:
        return pq.ParquetFile(seekable(f))
    except Exception as error:  # ArrowInvalid, OSError, ... depending on how the file is damaged
        raise source.fail(None, f"not a readable parquet file: {error}") from None


def stem(path: str) -> str:
    name = posixpath.basename(path)
    for suffix in (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".eval"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def jsonable(value: Any) -> Any:
    """Parquet/CSV values as JSON-safe Python values (the upload sends them as JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(item) for item in value]
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value
