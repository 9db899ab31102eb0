"""One API's vendors without recordings, end to end: the official openai SDK -> gateway -> a fake vendor answering
with the examples of the vendor's own docs (each provider file names its doc page)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import openai
import pytest

from conftest import CLIENT_KEY, PROVIDERS_DIR, GatewayProcess, serve_for_module
from fakevendor import FakeVendor, Reply
from oneapi.documents import ConfigError
from oneapi.providers import load_providers
from oneapi.snapshot import build_snapshot

DEEPL_ANSWER = {"translations": [{"detected_source_language": "EN", "text": "Hallo, Welt!"}]}
REPLICATE_ANSWER = {"id": "gm3qorzdhgbfurvjtvhg6dckhu", "status": "succeeded", "output": ["The", " capital", " is", " Paris."]}
COZE_STREAM = [
    b'event:conversation.chat.created\ndata:{"id":"7382159487131697202","conversation_id":"7381473525342978089","status":"created"}\n\n',
    b'event:conversation.message.delta\ndata:{"id":"738215949412347","role":"assistant","type":"answer","content":"2024 ","content_type":"text"}\n\n',
    b'event:conversation.message.delta\ndata:{"id":"738215949412347","role":"assistant","type":"answer","content":"is a leap year.","content_type":"text"}\n\n',
    b'event:conversation.chat.completed\ndata:{"id":"7382159487131697202","status":"completed","usage":{"token_count":30,"output_count":10,"input_count":20}}\n\n',
    b'event:done\ndata:"[DONE]"\n\n',
]
COZE_ACCEPTED = {"data": {"id": "7382159487131697202", "conversation_id": "7381473525342978089", "status": "in_progress"}, "code": 0, "msg": ""}


@pytest.fixture(scope="module")
def vendor() -> Iterator[FakeVendor]:
    with FakeVendor() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, vendor: FakeVendor) -> Iterator[GatewayProcess]:
    def channel(provider: str, models: list[str], **extra: object) -> dict:
        return {"name": provider, "provider": provider, "base_url": vendor.base_url, "keys": [f"{provider}-secret-key"],
                "models": models, **extra}

    yield from serve_for_module(tmp_path_factory, "vendors", {
        "listen": "127.0.0.1:3000",
        "providers_dir": str(PROVIDERS_DIR),
        "channels": [
            channel("deepl", ["deepl-de"]),
            channel("coze", ["bot-7379462189365198898"], options={"user_id": "ops"}),
            channel("cloudflare", ["@cf/meta/llama-3.1-8b-instruct"], options={"account_id": "023e105f4ecef8ad9ca31a8372d0c353"}),
            channel("replicate", ["meta/meta-llama-3-8b-instruct"]),
        ],
        "tokens": [{"name": "tester", "key": CLIENT_KEY}],
    })


def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url("/v1"), api_key=CLIENT_KEY, max_retries=0, timeout=20)


def test_deepl_translates_as_chat_with_its_own_auth_header(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_json("/v2/translate", DEEPL_ANSWER)

    answer = client(gateway).chat.completions.create(model="deepl-de", messages=[{"role": "user", "content": "Hello, world!"}])

    assert answer.choices[0].message.content == "Hallo, Welt!"
    sent = vendor.requests_to("/v2/translate")[-1]
    assert sent.json() == {"text": ["Hello, world!"], "target_lang": "DE"}
    assert sent.headers["authorization"] == "DeepL-Auth-Key deepl-secret-key"


def test_a_vendor_that_cannot_stream_answers_a_stream_in_one_chunk(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_json("/v2/translate", DEEPL_ANSWER)

    chunks = list(client(gateway).chat.completions.create(
        model="deepl-de", messages=[{"role": "user", "content": "Hello, world!"}], stream=True))

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hallo, Welt!"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_coze_streams_a_bot_reply_with_its_usage(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply("POST", "/v3/chat", Reply(chunks=COZE_STREAM, content_type="text/event-stream"))

    chunks = list(client(gateway).chat.completions.create(
        model="bot-7379462189365198898", messages=[{"role": "user", "content": "Is 2024 a leap year?"}], stream=True,
        stream_options={"include_usage": True}))

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "2024 is a leap year."
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 30
    sent = vendor.requests_to("/v3/chat")[-1].json()
    assert (sent["bot_id"], sent["user_id"], sent["stream"]) == ("7379462189365198898", "ops", True)


def test_coze_refuses_a_request_without_stream_with_a_clear_error(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_json("/v3/chat", COZE_ACCEPTED)

    with pytest.raises(openai.BadRequestError) as raised:
        client(gateway).chat.completions.create(model="bot-7379462189365198898", messages=[{"role": "user", "content": "hi"}])

    assert raised.value.status_code == 400
    assert "stream: true" in raised.value.message
    assert raised.value.body["code"] == "stream_required"


def test_cloudflare_puts_the_account_in_the_path(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    path = "/client/v4/accounts/023e105f4ecef8ad9ca31a8372d0c353/ai/v1/chat/completions"
    vendor.reply_json(path, {"id": "id-1", "object": "chat.completion", "created": 1, "model": "@cf/meta/llama-3.1-8b-instruct",
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": "Beep boop"}, "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})

    answer = client(gateway).chat.completions.create(model="@cf/meta/llama-3.1-8b-instruct",
                                                     messages=[{"role": "user", "content": "Make some robot noises"}])

    assert answer.choices[0].message.content == "Beep boop"
    assert vendor.requests_to(path)[-1].headers["authorization"] == "Bearer cloudflare-secret-key"


def test_replicate_runs_a_prediction_and_waits_for_it(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_json("/v1/predictions", REPLICATE_ANSWER, status=201)

    answer = client(gateway).chat.completions.create(model="meta/meta-llama-3-8b-instruct",
                                                     messages=[{"role": "user", "content": "Capital of France?"}])

    assert answer.choices[0].message.content == "The capital is Paris."
    sent = vendor.requests_to("/v1/predictions")[-1]
    assert sent.headers["prefer"] == "wait"
    assert sent.json() == {"version": "meta/meta-llama-3-8b-instruct", "input": {"prompt": "user: Capital of France?\n"}}


def test_replicate_prediction_that_failed_inside_a_2xx_is_a_502(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_json("/v1/predictions", {"id": "x", "status": "failed", "output": None, "error": "CUDA out of memory"}, status=201)

    with pytest.raises(openai.APIStatusError) as raised:
        client(gateway).chat.completions.create(model="meta/meta-llama-3-8b-instruct", messages=[{"role": "user", "content": "hi"}])

    assert raised.value.status_code == 502
    assert "replicate-secret-key" not in json.dumps(raised.value.body)


def test_a_channel_missing_an_option_the_provider_needs_is_refused_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "channels:\n"
        "  - name: cf\n"
        "    provider: cloudflare\n"
        "    keys: [k]\n"
        "    models: ['@cf/meta/llama-3.1-8b-instruct']\n")

    with pytest.raises(ConfigError) as raised:
        build_snapshot(tmp_path / "config.yaml")

    assert [str(p) for p in raised.value.problems] == [
        f"{tmp_path / 'config.yaml'}:2: channel 'cf': provider 'cloudflare' needs account_id in the channel's options"]


@pytest.mark.parametrize(("provider", "base_url", "endpoint"), [
    ("novita", "https://api.novita.ai/v3/openai", "https://api.novita.ai/v3/openai"),  # One API's default base URL
    ("novita", None, "https://api.novita.ai/v3/openai"),
    ("gemini-openai", "https://generativelanguage.googleapis.com/v1beta/openai/", "https://generativelanguage.googleapis.com/v1beta/openai"),
    ("perplexity", None, "https://api.perplexity.ai"),
    ("doubao", "https://ark.cn-beijing.volces.com", "https://ark.cn-beijing.volces.com/api/v3"),
    ("minimax", "https://api.minimax.chat", "https://api.minimax.chat/v1"),
])
def test_one_api_base_urls_are_not_doubled(provider: str, base_url: str | None, endpoint: str) -> None:
    providers, _ = load_providers(PROVIDERS_DIR)
    assert providers[provider].endpoint(base_url) == endpoint
