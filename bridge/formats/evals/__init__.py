"""Pure readers that turn eval result files into experiment rows (no network, no Hub, no LangSmith).

    fmt = detect_format(path, head)                        # None: not an eval file
    wanted = sidecar_candidates(path, all_paths)           # download these too, then:
    result = read_eval_file(path, opener, sidecar=lambda p: downloaded.get(p))
    for row in result.rows: ...                            # streamed

Formats: "table" (jsonl / json / csv / tsv / parquet), "lm-eval", "lighteval", "inspect", "promptfoo",
"openai-evals". Unreadable input raises `bridge.errors.FormatError(file, location, message)` — when the reader is
called for file-level problems, or while iterating rows for a broken line; `UnrecognizedFormat` (a FormatError)
means the file is not an eval result file at all and can be skipped.
"""

from __future__ import annotations

from typing import BinaryIO, Callable

from bridge.errors import FormatError

from . import inspect_ai, lighteval, lm_eval, openai_evals, promptfoo, table
from .common import Source, normalize_columns, unique_identities
from .detect import detect_format
from .model import FORMATS, EvalFile, EvalRow, Score, UnrecognizedFormat

__all__ = ["FORMATS", "EvalFile", "EvalRow", "Score", "UnrecognizedFormat", "detect_format", "read_eval_file",
           "sidecar_candidates"]

HEAD_SIZE = 64 * 1024  # how much detection reads; callers passing a head to detect_format should give as much

_READERS = {
    "table": table.read,
    "lm-eval": lm_eval.read,
    "lighteval": lighteval.read,
    "inspect": inspect_ai.read,
    "promptfoo": promptfoo.read,
    "openai-evals": openai_evals.read,
}


def read_eval_file(path: str, opener: Callable[[], BinaryIO], *, format: str = "auto",
                   columns: dict[str, list[str]] | None = None,
                   sidecar: Callable[[str], bytes | None] | None = None) -> EvalFile:
    """Read one eval result file.

    `opener()` returns a fresh binary file object each call (detection, first passes and the row stream each open
    it). `columns` maps roles ("inputs", "expected", "outputs", "scores", and optionally "identity") to column
    names; in non-table formats the names are dotted paths into the raw record (e.g. "doc.question"). `sidecar`
    gives the bytes of another file of the same revision (see `sidecar_candidates`) or None.
    """
    detected = format == "auto"
    if detected:
        with opener() as f:
            head = f.read(HEAD_SIZE)
        format = detect_format(path, head)
        if format is None:
            raise UnrecognizedFormat(path, None, "not an eval result file of a known format")
    if format not in _READERS:
        raise FormatError(path, None, f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    source = Source(path, opener, normalize_columns(path, columns), sidecar, auto=detected)
    result = _READERS[format](source)
    result.rows = unique_identities(result.rows)
    return result


def sidecar_candidates(path: str, all_paths: list[str]) -> list[str]:
    """The other files of the revision a reader of `path` would use (lm-eval/lighteval results files), best first."""
    available = set(all_paths)
    name = path.rsplit("/", 1)[-1]
    if name.endswith(".jsonl"):
        guesses = lm_eval.sidecar_paths(path)
    elif name.endswith(".parquet") and name.startswith("details_"):
        guesses = lighteval.sidecar_paths(path)
    else:
        guesses = []
    return [guess for guess in guesses if guess in available and guess != path]
