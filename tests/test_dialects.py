"""Anthropic's Messages API as a way in, end to end: the official anthropic SDK -> gateway (Granian) -> fake vendors
replaying recorded payloads. Native where the channel's vendor speaks Messages (relayed byte for byte), translated
everywhere else (OpenAI, DeepSeek, Gemini and Bedrock recordings), every refusal in Anthropic's error shape.

One gateway serves the whole file, one channel per vendor.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import anthropic
import httpx
import pytest

from conftest import CLIENT_KEY, PROVIDERS_DIR, UPSTREAM_KEY, GatewayProcess, serve_for_module
from fakevendor import FakeVendor, Reply, fixture_bytes, fixture_json, sse_events

AWS_KEY = "AKIDEXAMPLE|wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
LIMITED_KEY = "sk-limited-client-0123456789abcdef"
ADMIN_KEY = "admin-secret-key-for-tests"
GEMINI = "/v1beta/models/{model}:{method}"


@pytest.fixture(scope="module")
def vendor() -> Iterator[FakeVendor]:
    with FakeVendor() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(vendor: FakeVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    def channel(name: str, provider: str, models: list[str], key: str = UPSTREAM_KEY, **extra: Any) -> dict[str, Any]:
        return {"name": name, "provider": provider, "base_url": vendor.base_url, "keys": [key], "models": models, **extra}

    config = {
        "listen": "127.0.0.1:3000",
        "providers_dir": str(PROVIDERS_DIR),
        "admin_key": ADMIN_KEY,
        "channels": [
            channel("anthropic", "anthropic", ["claude-sonnet-4-5", "claude-haiku-4-5"], model_map={"claude-alias": "claude-sonnet-4-5-20250929"}),
            # Claude Code's model names mapped onto other vendors, as a user would
            channel("openai", "openai", ["gpt-4o-mini"], model_map={"claude-on-openai": "gpt-4o-mini", "claude-failover": "gpt-4o-mini",
                                                                 "claude-ledger": "gpt-4o-mini"}),
            # tried first for claude-failover, and down: the request moves on before its first byte
            channel("flaky", "openai", ["claude-failover"], key="sk-flaky-account-key-0123456789", base_url="http://127.0.0.1:9", priority=1),
            channel("deepseek", "deepseek", ["deepseek-reasoner"], model_map={"claude-on-deepseek": "deepseek-reasoner"}, max_output_tokens=8192),
            channel("gemini", "gemini", ["gemini-2.0-flash-exp", "gemini-2.5-flash"]),
            channel("bedrock", "bedrock", ["us.amazon.nova-micro-v1:0"], key=AWS_KEY),
            channel("broken", "openai", ["always-failing"], base_url="http://127.0.0.1:9"),
        ],
        "tokens": [
            {"name": "tester", "key": CLIENT_KEY},
            {"name": "limited", "key": LIMITED_KEY, "models": ["gpt-4o-mini"], "rpm": 2},
        ],
    }
    yield from serve_for_module(tmp_path_factory, "dialects", config)


@pytest.fixture
def client(gateway: GatewayProcess, vendor: FakeVendor) -> anthropic.Anthropic:
    vendor.received.clear()
    return anthropic.Anthropic(base_url=gateway.url(""), api_key=CLIENT_KEY, max_retries=0, timeout=20)


def events_of(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of every event of an SSE body."""
    out = []
    for block in raw.decode().split("\n\n"):
        name, data = None, None
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:])
        if data is not None:
            out.append((name, data))
    return out


HELLO = [{"role": "user", "content": "Hello"}]


# --- native: Anthropic channels relay as sent, answer byte for byte ------------------------------------


def test_native_message_is_relayed_byte_for_byte(client: anthropic.Anthropic, gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/messages", "anthropic/message_text.json")
    body = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": HELLO, "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]}
    raw = json.dumps(body).encode()
    answer = httpx.post(gateway.url("/v1/messages?beta=true"), content=raw, timeout=20,
                        headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01", "anthropic-beta": "some-future-beta-2099-01-01",
                                 "content-type": "application/json"})

    assert answer.status_code == 200
    assert answer.content == fixture_bytes("anthropic/message_text.json")
    sent = vendor.received[-1]
    assert sent.body == raw  # the client's own bytes: cache_control and everything else untouched
    assert sent.headers["x-api-key"] == UPSTREAM_KEY
    assert sent.headers["anthropic-beta"] == "some-future-beta-2099-01-01"
    assert answer.headers["x-request-id"]


