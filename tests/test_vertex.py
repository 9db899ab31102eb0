"""End to end through Vertex AI provider files: a service-account key exchanged for a token at a fake token
endpoint, Claude on Vertex (Anthropic's format without its version header) and text embeddings via :predict.

No Vertex recording exists: Claude's answer is Anthropic's recording (the body format is the same), the
embeddings answer follows the documented :predict response shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import openai
import pytest

from conftest import CLIENT_KEY, PROVIDERS_DIR, GatewayProcess, write_config
from fakevendor import FakeVendor, fixture_json

CLAUDE_PATH = "/v1/projects/my-proj/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5:rawPredict"
EMBED_PATH = "/v1/projects/my-proj/locations/us-central1/publishers/google/models/text-embedding-005:predict"


def service_account() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return json.dumps({"type": "service_account", "client_email": "gw@my-proj.iam.gserviceaccount.com", "private_key": pem,
                       "private_key_id": "k1"})


@pytest.fixture(scope="module")
def vendor() -> Iterator[FakeVendor]:
    with FakeVendor() as fake:
        fake.reply_json("/token", {"access_token": "ya29.fake-token", "expires_in": 3600, "token_type": "Bearer"})
        yield fake


@pytest.fixture(scope="module")
def sdk(vendor: FakeVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    options = {"project": "my-proj", "token_url": vendor.base_url + "/token"}
    key = service_account()
    config = {
        "listen": "127.0.0.1:3000",
        "providers_dir": str(PROVIDERS_DIR),
        "channels": [
            {"name": "claude", "provider": "vertex-anthropic", "base_url": vendor.base_url, "keys": [key], "models": ["claude-sonnet-4-5"], "options": options},
            {"name": "gemini", "provider": "vertex", "base_url": vendor.base_url, "keys": [key], "models": ["text-embedding-005", "gemini-2.5-flash"],
             "options": {**options, "task_type": "RETRIEVAL_DOCUMENT"}},
        ],
        "tokens": [{"name": "tester", "key": CLIENT_KEY}],
    }
    path: Path = tmp_path_factory.mktemp("vertex") / "config.yaml"
    write_config(path, config)
    process = GatewayProcess(path).start()
    sdk = openai.OpenAI(base_url=process.url("/v1"), api_key=CLIENT_KEY, max_retries=0, timeout=20)
    sdk.gateway = process  # type: ignore[attr-defined]  # for the tests that speak another dialect to it
    yield sdk
    process.stop()


def test_claude_on_vertex_sends_the_version_in_the_body_only(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_json(CLAUDE_PATH, fixture_json("anthropic/message_text.json"))

    completion = sdk.chat.completions.create(model="claude-sonnet-4-5", max_tokens=100, messages=[{"role": "user", "content": "hi"}])

    assert completion.choices[0].message.content
    sent = vendor.requests_to(CLAUDE_PATH)[-1]
    assert sent.headers["authorization"] == "Bearer ya29.fake-token"
    assert "anthropic-version" not in sent.headers  # anthropic.yaml sets it; vertex-anthropic.yaml removes it
    assert "x-api-key" not in sent.headers
    body = sent.json()
    assert body["anthropic_version"] == "vertex-2023-10-16" and "model" not in body
    token_request = vendor.requests_to("/token")[-1]
    assert b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer" in token_request.body


def test_vertex_embeddings_via_predict(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_json(EMBED_PATH, {
        "predictions": [{"embeddings": {"statistics": {"truncated": False, "token_count": 4}, "values": [0.25, -0.5, 0.125]}},
                        {"embeddings": {"statistics": {"truncated": False, "token_count": 2}, "values": [1.0, 0.0, -1.0]}}],
        "metadata": {"billableCharacterCount": 20},
    })

    result = sdk.embeddings.create(model="text-embedding-005", input=["What is life?", "Why?"], dimensions=3, encoding_format="float")

    assert [d.embedding for d in result.data] == [[0.25, -0.5, 0.125], [1.0, 0.0, -1.0]]
    assert result.usage.prompt_tokens == 6
    sent = vendor.requests_to(EMBED_PATH)[-1]
    assert sent.headers["authorization"] == "Bearer ya29.fake-token"
    assert sent.json() == {"instances": [{"content": "What is life?", "task_type": "RETRIEVAL_DOCUMENT"},
                                         {"content": "Why?", "task_type": "RETRIEVAL_DOCUMENT"}],
                           "parameters": {"outputDimensionality": 3}}

    packed = sdk.embeddings.create(model="text-embedding-005", input="What is life?")  # the SDK asks for base64 by default
    assert packed.data[0].embedding == [0.25, -0.5, 0.125]


def test_messages_client_on_vertex_is_relayed_natively_at_raw_predict(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    """vertex-anthropic.yaml's `dialects:` entry: a Messages request goes to rawPredict as sent, but for the
    body changes Vertex needs (anthropic_version in, model out), with the service account's token."""
    import anthropic

    vendor.reply_json(CLAUDE_PATH, fixture_json("anthropic/message_text.json"))
    client = anthropic.Anthropic(base_url=str(sdk.base_url).removesuffix("v1/"), api_key=CLIENT_KEY, max_retries=0, timeout=20)

    message = client.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=[{"role": "user", "content": "hi"}],
                                     extra_headers={"anthropic-beta": "context-1m-2025-08-07"})

    assert message.content[0].text == fixture_json("anthropic/message_text.json")["content"][0]["text"]
    sent = vendor.requests_to(CLAUDE_PATH)[-1]
    assert sent.json() == {"max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], "anthropic_version": "vertex-2023-10-16"}
    assert sent.headers["authorization"] == "Bearer ya29.fake-token" and "x-api-key" not in sent.headers
    assert sent.headers["anthropic-beta"] == "context-1m-2025-08-07"
    assert "anthropic-version" not in sent.headers

    counted = client.messages.count_tokens(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}])
    assert counted.input_tokens > 0  # Vertex counts elsewhere: the gateway's estimate, nothing sent
    assert vendor.requests_to(CLAUDE_PATH)[-1] is sent


def test_gemini_clients_are_relayed_as_sent_to_vertex(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    import httpx

    from fakevendor import fixture_bytes

    path = "/v1/projects/my-proj/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
    vendor.reply_json(path, fixture_json("gemini/generate_content_text_thoughts_tokens.json"))
    raw = json.dumps({"contents": [{"role": "user", "parts": [{"text": "Hello!"}]}], "safetySettings": []}).encode()
    answer = httpx.post(sdk.gateway.url("/v1beta/models/gemini-2.5-flash:generateContent"), content=raw,  # type: ignore[attr-defined]
                        headers={"x-goog-api-key": CLIENT_KEY, "content-type": "application/json"}, timeout=20)
    assert answer.status_code == 200
    assert answer.json() == fixture_json("gemini/generate_content_text_thoughts_tokens.json")
    sent = vendor.requests_to(path)[-1]
    assert sent.body == raw and sent.headers["authorization"] == "Bearer ya29.fake-token"
    assert "x-goog-api-key" not in sent.headers

    stream_path = path.replace(":generateContent", ":streamGenerateContent")
    vendor.reply_sse(stream_path, "gemini/stream_generate_content_alt_sse_text.sse")
    streamed = httpx.post(sdk.gateway.url("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"), content=raw,  # type: ignore[attr-defined]
                          headers={"x-goog-api-key": CLIENT_KEY, "content-type": "application/json"}, timeout=20)
    assert streamed.content == fixture_bytes("gemini/stream_generate_content_alt_sse_text.sse")
    assert vendor.requests_to(stream_path)[-1].query == {"alt": "sse"}
