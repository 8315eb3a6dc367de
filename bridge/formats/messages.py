"""Pure: the messages a LangSmith run's inputs, outputs or a correction hold, as `{role, content, name,
tool_call_id, tool_calls}` dicts.

Runs carry many shapes: OpenAI `messages` (content as text or parts, `tool_calls`), LangChain serialized messages
(`type` + `data`/`kwargs`, the `lc` constructor form, nested lists), prompt strings, `generations` and `choices`,
`output`/`content` strings, AI message dicts, Anthropic `system` and `tool_use` blocks. Every one becomes the same
flat form, which the training presets store in one fixed Arrow struct. Text parts are joined (as LangChain does);
images and other non-text parts are dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


_ROLES = {
    "user": "user", "human": "user", "humanmessage": "user",
    "assistant": "assistant", "ai": "assistant", "aimessage": "assistant", "model": "assistant", "bot": "assistant",
    # Chat templates know no "developer" role: OpenAI's developer message is a system prompt.
    "system": "system", "systemmessage": "system", "developer": "system",
    "tool": "tool", "toolmessage": "tool", "function": "tool", "functionmessage": "tool",
}
_CHAT_MESSAGE = ("chat", "chatmessage")  # LangChain's ChatMessage carries its own `role`

# Where a message or a prompt hides in a dict, most specific first. Outputs and inputs share the list: an agent's
# outputs can echo `input` next to `output`, so output keys come first.
_KEYS = ("messages", "generations", "choices", "output", "outputs", "message", "input", "inputs", "prompt",
         "prompts", "question", "query", "sys.query", "content", "text", "answer", "response", "result", "completion")
_FIRST_ONLY = ("generations", "choices")                   # n alternatives: the first is what the user saw
_PROMPT_KEYS = ("input", "inputs", "prompt", "prompts", "question", "query", "sys.query")
_HISTORY_KEYS = ("chat_history", "history")
_SYSTEM_KEYS = ("system", "instructions")                # Anthropic `system`, OpenAI Responses `instructions`
_TEXT_PART_TYPES = (None, "text", "input_text", "output_text")
_MAX_DEPTH = 12


def _role(name: Any, fields: Mapping) -> str | None:
    if not isinstance(name, str):
        return None
    key = name.lower().removesuffix("chunk")
    if key in _CHAT_MESSAGE:
        return _role(fields.get("role"), {})
    return _ROLES.get(key)


def _role_and_fields(value: Mapping) -> tuple[str | None, Mapping]:
    """Recognise one message: LangChain constructor / `{type, data}` / dumped form, or an OpenAI-style dict."""
    if value.get("lc") == 1 and value.get("type") == "constructor" and isinstance(value.get("id"), list):
        fields = value.get("kwargs") if isinstance(value.get("kwargs"), Mapping) else {}
        return _role(value["id"][-1] if value["id"] else None, fields), fields
    if isinstance(value.get("data"), Mapping) and isinstance(value.get("type"), str):
        return _role(value["type"], value["data"]), value["data"]
    if isinstance(value.get("role"), str):
        return _role(value["role"], value), value
    if isinstance(value.get("type"), str) and "content" in value:
        return _role(value["type"], value), value
    return None, value


def _part_text(part: Any) -> str:
    if isinstance(part, str):
        return part
    if not isinstance(part, Mapping) or part.get("type") not in _TEXT_PART_TYPES:
        return ""  # images, audio, tool_use, reasoning blocks: not text
    text = part.get("text", part.get("content"))  # Dify renames `text` to `content`
    return text if isinstance(text, str) else ""


def content_text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a content list joined (as LangChain does)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_part_text(part) for part in content)
    if isinstance(content, Mapping):
        return _part_text(content)
    return str(content)


def _arguments(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps({} if value is None else value, ensure_ascii=False, default=str)


def _tool_call(call: Any) -> dict | None:
    """OpenAI `{id, type, function: {name, arguments}}`, LangChain `{name, args, id}` or Anthropic `tool_use`."""
    if not isinstance(call, Mapping):
        return None
    function = call.get("function")
    if isinstance(function, Mapping):
        name, args = function.get("name"), function.get("arguments")
    else:
        name, args = call.get("name"), call.get("args", call.get("arguments", call.get("input")))
    if not isinstance(name, str) or not name:
        return None
    result = {"type": "function", "function": {"name": name, "arguments": _arguments(args)}}
    call_id = call.get("id") or call.get("call_id")
    return {"id": str(call_id), **result} if call_id else result


def _tool_calls(fields: Mapping) -> list[dict]:
    extra = fields.get("additional_kwargs") if isinstance(fields.get("additional_kwargs"), Mapping) else {}
    content = fields.get("content")
    candidates = [
        fields.get("tool_calls"),
        extra.get("tool_calls"),
        [extra["function_call"]] if isinstance(extra.get("function_call"), Mapping) else None,
        [p for p in content if isinstance(p, Mapping) and p.get("type") == "tool_use"]
        if isinstance(content, list) else None,
    ]
    for calls in candidates:
        if isinstance(calls, list) and calls:
            parsed = [c for c in (_tool_call(call) for call in calls) if c]
            if parsed:
                return parsed
    return []


def message_from(value: Any) -> dict | None:
    """One normalised message `{role, content[, name, tool_call_id, tool_calls]}`, or None if it is not one."""
    if not isinstance(value, Mapping):
        return None
    role, fields = _role_and_fields(value)
    if role is None:
        return None
    message = {"role": role, "content": content_text(fields.get("content"))}
    if isinstance(fields.get("name"), str) and fields["name"]:
        message["name"] = fields["name"]
    if role == "tool" and fields.get("tool_call_id"):
        message["tool_call_id"] = str(fields["tool_call_id"])
    calls = _tool_calls(fields)
    if calls:
        message["tool_calls"] = calls
    return message


def _is_pair(item: Any) -> bool:
    """LangChain's `("human", "hi")` tuples, which JSON turns into two-item lists."""
    return isinstance(item, (list, tuple)) and len(item) == 2 and _role(item[0], {}) is not None \
        and isinstance(item[1], str)


