"""Gemini's own API as a way in, end to end: the official google-genai SDK (and raw HTTP in Gemini CLI's shapes)
-> gateway (Granian) -> fake vendors replaying recorded payloads. Native on gemini channels (relayed as sent),
translated everywhere else (OpenAI, Anthropic and DeepSeek recordings), every refusal in Google's error shape.

One gateway serves the whole file, one channel per vendor.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import httpx
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from conftest import CLIENT_KEY, PROVIDERS_DIR, UPSTREAM_KEY, GatewayProcess, serve_for_module
from fakevendor import FakeVendor, Reply, fixture_bytes, fixture_json, sse_events

ADMIN_KEY = "admin-secret-key-for-tests"
LIMITED_KEY = "sk-limited-gemini-client-0123456789"
QUERY_KEY = "sk-query-string-client-key-0123456789"
UPSTREAM = "/v1beta/models/{model}:{method}"
CLI = "clients/gemini_cli/"


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
        "log_format": "json",  # the access log is in the gateway's log too: no client key may be in either
        "channels": [
            channel("gemini", "gemini", ["gemini-2.0-flash-exp", "gemini-2.5-flash", "gemini-2.5-pro"],
                    model_map={"gemini-alias": "gemini-2.5-flash"}),
            # Gemini CLI's model names mapped onto other vendors, as a user would
            channel("openai", "openai", ["gpt-4o-mini"], model_map={"gemini-on-openai": "gpt-4o-mini", "gemini-ledger": "gpt-4o-mini"}),
            channel("anthropic", "anthropic", ["claude-sonnet-4-5"], model_map={"gemini-on-claude": "claude-sonnet-4-5"}),
            channel("deepseek", "deepseek", ["deepseek-reasoner"], model_map={"gemini-on-deepseek": "deepseek-reasoner"}),
            channel("broken", "openai", ["always-failing"], base_url="http://127.0.0.1:9"),
        ],
        "tokens": [
            {"name": "tester", "key": CLIENT_KEY},
            {"name": "query", "key": QUERY_KEY},
            {"name": "limited", "key": LIMITED_KEY, "models": ["gemini-on-openai"], "rpm": 2},
        ],
    }
    yield from serve_for_module(tmp_path_factory, "gemini_dialect", config)


@pytest.fixture
def client(gateway: GatewayProcess, vendor: FakeVendor) -> genai.Client:
    vendor.received.clear()
    return genai.Client(api_key=CLIENT_KEY, http_options=types.HttpOptions(base_url=gateway.url(""), timeout=20_000))


def data_events(raw: bytes) -> list[dict[str, Any]]:
    """The data of every event of a data-only SSE body."""
    return [json.loads(line[5:]) for line in raw.decode().splitlines() if line.startswith("data:")]


def ledger_totals(gateway: GatewayProcess, model: str, requests: int) -> dict[str, Any]:
    totals: dict[str, Any] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and totals.get("requests") != requests:  # the ledger is written off the hot path
        totals = httpx.get(gateway.url(f"/admin/usage?model={model}"), headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()["totals"]
        time.sleep(0.1)
    return totals


def cli_request(name: str) -> tuple[str, dict[str, Any]]:
    """A recorded Gemini CLI request's path and query (the host left out) and its body."""
    recorded = fixture_json(CLI + name)
    return "/" + recorded["uri"].split("/", 3)[3], recorded["body"]


# --- native: gemini channels relay as sent, answer byte for byte ----------------------------------------------


