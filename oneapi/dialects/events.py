"""Canonical stream events: OpenAI chunks cut into the few events a dialect's stream rules read, and the events
those rules emit written out in the dialect's own framing.

A canonical chunk becomes, in this order: `start` {id, model} (a delta with a role), `reasoning` {text}, `text`
{text}, one `tool_call` {index, id, name, arguments} per tool call delta, `finish` {finish_reason}, `usage` {usage};
an error chunk becomes `error` {message, type, code}. `_end` follows the last one. This is the stream state machine of streams.py run the other way round: the same rules, compiled to
the same code, with OpenAI as the input and the dialect as the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator, Mapping

import orjson

from ..framing import FramingError, SSEParser
from ..mapping import MappingError
from ..streams import END_EVENT, StreamSpec, StreamTranslator


def canonical_events(chunk: Any) -> list[tuple[str, dict[str, Any]]]:
    """The canonical events of one OpenAI chunk (see the module's docstring), as (name, fields)."""
    if type(chunk) is not dict:
        return []
    error = chunk.get("error")
    if error is not None:
        if not isinstance(error, dict):
            error = {"message": str(error)}
        return [("error", {"message": str(error.get("message") or "Upstream stream failed."), "type": error.get("type"),
                           "code": error.get("code")})]
    events = []
    choices = chunk.get("choices")
    choice = choices[0] if choices and type(choices) is list and type(choices[0]) is dict else None
    if choice is not None:
        delta = choice.get("delta")
        if type(delta) is dict:
            content = delta.get("content")
            if content and len(delta) == 1 and type(content) is str:  # most chunks of a stream: text alone
                events.append(("text", {"text": content}))
            else:
                if delta.get("role"):
                    events.append(("start", {"id": chunk.get("id"), "model": chunk.get("model")}))
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if reasoning and type(reasoning) is str:
                    events.append(("reasoning", {"text": reasoning}))
                if content and type(content) is str:
                    events.append(("text", {"text": content}))
                for call in delta.get("tool_calls") or ():
                    if type(call) is dict:
                        function = call.get("function") if type(call.get("function")) is dict else {}
                        events.append(("tool_call", {"index": call.get("index", 0), "id": call.get("id"), "name": function.get("name"),
                                                     "arguments": function.get("arguments") or ""}))
        if choice.get("finish_reason"):
            events.append(("finish", {"finish_reason": choice["finish_reason"]}))
    usage = chunk.get("usage")
    if usage and type(usage) is dict:
        events.append(("usage", {"usage": usage}))
    return events


@dataclass
class EventWriter(StreamTranslator):
    """A dialect's stream rules run over canonical events: each emitted `{event, data}` is one event for the client."""

    sequence: str | None = None  # a data field numbered 0, 1, 2, ... in stream order (`stream.sequence`)
    numbered: int = 0

    def _chunk(self, body: Any) -> dict[str, Any] | None:
        if isinstance(body, dict) and "data" in body:
            return body
        return None

    def write(self, name: str, fields: dict[str, Any], out: list[dict[str, Any]]) -> None:
        """Append the dialect events of one canonical event to `out` (the rules' own runner, without feed's checks)."""
        spec = self.spec
        start = len(out)
        spec.runners.get(name, spec.run_other)(fields, self, out, name)
        if self.sequence is not None:
            for item in out[start:]:
                data = item.get("data")
                if type(data) is dict:
                    data[self.sequence] = self.numbered
                    self.numbered += 1


def write_sse(events: list[dict[str, Any]]) -> bytes:
    dumps = orjson.dumps
    return b"".join(b"event: %b\ndata: %b\n\n" % (item["event"].encode(), dumps(item["data"])) if item.get("event")
                    else b"data: %b\n\n" % dumps(item["data"]) for item in events)


class JsonArrayWriter:
    """The events' data as the items of one JSON array written as they come (a dialect's `json_array_when` stream):
    `[` before the first, `,` between, `]` once the stream ends."""

    def __init__(self) -> None:
        self.opened = False

    def __call__(self, events: list[dict[str, Any]]) -> bytes:
        if not events:
            return b""
        dumps = orjson.dumps
        body = b",\r\n".join(dumps(item["data"]) for item in events)
        lead = b",\r\n" if self.opened else b"["
        self.opened = True
        return lead + body

    def close(self) -> bytes:
        return b"]" if self.opened else b"[]"


async def sse_as_json_array(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A data-only SSE stream's events as one JSON array, written as they come (a native stream for a client that
    asked for the dialect's JSON-array form: the vendor is always asked for SSE, whose events end where they are marked)."""
    array = JsonArrayWriter()
    parser = SSEParser()
    try:
        async for piece in chunks:
            out = [{"data": event.data} for event in parser.feed(piece) if not isinstance(event.data, str)]
            if out:
                yield array(out)
        out = [{"data": event.data} for event in parser.close() if not isinstance(event.data, str)]
        yield array(out) + array.close()
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


async def rewrite_stream(chunks: AsyncIterator[bytes], spec: StreamSpec, request: Mapping[str, Any],
                         context: Mapping[str, Any], json_array: bool = False, sequence: str | None = None) -> AsyncIterator[bytes]:
    """The client's stream in its dialect, from the canonical OpenAI SSE `chunks`; whatever one read of them
    gives goes out as one write. `context` is what the rules see as `_options`; `json_array`: written as one
    JSON array rather than as SSE; `sequence` numbers the events."""
    array = JsonArrayWriter() if json_array else None
    write_events = array or write_sse
    writer = EventWriter(spec, request, context, sequence=sequence)
    write = writer.write
    parser = SSEParser()
    out: list[dict[str, Any]] = []
    try:
        async for piece in chunks:
            for event in parser.feed(piece):
                for name, fields in canonical_events(event.data):  # [DONE] is text, and has none
                    write(name, fields, out)
            if out:
                yield write_events(out)
                out.clear()
        for event in parser.close():
            for name, fields in canonical_events(event.data):
                write(name, fields, out)
        write(END_EVENT, {}, out)
        yield write_events(out) + (array.close() if array is not None else b"")
    except (FramingError, MappingError, TypeError, ValueError) as exc:  # odd vendor data: an error event, not a silent end
        out.clear()
        write("error", {"message": f"The gateway could not write this stream in the client's format: {exc}", "type": "api_error", "code": None}, out)
        yield write_events(out) + (array.close() if array is not None else b"")
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()  # the canonical stream's own cleanup (its accounting, its upstream) runs now, not at collection