def test_native_sdk_create_maps_the_model_and_replaces_the_key(client: anthropic.Anthropic, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/messages", "anthropic/message_tool_use.json")
    message = client.messages.create(model="claude-alias", max_tokens=100, messages=HELLO,
                                     tools=[{"name": "json", "input_schema": {"type": "object"}}])

    recorded = fixture_json("anthropic/message_tool_use.json")
    assert message.content[0].type == "tool_use"
    assert message.content[0].input == recorded["content"][0]["input"]
    assert message.usage.input_tokens == 1151
    sent = vendor.received[-1]
    assert sent.json()["model"] == "claude-sonnet-4-5-20250929"
    assert sent.headers["x-api-key"] == UPSTREAM_KEY
    assert CLIENT_KEY not in json.dumps(dict(sent.headers))


def test_native_stream_is_relayed_byte_for_byte_and_metered(client: anthropic.Anthropic, gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_sse("/v1/messages", "anthropic/stream_text_raw.sse")
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=50, messages=HELLO,
                                metadata={"user_id": "native-stream-meter"}) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "2"

    vendor.reply_sse("/v1/messages", "anthropic/stream_text_raw.sse")
    raw = httpx.post(gateway.url("/v1/messages"), json={"model": "claude-haiku-4-5", "max_tokens": 50, "messages": HELLO, "stream": True},
                     headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=20)
    assert raw.content == fixture_bytes("anthropic/stream_text_raw.sse")

    totals: dict[str, Any] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and totals.get("requests") != 2:  # the ledger is written off the hot path
        totals = httpx.get(gateway.url("/admin/usage?model=claude-haiku-4-5"), headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()["totals"]
        time.sleep(0.1)
    assert (totals["requests"], totals["prompt_tokens"], totals["completion_tokens"]) == (2, 40, 10)  # two streams of 20 in, 5 out
    assert totals["estimated_requests"] == 0


def test_native_count_tokens_is_the_vendors_count(client: anthropic.Anthropic, vendor: FakeVendor) -> None:
    vendor.reply_json("/v1/messages/count_tokens", {"input_tokens": 4242})
    counted = client.messages.count_tokens(model="claude-sonnet-4-5", messages=HELLO)
    assert counted.input_tokens == 4242
    assert vendor.received[-1].headers["x-api-key"] == UPSTREAM_KEY


def test_native_count_tokens_falls_back_to_the_estimate(client: anthropic.Anthropic, vendor: FakeVendor) -> None:
    vendor.reply_json("/v1/messages/count_tokens", {"type": "error", "error": {"type": "api_error", "message": "boom"}}, status=500)
    counted = client.messages.count_tokens(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "word " * 400}])
    assert 300 <= counted.input_tokens <= 700