def test_native_generate_content_is_relayed_byte_for_byte(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.received.clear()
    vendor.reply_fixture(UPSTREAM.format(model="gemini-2.5-flash", method="generateContent"), "gemini/generate_content_text_thoughts_tokens.json")
    raw = json.dumps(fixture_json("gemini/generate_content_text_thoughts_tokens.request.json")["body"]).encode()
    answer = httpx.post(gateway.url("/v1beta/models/gemini-alias:generateContent"), content=raw, timeout=20,
                        headers={"x-goog-api-key": CLIENT_KEY, "content-type": "application/json"})

    assert answer.status_code == 200
    assert answer.content == fixture_bytes("gemini/generate_content_text_thoughts_tokens.json")
    sent = vendor.received[-1]
    assert sent.path == "/v1beta/models/gemini-2.5-flash:generateContent"  # the path's model mapped
    assert sent.body == raw
    assert sent.headers["x-goog-api-key"] == UPSTREAM_KEY


def test_native_sdk_generate_content_and_ledger(client: genai.Client, gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_fixture(UPSTREAM.format(model="gemini-2.0-flash-exp", method="generateContent"), "gemini/generate_content_function_call.json")
    tool = types.Tool(function_declarations=[types.FunctionDeclaration(name="get_capital", description="Get the capital of a country.",
                                                                       parameters_json_schema={"type": "object", "properties": {"country": {"type": "string"}}})])
    answer = client.models.generate_content(model="gemini-2.0-flash-exp", contents="What is the capital of France?",
                                            config=types.GenerateContentConfig(tools=[tool], automatic_function_calling={"disable": True}))
    recorded = fixture_json("gemini/generate_content_function_call.json")
    assert answer.function_calls[0].name == "get_capital"
    assert answer.function_calls[0].args == recorded["candidates"][0]["content"]["parts"][0]["functionCall"]["args"]
    assert answer.usage_metadata.prompt_token_count == recorded["usageMetadata"]["promptTokenCount"]
    sent = vendor.received[-1]
    assert sent.json()["contents"][0]["parts"][0]["text"] == "What is the capital of France?"
    assert CLIENT_KEY not in json.dumps(dict(sent.headers))
    totals = ledger_totals(gateway, "gemini-2.0-flash-exp", 1)
    assert (totals["prompt_tokens"], totals["completion_tokens"]) == (23, 5)
    assert totals["estimated_requests"] == 0


def test_native_sdk_stream_is_relayed_and_metered(client: genai.Client, gateway: GatewayProcess, vendor: FakeVendor) -> None:
    path = UPSTREAM.format(model="gemini-2.5-pro", method="streamGenerateContent")
    vendor.reply_sse(path, "gemini/stream_generate_content_alt_sse_text.sse")
    text = "".join(chunk.text or "" for chunk in client.models.generate_content_stream(model="gemini-2.5-pro", contents="hi"))
    assert text == "The capital of France is Paris.\n"
    assert vendor.received[-1].query.get("alt") == "sse"

    vendor.reply_sse(path, "gemini/stream_generate_content_alt_sse_text.sse")
    raw = httpx.post(gateway.url("/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"), timeout=20,
                     json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, headers={"x-goog-api-key": CLIENT_KEY})
    assert raw.content == fixture_bytes("gemini/stream_generate_content_alt_sse_text.sse")
    totals = ledger_totals(gateway, "gemini-2.5-pro", 2)
    assert (totals["prompt_tokens"], totals["completion_tokens"]) == (26, 16)  # the last chunk's counts, twice: 13 in, 8 out
    assert totals["estimated_requests"] == 0


def test_native_count_tokens_is_the_vendors_count(client: genai.Client, vendor: FakeVendor) -> None:
    vendor.reply_json(UPSTREAM.format(model="gemini-2.5-flash", method="countTokens"), {"totalTokens": 4242})
    assert client.models.count_tokens(model="gemini-2.5-flash", contents="hello").total_tokens == 4242
    assert vendor.received[-1].headers["x-goog-api-key"] == UPSTREAM_KEY


def test_native_vendor_error_keeps_status_in_google_shape(client: genai.Client, vendor: FakeVendor) -> None:
    vendor.reply_fixture(UPSTREAM.format(model="gemini-2.5-flash", method="generateContent"), "gemini/error_400_input_token_count_exceeded.json", status=400)
    with pytest.raises(genai_errors.ClientError) as caught:
        client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    recorded = fixture_json("gemini/error_400_input_token_count_exceeded.json")
    assert caught.value.code == 400
    assert caught.value.status == "INVALID_ARGUMENT"
    assert recorded["error"]["message"] in caught.value.message


# --- translated: every other vendor, through the canonical form ----------------------------------------------


def test_translated_openai_generate_content(client: genai.Client, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    answer = client.models.generate_content(
        model="gemini-on-openai", contents="What is the capital of France?",
        config=types.GenerateContentConfig(system_instruction="You are terse.", temperature=0.2, top_p=0.9, max_output_tokens=200, stop_sequences=["END"]))

    recorded = fixture_json("openai/chat_completion_text.json")
    assert answer.text == recorded["choices"][0]["message"]["content"]
    assert answer.candidates[0].finish_reason == types.FinishReason.STOP
    assert answer.usage_metadata.prompt_token_count == recorded["usage"]["prompt_tokens"]
    assert answer.usage_metadata.candidates_token_count == recorded["usage"]["completion_tokens"]
    assert answer.usage_metadata.cached_content_token_count == recorded["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert answer.model_version == "gemini-on-openai"
    sent = vendor.received[-1].json()
    assert sent == {"model": "gpt-4o-mini", "max_tokens": 200, "temperature": 0.2, "top_p": 0.9, "stop": ["END"],
                    "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is the capital of France?"}]}


def test_translated_openai_function_calling_round_trip(client: genai.Client, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_tool_calls.json")
    tool = types.Tool(function_declarations=[types.FunctionDeclaration(
        name="get_weather", description="Weather for a city", parameters_json_schema={"type": "object", "properties": {"location": {"type": "string"}}})])
    config = types.GenerateContentConfig(tools=[tool], automatic_function_calling={"disable": True},
                                         tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="ANY")))
    question = types.Content(role="user", parts=[types.Part(text="Weather in Paris and Tokyo?")])
    answer = client.models.generate_content(model="gemini-on-openai", contents=[question], config=config)

    recorded = fixture_json("openai/chat_completion_tool_calls.json")["choices"][0]["message"]["tool_calls"]
    calls = answer.function_calls
    assert [c.name for c in calls] == [r["function"]["name"] for r in recorded]
    assert [c.args for c in calls] == [json.loads(r["function"]["arguments"]) for r in recorded]
    assert [c.id for c in calls] == [r["id"] for r in recorded]
    sent = vendor.received[-1].json()
    assert sent["tools"] == [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                                                "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]
    assert sent["tool_choice"] == "required"

    # the answers go back as functionResponse parts: tool messages paired with the calls by id
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    replies = types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(id=c.id, name=c.name, response={"temp": 20}))
                                                for c in calls])
    client.models.generate_content(model="gemini-on-openai", contents=[question, answer.candidates[0].content, replies], config=config)
    messages = vendor.received[-1].json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] + ["tool"] * len(calls)
    assert [m["tool_call_id"] for m in messages[2:]] == [r["id"] for r in recorded]
    assert [tc["id"] for tc in messages[1]["tool_calls"]] == [r["id"] for r in recorded]