def _first(value: Any) -> Any:
    while isinstance(value, list) and value:
        value = value[0]
    return value


def _from_list(items: list, default_role: str, depth: int) -> list[dict] | None:
    if not items:
        return None
    if all(_is_pair(item) for item in items):
        return [{"role": _role(role, {}), "content": text} for role, text in items]
    if isinstance(items[0], list):
        return _extract(items[0], default_role, depth + 1)  # `[[...]]`: a batch of one conversation
    if all(isinstance(item, str) for item in items):
        return _extract(items[0], default_role, depth + 1)  # `prompts: [...]`: a batch of one prompt
    messages = [m for m in (message_from(item) for item in items) if m]
    return messages or None  # items that are not messages (reasoning items, documents) are skipped


def _system_and_history(value: Mapping, key: str, messages: list[dict], depth: int) -> list[dict]:
    before: list[dict] = []
    system = next((value[k] for k in _SYSTEM_KEYS if value.get(k)), None)
    if system is not None and not any(m["role"] == "system" for m in messages):
        text = content_text(system)
        if text:
            before.append({"role": "system", "content": text})
    if key in _PROMPT_KEYS:
        for history_key in _HISTORY_KEYS:
            if isinstance(value.get(history_key), list):
                before.extend(_extract(value[history_key], "user", depth + 1) or [])
                break
    return before


def _from_dict(value: Mapping, default_role: str, depth: int) -> list[dict] | None:
    message = message_from(value)
    if message is not None:
        return [message]
    for key in _KEYS:
        if key not in value or value[key] is None:
            continue
        inner = _first(value[key]) if key in _FIRST_ONLY else value[key]
        messages = _extract(inner, default_role, depth + 1)
        if messages:
            return [*_system_and_history(value, key, messages, depth), *messages]
    return None


def _extract(value: Any, default_role: str, depth: int) -> list[dict] | None:
    if depth > _MAX_DEPTH:
        return None
    if isinstance(value, str):
        return [{"role": default_role, "content": value}] if value else None
    if isinstance(value, (list, tuple)):
        return _from_list(list(value), default_role, depth)
    if isinstance(value, Mapping):
        return _from_dict(value, default_role, depth)
    return None


def extract_messages(value: Any, *, default_role: str = "user") -> list[dict] | None:
    """Messages `[{"role", "content", ...}]` from a run's inputs, outputs or a correction; None if there are none.

    Understands OpenAI `messages`/`choices`, LangChain serialized messages (constructor, `{type, data}`, dumped,
    `[[...]]` batches, `(role, text)` pairs), `generations`, prompt strings under `prompt`/`input`/`question`/...,
    `output`/`content` strings and single message dicts (Dify sends `messages` as one dict). A bare string becomes
    one message of `default_role` ("user" for inputs, "assistant" for outputs and corrections).
    """
    return _extract(value, default_role, 0)


# --- presets ---------------------------------------------------------------------------------------------------

def same_messages(left: list[dict], right: list[dict]) -> bool:
    """Same roles, text and tool calls (names and ids aside): a correction equal to the output is no preference."""
    return len(left) == len(right) and all(
        a["role"] == b["role"] and a["content"] == b["content"] and a.get("tool_calls") == b.get("tool_calls")
        for a, b in zip(left, right))


def completion_of(prompt: list[dict], messages: list[dict] | None) -> list[dict] | None:
    """The new turns in `messages`: graph states echo the whole conversation, so the prompt part is cut off."""
    if not messages:
        return None
    if len(messages) > len(prompt) and same_messages(messages[:len(prompt)], prompt):
        messages = messages[len(prompt):]
    else:
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        if users:
            messages = messages[users[-1] + 1:]
    useful = any(m["role"] == "assistant" and (m["content"].strip() or m.get("tool_calls")) for m in messages)
    return messages if useful else None
