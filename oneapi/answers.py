"""What a success answer must hold, per operation: a 200 without it (`{}`, another API's body) is a bad answer
that fails over, never a completion the client's SDK crashes on."""

from __future__ import annotations

from typing import Any

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


def _is_choice(operation: str, choice: Any) -> bool:
    """A choice an SDK can read: a chat message that says something (text, tool calls, a refusal), or a text."""
    if not isinstance(choice, dict):
        return False
    if operation == "completions":
        return isinstance(choice.get("text"), str)
    message = choice.get("message")
    return isinstance(message, dict) and any(message.get(part) is not None for part in _MESSAGE_PARTS)


_MESSAGE_PARTS = ("content", "tool_calls", "function_call", "refusal", "audio")


__all__ = ["answer_problem"]
