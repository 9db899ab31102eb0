"""Framing parsers fed byte by byte and in odd-sized pieces, against the recordings."""

from __future__ import annotations

import re
import struct
import zlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fakevendor import fixture_bytes
from oneapi.framing import PARSERS, Event, FramingError, SSEParser, encode_eventstream, parse_all


def feed_in_pieces(framing: str, raw: bytes, size: int) -> list:
    parser = PARSERS[framing]()
    events = []
    for i in range(0, len(raw), size):
        events.extend(parser.feed(raw[i:i + size]))
    return events + parser.close()


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_sse_named_events_with_pings(size: int) -> None:
    events = feed_in_pieces("sse", fixture_bytes("anthropic/stream_text_raw.sse"), size)
    assert [e.name for e in events] == ["message_start", "content_block_start", "ping", "content_block_delta", "content_block_stop",
                                        "message_delta", "message_stop"]
    assert events[3].data["delta"]["text"] == "2"


@pytest.mark.parametrize("size", [1, 5])
def test_sse_crlf_framing_without_terminator(size: int) -> None:
    events = feed_in_pieces("sse", fixture_bytes("gemini/stream_generate_content_alt_sse_text.sse"), size)
    assert [e.data["candidates"][0]["content"]["parts"][0]["text"] for e in events] == ["The", " capital of France", " is Paris.\n"]


def test_sse_comments_no_space_multiline_and_done() -> None:
    raw = b": OPENROUTER PROCESSING\n\nid:7\nevent:result\n:HTTP_STATUS/200\ndata:{\"a\":\ndata: 1}\n\ndata: [DONE]\r\rdata: tail"
    events = parse_all("sse", raw)
    assert events[0].name == "result" and events[0].data == {"a": 1} and events[0].meta["id"] == "7"
    assert events[1].data == "[DONE]"
    assert events[2].data == "tail"  # flushed at close


SSE_PIECES = st.sampled_from([b"data: ", b"data:", b"event: ", b"id: ", b": note", b"\n", b"\r", b"\r\n", b"\n\n", b'{"a": 1}', b"x",
                               "\u00e9\u4e2d".encode(), b"\xe2\x82", b"\xff", b"[DONE]", b"retry: 5"])


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(SSE_PIECES, max_size=30), cuts=st.lists(st.integers(0, 200), max_size=6))
def test_sse_events_do_not_depend_on_where_reads_end(pieces: list[bytes], cuts: list[int]) -> None:
    raw = b"".join(pieces)
    whole = PARSERS["sse"]()
    expected = whole.feed(raw) + whole.close()
    parser = PARSERS["sse"]()
    events, start = [], 0
    for cut in sorted({min(c, len(raw)) for c in cuts}):
        events.extend(parser.feed(raw[start:cut]))
        start = cut
    events.extend(parser.feed(raw[start:]))
    assert events + parser.close() == expected


def test_sse_lines_decode_alike_with_and_without_carriage_returns() -> None:
    broken = b"data: \xe2\x82\ndata: \xc3\n\nevent: e\xff\ndata: 1\n\n"
    lf_only = parse_all("sse", broken)
    crlf = parse_all("sse", broken.replace(b"\n", b"\r\n"))
    assert lf_only == crlf
    assert lf_only[0].data == "\ufffd\n\ufffd" and lf_only[1].name == "e\ufffd"


_LINE_END = re.compile(rb"\r\n|\n|\r")


def reference_events(raw: bytes, final: bool) -> list[tuple[Any, Any, dict[str, Any]]]:
    """Every event that the bytes `raw` complete, read from scratch per the WHATWG rules, written apart from
    framing.py: lines end at CRLF, LF or CR (a CR that is the last byte so far may be the first half of a CRLF,
    so its line waits); each line decodes on its own; a blank line dispatches. At the end (`final`) the unended
    last line counts too, and whatever data is pending goes out; `id` does not carry over to the next event."""
    lines, start = [], 0
    for end in _LINE_END.finditer(raw):
        if end.group() == b"\r" and end.end() == len(raw) and not final:
            break
        lines.append(raw[start:end.start()])
        start = end.end()
    if final and start < len(raw):
        lines.append(raw[start:])
    events: list[tuple[Any, Any, dict[str, Any]]] = []
    name, data, ident, comments = None, [], None, []
    for line in [line.decode("utf-8", "replace") for line in lines] + ([""] if final else []):
        if line.startswith(":"):
            comments.append(line[1:].strip())
            continue
        if line:
            field, _, value = line.partition(":")
            value = value[1:] if value[:1] == " " else value
            if field == "data":
                data.append(value)
            elif field == "event":
                name = value
            elif field == "id":
                ident = value
            continue
        if data:
            text = "\n".join(data)
            try:
                payload = orjson.loads(text)
            except orjson.JSONDecodeError:
                payload = text
            meta = {**({"id": ident} if ident is not None else {}), **({"comments": comments} if comments else {})}
            events.append((name or None, payload, meta))
        name, data, ident, comments = None, [], None, []
    return events


