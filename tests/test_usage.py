"""Usage read from recorded vendor payloads, normalised; estimates; prices."""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator

import pytest

from fakevendor import fixture_bytes, fixture_json, sse_events
from oneapi.config import Price
from oneapi.usage import (
    HIDE_USAGE_CHUNK, StreamTap, Usage, cost_nano, estimate_prompt_tokens, estimate_text_tokens, normalise_usage, requested_completion_tokens,
    usage_from_body, usage_from_sse,
)


@pytest.mark.parametrize("fixture, expected", [
    ("openai/chat_completion_tool_calls.json", Usage(68, 12, 0, 0)),
    ("openai/completions.json", Usage(14, 16)),
    ("openai/embeddings_float.json", Usage(12, 0)),
    ("deepseek/chat_reasoning.json", Usage(18, 345, 0, 315)),
    ("zhipu/v4_chat_completion_reasoning.json", Usage(13, 437, 0, 427)),
    ("groq/chat_tool_call.json", Usage(218, 15)),
    ("mistral/chat_tool_call.json", Usage(124, 22)),
    ("ollama/openai_compat_chat_tool_calls.json", Usage(206, 194)),
])
def test_usage_of_recorded_bodies(fixture: str, expected: Usage) -> None:
    assert usage_from_body(fixture_bytes(fixture)) == expected
    # the cheap scan agrees with parsing the whole body
    assert normalise_usage(fixture_json(fixture)["usage"]) == expected


def test_body_without_usage_has_none() -> None:
    assert usage_from_body(fixture_bytes("openai/images_generations_b64.json")) is None


def test_usage_text_inside_a_string_is_not_usage() -> None:
    recorded = fixture_json("openai/chat_completion_text.json")
    recorded["choices"][0]["message"]["content"] = 'say "usage": {"prompt_tokens": 999}'
    assert usage_from_body(json.dumps(recorded).encode()) == Usage(24, 8)


def _sse_from_jsonl(name: str) -> bytes:
    lines = [line for line in fixture_bytes(name).decode().splitlines() if line.strip()]
    return b"".join(f"data: {line}\n\n".encode() for line in lines) + b"data: [DONE]\n\n"


@pytest.mark.parametrize("stream, expected", [
    (fixture_bytes("openai/chat_stream_text_include_usage.sse"), Usage(78, 9)),
    (fixture_bytes("mistral/chat_stream_thinking.sse"), Usage(10, 232)),
    (fixture_bytes("zhipu/v4_chat_stream_reasoning.sse"), Usage(13, 564, 0, 561)),
    (_sse_from_jsonl("deepseek/chat_stream_tool_call.data.jsonl"), Usage(339, 83, 320, 39)),
    (_sse_from_jsonl("groq/chat_stream_tool_call.data.jsonl"), Usage(210, 15)),
    (_sse_from_jsonl("alibaba_dashscope/compat_stream_tool_call.data.jsonl"), Usage(295, 22)),
    (fixture_bytes("openrouter/stream_reasoning_details.sse"), None),
])
def test_usage_of_recorded_streams(stream: bytes, expected: Usage | None) -> None:
    found = usage_from_sse(stream)
    if expected is None:  # check the recording itself: whatever it reports must be found
        expected = normalise_usage(json.loads([e for e in sse_events(stream) if b'"usage"' in e][-1].split(b"data:", 1)[1])["usage"])
    assert found == expected


def test_vendor_extension_usage_is_found() -> None:
    """groq's older chunks carried usage only under x_groq."""
    events = [json.loads(line) for line in fixture_bytes("groq/chat_stream_tool_call.data.jsonl").decode().splitlines() if line.strip()]
    last = events[-1]
    del last["usage"]
    assert usage_from_sse(b"data: " + json.dumps(last).encode() + b"\n\ndata: [DONE]\n\n") == Usage(210, 15)


