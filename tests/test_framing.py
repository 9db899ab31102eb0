"""Framing parsers fed byte by byte and in odd-sized pieces, against the recordings."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fakevendor import fixture_bytes
from oneapi.framing import PARSERS, FramingError, encode_eventstream, parse_all


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


def test_ndjson_lines_split_anywhere() -> None:
    body = b'{"a": 1}\n\n{"b": 2}\n{"c": 3}'
    assert [e.data for e in feed_in_pieces("ndjson", body, 3)] == [{"a": 1}, {"b": 2}, {"c": 3}]


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