def reference_per_read(raw: bytes, cuts: list[int]) -> list[list[tuple[Any, Any, dict[str, Any]]]]:
    """What each read (and the close) should give: the events the bytes so far complete, less those already out."""
    reads, sent = [], 0
    for cut in sorted({min(c, len(raw)) for c in cuts}) + [len(raw)]:
        complete = reference_events(raw[:cut], final=False)
        reads.append(complete[sent:])
        sent = len(complete)
    reads.append(reference_events(raw, final=True)[sent:])
    return reads


def events_per_read(parser: Any, raw: bytes, cuts: list[int]) -> list[list[tuple[Any, Any, dict[str, Any]]]]:
    """What each read (and the close) gives, as plain values."""
    reads, start = [], 0
    for cut in sorted({min(c, len(raw)) for c in cuts}) + [len(raw)]:
        reads.append(parser.feed(raw[start:cut]))
        start = cut
    reads.append(parser.close())
    return [[(e.name, e.data, dict(e.meta)) for e in events] for events in reads]


# pieces of lines, whole lines and whole events, so that random sequences hit both the usual event shapes and every odd one
SSE_PARTS = st.sampled_from([
    b"data: ", b"data:", b"data", b"event: ", b"event:", b"event", b"id: ", b"id:", b": note", b":", b"retry: 5", b"other: x",
    b"\n", b"\r", b"\r\n", b"\n\n", b"\r\n\r\n", b"\r\r", b" ", b"  ",
    b'{"a": 1}', b'{"a":', b" [1, 2]}", b"42", b'"s"', b"x", b"[DONE]", b"message_start", "\u00e9\u4e2d".encode(), b"\xe2\x82", b"\xff",
    b'data: {"type": "ping"}\n\n', b'event: content_block_delta\ndata: {"delta": {"text": "Hi"}}\n\n', b"event:ping\ndata:{}\n\n",
    b"data: [DONE]\n\n", b"data: not json\n\n", b"event: e\r\ndata: 1\r\n\r\n", b"id: 9\ndata: 1\n\n", b": keep-alive\n\n",
])


@settings(max_examples=400, deadline=None)
@given(pieces=st.lists(SSE_PARTS, max_size=40), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_sse_parser_agrees_with_the_reference_read_for_read(pieces: list[bytes], cuts: list[int]) -> None:
    raw = b"".join(pieces)
    assert events_per_read(SSEParser(), raw, cuts) == reference_per_read(raw, cuts)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100, 1 << 20])
@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b"\r"])
def test_sse_parser_agrees_with_the_reference_on_recordings(size: int, line_end: bytes) -> None:
    raw = fixture_bytes("anthropic/stream_text_raw.sse").replace(b"\r\n", b"\n").replace(b"\n", line_end)
    cuts = list(range(size, len(raw), size))
    assert events_per_read(SSEParser(), raw, cuts) == reference_per_read(raw, cuts)


def test_a_carriage_return_that_ends_the_stream_ends_its_line() -> None:
    assert [e.data for e in parse_all("sse", b"data: x\r")] == ["x"]  # it used to keep the CR: "x\r"
    assert [e.data for e in parse_all("sse", b"data: x\n\r")] == ["x"]
    assert events_per_read(SSEParser(), b"data: \r", []) == reference_per_read(b"data: \r", []) == [[], [(None, "", {})]]


def test_events_compare_by_value_with_or_without_meta() -> None:
    assert Event("a", {"x": 1}) == Event("a", {"x": 1}, {})
    assert Event("a", {"x": 1}) != Event("a", {"x": 1}, {"id": "7"}) and Event("a", 1) != Event("b", 1)
    assert dict(Event(None, "x").meta) == {} and Event(None, "x", {"id": "7"}).meta["id"] == "7"


def test_ndjson_lines_split_anywhere() -> None:
    body = b'{"a": 1}\n\n{"b": 2}\n{"c": 3}'
    assert [e.data for e in feed_in_pieces("ndjson", body, 3)] == [{"a": 1}, {"b": 2}, {"c": 3}]


@pytest.mark.parametrize("size", [1, 5, 4096])
def test_json_framing_makes_a_whole_body_one_event_at_its_end(size: int) -> None:
    raw = fixture_bytes("openai/chat_completion_text.json")
    parser = PARSERS["json"]()
    early = [event for i in range(0, len(raw), size) for event in parser.feed(raw[i:i + size])]
    assert early == []  # nothing before the body is whole: a pretty-printed body is not cut at its lines
    assert parser.close() == [Event(None, orjson.loads(raw))]
    assert parse_all("json", b"  \n") == []


