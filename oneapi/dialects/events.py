"""Canonical stream events: OpenAI chunks cut into the few events a dialect's stream rules read, and the events
those rules emit written out in the dialect's own framing.

A canonical chunk becomes, in this order: `start` (a delta with a role), `reasoning` {text}, `text` {text}, one
`tool_call` {index, id, name, arguments} per tool call delta, `finish` {finish_reason}, `usage` {usage}; an error
chunk becomes `error` {message, type, code}. Every event also has the chunk's `id` and `model`. `_end` follows the
last one. This is the stream state machine of streams.py run the other way round: the same rules, compiled to
the same code, with OpenAI as the input and the dialect as the output.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Mapping

import orjson

from ..framing import Event, FramingError, SSEParser
from ..mapping import MappingError
from ..streams import END_EVENT, StreamSpec, StreamTranslator


def canonical_events(chunk: Any) -> list[Event]:
    """The canonical events of one OpenAI chunk (see the module's docstring)."""
    if not isinstance(chunk, dict):
        return []
    error = chunk.get("error")
    if error is not None:
        if not isinstance(error, dict):
            error = {"message": str(error)}
        return [Event("error", {"message": str(error.get("message") or "Upstream stream failed."), "type": error.get("type"),
                                "code": error.get("code")})]
    head = {"id": chunk.get("id"), "model": chunk.get("model")}
    events = []
    choices = chunk.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    delta = choice.get("delta") if choice is not None else None
    if isinstance(delta, dict):
        if delta.get("role"):
            events.append(Event("start", head))
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            events.append(Event("reasoning", {**head, "text": reasoning}))
        content = delta.get("content")
        if isinstance(content, str) and content:
            events.append(Event("text", {**head, "text": content}))
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                function = call.get("function") if isinstance(call.get("function"), dict) else {}
                events.append(Event("tool_call", {**head, "index": call.get("index", 0), "id": call.get("id"), "name": function.get("name"),
                                                  "arguments": function.get("arguments") or ""}))
    if choice is not None and choice.get("finish_reason"):
        events.append(Event("finish", {**head, "finish_reason": choice["finish_reason"]}))
    usage = chunk.get("usage")
    if isinstance(usage, dict) and usage:
        events.append(Event("usage", {**head, "usage": usage}))
    return events


class EventWriter(StreamTranslator):
    """A dialect's stream rules run over canonical events: each emitted `{event, data}` is one event for the client."""

    def _chunk(self, body: Any) -> dict[str, Any] | None:
        if isinstance(body, dict) and "data" in body:
            return body
        return None


def write_sse(events: list[dict[str, Any]]) -> bytes:
    out = []
    for item in events:
        name = item.get("event")
        data = orjson.dumps(item.get("data"))
        out.append(b"event: %b\ndata: %b\n\n" % (name.encode(), data) if name else b"data: %b\n\n" % data)
    return b"".join(out)


async def rewrite_stream(chunks: AsyncIterator[bytes], spec: StreamSpec, request: Mapping[str, Any],
                         context: Mapping[str, Any]) -> AsyncIterator[bytes]:
    """The client's stream in its dialect, from the canonical OpenAI SSE `chunks`; whatever one read of them
    gives goes out as one write. `context` is what the rules see as `_options`."""
    writer = EventWriter(spec, request, context)
    parser = SSEParser()
    try:
        async for piece in chunks:
            out: list[dict[str, Any]] = []
            for event in parser.feed(piece):
                if event.data == "[DONE]":
                    continue
                for canonical in canonical_events(event.data):
                    out.extend(writer.feed(canonical))
            if out:
                yield write_sse(out)
        for event in parser.close():
            if event.data != "[DONE]":
                for canonical in canonical_events(event.data):
                    writer.feed(canonical)
        yield write_sse(writer.feed(Event(END_EVENT, {})))
    except (FramingError, MappingError) as exc:
        failure = {"message": f"The gateway could not write this stream in the client's format: {exc}", "type": "api_error", "code": None}
        yield write_sse(writer.feed(Event("error", failure)))
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()  # the canonical stream's own cleanup (its accounting, its upstream) runs now, not at collection