def test_native_vendor_error_keeps_status_in_anthropic_shape(client: anthropic.Anthropic, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/messages", "anthropic/error_400_prompt_too_long.json", status=400)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=HELLO)
    recorded = fixture_json("anthropic/error_400_prompt_too_long.json")
    assert caught.value.body == {"type": "error", "error": {"type": "invalid_request_error", "message": recorded["error"]["message"]}}


# --- translated: every other vendor, through the canonical form ---------------------------------------


def test_translated_openai_message(client: anthropic.Anthropic, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    message = client.messages.create(
        model="claude-on-openai", max_tokens=200, extra_body={"temperature": 0.2, "top_p": 0.9}, stop_sequences=["END"], metadata={"user_id": "u-1"},
        system=[{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Answer in English."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}])

    recorded = fixture_json("openai/chat_completion_text.json")
    assert message.type == "message" and message.role == "assistant"
    assert message.model == "claude-on-openai"
    assert message.content[0].type == "text" and message.content[0].text == recorded["choices"][0]["message"]["content"]
    assert message.stop_reason == "end_turn"
    cached = recorded["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert message.usage.input_tokens == recorded["usage"]["prompt_tokens"] - cached
    assert message.usage.output_tokens == recorded["usage"]["completion_tokens"]
    sent = vendor.received[-1].json()
    assert sent == {"model": "gpt-4o-mini", "max_tokens": 200, "temperature": 0.2, "top_p": 0.9, "stop": ["END"], "user": "u-1",
                    "messages": [{"role": "system", "content": "You are terse.\nAnswer in English."},
                                 {"role": "user", "content": "What is the capital of France?"}]}


def test_translated_answers_are_in_the_ledger_with_the_vendors_usage(client: anthropic.Anthropic, gateway: GatewayProcess,
                                                                     vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    client.messages.create(model="claude-ledger", max_tokens=10, messages=HELLO)
    vendor.reply_sse("/v1/chat/completions", "openai/chat_stream_text_include_usage.sse")
    with client.messages.stream(model="claude-ledger", max_tokens=10, messages=HELLO) as stream:
        stream.get_final_message()
    recorded_body = fixture_json("openai/chat_completion_text.json")["usage"]
    recorded_stream = [json.loads(line[5:]) for line in fixture_bytes("openai/chat_stream_text_include_usage.sse").decode().splitlines()
                       if line.startswith("data:") and '"usage":{' in line][-1]["usage"]
    totals: dict[str, Any] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and totals.get("requests") != 2:
        totals = httpx.get(gateway.url("/admin/usage?model=claude-ledger"), headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()["totals"]
        time.sleep(0.1)
    assert totals["requests"] == 2 and totals["estimated_requests"] == 0
    assert totals["prompt_tokens"] == recorded_body["prompt_tokens"] + recorded_stream["prompt_tokens"]
    assert totals["completion_tokens"] == recorded_body["completion_tokens"] + recorded_stream["completion_tokens"]


def test_translated_openai_tools_round_trip(client: anthropic.Anthropic, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_tool_calls.json")
    tools = [{"name": "get_weather", "description": "Weather for a city",
              "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}]
    first = client.messages.create(model="claude-on-openai", max_tokens=200, tools=tools, tool_choice={"type": "any", "disable_parallel_tool_use": True},
                                   messages=[{"role": "user", "content": "Weather in Paris?"}])

    recorded_call = fixture_json("openai/chat_completion_tool_calls.json")["choices"][0]["message"]["tool_calls"][0]
    assert first.stop_reason == "tool_use"
    use = [b for b in first.content if b.type == "tool_use"][0]
    assert use.id == recorded_call["id"] and use.name == recorded_call["function"]["name"]
    assert use.input == json.loads(recorded_call["function"]["arguments"])
    sent = vendor.received[-1].json()
    assert sent["tools"] == [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city", "parameters": tools[0]["input_schema"]}}]
    assert sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is False

    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    client.messages.create(model="claude-on-openai", max_tokens=200, tools=tools, messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "call it", "signature": "sig"}, {"type": "text", "text": "Checking."},
                                          {"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": [{"type": "text", "text": "sunny"}]},
                                     {"type": "tool_result", "tool_use_id": "toolu_2", "content": "no such city", "is_error": True},
                                     {"type": "text", "text": "And tomorrow?"}]},
    ])
    sent = vendor.received[-1].json()["messages"]
    assert sent[1] == {"role": "assistant", "content": "Checking.", "tool_calls": [
        {"id": use.id, "type": "function", "function": {"name": use.name, "arguments": json.dumps(use.input, separators=(",", ":"))}}]}
    assert sent[2] == {"role": "tool", "tool_call_id": use.id, "content": "sunny"}
    assert sent[3] == {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no such city"}
    assert sent[4] == {"role": "user", "content": "And tomorrow?"}


def test_translated_openai_stream(client: anthropic.Anthropic, gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_sse("/v1/chat/completions", "openai/chat_stream_text_include_usage.sse")
    raw = httpx.post(gateway.url("/v1/messages?beta=true"), json={"model": "claude-on-openai", "max_tokens": 100, "stream": True, "messages": HELLO},
                     headers={"x-api-key": CLIENT_KEY}, timeout=20)
    events = events_of(raw.content)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[1] == "content_block_start"
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert all(name == data["type"] for name, data in events)
    assert events[0][1]["message"]["usage"]["input_tokens"] > 0  # Claude Code reads it here: the gateway's estimate
    assert vendor.received[-1].json()["stream_options"] == {"include_usage": True}

    vendor.reply_sse("/v1/chat/completions", "openai/chat_stream_text_include_usage.sse")
    with client.messages.stream(model="claude-on-openai", max_tokens=100, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    chunks = [json.loads(line[5:]) for line in fixture_bytes("openai/chat_stream_text_include_usage.sse").decode().splitlines()
              if line.startswith("data:") and "[DONE]" not in line]
    expected = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    usage = [c["usage"] for c in chunks if c.get("usage")][-1]
    assert text == expected and final.content[0].text == expected
    assert final.usage.output_tokens == usage["completion_tokens"]
    assert final.stop_reason == "end_turn"


def test_translated_openai_stream_tool_call(client: anthropic.Anthropic, vendor: FakeVendor) -> None:
    vendor.reply_sse("/v1/chat/completions", "openai/chat_stream_tool_call_include_usage.sse")
    with client.messages.stream(model="claude-on-openai", max_tokens=100, messages=HELLO,
                                tools=[{"name": "get_weather", "input_schema": {"type": "object"}}]) as stream:
        final = stream.get_final_message()
    chunks = [json.loads(line[5:]) for line in fixture_bytes("openai/chat_stream_tool_call_include_usage.sse").decode().splitlines()
              if line.startswith("data:") and "[DONE]" not in line]
    calls: dict[int, dict[str, str]] = {}
    for c in chunks:
        for call in (c["choices"][0]["delta"].get("tool_calls") or []) if c["choices"] else []:
            slot = calls.setdefault(call["index"], {"name": "", "arguments": ""})
            slot["name"] += call.get("function", {}).get("name") or ""
            slot["arguments"] += call.get("function", {}).get("arguments") or ""
    uses = [b for b in final.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [(c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())]
    assert final.stop_reason == "tool_use"


def test_translated_deepseek_reasoning_becomes_thinking(client: anthropic.Anthropic, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "deepseek/chat_reasoning.json")
    message = client.messages.create(model="claude-on-deepseek", max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 8000},
                                     messages=[{"role": "user", "content": "How many r in strawberry?"}])
    recorded = fixture_json("deepseek/chat_reasoning.json")["choices"][0]["message"]
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == recorded["reasoning_content"]
    assert message.content[1].text == recorded["content"]
    sent = vendor.received[-1].json()
    assert "reasoning_effort" not in sent and "thinking" not in sent  # an OpenAI-format body carries no extension
    assert sent["max_tokens"] == 2000  # under the channel's max_output_tokens: as asked

    vendor.reply_fixture("/v1/chat/completions", "deepseek/chat_reasoning.json")
    client.messages.create(model="claude-on-deepseek", max_tokens=32000, messages=HELLO)  # Claude Code's usual ask
    assert vendor.received[-1].json()["max_tokens"] == 8192


def test_translated_deepseek_reasoning_stream(client: anthropic.Anthropic, vendor: FakeVendor) -> None:
    lines = [line for line in fixture_bytes("deepseek/chat_stream_tool_call.data.jsonl").decode().splitlines() if line.strip()]
    vendor.reply("POST", "/v1/chat/completions", Reply(chunks=[f"data: {line}\n\n".encode() for line in lines] + [b"data: [DONE]\n\n"],
                                                      content_type="text/event-stream"))
    with client.messages.stream(model="claude-on-deepseek", max_tokens=2000, messages=HELLO,
                                tools=[{"name": "get_weather", "input_schema": {"type": "object"}}]) as stream:
        final = stream.get_final_message()
    chunks = [json.loads(line) for line in lines]
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"])
    assert final.content[0].type == "thinking" and final.content[0].thinking == reasoning
    assert any(b.type == "tool_use" for b in final.content)


def test_translated_gemini_message_and_stream(client: anthropic.Anthropic, vendor: FakeVendor) -> None:
    vendor.reply_fixture(GEMINI.format(model="gemini-2.5-flash", method="generateContent"), "gemini/generate_content_text_thoughts_tokens.json")
    message = client.messages.create(model="gemini-2.5-flash", max_tokens=500, messages=HELLO, thinking={"type": "enabled", "budget_tokens": 2048},
                                     extra_body={"top_k": 40})
    config = vendor.received[-1].json()["generationConfig"]
    assert config["topK"] == 40 and config["thinkingConfig"] == {"thinkingBudget": 2048, "includeThoughts": True}
    recorded = fixture_json("gemini/generate_content_text_thoughts_tokens.json")
    texts = [p["text"] for p in recorded["candidates"][0]["content"]["parts"] if not p.get("thought")]
    assert message.content[-1].text == "".join(texts)
    assert message.usage.output_tokens > 0

    vendor.reply_sse(GEMINI.format(model="gemini-2.0-flash-exp", method="streamGenerateContent"), "gemini/stream_generate_content_alt_sse_text.sse")
    with client.messages.stream(model="gemini-2.0-flash-exp", max_tokens=100, messages=HELLO) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "The capital of France is Paris.\n"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (13, 8)


def test_translated_bedrock_message_and_stream(client: anthropic.Anthropic, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/model/us.amazon.nova-micro-v1:0/converse", "bedrock/converse_text.json")
    message = client.messages.create(model="us.amazon.nova-micro-v1:0", max_tokens=100, messages=HELLO)
    assert message.content[0].text == fixture_json("bedrock/converse_text.json")["output"]["message"]["content"][0]["text"]

    raw = fixture_bytes("bedrock/converse_stream_eventstream.bin")
    vendor.reply("POST", "/model/us.amazon.nova-micro-v1:0/converse-stream",
                 Reply(chunks=[raw[i:i + 100] for i in range(0, len(raw), 100)], content_type="application/vnd.amazon.eventstream"))
    with client.messages.stream(model="us.amazon.nova-micro-v1:0", max_tokens=100, messages=HELLO) as stream:
        final = stream.get_final_message()
    assert final.content[0].text.startswith("The capital of France is Paris.")
    assert (final.usage.input_tokens, final.usage.output_tokens) == (13, 82)


def test_translated_count_tokens_is_the_estimate(client: anthropic.Anthropic, vendor: FakeVendor) -> None:
    short = client.messages.count_tokens(model="claude-on-openai", messages=HELLO)
    long = client.messages.count_tokens(model="claude-on-openai", system="Be terse. " * 200, messages=HELLO,
                                        tools=[{"name": "t", "input_schema": {"type": "object"}}])
    assert 0 < short.input_tokens < long.input_tokens
    assert vendor.received == []  # never sent anywhere


def test_server_tool_on_a_translated_channel_is_a_clear_400(client: anthropic.Anthropic, vendor: FakeVendor) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="claude-on-openai", max_tokens=100, messages=HELLO,
                               tools=[{"type": "web_search_20250305", "name": "web_search"}])
    assert "web_search" in caught.value.message
    assert vendor.received == []


def test_failover_before_the_first_byte(client: anthropic.Anthropic, vendor: FakeVendor) -> None:
    vendor.reply_sse("/v1/chat/completions", "openai/chat_stream_text_include_usage.sse")
    with client.messages.stream(model="claude-failover", max_tokens=100, messages=HELLO) as stream:
        final = stream.get_final_message()
    assert final.content[0].text and vendor.received[-1].json()["model"] == "gpt-4o-mini"


# --- refusals: Anthropic's shape and statuses ---------------------------------------------------------


def test_bad_key_is_authentication_error(gateway: GatewayProcess) -> None:
    bad = anthropic.Anthropic(base_url=gateway.url(""), api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        bad.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=HELLO)
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "authentication_error"


def test_unknown_model_is_not_found_error(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="no-such-model", max_tokens=10, messages=HELLO)
    assert caught.value.body["error"]["type"] == "not_found_error"


def test_model_outside_the_allowlist_is_permission_error(gateway: GatewayProcess) -> None:
    limited = anthropic.Anthropic(base_url=gateway.url(""), api_key=LIMITED_KEY, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        limited.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=HELLO)
    assert caught.value.body["error"]["type"] == "permission_error"


def test_rate_limit_is_rate_limit_error(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    limited = anthropic.Anthropic(base_url=gateway.url(""), api_key=LIMITED_KEY, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as caught:
        for _ in range(3):
            limited.messages.create(model="gpt-4o-mini", max_tokens=10, messages=HELLO)
    assert caught.value.body["error"]["type"] == "rate_limit_error"
    assert caught.value.response.headers.get("retry-after")


def test_bad_bodies_are_invalid_request_errors(gateway: GatewayProcess) -> None:
    headers = {"x-api-key": CLIENT_KEY, "content-type": "application/json"}
    for body in (b"{not json", b'{"model": "claude-sonnet-4-5", "messages": []}', b'{"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}]}'):
        answer = httpx.post(gateway.url("/v1/messages"), content=body, headers=headers)
        assert answer.status_code == 400, body
        assert answer.json()["type"] == "error" and answer.json()["error"]["type"] == "invalid_request_error"
    too_big = httpx.post(gateway.url("/v1/messages"), content=b"{" + b" " * (33 * 1024 * 1024) + b"}", headers=headers)
    assert too_big.status_code == 413 and too_big.json()["error"]["type"] == "request_too_large"


def test_metrics_tell_messages_traffic_from_chat(client: anthropic.Anthropic, gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    client.messages.create(model="claude-on-openai", max_tokens=10, messages=HELLO)
    client.messages.count_tokens(model="claude-on-openai", messages=HELLO)
    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline and 'endpoint="anthropic-messages/count_tokens"' not in text:
        text = httpx.get(gateway.url("/metrics")).text
        time.sleep(0.2)
    assert 'oneapi_requests_total{endpoint="anthropic-messages/chat",status="200"}' in text
    assert 'oneapi_requests_total{endpoint="anthropic-messages/count_tokens",status="200"}' in text


def test_every_channel_failing_is_an_api_error(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model="always-failing", max_tokens=10, messages=HELLO)
    assert caught.value.status_code == 502
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "api_error"


def test_a_failure_after_the_first_byte_is_an_error_event(client: anthropic.Anthropic, gateway: GatewayProcess, vendor: FakeVendor) -> None:
    events = sse_events(fixture_bytes("openai/chat_stream_text_include_usage.sse"))
    vendor.reply("POST", "/v1/chat/completions", Reply(chunks=events[:3], content_type="text/event-stream", cut=True))
    raw = httpx.post(gateway.url("/v1/messages"), json={"model": "claude-on-openai", "max_tokens": 100, "stream": True, "messages": HELLO},
                     headers={"x-api-key": CLIENT_KEY}, timeout=20)
    names = [name for name, _ in events_of(raw.content)]
    assert names[0] == "message_start" and names[-1] == "error" and "message_stop" not in names

    vendor.reply("POST", "/v1/chat/completions", Reply(chunks=events[:3], content_type="text/event-stream", cut=True))
    with pytest.raises(anthropic.APIStatusError):
        with client.messages.stream(model="claude-on-openai", max_tokens=100, messages=HELLO) as stream:
            stream.get_final_message()


@pytest.mark.parametrize("body", [
    {"model": "claude-on-openai", "max_tokens": 5, "messages": [1, 2, 3]},
    {"model": "claude-on-openai", "max_tokens": 5, "messages": [{"role": "user", "content": 5}]},
    {"model": "claude-on-openai", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
    {"model": "claude-on-openai", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": None}]}]},
    {"model": "claude-on-openai", "max_tokens": 5, "messages": "hi"},
    {"model": "claude-on-openai", "max_tokens": "5", "messages": HELLO},
    {"model": 5, "max_tokens": 5, "messages": HELLO},
    {"model": "claude-on-openai", "max_tokens": 5, "messages": HELLO, "system": 5, "tools": "x", "tool_choice": 3, "thinking": []},
    {"model": "claude-on-openai", "max_tokens": 5, "messages": HELLO, "tools": [{"name": "t"}]},
])
def test_odd_bodies_get_a_clear_answer_never_a_crash(body: dict[str, Any], gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    answer = httpx.post(gateway.url("/v1/messages"), json=body, headers={"x-api-key": CLIENT_KEY}, timeout=20)
    assert answer.status_code in (200, 400), answer.text
    if answer.status_code == 400:
        assert answer.json()["type"] == "error" and answer.json()["error"]["type"] == "invalid_request_error"
    assert "Traceback" not in gateway.log()
