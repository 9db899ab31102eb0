"""Stream framings: incremental parsers that turn body bytes into events.

Every parser has `feed(bytes) -> list[Event]` (call it with each chunk as it arrives; a
frame split across chunks is kept until it is complete) and `close() -> list[Event]` (the
stream ended: flush what is left). The payload of an event is parsed JSON when it is JSON,
else the text as it came.
"""

from __future__ import annotations

import struct
import zlib
from types import MappingProxyType
from typing import Any, Callable, Mapping

import orjson

MAX_EVENT = 16 * 1024 * 1024  # bytes of one event or frame, unless the channel sets max_event_bytes
NO_META: Mapping[str, Any] = MappingProxyType({})  # the meta of every event that has none: most of them, so shared


class Event:
    """One message of a stream. A plain class rather than a dataclass, since a stream makes one per vendor event:
    about half as costly to make as the slots dataclass it was (and the SSE parser makes its own cheaper still)."""

    __slots__ = ("name", "data", "meta")

    def __init__(self, name: str | None, data: Any, meta: Mapping[str, Any] = NO_META) -> None:
        self.name = name  # SSE `event:` field, eventstream `:event-type`; None where the framing has no names
        self.data = data  # parsed JSON, or the raw text when it is not JSON
        self.meta = meta  # SSE id and comments, eventstream headers

    def __eq__(self, other: object) -> bool:
        if type(other) is not Event:
            return NotImplemented
        return (self.name, self.data, self.meta) == (other.name, other.data, other.meta)

    __hash__ = None  # type: ignore[assignment]  # equal by value, and the data is mutable

    def __repr__(self) -> str:
        return f"Event(name={self.name!r}, data={self.data!r}, meta={self.meta!r})"


class FramingError(ValueError):
    """Bytes that cannot be a frame of this framing (bad checksum, broken JSON array, an event past its cap)."""


def _too_large(limit: int) -> FramingError:
    return FramingError(f"a stream event is larger than {limit} bytes")


