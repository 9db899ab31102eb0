"""End to end through translated providers: the official openai SDK -> gateway (Granian) -> a fake vendor
replaying that vendor's recorded payloads; the request the fake vendor received is checked too.

One gateway serves every vendor here (one channel per provider file), to keep the run lean.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from types import SimpleNamespace
from typing import Any, Iterator

import openai
import pytest

from conftest import CLIENT_KEY, PROVIDERS_DIR, UPSTREAM_KEY, GatewayProcess, serve_for_module
from fakevendor import FakeVendor, InMemoryReply, Reply, fixture_bytes, fixture_json, sse_events
from oneapi.mapping import Compiler
from oneapi.providers import load_providers
from oneapi.streams import StreamTranslator, compile_stream
from oneapi.framing import PARSERS
from oneapi.redaction import Redaction
from oneapi.translate import _first_chunks, _translate_stream

AWS_KEY = "AKIDEXAMPLE|wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"

CHANNELS = [
    # (provider, models, key)
    ("anthropic", ["claude-sonnet-4-5", "claude-haiku-4-5"], UPSTREAM_KEY),
    ("gemini", ["gemini-2.0-flash-exp", "gemini-2.5-flash", "text-embedding-004", "imagen-4.0-generate-001"], UPSTREAM_KEY),
    ("cohere", ["command-r7b-12-2024", "command-a-03-2025"], UPSTREAM_KEY),
    ("ollama-native", ["gemma3:1b", "llama3.2"], None),
    ("bedrock", ["us.amazon.nova-micro-v1:0"], AWS_KEY),
    ("zhipu-jwt", ["glm-4.5"], "zhipuid.zhipusecret"),
    ("baidu-ernie", ["ernie_bot_8k"], "baidu-ak|baidu-sk"),
    ("hunyuan-native", ["hunyuan-turbo"], "AKIDtencent|tencentsecret"),
]


@pytest.fixture(scope="module")
def vendor() -> Iterator[FakeVendor]:
    with FakeVendor() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(vendor: FakeVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {
        "listen": "127.0.0.1:3000",
        "providers_dir": str(PROVIDERS_DIR),
        "channels": [
            {"name": provider, "provider": provider, "base_url": vendor.base_url, "models": models, **({"keys": [key]} if key else {}),
             **({"options": {"token_url": vendor.base_url + "/oauth/2.0/token"}} if provider == "baidu-ernie" else {})}
            for provider, models, key in CHANNELS
        ],
        "tokens": [{"name": "tester", "key": CLIENT_KEY}],
    }
    yield from serve_for_module(tmp_path_factory, "translate", config)


@pytest.fixture
def sdk(gateway: GatewayProcess, vendor: FakeVendor) -> openai.OpenAI:
    vendor.received.clear()
    return openai.OpenAI(base_url=gateway.url("/v1"), api_key=CLIENT_KEY, max_retries=0, timeout=20)


def jsonl_as_sse(name: str, named: bool = True) -> list[bytes]:
    """A `.data.jsonl` recording as the SSE events it was on the wire (event name = payload type)."""
    events = []
    for line in fixture_bytes(name).decode().splitlines():
        if line.strip():
            head = f"event: {json.loads(line)['type']}\n" if named else ""
            events.append(f"{head}data: {line}\n\n".encode())
    return events


def collect(stream: Any) -> dict[str, Any]:
    """Text, tool calls (by index), finish_reason and usage assembled from SDK chunks."""
    text, reasoning, calls, finish, usage, roles = [], [], {}, None, None, []
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            if delta.role:
                roles.append(delta.role)
            if delta.content:
                text.append(delta.content)
            if getattr(delta, "reasoning_content", None):
                reasoning.append(delta.reasoning_content)
            for call in delta.tool_calls or ():
                slot = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
                if call.id:
                    slot["id"] = call.id
                if call.function and call.function.name:
                    slot["name"] += call.function.name
                if call.function and call.function.arguments:
                    slot["arguments"] += call.function.arguments
            if choice.finish_reason:
                finish = choice.finish_reason
    return {"text": "".join(text), "reasoning": "".join(reasoning), "calls": [calls[i] for i in sorted(calls)],
            "finish": finish, "usage": usage, "roles": roles}


# --- anthropic ---------------------------------------------------------------

def test_anthropic_text(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/messages", "anthropic/message_text.json")
    recorded = fixture_json("anthropic/message_text.json")

    completion = sdk.chat.completions.create(model="claude-sonnet-4-5", messages=[
        {"role": "system", "content": "Be kind."}, {"role": "user", "content": "How are you?"}])

    assert completion.choices[0].message.content == recorded["content"][0]["text"]
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 12 and completion.usage.completion_tokens == 29 and completion.usage.total_tokens == 41
    sent = vendor.requests_to("/v1/messages")[-1]
    assert sent.headers["x-api-key"] == UPSTREAM_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert sent.json() == {"model": "claude-sonnet-4-5", "max_tokens": 4096, "system": [{"type": "text", "text": "Be kind."}],
                           "messages": [{"role": "user", "content": [{"type": "text", "text": "How are you?"}]}]}


def test_anthropic_tool_call(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/messages", "anthropic/message_tool_use.json")
    recorded = fixture_json("anthropic/message_tool_use.json")["content"][0]

    completion = sdk.chat.completions.create(
        model="claude-haiku-4-5", messages=[{"role": "user", "content": "Weather?"}],
        tools=[{"type": "function", "function": {"name": "json", "parameters": {"type": "object"}}}], tool_choice="required")

    call = completion.choices[0].message.tool_calls[0]
    assert call.id == recorded["id"]
    assert call.function.name == recorded["name"]
    assert json.loads(call.function.arguments) == recorded["input"]
    assert completion.choices[0].finish_reason == "tool_calls"
    sent = vendor.requests_to("/v1/messages")[-1].json()
    assert sent["tools"] == [{"name": "json", "input_schema": {"type": "object"}}]
    assert sent["tool_choice"] == {"type": "any"}


def test_anthropic_stream_text(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_sse("/v1/messages", "anthropic/stream_text_raw.sse")

    got = collect(sdk.chat.completions.create(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "1+1?"}],
                                              stream=True, stream_options={"include_usage": True}))

    assert got["roles"] == ["assistant"]
    assert got["text"] == "2"
    assert got["finish"] == "stop"
    assert (got["usage"].prompt_tokens, got["usage"].completion_tokens, got["usage"].total_tokens) == (20, 5, 25)
    assert vendor.requests_to("/v1/messages")[-1].json()["stream"] is True


def test_anthropic_stream_tool_call(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply("POST", "/v1/messages", Reply(chunks=jsonl_as_sse("anthropic/stream_tool_use.data.jsonl"), content_type="text/event-stream"))

    got = collect(sdk.chat.completions.create(model="claude-haiku-4-5", messages=[{"role": "user", "content": "Weather?"}],
                                              stream=True, stream_options={"include_usage": True}))

    assert got["calls"] == [{"id": "toolu_01KFbKqPYSuAKujiL6mTfzYA", "name": "json", "arguments": got["calls"][0]["arguments"]}]
    assert json.loads(got["calls"][0]["arguments"]) == {"elements": [{"location": "San Francisco", "temperature": 58, "condition": "sunny"}]}
    assert got["finish"] == "tool_calls"
    assert (got["usage"].prompt_tokens, got["usage"].completion_tokens) == (849, 47)


def test_anthropic_stream_without_usage_request_has_no_usage_chunk(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_sse("/v1/messages", "anthropic/stream_text_raw.sse")

    chunks = list(sdk.chat.completions.create(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "1+1?"}], stream=True))

    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)


def test_anthropic_in_band_stream_error_raises_in_the_sdk(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    events = jsonl_as_sse("anthropic/stream_text.data.jsonl")[:3]
    events.append(b"event: error\ndata: " + fixture_bytes("anthropic/error_529_overloaded.json") + b"\n\n")
    vendor.reply("POST", "/v1/messages", Reply(chunks=events, content_type="text/event-stream"))

    with pytest.raises(openai.APIError) as caught:
        list(sdk.chat.completions.create(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert "Overloaded" in str(caught.value)


def translate_reads(stream: Any, reads: list[bytes]) -> list[bytes]:
    """What `_translate_stream` sends the client, piece by piece, for a body arriving in `reads`."""
    channel = SimpleNamespace(name="c", options={})
    translator = StreamTranslator(stream, {"model": "m", "stream_options": {"include_usage": True}}, {})

    async def drain() -> list[bytes]:
        reply, parser, nothing = InMemoryReply(reads), PARSERS[stream.framing](), Redaction()
        opening = await _first_chunks(channel, translator, parser, reply, asyncio.get_running_loop().time() + 5, nothing)  # type: ignore[arg-type]
        assert isinstance(opening, tuple), opening
        pieces = _translate_stream(channel, translator, parser, reply, opening, nothing, 5.0, lambda ok: None)  # type: ignore[arg-type]
        return [piece async for piece in pieces]
    return asyncio.run(drain())


def test_each_upstream_read_goes_out_as_one_piece_of_whole_events() -> None:
    stream = load_providers(PROVIDERS_DIR)[0]["anthropic"].operations["chat"].stream
    raw = fixture_bytes("anthropic/stream_text_raw.sse")
    whole = translate_reads(stream, [raw])
    assert len(whole) == 2 and whole[0].count(b"data: ") == 4 and whole[1] == b"data: [DONE]\n\n"  # the end is a read of its own
    cut = raw.index(b"event: message_delta")  # (the reads before the first text are held as one opening piece)
    pieces = translate_reads(stream, [raw[:cut], raw[cut:cut + 5], raw[cut + 5:]])
    assert len(pieces) == 3  # the read that completes no event sends nothing
    assert all(piece.startswith(b"data: ") and piece.endswith(b"\n\n") for piece in pieces)
    assert re.sub(rb'"created":\d+', b"", b"".join(pieces)) == re.sub(rb'"created":\d+', b"", b"".join(whole))


def test_a_mapping_error_mid_read_follows_the_events_before_it() -> None:
    stream = compile_stream({"rules": [{"emit": "{choices: [{delta: {content: to_string(length(n))}}]}"}]}, Compiler())
    pieces = translate_reads(stream, [b'data: {"n": "ab"}\n\ndata: {"n": 5}\n\ndata: {"n": "c"}\n\n'])
    events = [json.loads(line[6:]) for piece in pieces for line in piece.split(b"\n\n") if line]
    assert [e["choices"][0]["delta"]["content"] for e in events[:-1]] == ["2"]
    assert events[-1]["error"]["code"] == "upstream_bad_response" and "length()" in events[-1]["error"]["message"]


def test_anthropic_client_error_keeps_its_status_and_message(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/messages", "anthropic/error_400_prompt_too_long.json", status=400)

    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "long"}])
    assert caught.value.body["message"] == "prompt is too long: 219898 tokens > 200000 maximum"
    assert caught.value.body["type"] == "invalid_request_error"


def test_anthropic_overload_is_a_retryable_upstream_error(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/messages", "anthropic/error_529_overloaded.json", status=529)

    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502
    assert "Overloaded" in caught.value.body["message"]


# --- gemini ------------------------------------------------------------------

GEMINI = "/v1beta/models/{model}:{method}"


def test_gemini_tool_call_and_result_round_trip(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_fixture(GEMINI.format(model="gemini-2.0-flash-exp", method="generateContent"), "gemini/generate_content_function_call.json")
    recorded_request = fixture_json("gemini/generate_content_function_call.request.json")["body"]
    declaration = recorded_request["tools"]["function_declarations"][0]
    tools = [{"type": "function", "function": declaration}]

    first = sdk.chat.completions.create(model="gemini-2.0-flash-exp", messages=[{"role": "user", "content": "What is the capital of France?"}],
                                        tools=tools)

    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_capital"
    assert json.loads(call.function.arguments) == {"country": "France"}
    assert first.choices[0].finish_reason == "tool_calls"
    assert (first.usage.prompt_tokens, first.usage.completion_tokens, first.usage.total_tokens) == (23, 5, 28)
    sent = vendor.received[-1]
    assert sent.headers["x-goog-api-key"] == UPSTREAM_KEY
    assert sent.json()["contents"] == recorded_request["contents"]
    assert sent.json()["tools"] == [{"functionDeclarations": [declaration]}]

    vendor.reply_fixture(GEMINI.format(model="gemini-2.0-flash-exp", method="generateContent"), "gemini/generate_content_after_function_response.json")
    second = sdk.chat.completions.create(model="gemini-2.0-flash-exp", tools=tools, messages=[
        {"role": "user", "content": "What is the capital of France?"},
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"return_value": "Paris"})},
    ])

    assert second.choices[0].message.content == "The capital of France is Paris.\n"
    assert second.choices[0].finish_reason == "stop"
    recorded_followup = fixture_json("gemini/generate_content_after_function_response.request.json")["body"]
    assert vendor.received[-1].json()["contents"] == recorded_followup["contents"]


def test_gemini_stream_text(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_sse(GEMINI.format(model="gemini-2.0-flash-exp", method="streamGenerateContent"), "gemini/stream_generate_content_alt_sse_text.sse")
    recorded_request = fixture_json("gemini/stream_generate_content_alt_sse_text.request.json")["body"]

    got = collect(sdk.chat.completions.create(
        model="gemini-2.0-flash-exp", stream=True, stream_options={"include_usage": True}, temperature=0.0,
        messages=[{"role": "system", "content": "You are a helpful chatbot."}, {"role": "user", "content": "What is the capital of France?"}]))

    assert got["text"] == "The capital of France is Paris.\n"
    assert got["finish"] == "stop"
    assert (got["usage"].prompt_tokens, got["usage"].completion_tokens, got["usage"].total_tokens) == (13, 8, 21)
    sent = vendor.received[-1]
    assert sent.query == {"alt": "sse"}
    assert sent.json()["contents"] == recorded_request["contents"]
    assert sent.json()["systemInstruction"]["parts"] == recorded_request["systemInstruction"]["parts"]
    assert sent.json()["generationConfig"] == recorded_request["generationConfig"]


def test_gemini_stream_arrives_event_by_event(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    events = sse_events(fixture_bytes("gemini/stream_generate_content_alt_sse_text.sse"))
    vendor.reply("POST", GEMINI.format(model="gemini-2.0-flash-exp", method="streamGenerateContent"),
                 Reply(chunks=events, delay=0.4, content_type="text/event-stream"))

    import time
    started = time.monotonic()
    stream = sdk.chat.completions.create(model="gemini-2.0-flash-exp", messages=[{"role": "user", "content": "hi"}], stream=True)
    first = next(iter(stream))
    first_at = time.monotonic() - started
    list(stream)
    total = time.monotonic() - started

    assert first.choices[0].delta.role == "assistant"
    assert first_at < total - 0.6  # the translator does not wait for the whole stream


def test_gemini_thoughts_usage(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_fixture(GEMINI.format(model="gemini-2.5-flash", method="generateContent"), "gemini/generate_content_text_thoughts_tokens.json")

    completion = sdk.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "Hello!"}])

    assert completion.choices[0].message.content == "Hello! How can I help you today?"
    assert completion.usage.completion_tokens == 9 + 34
    assert completion.usage.completion_tokens_details.reasoning_tokens == 34
    assert completion.usage.total_tokens == 52


def test_gemini_embeddings(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_json(GEMINI.format(model="text-embedding-004", method="batchEmbedContents"),
                      {"embeddings": [{"values": [0.25, -0.5]}, {"values": [1.0, 0.0]}]})

    result = sdk.embeddings.create(model="text-embedding-004", input=["a", "b"])

    assert [d.embedding for d in result.data] == [[0.25, -0.5], [1.0, 0.0]]
    assert vendor.received[-1].json()["requests"][1] == {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}}


def test_imagen_images_through_the_sdk(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32).decode()
    vendor.reply_json(GEMINI.format(model="imagen-4.0-generate-001", method="predict"),
                      {"predictions": [{"mimeType": "image/png", "bytesBase64Encoded": png}, {"raiFilteredReason": "filtered"}]})

    result = sdk.images.generate(model="imagen-4.0-generate-001", prompt="Robot holding a red skateboard", n=2, size="1024x1024")

    assert [image.b64_json for image in result.data] == [png]
    assert result.created > 0
    sent = vendor.received[-1]
    assert sent.json() == {"instances": [{"prompt": "Robot holding a red skateboard"}], "parameters": {"sampleCount": 2, "aspectRatio": "1:1"}}
    assert sent.headers["x-goog-api-key"] == UPSTREAM_KEY


def test_gemini_bad_key_is_not_the_clients_fault(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_fixture(GEMINI.format(model="gemini-2.5-flash", method="generateContent"), "gemini/error_400_api_key_invalid.json", status=400)

    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "Hello!"}])
    assert caught.value.status_code == 502
    assert caught.value.body["type"] == "upstream_error"
    assert "API key not valid" in caught.value.body["message"]
    assert UPSTREAM_KEY not in json.dumps(caught.value.body)


# --- cohere ------------------------------------------------------------------

def test_cohere_text(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v2/chat", "cohere/v2_chat_text.json")

    completion = sdk.chat.completions.create(model="command-r7b-12-2024", messages=[{"role": "user", "content": "hello"}], stream=False)

    assert completion.choices[0].message.content == "Hello! How can I assist you today?"
    assert completion.choices[0].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (496, 11, 507)
    sent = vendor.requests_to("/v2/chat")[-1]
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent.json() == fixture_json("cohere/v2_chat_text.request.json")["body"]


def test_cohere_stream_tool_calls(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply("POST", "/v2/chat", Reply(chunks=jsonl_as_sse("cohere/v2_chat_stream_tool_call.data.jsonl"), content_type="text/event-stream"))

    got = collect(sdk.chat.completions.create(model="command-a-03-2025", messages=[{"role": "user", "content": "SF?"}], stream=True,
                                              stream_options={"include_usage": True}))

    assert [(c["id"], c["name"], json.loads(c["arguments"])) for c in got["calls"]] == [
        ("weather_e8p4pn45zt0t", "weather", {"location": "San Francisco"}),
        ("cityAttractions_pyxssbwnq9fq", "cityAttractions", {"city": "San Francisco"}),
    ]
    assert got["reasoning"].startswith("I will use the weather tool")
    assert got["finish"] == "tool_calls"
    assert (got["usage"].prompt_tokens, got["usage"].completion_tokens) == (1549, 95)
    assert vendor.requests_to("/v2/chat")[-1].json()["stream"] is True


# --- ollama native -----------------------------------------------------------

def recorded_ndjson_lines() -> list[bytes]:
    transcript = fixture_bytes("ollama/api_chat_stream_ndjson.httprr").decode()
    return [(line + "\n").encode() for line in transcript.splitlines() if line.startswith("{") and '"created_at"' in line]


def test_ollama_native_stream(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply("POST", "/api/chat", Reply(chunks=recorded_ndjson_lines(), content_type="application/x-ndjson"))

    got = collect(sdk.chat.completions.create(model="gemma3:1b", messages=[{"role": "user", "content": "Count from 1 to 5"}], stream=True,
                                              max_tokens=50, temperature=0, stream_options={"include_usage": True}))

    assert got["text"] == "Okay, here we go!\n\n1, 2, 3, 4, 5\n"
    assert got["finish"] == "stop"
    assert (got["usage"].prompt_tokens, got["usage"].completion_tokens, got["usage"].total_tokens) == (16, 22, 38)
    sent = vendor.requests_to("/api/chat")[-1]
    assert "authorization" not in sent.headers
    assert sent.json() == {"model": "gemma3:1b", "messages": [{"role": "user", "content": "Count from 1 to 5"}], "stream": True,
                           "options": {"temperature": 0, "num_predict": 50}}


def test_ollama_native_tool_call(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_json("/api/chat", {"model": "llama3.2", "created_at": "2024-07-22T20:33:28Z", "message": {"role": "assistant", "content": "",
                      "tool_calls": [{"function": {"name": "get_current_weather", "arguments": {"format": "celsius", "location": "Paris, FR"}}}]},
                      "done_reason": "stop", "done": True, "prompt_eval_count": 122, "eval_count": 33})

    completion = sdk.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": "Weather in Paris?"}],
                                             tools=[{"type": "function", "function": {"name": "get_current_weather", "parameters": {"type": "object"}}}])

    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "get_current_weather"
    assert json.loads(call.function.arguments) == {"format": "celsius", "location": "Paris, FR"}
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage.total_tokens == 155
    assert vendor.requests_to("/api/chat")[-1].json()["stream"] is False


def test_ollama_native_error_body(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_json("/api/chat", {"error": "registry.ollama.ai/library/gemma3:1b does not support tools"}, status=400)

    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="gemma3:1b", messages=[{"role": "user", "content": "x"}],
                                    tools=[{"type": "function", "function": {"name": "getTime"}}])
    assert caught.value.body["message"] == "registry.ollama.ai/library/gemma3:1b does not support tools"


# --- bedrock -----------------------------------------------------------------

def assert_sigv4_signed(received: Any, base_url: str) -> None:
    """Recompute the signature with botocore at the request's own X-Amz-Date: equal means AWS would accept it."""
    from datetime import datetime
    from unittest import mock

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    access_key, secret_key = AWS_KEY.split("|")
    # AWS checks the headers the signature lists; anything added later (aiohttp's Accept) is not covered
    signed = received.headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    headers = {k: received.headers[k] for k in signed if k not in ("host", "x-amz-date")}
    request = AWSRequest(method="POST", url=base_url + received.raw_path, data=received.body, headers=headers)
    stamp = datetime.strptime(received.headers["x-amz-date"], "%Y%m%dT%H%M%SZ")
    with mock.patch("botocore.auth.get_current_datetime", return_value=stamp):
        SigV4Auth(Credentials(access_key, secret_key), "bedrock", "us-east-1").add_auth(request)
    assert received.headers["authorization"] == request.headers["Authorization"]


