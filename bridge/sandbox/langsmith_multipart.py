"""`POST /runs/multipart`, the SDK's batched tracing format: body decompression, part parsing, ingestion.

Parts become the same `add_run` / `patch_run` / `add_feedback` calls as the JSON endpoints, posts before patches, so
a batch behaves like the separate requests it replaces.
"""

from __future__ import annotations

import json
import re

from bridge.sandbox.langsmith_common import ApiError, as_uuid
from bridge.sandbox.langsmith_store import Store


def parse_multipart(body: bytes, content_type: str) -> list[tuple[str, str, bytes]]:
    """(name, content type, data) per part; enough for the SDK's /runs/multipart bodies."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise ApiError(400, "multipart body without a boundary")
    parts = []
    for chunk in body.split(b"--" + match.group(1).encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = dict(line.split(":", 1) for line in head.decode("latin-1").split("\r\n") if ":" in line)
        headers = {k.strip().lower(): v.strip() for k, v in headers.items()}
        name = re.search(r'name="([^"]*)"', headers.get("content-disposition", ""))
        if not name:
            raise ApiError(422, "multipart part without a name")
        parts.append((name.group(1), headers.get("content-type", ""), data.removesuffix(b"\r\n")))
    return parts


def ingest_multipart(store: Store, parts: list[tuple[str, str, bytes]]) -> None:
    """Parts are `post.{id}`, `patch.{id}`, `{op}.{id}.{field}`, `feedback.{id}`, `attachment.{id}.{name}`."""
    ops: dict[tuple[str, str], dict] = {}
    feedback = []
    for name, _, data in parts:
        kind, _, rest = name.partition(".")
        if kind == "attachment":
            continue  # attachments are accepted and dropped: nothing in the bridge reads them back
        try:
            value = json.loads(data)
        except ValueError:
            raise ApiError(422, f"part {name}: invalid JSON") from None
        if kind == "feedback":
            feedback.append(value)
        elif kind in ("post", "patch"):
            run_id, _, field = rest.partition(".")
            entry = ops.setdefault((kind, run_id), {"id": run_id})
            entry.update({field: value} if field else value)
        else:
            raise ApiError(422, f"unknown multipart part {name!r}")
    for (kind, run_id), run in sorted(ops.items(), key=lambda item: item[0][0] != "post"):
        if kind == "post":
            store.add_run(run, on_conflict="ignore")
        else:
            store.patch_run(as_uuid(run_id, "id"), run, missing="defer")
    for row in feedback:
        store.add_feedback(row, require_run=False)


def decompress(body: bytes, encoding: str) -> bytes:
    if encoding in ("", "identity"):
        return body
    if encoding == "zstd":
        try:
            import zstandard  # optional: only the SDK's compressed tracing sends zstd
        except ImportError:
            raise ApiError(415, "zstd bodies need the zstandard package") from None
        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    raise ApiError(415, f"unsupported Content-Encoding {encoding!r}")
