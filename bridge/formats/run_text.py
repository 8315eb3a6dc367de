"""The human part of a run's inputs and outputs (chat messages, generated text, else JSON), for the Review page and
the bridge's feedback page. Pure: no I/O.
"""

from __future__ import annotations

import json
from typing import Any

PREVIEW_CHARS = 8_000  # per side, what the feedback page keeps of a run's input and output


def parse_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _message_text(message: Any) -> tuple[str, str] | None:
    """(role, text) of a chat message in OpenAI ({role, content}) or LangChain ({type, data}) shape."""
    if not isinstance(message, dict):
        return None
    data = message.get("data") if isinstance(message.get("data"), dict) else message
    role = message.get("role") or message.get("type") or data.get("type") or "message"
    content = data.get("content")
    if isinstance(content, list):  # content parts: keep the text ones
        content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return (str(role), str(content)) if content is not None else None


def readable(value: Any) -> str:
    """The human part of a run's inputs or outputs: chat messages, generated text, else compact JSON."""
    value = parse_json(value)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        messages = value.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[0], list):
            messages = messages[0]  # LangChain batches: [[message, ...]]
        if isinstance(messages, list):
            lines = [m for m in (_message_text(m) for m in messages) if m]
            if lines:
                return "\n".join(f"{role}: {text}" for role, text in lines[-4:])
        generations = value.get("generations")
        if isinstance(generations, list) and generations:
            first = generations[0][0] if isinstance(generations[0], list) and generations[0] else generations[0]
            if isinstance(first, dict) and first.get("text") is not None:
                return str(first["text"])
        if len(value) == 1 and isinstance(next(iter(value.values())), str):
            return next(iter(value.values()))
    return json.dumps(value, ensure_ascii=False, indent=1, default=str)


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more characters)"


def feedback_preview(run: dict) -> str:
    """What the feedback page shows of `run` (already redacted): its name, input and output as readable text, cut
    short so the state dir stays small. A JSON text."""
    return json.dumps({"name": str(run.get("name") or ""),
                       "inputs": cut(readable(run.get("inputs")), PREVIEW_CHARS),
                       "outputs": cut(readable(run.get("outputs")), PREVIEW_CHARS)}, ensure_ascii=False)
