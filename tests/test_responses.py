"""OpenAI's Responses API as a way in, end to end: the official openai SDK (responses.create / responses.stream) and
Codex CLI's recorded requests -> gateway (Granian) -> fake vendors replaying recorded payloads. Native on OpenAI
channels (relayed byte for byte), translated everywhere else (OpenAI chat, DeepSeek reasoning and Anthropic
recordings), every refusal in OpenAI's error shape.

One gateway serves the whole file, one channel per vendor.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Iterator

import httpx
import openai
import pytest

from conftest import CLIENT_KEY, PROVIDERS_DIR, UPSTREAM_KEY, GatewayProcess, serve_for_module
from fakevendor import FakeVendor, Reply, fixture_bytes, fixture_json, sse_events
from test_dialects import events_of

from oneapi.affinity import Holder
from oneapi.ledger import SqliteLedger
from oneapi.limits import SqliteAccounting
from oneapi.redisstore import RedisAccounting

ADMIN_KEY = "admin-secret-key-for-tests"
CODEX = "clients/codex/"
OTHER_KEY = "sk-another-gateway-user-0123456789"
SECOND_KEY = "sk-second-openai-account-0123456789"
THIRD_KEY = "sk-third-openai-account-0123456789"


@pytest.fixture(scope="module")
def vendor() -> Iterator[FakeVendor]:
    with FakeVendor() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(vendor: FakeVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    def channel(name: str, provider: str, models: list[str], **extra: Any) -> dict[str, Any]:
        return {"name": name, "provider": provider, "base_url": vendor.base_url, "keys": [UPSTREAM_KEY], "models": models, **extra}

    config = {
        "listen": "127.0.0.1:3000",
        "providers_dir": str(PROVIDERS_DIR),
        "admin_key": ADMIN_KEY,
        "channels": [
            channel("openai", "openai", ["gpt-4o", "gpt-5", "gpt-5.2", "o3-mini", "gpt-5-codex", "gpt-5.2-proo", "gpt-4.1"],
                    model_map={"native-alias": "gpt-4o"}),
            # a second OpenAI account for gpt-4.1: a stored response must be continued on the account that made it
            {**channel("openai-two", "openai", ["gpt-4.1"]), "keys": [SECOND_KEY, THIRD_KEY]},
            # chat-completions vendors: the Responses request is translated
            channel("chat", "groq", ["llama-3.3-70b"], model_map={"responses-on-chat": "llama-3.3-70b", "codex-on-chat": "llama-3.3-70b",
                                                                    "responses-ledger": "llama-3.3-70b"}),
            channel("deepseek", "deepseek", ["deepseek-reasoner"]),
            channel("azure", "azure", ["my-gpt-deployment"]),
            channel("anthropic", "anthropic", ["claude-sonnet-4-5"]),
        ],
        "tokens": [{"name": "tester", "key": CLIENT_KEY}, {"name": "other", "key": OTHER_KEY}],
    }
    yield from serve_for_module(tmp_path_factory, "responses", config)


@pytest.fixture
def client(gateway: GatewayProcess, vendor: FakeVendor) -> openai.OpenAI:
    vendor.received.clear()
    return openai.OpenAI(base_url=gateway.url("/v1"), api_key=CLIENT_KEY, max_retries=0, timeout=20)


def request_body(fixture: str) -> dict[str, Any]:
    return fixture_json(fixture)["body"]


def chat_sse(fixture: str) -> Reply:
    """A recorded chat stream (.data.jsonl: one chunk a line) as the vendor sent it."""
    lines = [line for line in fixture_bytes(fixture).decode().splitlines() if line.strip()]
    return Reply(chunks=[f"data: {line}\n\n".encode() for line in lines] + [b"data: [DONE]\n\n"], content_type="text/event-stream")


def ledger_totals(gateway: GatewayProcess, model: str, requests: int) -> dict[str, Any]:
    totals: dict[str, Any] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and totals.get("requests") != requests:  # the ledger is written off the hot path
        totals = httpx.get(gateway.url(f"/admin/usage?model={model}"), headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()["totals"]
        time.sleep(0.1)
    return totals


# --- native: OpenAI channels relay as sent, answer byte for byte ---------------------------------------


def test_native_response_is_relayed_byte_for_byte(client: openai.OpenAI, gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/responses", "openai_responses/response_text.json")
    raw = json.dumps(request_body("openai_responses/response_text.request.json")).encode()
    answer = httpx.post(gateway.url("/v1/responses"), content=raw, timeout=20,
                        headers={"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"})

    assert answer.status_code == 200
    assert answer.content == fixture_bytes("openai_responses/response_text.json")
    sent = vendor.received[-1]
    assert sent.path == "/v1/responses" and sent.body == raw
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_native_sdk_function_call_round_trip(client: openai.OpenAI, vendor: FakeVendor) -> None:
    first_request = request_body("openai_responses/response_function_call.request.json")
    vendor.reply_fixture("/v1/responses", "openai_responses/response_function_call.json")
    first = client.responses.create(model="native-alias", input=first_request["input"], tools=first_request["tools"], tool_choice="auto")

    call = [item for item in first.output if item.type == "function_call"][0]
    recorded = [item for item in fixture_json("openai_responses/response_function_call.json")["output"] if item["type"] == "function_call"][0]
    assert (call.name, call.call_id, call.arguments) == (recorded["name"], recorded["call_id"], recorded["arguments"])
    assert vendor.received[-1].json()["model"] == "gpt-4o"  # model_map applies to native requests too

    vendor.reply_fixture("/v1/responses", "openai_responses/response_after_function_call_output.json")
    second = client.responses.create(model="gpt-4o", tools=first_request["tools"], input=[
        *first_request["input"], call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "Potatopolis"}])
    recorded_text = fixture_json("openai_responses/response_after_function_call_output.json")["output"][-1]["content"][0]["text"]
    assert second.output_text == recorded_text
    assert vendor.received[-1].json()["input"][-1] == {"type": "function_call_output", "call_id": call.call_id, "output": "Potatopolis"}


def test_native_stream_with_reasoning_summary_is_metered(client: openai.OpenAI, gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_sse("/v1/responses", "openai_responses/stream_reasoning_summary.sse")
    request = request_body("openai_responses/stream_reasoning_summary.request.json")
    with client.responses.stream(model="o3-mini", input=request["input"], reasoning=request["reasoning"]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()

    assert "response.reasoning_summary_text.delta" in kinds and kinds[-1] == "response.completed"
    reasoning = [item for item in final.output if item.type == "reasoning"][0]
    assert reasoning.summary and reasoning.summary[0].text
    usage = final.usage
    assert usage is not None
    totals = ledger_totals(gateway, "o3-mini", 1)
    assert (totals["prompt_tokens"], totals["completion_tokens"]) == (usage.input_tokens, usage.output_tokens)
    assert totals["estimated_requests"] == 0


def test_native_stream_function_call(client: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_sse("/v1/responses", "openai_responses/stream_function_call.sse")
    request = request_body("openai_responses/stream_function_call.request.json")
    with client.responses.stream(model="gpt-5", input=request["input"], tools=request["tools"], tool_choice="required") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()

    call = [item for item in final.output if item.type == "function_call"][0]
    assert call.name == "final_result" and json.loads(call.arguments)["result"]
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    assert vendor.received[-1].json()["tools"] == request["tools"]


def test_native_vendor_error_keeps_its_status_and_message(client: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/responses", "openai_responses/error_400_model_not_found.json", status=400)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="gpt-5.2-proo", input="hi")
    recorded = fixture_json("openai_responses/error_400_model_not_found.json")["error"]
    assert caught.value.body["message"] == recorded["message"]  # type: ignore[index]
    assert caught.value.code == recorded["code"]


def test_native_on_azure_goes_to_its_v1_responses_path(client: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/openai/v1/responses", "openai_responses/response_text.json")
    response = client.responses.create(model="my-gpt-deployment", input="hi")
    assert response.output_text == fixture_json("openai_responses/response_text.json")["output"][0]["content"][0]["text"]
    sent = vendor.received[-1]
    assert sent.headers["api-key"] == UPSTREAM_KEY and "authorization" not in sent.headers
    assert sent.json() == {"model": "my-gpt-deployment", "input": "hi"}


def test_codex_turn_replayed_native_byte_for_byte(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    recorded = fixture_json(CODEX + "tool_round_trip.request.json")
    vendor.received.clear()
    vendor.reply_sse("/v1/responses", CODEX + "2026-01_gpt5codex_multi_turn.sse")
    headers = {**recorded["headers"], "authorization": f"Bearer {CLIENT_KEY}"}
    raw = json.dumps(recorded["body"]).encode()
    answer = httpx.post(gateway.url("/v1/responses"), content=raw, headers=headers, timeout=20)

    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    assert answer.content == fixture_bytes(CODEX + "2026-01_gpt5codex_multi_turn.sse")
    assert vendor.received[-1].body == raw  # reasoning items' encrypted_content and the custom tool reach OpenAI untouched


# --- translated: every other vendor, through the canonical chat form ------------------------------------


def test_translated_chat_create(client: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/openai/v1/chat/completions", "openai/chat_completion_text.json")
    response = client.responses.create(model="responses-on-chat", instructions="You are terse.", input="What is the capital of France?",
                                       max_output_tokens=200, temperature=0.2, top_p=0.9, user="u-1", metadata={"trace": "t-1"},
                                       text={"format": {"type": "json_object"}})

    recorded = fixture_json("openai/chat_completion_text.json")
    assert response.object == "response" and response.status == "completed"
    assert response.model == "responses-on-chat"
    assert response.output_text == recorded["choices"][0]["message"]["content"]
    assert response.metadata == {"trace": "t-1"}
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (recorded["usage"]["prompt_tokens"], recorded["usage"]["completion_tokens"])
    assert response.usage.input_tokens_details.cached_tokens == recorded["usage"]["prompt_tokens_details"]["cached_tokens"]
    sent = vendor.received[-1].json()
    assert sent == {"model": "llama-3.3-70b", "max_tokens": 200, "temperature": 0.2, "top_p": 0.9, "user": "u-1",
                    "response_format": {"type": "json_object"},
                    "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is the capital of France?"}]}


def test_translated_function_call_round_trip(client: openai.OpenAI, vendor: FakeVendor) -> None:
    tools = [{"type": "function", "name": "get_weather", "description": "Weather for a city", "strict": False,
              "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}]
    vendor.reply_fixture("/openai/v1/chat/completions", "openai/chat_completion_tool_calls.json")
    first = client.responses.create(model="responses-on-chat", input="Weather in Paris?", tools=tools,  # type: ignore[arg-type]
                                    tool_choice={"type": "function", "name": "get_weather"}, parallel_tool_calls=False)

    recorded = fixture_json("openai/chat_completion_tool_calls.json")["choices"][0]["message"]["tool_calls"][0]
    call = [item for item in first.output if item.type == "function_call"][0]
    assert (call.call_id, call.name, call.arguments) == (recorded["id"], recorded["function"]["name"], recorded["function"]["arguments"])
    sent = vendor.received[-1].json()
    assert sent["tools"] == [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city", "parameters": tools[0]["parameters"]}}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False

    vendor.reply_fixture("/openai/v1/chat/completions", "openai/chat_completion_text.json")
    second = client.responses.create(model="responses-on-chat", tools=tools, input=[  # type: ignore[arg-type]
        {"role": "user", "content": "Weather in Paris?"}, call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21C"}])
    assert second.output_text
    assert vendor.received[-1].json()["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "tool_calls": [{"id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.call_id, "content": "Sunny, 21C"}]


def test_translated_chat_stream_is_the_responses_event_sequence(client: openai.OpenAI, gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_sse("/openai/v1/chat/completions", "openai/chat_stream_text_include_usage.sse")
    with client.responses.stream(model="responses-ledger", input="Hello") as stream:
        events = list(stream)
        final = stream.get_final_response()

    recorded = [json.loads(line[5:]) for line in fixture_bytes("openai/chat_stream_text_include_usage.sse").decode().splitlines()
                if line.startswith("data:") and line[5:].strip() != "[DONE]"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in recorded if c["choices"])
    usage = [c["usage"] for c in recorded if c.get("usage")][-1]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]
    assert final.output_text == text
    assert final.usage is not None and (final.usage.input_tokens, final.usage.output_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    totals = ledger_totals(gateway, "responses-ledger", 1)
    assert (totals["prompt_tokens"], totals["completion_tokens"], totals["estimated_requests"]) == (usage["prompt_tokens"], usage["completion_tokens"], 0)


def test_translated_chat_stream_function_call(client: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_sse("/openai/v1/chat/completions", "openai/chat_stream_tool_call_include_usage.sse")
    with client.responses.stream(model="responses-on-chat", input="Weather?",
                                 tools=[{"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": False}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()

    recorded = [json.loads(line[5:]) for line in fixture_bytes("openai/chat_stream_tool_call_include_usage.sse").decode().splitlines()
                if line.startswith("data:") and line[5:].strip() != "[DONE]"]
    arguments = "".join(c["choices"][0]["delta"]["tool_calls"][0]["function"].get("arguments") or ""
                        for c in recorded if c["choices"] and c["choices"][0]["delta"].get("tool_calls"))
    call = [item for item in final.output if item.type == "function_call"][0]
    assert call.arguments == arguments and json.loads(call.arguments)
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds


def test_translated_deepseek_reasoning_is_a_summary(client: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "deepseek/chat_reasoning.json")
    response = client.responses.create(model="deepseek-reasoner", input="How many r in strawberry?", reasoning={"effort": "high", "summary": "auto"})

    recorded = fixture_json("deepseek/chat_reasoning.json")["choices"][0]["message"]
    reasoning = [item for item in response.output if item.type == "reasoning"][0]
    assert reasoning.summary[0].text == recorded["reasoning_content"]
    assert response.output_text == recorded["content"]
    assert "reasoning_effort" not in vendor.received[-1].json()  # an extension: never sent on to an OpenAI-format vendor


def test_translated_deepseek_reasoning_stream(client: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply("POST", "/v1/chat/completions", chat_sse("deepseek/chat_stream_tool_call.data.jsonl"))
    with client.responses.stream(model="deepseek-reasoner", input="Weather in Hangzhou?", reasoning={"summary": "detailed"},
                                 tools=[{"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": False}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()

    chunks = [json.loads(line) for line in fixture_bytes("deepseek/chat_stream_tool_call.data.jsonl").decode().splitlines() if line.strip()]
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"])
    assert "response.reasoning_summary_text.delta" in kinds and "response.reasoning_summary_text.done" in kinds
    assert final.output[0].type == "reasoning" and final.output[0].summary[0].text == reasoning
    assert any(item.type == "function_call" for item in final.output)


def test_translated_anthropic_create_and_stream(client: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/messages", "anthropic/message_text.json")
    response = client.responses.create(model="claude-sonnet-4-5", instructions="Be brief.", input="Hello", max_output_tokens=50)
    recorded = fixture_json("anthropic/message_text.json")
    assert response.output_text == recorded["content"][0]["text"]
    sent = vendor.received[-1].json()
    assert sent["system"] and sent["max_tokens"] == 50

    vendor.reply_sse("/v1/messages", "anthropic/stream_text_raw.sse")
    with client.responses.stream(model="claude-sonnet-4-5", input="Hello", max_output_tokens=50) as stream:
        final = stream.get_final_response()
    assert final.output_text == "2" and final.status == "completed"


# --- refusals, in OpenAI's error shape ---------------------------------------------------------------


def test_builtin_tool_on_a_translated_channel_is_a_400_naming_it(client: openai.OpenAI, vendor: FakeVendor) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="responses-on-chat", input="news today?", tools=[{"type": "web_search"}])
    assert "web_search" in caught.value.message and "runs only at OpenAI" in caught.value.message
    assert vendor.received == []  # never silently dropped, never sent


def test_codex_request_on_a_chat_vendor_names_its_custom_tool(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    recorded = fixture_json(CODEX + "tool_round_trip.request.json")
    vendor.received.clear()
    body = {**recorded["body"], "model": "codex-on-chat"}
    answer = httpx.post(gateway.url("/v1/responses"), json=body, headers={**recorded["headers"], "authorization": f"Bearer {CLIENT_KEY}"}, timeout=20)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and "tool apply_patch (custom) runs only at OpenAI" in error["message"]
    assert vendor.received == []


def test_codex_multi_turn_translated_without_its_custom_tool(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    """Codex's recorded history (reasoning items, several user messages, assistant turns) as chat messages."""
    recorded = fixture_json(CODEX + "2026-01_gpt5codex_multi_turn.request.json")
    body = {**recorded["body"], "model": "codex-on-chat", "tools": [t for t in recorded["body"]["tools"] if t["type"] == "function"]}
    vendor.received.clear()
    vendor.reply_sse("/openai/v1/chat/completions", "openai/chat_stream_text_include_usage.sse")
    answer = httpx.post(gateway.url("/v1/responses"), json=body, headers={**recorded["headers"], "authorization": f"Bearer {CLIENT_KEY}"}, timeout=20)

    assert answer.status_code == 200
    events = events_of(answer.content)
    assert events[0][0] == "response.created" and events[-1][0] == "response.completed"  # Codex retries a stream without it
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert "[DONE]" not in answer.text
    sent = vendor.received[-1].json()
    assert sent["messages"][0] == {"role": "system", "content": body["instructions"]}
    roles = [m["role"] for m in sent["messages"]]
    assert roles.count("assistant") == sum(1 for item in body["input"] if item.get("role") == "assistant")
    assert not any("encrypted_content" in json.dumps(m) for m in sent["messages"])
    assert sent["stream_options"] == {"include_usage": True} and sent["parallel_tool_calls"] is False