def test_json_array_stream_recorded() -> None:
    transcript = fixture_bytes("gemini/stream_generate_content_json_array_no_alt_sse.httprr")
    body = transcript[transcript.index(b"\n[{") + 1:]
    events = feed_in_pieces("json_array", body, 11)
    assert len(events) == 13
    assert events[0].data["candidates"][0]["content"]["parts"][0]["text"] == "C"
    assert events[-1].data["usageMetadata"]["candidatesTokenCount"] == 578


def test_json_array_strings_with_brackets() -> None:
    events = parse_all("json_array", b'[{"t": "a}]\\"["}, {"t": 2}]')
    assert [e.data for e in events] == [{"t": 'a}]"['}, {"t": 2}]


@pytest.mark.parametrize("size", [1, 100])
def test_aws_eventstream_recorded(size: int) -> None:
    events = feed_in_pieces("aws_eventstream", fixture_bytes("bedrock/converse_stream_eventstream.bin"), size)
    assert events[0].name == "messageStart" and events[0].data["role"] == "assistant"
    assert events[-1].name == "metadata" and events[-1].data["usage"]["totalTokens"] == 95
    assert events[0].meta[":message-type"] == "event"


def test_aws_eventstream_round_trip_and_checksums() -> None:
    frame = encode_eventstream({":exception-type": "throttlingException", ":message-type": "exception"}, b'{"message": "slow down"}')
    [event] = parse_all("aws_eventstream", frame)
    assert event.name == "throttlingException" and event.data == {"message": "slow down"}
    broken = frame[:-1] + bytes([frame[-1] ^ 1])
    with pytest.raises(FramingError, match="checksum"):
        parse_all("aws_eventstream", broken)
    with pytest.raises(FramingError, match="inside a frame"):
        parse_all("aws_eventstream", frame[:-3])


ENDLESS = {
    "sse": [b"data: {\"a\": \"" + b"x" * 700],  # an event that never ends
    "sse_cr": [b"data: a\r", b"data: " + b"x" * 700 + b"\r"],  # lone-CR lines, read one at a time, never a blank one
    "ndjson": [b"{\"a\": \"" + b"x" * 700],
    "json_array": [b"[{\"a\": \"" + b"x" * 700],
    "aws_eventstream": [encode_eventstream({":event-type": "chunk"}, b"x" * 700)],
    "json": [b"{\"a\": \"" + b"x" * 700 + b"\"}"],  # a whole body is one event
}


@pytest.mark.parametrize("framing", ENDLESS)
@pytest.mark.parametrize("size", [1, 64, 4096])
def test_an_event_past_its_cap_is_a_framing_error(framing: str, size: int) -> None:
    parser = PARSERS[framing.removesuffix("_cr")](max_event=512)
    raw = b"".join(ENDLESS[framing])
    with pytest.raises(FramingError, match="larger than 512 bytes"):
        for i in range(0, len(raw), size):
            parser.feed(raw[i:i + size])
    # under the cap, the same framing reads as before
    small = PARSERS[framing.removesuffix("_cr")](max_event=4096)
    for i in range(0, len(raw), size):
        small.feed(raw[i:i + size])


def _prelude(total: int, headers: int) -> bytes:
    head = struct.pack(">II", total, headers)
    return head + struct.pack(">I", zlib.crc32(head))


@pytest.mark.parametrize("frame", [
    _prelude(8, 0) + b"\0" * 8,  # a total smaller than a frame can be
    _prelude(20, 1000) + b"\0" * 8,  # headers longer than the frame holding them
    _prelude(0xFFFFFFF0, 0),  # 4 GiB announced
])
def test_aws_eventstream_lengths_are_checked_before_use(frame: bytes) -> None:
    with pytest.raises(FramingError):
        PARSERS["aws_eventstream"]().feed(frame)


def test_aws_eventstream_malformed_headers_are_a_framing_error() -> None:
    good = encode_eventstream({":event-type": "chunk"}, b"{}")
    headers_len = struct.unpack_from(">I", good, 4)[0]
    for broken in (b"\x05ab", b"\x02ab\x63", b"\x03ab\xff\x07\x00\x01\xff"):  # name past the block, unknown type, bad UTF-8
        body = broken.ljust(headers_len, b"\0")[:headers_len]
        frame = good[:12] + body + good[12 + headers_len:-4]
        frame += struct.pack(">I", zlib.crc32(frame))
        with pytest.raises(FramingError, match="headers"):
            PARSERS["aws_eventstream"]().feed(frame)