def test_bedrock_converse(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/model/us.amazon.nova-micro-v1:0/converse", "bedrock/converse_text.json")

    completion = sdk.chat.completions.create(model="us.amazon.nova-micro-v1:0", messages=[
        {"role": "system", "content": "You are a chatbot."}, {"role": "user", "content": "Hello!"}])

    assert completion.choices[0].message.content == fixture_json("bedrock/converse_text.json")["output"]["message"]["content"][0]["text"]
    assert completion.choices[0].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (7, 30, 37)
    sent = vendor.received[-1]
    assert sent.raw_path == "/model/us.amazon.nova-micro-v1%3A0/converse"
    assert sent.json() == fixture_json("bedrock/converse_text.request.json")["body"]
    assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-east-1/bedrock/aws4_request" in sent.headers["authorization"]
    assert_sigv4_signed(sent, vendor.base_url)


def test_bedrock_converse_stream(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    raw = fixture_bytes("bedrock/converse_stream_eventstream.bin")
    pieces = [raw[i:i + 100] for i in range(0, len(raw), 100)]  # frames cut anywhere, as TCP may
    vendor.reply("POST", "/model/us.amazon.nova-micro-v1:0/converse-stream",
                 Reply(chunks=pieces, content_type="application/vnd.amazon.eventstream"))

    got = collect(sdk.chat.completions.create(model="us.amazon.nova-micro-v1:0", messages=[{"role": "user", "content": "Capital of France?"}],
                                              stream=True, stream_options={"include_usage": True}))

    assert got["text"].startswith("The capital of France is Paris. Paris is not only the capital city")
    assert got["text"].endswith('or "The City of Love."')
    assert got["finish"] == "stop"
    assert (got["usage"].prompt_tokens, got["usage"].completion_tokens, got["usage"].total_tokens) == (13, 82, 95)
    sent = vendor.received[-1]
    assert sent.raw_path == "/model/us.amazon.nova-micro-v1%3A0/converse-stream"
    assert_sigv4_signed(sent, vendor.base_url)


def test_bedrock_invalid_model_error(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/model/us.amazon.nova-micro-v1:0/converse", "bedrock/error_400_invalid_model.json", status=400)

    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="us.amazon.nova-micro-v1:0", messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["message"] == "The provided model identifier is invalid."


# --- signers end to end ------------------------------------------------------

def test_zhipu_jwt_signs_each_request(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    import base64
    import hashlib
    import hmac

    vendor.reply_fixture("/api/paas/v4/chat/completions", "zhipu/v4_chat_completion_reasoning.json")

    completion = sdk.chat.completions.create(model="glm-4.5", messages=[{"role": "user", "content": "What is the capital of France?"}])

    assert completion.choices[0].message.content == fixture_json("zhipu/v4_chat_completion_reasoning.json")["choices"][0]["message"]["content"]
    token = vendor.received[-1].headers["authorization"].removeprefix("Bearer ")
    head, payload, signature = token.split(".")
    pad = lambda part: part + "=" * (-len(part) % 4)  # noqa: E731
    assert json.loads(base64.urlsafe_b64decode(pad(head))) == {"alg": "HS256", "sign_type": "SIGN"}
    assert json.loads(base64.urlsafe_b64decode(pad(payload)))["api_key"] == "zhipuid"
    assert base64.urlsafe_b64decode(pad(signature)) == hmac.new(b"zhipusecret", f"{head}.{payload}".encode(), hashlib.sha256).digest()


def test_baidu_token_exchange_then_stream(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_json("/oauth/2.0/token", {"access_token": "24.baidu-token", "expires_in": 2592000})
    lines = fixture_bytes("baidu/v1_stream_payloads_ernie_bot_8k.data.jsonl").decode().splitlines()
    vendor.reply("POST", "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/ernie_bot_8k",
                 Reply(chunks=[f"data: {line}\n\n".encode() for line in lines], content_type="text/event-stream"))

    for _ in range(2):
        got = collect(sdk.chat.completions.create(model="ernie_bot_8k", messages=[{"role": "user", "content": "你好"}], stream=True,
                                                  stream_options={"include_usage": True}))
        assert got["text"] == "".join(json.loads(line)["result"] for line in lines)
        assert got["finish"] == "stop"
        assert got["usage"].total_tokens == 38

    exchanges = vendor.requests_to("/oauth/2.0/token")
    assert len(exchanges) == 1  # cached across requests
    assert exchanges[0].query == {"grant_type": "client_credentials", "client_id": "baidu-ak", "client_secret": "baidu-sk"}
    assert vendor.requests_to("/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/ernie_bot_8k")[-1].query == {"access_token": "24.baidu-token"}


def test_baidu_error_inside_http_200(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_json("/oauth/2.0/token", {"access_token": "24.baidu-token", "expires_in": 2592000})
    vendor.reply_json("/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/ernie_bot_8k", {"error_code": 336003, "error_msg": "the length of messages must be an odd number"})

    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="ernie_bot_8k", messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    assert caught.value.body["message"] == "the length of messages must be an odd number"
    assert caught.value.body["code"] == "336003"


def test_hunyuan_tc3_signed_pascal_case(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_json("/", {"Response": {"RequestId": "r1", "Choices": [{"Message": {"Role": "assistant", "Content": "你好"}, "FinishReason": "stop"}],
                                         "Created": 1715154848, "Id": "a1", "Usage": {"PromptTokens": 3, "CompletionTokens": 2, "TotalTokens": 5}}})

    completion = sdk.chat.completions.create(model="hunyuan-turbo", messages=[{"role": "user", "content": "hi"}])

    assert completion.choices[0].message.content == "你好"
    assert completion.usage.total_tokens == 5
    sent = vendor.received[-1]
    assert sent.json() == {"Model": "hunyuan-turbo", "Messages": [{"Role": "user", "Content": "hi"}]}
    assert sent.headers["x-tc-action"] == "ChatCompletions" and sent.headers["x-tc-version"] == "2023-09-01"
    assert sent.headers["authorization"].startswith("TC3-HMAC-SHA256 Credential=AKIDtencent/")
    assert sent.headers["authorization"].split("/")[2] == "hunyuan"
    assert int(sent.headers["x-tc-timestamp"]) > 1_700_000_000