def _payload(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


class SSEParser:
    """text/event-stream per the WHATWG rules: LF, CRLF or CR line ends; `data:` with or without a
    space; several data lines joined by LF; comment lines (starting with ':') ignored."""

    def __init__(self, max_event: int = MAX_EVENT) -> None:
        self._max_event = max_event
        # What the reads so far left unfinished: the lines of an event (LF or CRLF line ends), or one line (after a
        # lone CR). It holds no blank line (no two LFs in a row) and a CR only at its very end, so a read needs
        # searching only from its last byte on.
        self._buffer = b""
        self._event: str | None = None
        self._data: list[str] = []
        self._id: str | None = None
        self._comments: list[str] = []

    def feed(self, chunk: bytes) -> list[Event]:
        held = self._buffer
        buffer = held + chunk if held else chunk
        search_from = len(held) - 1 if held else 0
        if buffer.find(b"\r", search_from) != -1:
            lf_only = buffer.replace(b"\r\n", b"\n")
            if lf_only.find(b"\r", 0, len(lf_only) - 1) != -1:  # a lone CR ends a line: one line at a time
                events: list[Event] = []
                start = self._scan(buffer, events)
                self._buffer = buffer[start:]
                if len(self._buffer) + sum(map(len, self._data)) > self._max_event:
                    raise _too_large(self._max_event)
                return events
            # CRLF line ends, read as LF ones (a CR at the very end waits: its LF may be in the next read)
            buffer, held, search_from = lf_only, b"", 0
        # Every complete event at once: an event ends at a blank line, so where two LFs meet. (LF never occurs
        # inside a UTF-8 sequence, so decoding the lines together gives the same text as decoding them one by one.)
        cut = buffer.rfind(b"\n\n", search_from)
        if cut == -1:
            if held or buffer[:1] != b"\n":  # (what was held never starts with a blank line)
                if len(buffer) > self._max_event:
                    raise _too_large(self._max_event)
                self._buffer = buffer
                return []
            events = []
            self._dispatch(events)  # the read starts with a blank line: the line before it ended in an earlier read
            self._buffer = buffer[1:]
            return events
        self._buffer = buffer[cut + 2:]
        if len(self._buffer) > self._max_event:
            raise _too_large(self._max_event)
        events = []
        blocks = buffer[:cut].decode("utf-8", "replace").split("\n\n")  # each block: its lines, then a blank line
        if self._event is not None or self._data or self._id is not None or self._comments:
            self._lines((blocks[0] + "\n").split("\n"), events)  # the rest of an event begun in an earlier read
            del blocks[0]
        # The usual blocks, `data: X` and `event: NAME\ndata: X`, are dispatched here as `_lines` would; any other
        # goes to `_lines`. Each block starts with nothing pending, since the one before ended with a blank line.
        # An event is made by filling the slots of a bare instance: some 50 ns less than calling Event (CPython 3.11).
        loads, not_json, append, bare_event = orjson.loads, orjson.JSONDecodeError, events.append, object.__new__
        for block in blocks:
            field, _, value = block.partition(":")
            if field == "data" and "\n" not in value:
                name = None
            elif field == "event":
                name, found, value = value.partition("\ndata:")
                if not found or "\n" in name or "\n" in value:
                    self._lines((block + "\n").split("\n"), events)
                    continue
                name = name.removeprefix(" ") or None
            else:
                self._lines((block + "\n").split("\n"), events)
                continue
            try:
                data = loads(value)  # (JSON ignores the space after the colon)
            except not_json:
                data = value.removeprefix(" ")
            event = bare_event(Event)
            event.name, event.data, event.meta = name, data, NO_META
            append(event)
        return events

    def close(self) -> list[Event]:
        events: list[Event] = []
        buffer, self._buffer = self._buffer, b""
        start = self._scan(buffer, events)  # the complete lines of an unfinished event
        if start < len(buffer):
            # the unended last line; a CR at the very end was waiting for an LF that will not come: it ends the line
            rest = buffer[start:-1] if buffer.endswith(b"\r") else buffer[start:]
            self._line(rest.decode("utf-8", "replace"), events)
        self._dispatch(events)
        return events

    def _scan(self, buffer: bytes, events: list[Event]) -> int:
        """Each complete line of `buffer` through `_line`; returns where the unfinished last line starts."""
        start = 0
        while True:
            cut = _line_end(buffer, start)
            if cut is None:
                return start
            end, after = cut
            self._line(buffer[start:end].decode("utf-8", "replace"), events)
            start = after

    def _lines(self, lines: list[str], events: list[Event]) -> None:
        """Many lines at once: `_line` with the usual fields (`data`, `event`, the blank line) handled inline,
        since a stream is mostly made of them."""
        data = self._data
        i, count = 0, len(lines)
        while i < count:
            line = lines[i]
            i += 1
            if not line:
                if data:
                    self._dispatch(events)
                    data = self._data
                else:
                    self._event, self._id, self._comments = None, None, []
            elif line.startswith("data:"):
                value = line[6:] if line[5:6] == " " else line[5:]  # (startswith(" ", 5) parses its arguments slowly)
                if i < count and not lines[i] and not data and self._id is None and not self._comments:
                    # the usual event, one data line and its blank line: dispatched here, as _dispatch would
                    events.append(Event(self._event or None, _payload(value)))
                    self._event = None
                    i += 1
                else:
                    data.append(value)
            elif line.startswith("event:"):
                self._event = line[7:] if line[6:7] == " " else line[6:]
            else:
                self._line(line, events)
                data = self._data

    def _line(self, line: str, events: list[Event]) -> None:
        if line == "":
            self._dispatch(events)
            return
        if line.startswith(":"):
            self._comments.append(line[1:].strip())
            return
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value

    def _dispatch(self, events: list[Event]) -> None:
        data = self._data
        if data:
            meta: dict[str, Any] = {}
            if self._id is not None:
                meta["id"] = self._id
            if self._comments:
                meta["comments"] = self._comments
            events.append(Event(self._event or None, _payload(data[0] if len(data) == 1 else "\n".join(data)), meta or NO_META))
        self._event, self._data, self._id, self._comments = None, [], None, []


def _line_end(buffer: bytes, start: int = 0) -> tuple[int, int] | None:
    """(end of the first line from `start`, start of the next) or None; a CR at the very end waits for a possible LF."""
    lf = buffer.find(b"\n", start)
    cr = buffer.find(b"\r", start, lf if lf != -1 else len(buffer))
    if cr != -1:
        if cr + 1 == len(buffer):
            return None
        return (cr, cr + 2) if buffer[cr + 1:cr + 2] == b"\n" else (cr, cr + 1)
    if lf != -1:
        return lf, lf + 1
    return None


class NDJSONParser:
    """One JSON value per line (application/x-ndjson); blank lines skipped."""

    def __init__(self, max_event: int = MAX_EVENT) -> None:
        self._buffer = b""
        self._max_event = max_event

    def feed(self, chunk: bytes) -> list[Event]:
        self._buffer += chunk
        lines = self._buffer.split(b"\n")
        self._buffer = lines.pop()
        if len(self._buffer) > self._max_event:
            raise _too_large(self._max_event)
        return [Event(None, _payload(line.decode("utf-8", "replace"))) for line in lines if line.strip()]

    def close(self) -> list[Event]:
        rest, self._buffer = self._buffer, b""
        return [Event(None, _payload(rest.decode("utf-8", "replace")))] if rest.strip() else []


class WholeBodyParser:
    """A vendor that does not stream: its whole answer is one event when the body ends, so that a client's
    stream can still be served (as one chunk) from it."""

    def __init__(self, max_event: int = MAX_EVENT) -> None:
        self._buffer = bytearray()
        self._max_event = max_event

    def feed(self, chunk: bytes) -> list[Event]:
        self._buffer += chunk
        if len(self._buffer) > self._max_event:  # the whole body is the one event
            raise _too_large(self._max_event)
        return []

    def close(self) -> list[Event]:
        text, self._buffer = self._buffer.decode("utf-8", "replace"), bytearray()
        return [Event(None, _payload(text))] if text.strip() else []


class JSONArrayParser:
    """One JSON array whose elements arrive over time (`[{...},\\n{...}]`): each element is an event."""

    def __init__(self, max_event: int = MAX_EVENT) -> None:
        self._max_event = max_event
        self._buffer = bytearray()
        self._started = False
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._start = -1
        self._pos = 0

    def feed(self, chunk: bytes) -> list[Event]:
        self._buffer += chunk
        events: list[Event] = []
        buf = self._buffer
        i = self._pos
        while i < len(buf):
            c = buf[i]
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif c == 0x5C:  # backslash
                    self._escaped = True
                elif c == 0x22:
                    self._in_string = False
            elif not self._started:
                if c == 0x5B:  # [
                    self._started = True
                elif c not in b" \t\r\n":
                    raise FramingError("a JSON-array stream must start with '['")
            elif c == 0x22:
                self._in_string = True
                if self._depth == 0:
                    self._start = i
            elif c in b"{[":
                if self._depth == 0:
                    self._start = i
                self._depth += 1
            elif c in b"}]":
                if self._depth == 0:  # the closing bracket of the outer array
                    i += 1
                    continue
                self._depth -= 1
                if self._depth == 0:
                    events.append(Event(None, _payload(buf[self._start:i + 1].decode("utf-8", "replace"))))
                    self._start = -1
            i += 1
        # keep only an unfinished element
        if self._start >= 0:
            del buf[:self._start]
            i -= self._start
            self._start = 0
        else:
            del buf[:i]
            i = 0
        if len(buf) > self._max_event:
            raise _too_large(self._max_event)
        self._pos = i
        return events

    def close(self) -> list[Event]:
        return []


_HEADER_VALUE: dict[int, Callable[[memoryview, int], tuple[Any, int]]] = {
    0: lambda b, i: (True, i),
    1: lambda b, i: (False, i),
    2: lambda b, i: (struct.unpack_from(">b", b, i)[0], i + 1),
    3: lambda b, i: (struct.unpack_from(">h", b, i)[0], i + 2),
    4: lambda b, i: (struct.unpack_from(">i", b, i)[0], i + 4),
    5: lambda b, i: (struct.unpack_from(">q", b, i)[0], i + 8),
    6: lambda b, i: (bytes(b[i + 2:i + 2 + struct.unpack_from(">H", b, i)[0]]), i + 2 + struct.unpack_from(">H", b, i)[0]),
    7: lambda b, i: (bytes(b[i + 2:i + 2 + struct.unpack_from(">H", b, i)[0]]).decode(), i + 2 + struct.unpack_from(">H", b, i)[0]),
    8: lambda b, i: (struct.unpack_from(">q", b, i)[0], i + 8),
    9: lambda b, i: (bytes(b[i:i + 16]).hex(), i + 16),
}


class EventStreamParser:
    """AWS vnd.amazon.eventstream: binary frames of prelude (total and header lengths + CRC32),
    typed headers, payload and message CRC32. The event name is the `:event-type` header, or
    the `:exception-type` header for an exception frame."""

    def __init__(self, max_event: int = MAX_EVENT) -> None:
        self._buffer = bytearray()
        self._max_event = max_event

    def feed(self, chunk: bytes) -> list[Event]:
        self._buffer += chunk
        events: list[Event] = []
        while len(self._buffer) >= 12:
            total, headers_len, prelude_crc = struct.unpack_from(">III", self._buffer, 0)
            if zlib.crc32(self._buffer[:8]) != prelude_crc:
                raise FramingError("eventstream prelude checksum mismatch")
            # the lengths are the vendor's word: checked before a byte is sliced by them
            if total < 16 or headers_len > total - 16:
                raise FramingError(f"eventstream frame lengths are impossible (total {total}, headers {headers_len})")
            if total > self._max_event:
                raise _too_large(self._max_event)
            if len(self._buffer) < total:
                break
            frame = memoryview(bytes(self._buffer[:total]))
            del self._buffer[:total]
            (message_crc,) = struct.unpack_from(">I", frame, total - 4)
            if zlib.crc32(frame[:total - 4]) != message_crc:
                raise FramingError("eventstream message checksum mismatch")
            try:
                headers = _headers(frame[12:12 + headers_len])
            except (IndexError, KeyError, struct.error, UnicodeDecodeError):
                raise FramingError("eventstream frame headers are malformed") from None
            payload = bytes(frame[12 + headers_len:total - 4])
            name = headers.get(":event-type") or headers.get(":exception-type")
            text = payload.decode("utf-8", "replace")
            events.append(Event(name, _payload(text) if text else {}, headers))
        return events

    def close(self) -> list[Event]:
        if self._buffer:
            raise FramingError(f"eventstream ended inside a frame ({len(self._buffer)} bytes left)")
        return []


def _headers(block: memoryview) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    i = 0
    while i < len(block):
        name_len = block[i]
        name = bytes(block[i + 1:i + 1 + name_len]).decode()
        i += 1 + name_len
        kind = block[i]
        value, i = _HEADER_VALUE[kind](block, i + 1)
        headers[name] = value
    return headers


def encode_eventstream(headers: dict[str, str], payload: bytes) -> bytes:
    """One eventstream frame with string headers: what a fake upstream or a self-test needs."""
    block = b"".join(
        bytes([len(k.encode())]) + k.encode() + b"\x07" + struct.pack(">H", len(v.encode())) + v.encode() for k, v in headers.items()
    )
    total = 12 + len(block) + len(payload) + 4
    prelude = struct.pack(">II", total, len(block))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + block + payload
    return message + struct.pack(">I", zlib.crc32(message))


PARSERS: dict[str, Callable[[], Any]] = {
    "sse": SSEParser,
    "ndjson": NDJSONParser,
    "json_array": JSONArrayParser,
    "aws_eventstream": EventStreamParser,
    "json": WholeBodyParser,
}


def parse_all(framing: str, body: bytes) -> list[Event]:
    """Every event of a complete body (self-tests and unit tests)."""
    parser = PARSERS[framing]()
    return [*parser.feed(body), *parser.close()]


__all__ = ["Event", "FramingError", "PARSERS", "parse_all", "encode_eventstream"]
