"""What a success answer must hold, per operation: a 200 without it (`{}`, another API's body) is a bad answer
that fails over, never a completion the client's SDK crashes on."""

from __future__ import annotations

import re
from typing import Any

import orjson

# operation -> (the field OpenAI's answer cannot lack, what it holds); operations not named (audio_speech,
# models) have no JSON shape to insist on
_REQUIRED: dict[str, tuple[str, str]] = {
    "chat": ("choices", "objects"),
    "completions": ("choices", "objects"),
    "embeddings": ("data", "list"),
    "images": ("data", "list"),
    "moderations": ("results", "list"),
    "rerank": ("results", "list"),
    "audio_transcriptions": ("text", "text"),
}


def answer_problem(operation: str, answer: Any) -> str | None:
    """Why `answer` (a parsed JSON body) is not a success answer of `operation`, or None when it is one."""
    required = _REQUIRED.get(operation)
    if required is None:
        return None
    if not isinstance(answer, dict):
        return "answered with a body that is not a JSON object"
    name, holds = required
    value = answer.get(name)
    if holds == "text":
        ok = isinstance(value, str)
    elif holds == "objects":
        ok = isinstance(value, list) and bool(value) and all(_is_choice(operation, item) for item in value)
    else:
        ok = isinstance(value, list)
    return None if ok else f"answered 200 without a readable '{name}': not a {operation} answer"


# operation -> the field each event of its OpenAI stream holds (images and audio events have their own types)
_STREAM_REQUIRED = {"chat": "choices", "completions": "choices"}
_EVENT = re.compile(rb"(?:\r\n|\n|\r)(?:\r\n|\n|\r)")
_DATA_LINE = re.compile(rb"^data: ?(.*)$", re.M)


def first_event_problem(operation: str, events: bytes) -> str | None:
    """Why the first data event of a relayed stream (`events` starts with it, possibly after comments) is not a
    chunk of `operation`'s stream (`{}`, `[DONE]` alone), or None."""
    field = _STREAM_REQUIRED.get(operation)
    if field is None:
        return None
    for block in _EVENT.split(events):
        data = _DATA_LINE.findall(block.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
        if not data:
            continue  # comments, or a blank start
        try:
            chunk = orjson.loads(b"\n".join(data))
        except orjson.JSONDecodeError:
            return "answered a stream whose first event is not a JSON chunk"
        return None if isinstance(chunk, dict) and isinstance(chunk.get(field), list) else (
            f"answered a stream whose first event has no '{field}': not a {operation} stream")
    return None


def _is_choice(operation: str, choice: Any) -> bool:
    """A choice an SDK can read: a chat message that says something (text, tool calls, a refusal), or a text."""
    if not isinstance(choice, dict):
        return False
    if operation == "completions":
        return isinstance(choice.get("text"), str)
    message = choice.get("message")
    return isinstance(message, dict) and any(message.get(part) is not None for part in _MESSAGE_PARTS)


_MESSAGE_PARTS = ("content", "tool_calls", "function_call", "refusal", "audio")


__all__ = ["answer_problem", "first_event_problem"]