def test_messages_and_generate_content_usage_normalise() -> None:
    anthropic = fixture_json("anthropic/message_text.json")["usage"]
    found = normalise_usage(anthropic)
    assert found is not None and found.prompt_tokens >= anthropic["input_tokens"] and found.completion_tokens == anthropic["output_tokens"]
    gemini = fixture_json("gemini/generate_content_text_thoughts_tokens.json")["usageMetadata"]
    found = normalise_usage(gemini)
    assert found == Usage(gemini["promptTokenCount"], gemini["candidatesTokenCount"] + gemini.get("thoughtsTokenCount", 0),
                          0, gemini.get("thoughtsTokenCount", 0))


async def _chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def _drain(tap: StreamTap) -> bytes:
    return b"".join([chunk async for chunk in tap])


@pytest.mark.parametrize("size", [7, 64, 100_000])
def test_tap_strips_only_the_usage_chunk_it_asked_for(size: int) -> None:
    recorded = fixture_bytes("openai/chat_stream_text_include_usage.sse")
    events = sse_events(recorded)
    usage_event = [e for e in events if b'"choices":[]' in e]
    assert len(usage_event) == 1

    tap = StreamTap(_chunked(recorded, size), HIDE_USAGE_CHUNK)
    out = asyncio.run(_drain(tap))

    assert out == b"".join(e for e in events if e not in usage_event)
    assert tap.usage() == Usage(78, 9)
    assert tap.completed


def test_tap_without_strip_passes_bytes_unchanged() -> None:
    recorded = fixture_bytes("openai/chat_stream_tool_call_include_usage.sse")
    tap = StreamTap(_chunked(recorded, 33), None)
    assert asyncio.run(_drain(tap)) == recorded
    assert tap.usage() is not None and tap.usage().prompt_tokens > 0


def test_tap_keeps_usage_of_finish_chunks() -> None:
    """mistral reports usage on its finish chunk, which carries choices: never strip it."""
    recorded = fixture_bytes("mistral/chat_stream_thinking.sse")
    tap = StreamTap(_chunked(recorded, 50), HIDE_USAGE_CHUNK)
    assert asyncio.run(_drain(tap)) == recorded
    assert tap.usage() == Usage(10, 232)


def test_estimates_are_offline_and_scale_with_script() -> None:
    assert estimate_text_tokens("hello world, how are you") == 6
    assert estimate_text_tokens("你好世界") == 4
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 400},
                                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}
    assert 900 <= estimate_prompt_tokens(body) <= 1000
    assert requested_completion_tokens({"max_tokens": 100, "n": 2}) == 200
    assert requested_completion_tokens({"max_completion_tokens": 50}) == 50
    assert requested_completion_tokens({}) is None


def test_cost_counts_cached_input_at_its_price() -> None:
    price = Price(input=0.27, output=1.10, cached_input=0.07)
    usage = Usage(339, 83, 320, 39)  # deepseek's recorded stream
    expected = (19 * 0.27 + 320 * 0.07 + 83 * 1.10) / 1e6
    assert cost_nano(usage, price) == round(expected * 1e9)
    assert cost_nano(usage, price, ratio=2.0) == round(expected * 2e9)
    assert cost_nano(usage, Price(input=1.0, output=2.0)) == round((339 * 1.0 + 83 * 2.0) * 1000)


@pytest.mark.parametrize("size", [9, 100_000])
def test_tap_strips_the_usage_chunk_of_a_crlf_framed_stream_as_it_goes(size: int) -> None:
    """An upstream framing events with CRLF still has its usage chunk hidden, and every event reaches the client
    as soon as it is complete, not held until the stream ends."""
    recorded = fixture_bytes("openai/chat_stream_text_include_usage.sse")
    crlf = recorded.replace(b"\n", b"\r\n")
    events = sse_events(crlf)
    wanted = b"".join(e for e in events if b'"choices":[]' not in e)

    async def relay() -> list[bytes]:
        async def upstream() -> AsyncIterator[bytes]:
            for event in events:
                for i in range(0, len(event), size):
                    yield event[i:i + size]
        return [chunk async for chunk in StreamTap(upstream(), HIDE_USAGE_CHUNK)]

    chunks = asyncio.run(relay())
    assert b"".join(chunks) == wanted
    assert len(chunks) >= len(events) - 1  # each complete event went out on its own, none waited for the end
