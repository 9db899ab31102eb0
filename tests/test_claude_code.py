"""Claude Code's real requests (tests/fixtures/clients/claude_code, provenance in their README) replayed through the
gateway, as sent: headers, ?beta=true, bodies of every kind (quota probe, title/topic on the small model, main turns
with tools and thinking, count_tokens). Native on an Anthropic channel (relayed byte for byte), translated on an
OpenAI one, for the same model names: the two tokens are in two groups, one channel each.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from conftest import PROVIDERS_DIR, UPSTREAM_KEY, GatewayProcess, serve_for_module
from fakevendor import FIXTURES, FakeVendor, fixture_bytes, fixture_json

NATIVE_KEY = "sk-claude-code-native-0123456789"
TRANSLATED_KEY = "sk-claude-code-translated-0123456789"
RECORDED = sorted((FIXTURES / "clients" / "claude_code").glob("*.request.json"))
MODELS = sorted({json.loads(p.read_text())["body"]["model"] for p in RECORDED})


@pytest.fixture(scope="module")
def vendor() -> Iterator[FakeVendor]:
    with FakeVendor() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(vendor: FakeVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {
        "listen": "127.0.0.1:3000",
        "providers_dir": str(PROVIDERS_DIR),
        "groups": {"native": {"ratio": 1.0}, "translated": {"ratio": 1.0}},
        "channels": [
            {"name": "anthropic", "provider": "anthropic", "base_url": vendor.base_url, "keys": [UPSTREAM_KEY], "models": MODELS, "groups": ["native"]},
            {"name": "openai", "provider": "openai", "base_url": vendor.base_url, "keys": [UPSTREAM_KEY], "models": ["gpt-4o-mini"],
             "model_map": {m: "gpt-4o-mini" for m in MODELS}, "groups": ["translated"]},
        ],
        "tokens": [{"name": "native", "key": NATIVE_KEY, "group": "native"},
                   {"name": "translated", "key": TRANSLATED_KEY, "group": "translated"}],
    }
    yield from serve_for_module(tmp_path_factory, "claude_code", config)


def replay(gateway: GatewayProcess, path: Path, key: str) -> tuple[dict[str, Any], httpx.Response]:
    """The recorded request sent as Claude Code sent it, to the gateway, with `key` in its own header."""
    recorded = json.loads(path.read_text())
    url = httpx.URL(recorded["uri"])
    headers = {name: value.replace("{{CLIENT_KEY}}", key) for name, value in recorded["headers"].items()}
    if not any("{{CLIENT_KEY}}" in value for value in recorded["headers"].values()):
        headers["x-api-key"] = key  # a capture that kept only some headers: Claude Code sends the key as x-api-key
    raw = json.dumps(recorded["body"]).encode()
    answer = httpx.post(gateway.url(url.raw_path.decode()), content=raw, headers=headers, timeout=30)
    return recorded, answer


def sse_names(content: bytes) -> list[str]:
    return [line[6:].strip() for line in content.decode().splitlines() if line.startswith("event:")]


@pytest.mark.parametrize("path", RECORDED, ids=[p.name.removesuffix(".request.json") for p in RECORDED])
def test_native_replay_is_relayed_as_sent(path: Path, gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.received.clear()
    vendor.reply_sse("/v1/messages", "anthropic/stream_text_raw.sse")
    vendor.reply_fixture("/v1/messages/count_tokens", "clients/claude_code/v2.1.62_count_tokens.response.json")
    recorded = json.loads(path.read_text())
    if not recorded["body"].get("stream"):
        vendor.reply_json("/v1/messages", fixture_json("clients/claude_code/2025-07_quota_probe.response.json"))

    recorded, answer = replay(gateway, path, NATIVE_KEY)

    assert answer.status_code == 200, answer.text
    sent = vendor.received[-1]
    assert sent.json() == recorded["body"]  # not a field lost or added: thinking signatures, cache_control, betas all go up
    assert sent.headers["x-api-key"] == UPSTREAM_KEY and "authorization" not in sent.headers
    beta = {k.lower(): v for k, v in recorded["headers"].items()}.get("anthropic-beta")
    assert sent.headers.get("anthropic-beta") == beta
    if path.name.endswith("count_tokens.request.json"):
        assert answer.json() == {"input_tokens": 314}
    elif recorded["body"].get("stream"):
        assert answer.content == fixture_bytes("anthropic/stream_text_raw.sse")


@pytest.mark.parametrize("path", RECORDED, ids=[p.name.removesuffix(".request.json") for p in RECORDED])
def test_translated_replay_answers_in_messages_shape(path: Path, gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.received.clear()
    vendor.reply_sse("/v1/chat/completions", "openai/chat_stream_text_include_usage.sse")
    recorded = json.loads(path.read_text())
    if not recorded["body"].get("stream"):
        vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")

    recorded, answer = replay(gateway, path, TRANSLATED_KEY)

    assert answer.status_code == 200, answer.text
    body = recorded["body"]
    if path.name.endswith("count_tokens.request.json"):
        assert answer.json()["input_tokens"] > 0 and vendor.received == []
        return
    sent = vendor.received[-1].json()
    assert sent["model"] == "gpt-4o-mini" and sent["max_tokens"] == body["max_tokens"]
    assert not any("x-anthropic-billing-header" in (m.get("content") or "") for m in sent["messages"] if m["role"] == "system")
    assert all("$schema" not in t["function"]["parameters"] for t in sent.get("tools", []))
    assert len(sent.get("tools", [])) == len([t for t in body.get("tools", []) if t.get("input_schema")])
    if body.get("stream"):
        names = sse_names(answer.content)
        assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    else:
        message = answer.json()
        assert message["type"] == "message" and message["content"][0]["type"] == "text"


def test_quota_probe_answers_with_a_message(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    """The start-up probe (max_tokens 1) must never fail on a translated channel: Claude Code sends it every start."""
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    _, answer = replay(gateway, FIXTURES / "clients/claude_code/v0.2.107_quota_probe.request.json", TRANSLATED_KEY)
    assert answer.status_code == 200 and answer.json()["role"] == "assistant"
    assert vendor.received[-1].json()["max_tokens"] == 1


def test_main_turn_tool_history_translates_in_order(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_sse("/v1/chat/completions", "openai/chat_stream_text_include_usage.sse")
    recorded, answer = replay(gateway, FIXTURES / "clients/claude_code/v0.2.107_main_turn_tool_result.request.json", TRANSLATED_KEY)
    assert answer.status_code == 200
    sent = vendor.received[-1].json()["messages"]
    uses = [b["id"] for m in recorded["body"]["messages"] if isinstance(m["content"], list) for b in m["content"] if b.get("type") == "tool_use"]
    assert uses
    for use in uses:  # every tool call answered by a tool message right after the assistant turn that made it
        at = next(i for i, m in enumerate(sent) if any(c["id"] == use for c in m.get("tool_calls") or ()))
        assert any(m["role"] == "tool" and m["tool_call_id"] == use for m in sent[at + 1:])
