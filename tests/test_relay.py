"""End to end: the official openai SDK -> gateway (Granian) -> fake vendor replaying recordings."""

from __future__ import annotations

import json
import time
from collections import Counter

import httpx
import openai
import pytest

from conftest import CLIENT_KEY, UPSTREAM_KEY, GatewayProcess, base_config
from fakevendor import FakeVendor, Reply, fixture_bytes, fixture_json, sse_events


def client(gateway: GatewayProcess, key: str = CLIENT_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url("/v1"), api_key=key, max_retries=0, timeout=20)


def test_chat_completion_is_relayed_as_recorded(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_tool_calls.json")
    request = fixture_json("openai/chat_completion_tool_calls.request.json")["body"]

    completion = client(gateway).chat.completions.create(**request)

    recorded = fixture_json("openai/chat_completion_tool_calls.json")
    assert completion.id == recorded["id"]
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == recorded["choices"][0]["message"]["tool_calls"][0]["function"]["name"]
    assert json.loads(call.function.arguments) == json.loads(recorded["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
    assert completion.usage.total_tokens == recorded["usage"]["total_tokens"]
    sent = vendor.requests_to("/v1/chat/completions")[-1]
    assert sent.json() == request
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert CLIENT_KEY not in json.dumps(sent.headers)


def test_stream_bytes_are_passed_through_unchanged(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_sse("/v1/chat/completions", "openai/chat_stream_tool_call_include_usage.sse")
    request = fixture_json("openai/chat_stream_tool_call_include_usage.request.json")["body"]

    with httpx.stream("POST", gateway.url("/v1/chat/completions"), json=request,
                      headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=20) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        body = response.read()
    assert body == fixture_bytes("openai/chat_stream_tool_call_include_usage.sse")


def test_stream_through_the_sdk_keeps_unknown_fields(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_sse("/v1/chat/completions", "mistral/chat_stream_thinking.sse")

    chunks = list(client(gateway).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "think"}], stream=True))

    assert chunks, "no chunks arrived"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    raw_events = [e for e in sse_events(fixture_bytes("mistral/chat_stream_thinking.sse")) if b"[DONE]" not in e]
    assert len(chunks) == len(raw_events)


def test_stream_chunks_arrive_as_they_are_produced(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    events = sse_events(fixture_bytes("openai/chat_stream_text_include_usage.sse"))
    vendor.reply("POST", "/v1/chat/completions", Reply(chunks=events, delay=0.3, content_type="text/event-stream"))

    started = time.monotonic()
    stream = client(gateway).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True)
    first = next(iter(stream))
    first_at = time.monotonic() - started
    rest = list(stream)
    total = time.monotonic() - started

    assert first.choices[0].delta.role == "assistant"
    assert rest
    # a buffering relay would deliver the first chunk only at the end of the whole stream
    assert first_at < total - 0.3 * (len(events) - 3)


def test_model_map_sends_the_upstream_name(vendor: FakeVendor, start_gateway) -> None:
    config = base_config(vendor)
    config["channels"][0]["model_map"] = {"gpt-3.5-turbo": "gpt-4o-mini"}
    gateway = start_gateway(config)
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")

    client(gateway).chat.completions.create(model="gpt-3.5-turbo", messages=[{"role": "user", "content": "hi"}])

    assert vendor.received[-1].json()["model"] == "gpt-4o-mini"
    listed = {m.id for m in client(gateway).models.list()}
    assert {"gpt-3.5-turbo", "gpt-4o-mini"} <= listed


def test_untouched_body_goes_upstream_byte_for_byte(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    body = b'{"model": "gpt-4o-mini",  "messages": [{"role": "user", "content": "caf\\u00e9"}], "x_vendor_extra": {"a": 1}}'

    response = httpx.post(gateway.url("/v1/chat/completions"), content=body,
                          headers={"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"})

    assert response.status_code == 200
    assert response.content == fixture_bytes("openai/chat_completion_text.json")
    assert vendor.received[-1].body == body


def test_completions_and_embeddings(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/completions", "openai/completions.json")
    vendor.reply_fixture("/v1/embeddings", "openai/embeddings_float.json")
    sdk = client(gateway)

    completion = sdk.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say this is a test")
    embedding = sdk.embeddings.create(model="text-embedding-3-small", input="hello", encoding_format="float")

    assert completion.choices[0].text == fixture_json("openai/completions.json")["choices"][0]["text"]
    assert embedding.data[0].embedding == fixture_json("openai/embeddings_float.json")["data"][0]["embedding"]
    assert [r.path for r in vendor.received] == ["/v1/completions", "/v1/embeddings"]


def test_completions_stream(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    lines = fixture_bytes("openai/completions_stream.data.jsonl").decode().splitlines()
    events = [f"data: {line}\n\n".encode() for line in lines if line.strip()] + [b"data: [DONE]\n\n"]
    vendor.reply("POST", "/v1/completions", Reply(chunks=events, content_type="text/event-stream"))

    text = "".join(c.choices[0].text for c in client(gateway).completions.create(
        model="gpt-3.5-turbo-instruct", prompt="hi", stream=True) if c.choices)

    expected = "".join(json.loads(line)["choices"][0]["text"] for line in lines if line.strip() and json.loads(line)["choices"])
    assert text == expected and text


def test_weights_split_traffic_in_proportion(vendor: FakeVendor, start_gateway) -> None:
    second = FakeVendor().start()
    try:
        config = base_config(vendor)
        config["channels"] = [
            {"name": "heavy", "provider": "openai", "base_url": vendor.base_url, "keys": ["k1"], "models": ["gpt-4o-mini"], "weight": 3},
            {"name": "light", "provider": "openai", "base_url": second.base_url, "keys": ["k2"], "models": ["gpt-4o-mini"], "weight": 1},
        ]
        gateway = start_gateway(config)
        for fake in (vendor, second):
            fake.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
        n = 400
        with httpx.Client(headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as http:
            for _ in range(n):
                assert http.post(gateway.url("/v1/chat/completions"), json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}).status_code == 200
        heavy = len(vendor.received)
        # expected 300 of 400; binomial sd ~8.7, so +-45 is > 5 sd: fails only when weights are ignored
        assert abs(heavy - 300) < 45, heavy
        assert heavy + len(second.received) == n
    finally:
        second.stop()


def test_priority_tier_wins_over_weight(vendor: FakeVendor, start_gateway) -> None:
    backup = FakeVendor().start()
    try:
        config = base_config(vendor)
        config["channels"] = [
            {"name": "backup", "provider": "openai", "base_url": backup.base_url, "keys": ["k2"], "models": ["gpt-4o-mini"], "priority": 0, "weight": 100},
            {"name": "primary", "provider": "openai", "base_url": vendor.base_url, "keys": ["k1"], "models": ["gpt-4o-mini"], "priority": 10, "weight": 1},
        ]
        gateway = start_gateway(config)
        vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
        for _ in range(20):
            client(gateway).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        assert len(vendor.received) == 20 and not backup.received
    finally:
        backup.stop()


def test_keys_rotate_inside_a_channel(vendor: FakeVendor, start_gateway) -> None:
    config = base_config(vendor)
    config["channels"][0]["keys"] = ["sk-key-one-aaaaaaaa", "sk-key-two-bbbbbbbb", "sk-key-three-cccccc"]
    gateway = start_gateway(config)
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")

    for _ in range(30):
        client(gateway).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])

    used = Counter(r.headers["authorization"] for r in vendor.received)
    assert used == {"Bearer sk-key-one-aaaaaaaa": 10, "Bearer sk-key-two-bbbbbbbb": 10, "Bearer sk-key-three-cccccc": 10}


def test_disabled_channel_is_not_used(vendor: FakeVendor, start_gateway) -> None:
    other = FakeVendor().start()
    try:
        config = base_config(vendor)
        config["channels"].append({"name": "off", "provider": "openai", "base_url": other.base_url, "keys": ["k"],
                                   "models": ["gpt-4o-mini"], "priority": 99, "enabled": False})
        gateway = start_gateway(config)
        vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
        for _ in range(5):
            client(gateway).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        assert not other.received and len(vendor.received) == 5
    finally:
        other.stop()


def test_channel_in_another_group_is_not_used(vendor: FakeVendor, start_gateway) -> None:
    config = base_config(vendor, groups={"default": {"ratio": 1}, "vip": {"ratio": 2}})
    config["channels"][0]["groups"] = ["vip"]
    gateway = start_gateway(config)

    with pytest.raises(openai.NotFoundError):
        client(gateway).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert not vendor.received


@pytest.mark.parametrize("status", [500, 503])
def test_upstream_failure_becomes_an_openai_error(gateway: GatewayProcess, vendor: FakeVendor, status: int) -> None:
    vendor.reply_json("/v1/chat/completions", {"error": {"message": "boom"}}, status=status)

    with pytest.raises(openai.APIStatusError) as caught:
        client(gateway).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])

    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_error"


def test_upstream_client_error_is_relayed_with_its_status(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/error_400_context_length_exceeded.json", status=400)

    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])

    assert caught.value.body == fixture_json("openai/error_400_context_length_exceeded.json")["error"]


def test_upstream_auth_failure_never_shows_the_channel_key(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_json("/v1/chat/completions", {"error": {"message": f"Incorrect API key provided: {UPSTREAM_KEY}", "type": "invalid_request_error", "code": "invalid_api_key"}}, status=401)

    response = httpx.post(gateway.url("/v1/chat/completions"), json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
                          headers={"Authorization": f"Bearer {CLIENT_KEY}"})

    assert response.status_code == 502  # the client's own key is fine: a 401 would tell it otherwise
    assert response.json()["error"]["code"] == "upstream_auth_failed"
    assert UPSTREAM_KEY not in response.text
    assert UPSTREAM_KEY not in gateway.log() and CLIENT_KEY not in gateway.log()


def test_unreachable_upstream_is_a_502(vendor: FakeVendor, start_gateway) -> None:
    config = base_config(vendor)
    config["channels"][0]["base_url"] = "http://127.0.0.1:9"  # discard port: connection refused
    gateway = start_gateway(config)

    with pytest.raises(openai.APIStatusError) as caught:
        client(gateway).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])

    assert caught.value.status_code == 502
    assert set(caught.value.response.json()["error"]) == {"message", "type", "code", "param"}