def test_translated_openai_stream(client: genai.Client, gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_sse("/v1/chat/completions", "openai/chat_stream_text_include_usage.sse")
    chunks = list(client.models.generate_content_stream(model="gemini-ledger", contents="hi"))
    recorded = [json.loads(line[5:]) for line in fixture_bytes("openai/chat_stream_text_include_usage.sse").decode().splitlines()
                if line.startswith("data:") and line[5:].strip() != "[DONE]"]
    assert "".join(c.text or "" for c in chunks) == "".join(r["choices"][0]["delta"].get("content") or "" for r in recorded if r["choices"])
    usage = [r for r in recorded if r.get("usage")][-1]["usage"]
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.prompt_token_count == usage["prompt_tokens"]
    assert chunks[-1].usage_metadata.candidates_token_count == usage["completion_tokens"]
    assert vendor.received[-1].json()["stream_options"] == {"include_usage": True}
    totals = ledger_totals(gateway, "gemini-ledger", 1)
    assert (totals["prompt_tokens"], totals["completion_tokens"], totals["estimated_requests"]) == (usage["prompt_tokens"], usage["completion_tokens"], 0)


def test_translated_openai_stream_tool_call(client: genai.Client, vendor: FakeVendor) -> None:
    vendor.reply_sse("/v1/chat/completions", "openai/chat_stream_tool_call_include_usage.sse")
    tool = types.Tool(function_declarations=[types.FunctionDeclaration(name="get_weather", parameters_json_schema={"type": "object"})])
    chunks = list(client.models.generate_content_stream(model="gemini-on-openai", contents="Weather?",
                                                        config=types.GenerateContentConfig(tools=[tool], automatic_function_calling={"disable": True})))
    calls = [call for chunk in chunks for call in chunk.function_calls or ()]
    deltas = [json.loads(line[5:]) for line in fixture_bytes("openai/chat_stream_tool_call_include_usage.sse").decode().splitlines()
              if line.startswith("data:") and line[5:].strip() != "[DONE]"]
    arguments = "".join(tc["function"].get("arguments") or "" for d in deltas if d["choices"] for tc in d["choices"][0]["delta"].get("tool_calls") or ())
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert calls[0].args == json.loads(arguments)  # the argument deltas gathered into one whole call, as Gemini streams them


def test_translated_anthropic_generate_content_and_stream(client: genai.Client, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/messages", "anthropic/message_text.json")
    answer = client.models.generate_content(model="gemini-on-claude", contents="hi", config=types.GenerateContentConfig(max_output_tokens=100))
    recorded = fixture_json("anthropic/message_text.json")
    assert answer.text == recorded["content"][0]["text"]
    assert answer.usage_metadata.prompt_token_count >= recorded["usage"]["input_tokens"]
    sent = vendor.received[-1].json()
    assert sent["model"] == "claude-sonnet-4-5" and sent["max_tokens"] == 100

    vendor.reply_sse("/v1/messages", "anthropic/stream_text_raw.sse")
    text = "".join(c.text or "" for c in client.models.generate_content_stream(model="gemini-on-claude", contents="hi"))
    assert text == "2"


def test_translated_deepseek_reasoning_becomes_thought_parts(client: genai.Client, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "deepseek/chat_reasoning.json")
    answer = client.models.generate_content(
        model="gemini-on-deepseek", contents="How many r's in strawberry?",
        config=types.GenerateContentConfig(thinking_config=types.ThinkingConfig(include_thoughts=True, thinking_budget=8192)))
    recorded = fixture_json("deepseek/chat_reasoning.json")
    parts = answer.candidates[0].content.parts
    assert parts[0].thought is True and parts[0].text == recorded["choices"][0]["message"]["reasoning_content"]
    assert answer.text == recorded["choices"][0]["message"]["content"]
    reasoning = recorded["usage"]["completion_tokens_details"]["reasoning_tokens"]
    assert answer.usage_metadata.thoughts_token_count == reasoning
    assert answer.usage_metadata.candidates_token_count == recorded["usage"]["completion_tokens"] - reasoning


def test_translated_deepseek_reasoning_stream(client: genai.Client, vendor: FakeVendor) -> None:
    lines = [line for line in fixture_bytes("deepseek/chat_stream_tool_call.data.jsonl").decode().splitlines() if line.strip()]
    vendor.reply("POST", "/v1/chat/completions", Reply(chunks=[f"data: {line}\n\n".encode() for line in lines] + [b"data: [DONE]\n\n"],
                                                      content_type="text/event-stream"))
    tool = types.Tool(function_declarations=[types.FunctionDeclaration(name="get_weather", parameters_json_schema={"type": "object"})])
    chunks = list(client.models.generate_content_stream(model="gemini-on-deepseek", contents="Weather?",
                                                        config=types.GenerateContentConfig(tools=[tool], automatic_function_calling={"disable": True})))
    recorded = [json.loads(line) for line in lines]
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in recorded if c["choices"])
    thoughts = "".join(p.text for c in chunks for p in (c.candidates[0].content.parts or ()) if c.candidates and c.candidates[0].content and p.thought)
    assert thoughts == reasoning
    assert any(c.function_calls for c in chunks)


def test_translated_count_tokens_is_the_estimate(client: genai.Client, gateway: GatewayProcess, vendor: FakeVendor) -> None:
    counted = client.models.count_tokens(model="gemini-on-openai", contents="word " * 400)
    assert 300 <= counted.total_tokens <= 700
    wrapped = httpx.post(gateway.url("/v1beta/models/gemini-on-openai:countTokens"), timeout=20, headers={"x-goog-api-key": CLIENT_KEY},
                         json={"generateContentRequest": {"model": "models/gemini-on-openai", "contents": [{"parts": [{"text": "word " * 400}]}]}})
    assert wrapped.json()["totalTokens"] == counted.total_tokens  # the REST form that wraps the request counts the same
    assert vendor.received == []  # nothing was asked upstream


def test_json_array_stream_without_alt_sse(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_sse("/v1/chat/completions", "openai/chat_stream_text_include_usage.sse")
    raw = httpx.post(gateway.url("/v1beta/models/gemini-on-openai:streamGenerateContent"), timeout=20,
                     json={"contents": [{"parts": [{"text": "hi"}]}]}, headers={"x-goog-api-key": CLIENT_KEY})
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("application/json")
    items = raw.json()  # one JSON array, as Gemini answers without alt=sse
    assert isinstance(items, list) and len(items) >= 2
    assert "".join(p.get("text", "") for item in items for p in item["candidates"][0]["content"]["parts"])
    assert items[-1]["candidates"][0]["finishReason"] == "STOP" and items[-1]["usageMetadata"]["promptTokenCount"] > 0


def test_native_json_array_stream_without_alt_sse(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.received.clear()
    vendor.reply_sse(UPSTREAM.format(model="gemini-2.0-flash-exp", method="streamGenerateContent"), "gemini/stream_generate_content_alt_sse_text.sse")
    raw = httpx.post(gateway.url("/v1beta/models/gemini-2.0-flash-exp:streamGenerateContent"), timeout=20,
                     json={"contents": [{"parts": [{"text": "hi"}]}]}, headers={"x-goog-api-key": CLIENT_KEY})
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("application/json")
    assert raw.json() == data_events(fixture_bytes("gemini/stream_generate_content_alt_sse_text.sse"))  # the same chunks, as one array
    assert vendor.received[-1].query.get("alt") == "sse"


# --- keys, models, refusals -----------------------------------------------------------------------------------


def test_key_in_the_query_string_works_and_is_never_logged(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    ok = httpx.post(gateway.url(f"/v1beta/models/gemini-on-openai:generateContent?key={QUERY_KEY}"), json={"contents": [{"parts": [{"text": "hi"}]}]}, timeout=20)
    assert ok.status_code == 200 and ok.json()["candidates"][0]["content"]["parts"][0]["text"]
    bearer = httpx.post(gateway.url("/v1beta/models/gemini-on-openai:countTokens"), json={"contents": [{"parts": [{"text": "hi"}]}]},
                        headers={"authorization": f"Bearer {QUERY_KEY}"}, timeout=20)
    assert bearer.status_code == 200 and bearer.json()["totalTokens"] > 0
    wrong = "sk-wrong-query-key-0123456789abcdef"
    refused = httpx.post(gateway.url(f"/v1beta/models/gemini-on-openai:generateContent?key={wrong}"), json={"contents": [{"parts": [{"text": "hi"}]}]}, timeout=20)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == 401 and refused.json()["error"]["status"] == "UNAUTHENTICATED"
    assert wrong not in refused.text
    broken = httpx.post(gateway.url(f"/v1beta/models/always-failing:generateContent?key={QUERY_KEY}"), json={"contents": [{"parts": [{"text": "hi"}]}]}, timeout=30)
    assert broken.status_code >= 500 and QUERY_KEY not in broken.text
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and '"token":"query"' not in gateway.log():  # access lines are written off the hot path
        time.sleep(0.1)
    log = gateway.log()
    assert '"token":"query"' in log  # the query-key requests were logged, by token name
    assert QUERY_KEY not in log and wrong not in log


def test_models_list(gateway: GatewayProcess) -> None:
    client = genai.Client(api_key=CLIENT_KEY, http_options=types.HttpOptions(base_url=gateway.url(""), api_version="v1beta", timeout=20_000))
    names = [m.name for m in client.models.list()]
    assert "models/gemini-2.5-flash" in names and "models/gemini-on-openai" in names
    limited = httpx.get(gateway.url("/v1beta/models"), headers={"x-goog-api-key": LIMITED_KEY}, timeout=20).json()
    assert [m["name"] for m in limited["models"]] == ["models/gemini-on-openai"]
    assert "generateContent" in limited["models"][0]["supportedGenerationMethods"]
    assert httpx.get(gateway.url("/v1beta/models"), timeout=20).json()["error"]["status"] == "UNAUTHENTICATED"
    refused = httpx.post(gateway.url("/v1beta/models"), headers={"x-goog-api-key": CLIENT_KEY}, timeout=20)
    assert refused.status_code == 405 and refused.json()["error"]["code"] == 405

    one = client.models.get(model="gemini-on-openai")
    assert one.name == "models/gemini-on-openai" and "generateContent" in one.supported_actions
    hidden = httpx.get(gateway.url("/v1beta/models/gemini-2.5-flash"), headers={"x-goog-api-key": LIMITED_KEY}, timeout=20)
    assert hidden.status_code == 404 and hidden.json()["error"]["status"] == "NOT_FOUND"


def test_refusals_in_google_shape(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    def post(model: str, body: Any, key: str = CLIENT_KEY, method: str = "generateContent") -> httpx.Response:
        return httpx.post(gateway.url(f"/v1beta/models/{model}:{method}"), content=body if isinstance(body, bytes) else json.dumps(body),
                          headers={"x-goog-api-key": key, "content-type": "application/json"}, timeout=30)

    hi = {"contents": [{"parts": [{"text": "hi"}]}]}
    cases = [
        (post("no-such-model", hi), 404, "NOT_FOUND"),
        (post("gemini-2.5-flash", hi, key=LIMITED_KEY), 403, "PERMISSION_DENIED"),
        (post("gemini-on-openai", b"{not json"), 400, "INVALID_ARGUMENT"),
        (post("gemini-on-openai", {"contents": []}), 400, "INVALID_ARGUMENT"),
        (post("gemini-on-openai", hi, method="embedContent"), 400, "INVALID_ARGUMENT"),
        (post("always-failing", hi), 502, "INTERNAL"),
    ]
    for answer, status, google_status in cases:
        assert answer.status_code == status, answer.text
        error = answer.json()["error"]
        assert (error["code"], error["status"]) == (status, google_status) and error["message"]
    assert "Traceback" not in gateway.log()


def test_rate_limit_is_resource_exhausted(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    statuses = []
    for _ in range(4):
        answer = httpx.post(gateway.url("/v1beta/models/gemini-on-openai:generateContent"), json={"contents": [{"parts": [{"text": "hi"}]}]},
                            headers={"x-goog-api-key": LIMITED_KEY}, timeout=20)
        statuses.append(answer.status_code)
    assert 429 in statuses
    limited = answer.json()["error"]
    assert (limited["code"], limited["status"]) == (429, "RESOURCE_EXHAUSTED")


def test_builtin_google_tool_on_a_translated_channel_is_a_clear_400(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    path, body = cli_request("web_search_builtin_tool.request.json")
    answer = httpx.post(gateway.url(path.replace(path.split("/")[3].split(":")[0], "gemini-on-openai")), json=body,
                        headers={"x-goog-api-key": CLIENT_KEY}, timeout=20)
    assert answer.status_code == 400
    assert "googleSearch" in answer.json()["error"]["message"] and answer.json()["error"]["status"] == "INVALID_ARGUMENT"


# --- Gemini CLI's recorded request shapes, replayed -----------------------------------------------------------


@pytest.mark.parametrize("name", ["stream_first_turn.request.json", "stream_function_response.request.json"])
def test_cli_stream_turns_native_and_translated(name: str, gateway: GatewayProcess, vendor: FakeVendor) -> None:
    path, body = cli_request(name)
    model = path.split("/")[3].split(":")[0]
    vendor.reply_sse(UPSTREAM.format(model=model, method="streamGenerateContent"), "gemini/stream_generate_content_alt_sse_text.sse")
    native = httpx.post(gateway.url(path), json=body, headers={"x-goog-api-key": CLIENT_KEY}, timeout=20)
    assert native.content == fixture_bytes("gemini/stream_generate_content_alt_sse_text.sse")
    assert vendor.received[-1].json() == body

    vendor.reply_sse("/v1/chat/completions", "openai/chat_stream_text_include_usage.sse")
    translated = httpx.post(gateway.url(path.replace(model, "gemini-on-openai")), json=body, headers={"x-goog-api-key": CLIENT_KEY}, timeout=20)
    assert translated.status_code == 200, translated.text
    events = data_events(translated.content)
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    sent = vendor.received[-1].json()
    assert sent["messages"][0]["role"] == "system" and sent["stream"] is True
    assert all("$schema" not in t["function"]["parameters"] for t in sent["tools"])
    if "functionResponse" in json.dumps(body):
        tool_messages = [m for m in sent["messages"] if m["role"] == "tool"]
        calls = [c for m in sent["messages"] if m["role"] == "assistant" for c in m.get("tool_calls") or ()]
        assert tool_messages and {m["tool_call_id"] for m in tool_messages} <= {c["id"] for c in calls}


def test_cli_json_next_speaker_and_count_tokens(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    path, body = cli_request("generate_json_next_speaker.request.json")
    model = path.split("/")[3].split(":")[0]
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    answer = httpx.post(gateway.url(path.replace(model, "gemini-on-openai")), json=body, headers={"x-goog-api-key": CLIENT_KEY}, timeout=20)
    assert answer.status_code == 200
    sent = vendor.received[-1].json()
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == body["generationConfig"]["responseJsonSchema"]

    path, body = cli_request("count_tokens.request.json")
    model = path.split("/")[3].split(":")[0]
    vendor.reply_json(UPSTREAM.format(model=model, method="countTokens"), {"totalTokens": 77})
    counted = httpx.post(gateway.url(path), json=body, headers={"x-goog-api-key": CLIENT_KEY}, timeout=20)
    assert counted.json() == {"totalTokens": 77}
    assert vendor.received[-1].json() == body


def test_a_failure_after_the_first_byte_is_an_error_object(client: genai.Client, gateway: GatewayProcess, vendor: FakeVendor) -> None:
    recorded = sse_events(fixture_bytes("openai/chat_stream_text_include_usage.sse"))
    vendor.reply("POST", "/v1/chat/completions", Reply(chunks=recorded[:3], content_type="text/event-stream", cut=True))
    raw = httpx.post(gateway.url("/v1beta/models/gemini-on-openai:streamGenerateContent?alt=sse"), json={"contents": [{"parts": [{"text": "hi"}]}]},
                     headers={"x-goog-api-key": CLIENT_KEY}, timeout=20)
    events = data_events(raw.content)
    assert events[0]["candidates"][0]["content"]["parts"][0]["text"]
    assert events[-1]["error"]["code"] == 500 and events[-1]["error"]["status"] == "INTERNAL" and events[-1]["error"]["message"]
    assert not any("finishReason" in json.dumps(e) for e in events)  # nothing follows the error

    vendor.reply("POST", "/v1/chat/completions", Reply(chunks=recorded[:3], content_type="text/event-stream", cut=True))
    with pytest.raises(genai_errors.APIError):  # the SDK raises on a chunk that is an error object
        list(client.models.generate_content_stream(model="gemini-on-openai", contents="hi"))


@pytest.mark.parametrize("body", [
    {"contents": "hi"},
    {"contents": [1, 2]},
    {"contents": [{"parts": "hi"}]},
    {"contents": [{"role": "user", "parts": [{"inlineData": None}, {"text": 5}]}]},
    {"contents": [{"role": "model", "parts": [{"functionCall": {"name": 5, "args": "x"}}]}]},
    {"contents": [{"parts": [{"functionResponse": {"name": "f", "response": "plain"}}]}]},
    {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"thinkingConfig": {"thinkingBudget": "lots"}, "maxOutputTokens": "9"}},
    {"contents": [{"parts": [{"text": "hi"}]}], "tools": "x", "toolConfig": 3, "systemInstruction": 5},
    {"contents": [{"parts": [{"text": "hi"}]}], "tools": [{"functionDeclarations": [{"name": "t", "parameters": {"type": 5}}]}]},
])
def test_odd_bodies_get_a_clear_answer_never_a_crash(body: dict[str, Any], gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    answer = httpx.post(gateway.url("/v1beta/models/gemini-on-openai:generateContent"), json=body, headers={"x-goog-api-key": CLIENT_KEY}, timeout=20)
    assert answer.status_code in (200, 400), answer.text
    if answer.status_code == 400:
        assert answer.json()["error"]["code"] == 400 and answer.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "Traceback" not in gateway.log()


def test_metrics_tell_gemini_traffic_from_chat(client: genai.Client, gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    client.models.generate_content(model="gemini-on-openai", contents="hi")
    client.models.count_tokens(model="gemini-on-openai", contents="hi")
    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline and 'endpoint="gemini/count_tokens"' not in text:
        text = httpx.get(gateway.url("/metrics")).text
        time.sleep(0.2)
    assert 'oneapi_requests_total{endpoint="gemini/chat",status="200"}' in text
    assert 'oneapi_requests_total{endpoint="gemini/count_tokens",status="200"}' in text
    assert CLIENT_KEY not in text and QUERY_KEY not in text