def test_previous_response_id_on_a_translated_channel_says_why_not(client: openai.OpenAI, vendor: FakeVendor) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="responses-on-chat", input="and then?", previous_response_id="resp_123")
    assert "previous_response_id" in caught.value.message and "does not speak the Responses API" in caught.value.message
    assert vendor.received == []


def test_unknown_model_and_bad_key_in_openai_shape(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="no-such-model", input="hi")
    assert "no-such-model" in caught.value.message
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway.url("/v1"), api_key="sk-wrong", max_retries=0).responses.create(model="gpt-4o", input="hi")


# --- stored responses: previous_response_id goes to the channel and key that made the response -------------


def test_previous_response_id_goes_to_the_account_that_made_it(client: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/responses", "openai_responses/response_text.json")
    first = client.responses.create(model="gpt-4.1", input="Tell me a joke.")
    made_with = vendor.received[-1].headers["authorization"]

    for _ in range(8):  # three keys over two channels: a follow-up routed by chance would soon land elsewhere
        client.responses.create(model="gpt-4.1", input="Another.", previous_response_id=first.id)
        assert vendor.received[-1].headers["authorization"] == made_with
        assert vendor.received[-1].json()["previous_response_id"] == first.id


def test_a_streamed_response_is_remembered_from_its_first_event(client: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_sse("/v1/responses", "openai_responses/stream_text.sse")
    with client.responses.stream(model="gpt-4.1", input="Hello") as stream:
        first = stream.get_final_response()
    made_with = vendor.received[-1].headers["authorization"]
    vendor.reply_fixture("/v1/responses", "openai_responses/response_text.json")
    for _ in range(6):
        client.responses.create(model="gpt-4.1", input="More.", previous_response_id=first.id)
        assert vendor.received[-1].headers["authorization"] == made_with


def test_an_unknown_previous_response_id_is_a_400_saying_why(client: openai.OpenAI, vendor: FakeVendor) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="gpt-4.1", input="hi", previous_response_id="resp_never_seen_here")
    assert "resp_never_seen_here" in caught.value.message and "send the whole conversation" in caught.value.message
    assert vendor.received == []


def test_another_tokens_response_cannot_be_continued(client: openai.OpenAI, gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/responses", "openai_responses/response_text.json")
    made = client.responses.create(model="gpt-4.1", input="A secret.")
    stranger = openai.OpenAI(base_url=gateway.url("/v1"), api_key=OTHER_KEY, max_retries=0, timeout=20)
    vendor.received.clear()
    with pytest.raises(openai.BadRequestError) as caught:
        stranger.responses.create(model="gpt-4.1", input="What was it?", previous_response_id=made.id)
    assert made.id in caught.value.message
    assert vendor.received == []


async def _remember_and_recall(store: Any) -> None:
    await store.start()
    try:
        value = Holder("openai", "fingerprint", "tester").encode()
        await store.remember("openai-responses:resp_1", value, 1)
        assert Holder.decode(await store.recall("openai-responses:resp_1")) == Holder("openai", "fingerprint", "tester")
        assert await store.recall("openai-responses:resp_2") is None
        await asyncio.sleep(2.1)  # past its ttl
        assert await store.recall("openai-responses:resp_1") is None
    finally:
        await store.close()


def test_stored_answers_expire_in_sqlite(tmp_path: Any) -> None:
    async def run() -> None:
        ledger = SqliteLedger(tmp_path / "ledger.db")
        await ledger.open()
        try:
            await _remember_and_recall(SqliteAccounting(ledger))
        finally:
            await ledger.close()
    asyncio.run(run())


def test_stored_answers_expire_in_redis(redis_url: str) -> None:
    asyncio.run(_remember_and_recall(RedisAccounting(redis_url)))


def test_retrieve_list_items_and_delete_go_to_the_account_that_made_it(client: openai.OpenAI, gateway: GatewayProcess,
                                                                        vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/responses", "openai_responses/response_text.json")
    made = client.responses.create(model="gpt-4.1", input="Tell me a joke.")
    made_with = vendor.received[-1].headers["authorization"]
    vendor.reply_fixture(f"/v1/responses/{made.id}", "openai_responses/response_text.json", method="GET")
    items = {"object": "list", "data": [{"id": "msg_1", "type": "message", "role": "user", "status": "completed",
                                         "content": [{"type": "input_text", "text": "Tell me a joke."}]}],
             "first_id": "msg_1", "last_id": "msg_1", "has_more": False}
    vendor.reply_json(f"/v1/responses/{made.id}/input_items", items, method="GET")
    vendor.reply_json(f"/v1/responses/{made.id}", {"id": made.id, "object": "response", "deleted": True}, method="DELETE")

    for _ in range(4):  # three keys over two channels: only the pinned one is ever asked
        assert client.responses.retrieve(made.id).id == made.id
        assert vendor.received[-1].headers["authorization"] == made_with and vendor.received[-1].method == "GET"
    listed = client.responses.input_items.list(made.id, limit=5)
    assert listed.data[0].id == "msg_1"
    assert vendor.received[-1].path == f"/v1/responses/{made.id}/input_items" and vendor.received[-1].query["limit"] == "5"
    assert vendor.received[-1].headers["authorization"] == made_with
    client.responses.delete(made.id)
    assert vendor.received[-1].method == "DELETE" and vendor.received[-1].headers["authorization"] == made_with
    assert CLIENT_KEY not in json.dumps(dict(vendor.received[-1].headers))

    stranger = openai.OpenAI(base_url=gateway.url("/v1"), api_key=OTHER_KEY, max_retries=0, timeout=20)
    vendor.received.clear()
    with pytest.raises(openai.NotFoundError):
        stranger.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.retrieve("resp_never_seen_here")
    assert "resp_never_seen_here" in caught.value.message
    assert vendor.received == []


def test_a_translated_stream_cut_after_its_first_byte_ends_with_error_and_response_failed(client: openai.OpenAI, gateway: GatewayProcess,
                                                                                          vendor: FakeVendor) -> None:
    events = sse_events(fixture_bytes("openai/chat_stream_text_include_usage.sse"))
    vendor.reply("POST", "/openai/v1/chat/completions", Reply(chunks=events[:3], content_type="text/event-stream", cut=True))
    raw = httpx.post(gateway.url("/v1/responses"), json={"model": "responses-on-chat", "input": "hi", "stream": True},
                     headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=20)
    named = events_of(raw.content)
    names = [name for name, _ in named]
    assert names[0] == "response.created" and names[-2:] == ["error", "response.failed"] and "response.completed" not in names
    assert named[-1][1]["response"]["status"] == "failed" and named[-1][1]["response"]["error"]["message"]
    assert [data["sequence_number"] for _, data in named] == list(range(len(named)))

    vendor.reply("POST", "/openai/v1/chat/completions", Reply(chunks=events[:3], content_type="text/event-stream", cut=True))
    with pytest.raises(openai.APIError):  # the SDK raises on the error event
        with client.responses.stream(model="responses-on-chat", input="hi") as stream:
            stream.get_final_response()


@pytest.mark.parametrize("body", [
    {"model": "responses-on-chat", "input": 5},
    {"model": "responses-on-chat", "input": [5]},
    {"model": "responses-on-chat", "input": [{"type": "message", "role": "user", "content": 5}]},
    {"model": "responses-on-chat", "input": "x", "tools": [5]},
    {"model": "responses-on-chat"},
    {"model": 5, "input": "x"},
])
def test_bad_bodies_get_a_clear_error_never_a_crash(body: dict[str, Any], gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_json("/openai/v1/chat/completions", {"error": {"message": "bad request", "type": "invalid_request_error"}}, status=400)
    answer = httpx.post(gateway.url("/v1/responses"), json=body, headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=20)
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request_error" and answer.json()["error"]["message"]
