"""End to end: /v1/audio/speech and /v1/audio/transcriptions with the official openai SDK -> gateway (Granian)
-> fake vendor replaying OpenAI's recorded and documented audio payloads.

One gateway serves the module: the vendor's routes are set per test.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import os
import time
from typing import Any, Iterator

import httpx
import openai
import pytest

from conftest import CLIENT_KEY, PROVIDERS_DIR, UPSTREAM_KEY, GatewayProcess, serve_for_module
from fakevendor import FakeVendor, Received, Reply, fixture_bytes, fixture_json

MAX_BODY = 2_000_000
ADMIN_KEY = "admin-secret-key-for-audio-tests"
TRANSCRIBE = "/v1/audio/transcriptions"
SPEECH = "/v1/audio/speech"


@pytest.fixture(scope="module")
def vendor() -> Iterator[FakeVendor]:
    with FakeVendor() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(vendor: FakeVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {
        "listen": "127.0.0.1:3000",
        "providers_dir": str(PROVIDERS_DIR),
        "max_body_bytes": MAX_BODY,
        "admin_key": ADMIN_KEY,
        "channels": [
            {"name": "main", "provider": "openai", "base_url": vendor.base_url, "keys": [UPSTREAM_KEY],
             "models": ["whisper-1", "gpt-4o-transcribe", "tts-1", "gpt-4o-mini-tts"], "model_map": {"whisper-alias": "whisper-1"}},
            # two channels for one model: the first fails, the upload must reach the second whole
            {"name": "first", "provider": "custom", "base_url": vendor.base_url + "/first", "keys": ["sk-first-0123456789"],
             "models": ["whisper-fo"], "priority": 10},
            {"name": "second", "provider": "custom", "base_url": vendor.base_url + "/second", "keys": ["sk-second-0123456789"],
             "models": ["whisper-fo"], "model_map": {"whisper-fo": "whisper-large-v3"}},
            {"name": "chat-only", "provider": "deepseek", "base_url": vendor.base_url, "keys": [UPSTREAM_KEY], "models": ["deepseek-chat"]},
        ],
        "tokens": [{"name": "tester", "key": CLIENT_KEY}],
    }
    yield from serve_for_module(tmp_path_factory, "audio", config)


@pytest.fixture
def sdk(gateway: GatewayProcess, vendor: FakeVendor) -> openai.OpenAI:
    vendor.received.clear()
    return openai.OpenAI(base_url=gateway.url("/v1"), api_key=CLIENT_KEY, max_retries=0, timeout=20)


def form_parts(received: Received) -> dict[str, tuple[str | None, bytes]]:
    """The multipart form the vendor received: name -> (filename, content)."""
    head = f"Content-Type: {received.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + received.body)
    assert message.is_multipart()
    parts = {}
    for part in message.iter_parts():
        parts[part.get_param("name", header="content-disposition")] = (part.get_filename(), part.get_payload(decode=True))
    return parts


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {CLIENT_KEY}"}


def check_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    return error


# --- transcriptions ---------------------------------------------------------

def test_verbose_transcription_through_the_sdk(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_fixture(TRANSCRIBE, "openai/audio_transcription_verbose.json")
    audio = os.urandom(40_000)

    result = sdk.audio.transcriptions.create(model="whisper-1", file=("galileo.mp3", audio, "audio/mpeg"),
                                             response_format="verbose_json", timestamp_granularities=["word"])

    recorded = fixture_json("openai/audio_transcription_verbose.json")
    assert result.text == recorded["text"]
    assert result.duration == recorded["duration"]
    assert [w.word for w in result.words] == [w["word"] for w in recorded["words"]]
    sent = vendor.requests_to(TRANSCRIBE)[-1]
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert CLIENT_KEY not in json.dumps(sent.headers)
    parts = form_parts(sent)
    assert parts["file"] == ("galileo.mp3", audio)
    assert parts["model"][1] == b"whisper-1"
    assert parts["response_format"][1] == b"verbose_json"
    assert parts["timestamp_granularities[]"][1] == b"word"


def test_mapped_model_is_rewritten_in_the_form_and_a_large_file_arrives_intact(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_fixture(TRANSCRIBE, "openai/docs_audio_transcription.json")
    audio = os.urandom(1_600_000)  # past the part of the spool kept in memory

    result = sdk.audio.transcriptions.create(model="whisper-alias", file=("talk.wav", audio))

    assert result.text == fixture_json("openai/docs_audio_transcription.json")["text"]
    assert result.usage.total_tokens == 59
    sent = vendor.requests_to(TRANSCRIBE)[-1]
    parts = form_parts(sent)
    assert parts["model"][1] == b"whisper-1"
    assert parts["file"] == ("talk.wav", audio)
    assert int(sent.headers["content-length"]) == len(sent.body)  # length recomputed for the rewritten model


def test_text_format_is_relayed_as_text(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply("POST", TRANSCRIBE, Reply(body=b"Imagine the wildest idea that you've ever had.\n", content_type="text/plain; charset=utf-8"))

    text = sdk.audio.transcriptions.create(model="whisper-1", file=("a.mp3", b"ID3" + os.urandom(1000)), response_format="text")

    assert text.strip() == "Imagine the wildest idea that you've ever had."


def test_streamed_transcription_events(sdk: openai.OpenAI, gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_sse(TRANSCRIBE, "openai/docs_audio_transcription_stream.sse")

    events = list(sdk.audio.transcriptions.create(model="gpt-4o-transcribe", file=("a.mp3", os.urandom(2000)), stream=True))

    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    done = [e for e in events if e.type == "transcript.text.done"]
    assert len(done) == 1 and "".join(deltas) == done[0].text
    assert done[0].usage.total_tokens == 59
    assert form_parts(vendor.requests_to(TRANSCRIBE)[-1])["stream"][1] == b"true"

    with httpx.stream("POST", gateway.url(TRANSCRIBE), headers=auth(), timeout=20,
                      data={"model": "gpt-4o-transcribe", "stream": "true"}, files={"file": ("a.mp3", b"ID3")}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read()
    # relayed byte for byte; the documented example's last event lacks its blank line, which the gateway completes
    assert body == fixture_bytes("openai/docs_audio_transcription_stream.sse") + b"\n"


def test_upload_reaches_the_vendor_while_the_client_is_still_sending(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_fixture(TRANSCRIBE, "openai/docs_audio_transcription.json")
    request = httpx.Request("POST", gateway.url(TRANSCRIBE), data={"model": "whisper-1"}, files={"file": ("a.mp3", os.urandom(600_000))})
    body = request.read()
    last_sent: list[float] = []

    def slowly() -> Iterator[bytes]:
        yield body[:200_000]
        time.sleep(1.0)
        last_sent.append(time.monotonic())
        yield body[200_000:]

    response = httpx.post(gateway.url(TRANSCRIBE), content=slowly(), timeout=20,
                          headers={**auth(), "Content-Type": request.headers["content-type"]})

    assert response.status_code == 200, response.text
    sent = vendor.requests_to(TRANSCRIBE)[-1]
    assert sent.body == body
    assert "content-length" not in sent.headers  # a chunked upload goes on chunked
    # a buffering gateway would start sending only after the client's last byte
    assert sent.body_started is not None and sent.body_started < last_sent[0] - 0.5


def test_failover_replays_the_whole_upload_to_the_next_channel(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.reply_json("/first/v1/audio/transcriptions", {"error": {"message": "overloaded", "type": "server_error"}}, status=503)
    vendor.reply_fixture("/second/v1/audio/transcriptions", "openai/docs_audio_transcription.json")
    audio = os.urandom(1_200_000)

    result = sdk.audio.transcriptions.create(model="whisper-fo", file=("a.flac", audio), language="en")

    assert result.text.startswith("Imagine")
    first = form_parts(vendor.requests_to("/first/v1/audio/transcriptions")[-1])
    second = vendor.requests_to("/second/v1/audio/transcriptions")[-1]
    assert second.headers["authorization"] == "Bearer sk-second-0123456789"
    parts = form_parts(second)
    assert first["model"][1] == b"whisper-fo" and parts["model"][1] == b"whisper-large-v3"
    assert parts["file"] == ("a.flac", audio) and parts["language"][1] == b"en"


def test_an_upload_over_max_body_bytes_is_a_413(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_fixture(TRANSCRIBE, "openai/docs_audio_transcription.json")
    request = httpx.Request("POST", gateway.url(TRANSCRIBE), data={"model": "whisper-1"}, files={"file": ("a.mp3", os.urandom(MAX_BODY + 1000))})
    body = request.read()
    headers = {**auth(), "Content-Type": request.headers["content-type"]}

    declared = httpx.post(gateway.url(TRANSCRIBE), content=body, headers=headers, timeout=20)
    check_error(declared, 413)

    def chunked() -> Iterator[bytes]:
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    try:
        streamed = httpx.post(gateway.url(TRANSCRIBE), content=chunked(), headers=headers, timeout=20)
    except httpx.HTTPError:
        pytest.fail("the gateway should answer 413, not drop the connection")
    assert check_error(streamed, 413)["code"] == "request_too_large"
    assert httpx.get(gateway.url("/health")).status_code == 200


def test_form_mistakes_are_clean_4xx(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.received.clear()
    file = {"file": ("a.mp3", b"ID3")}
    assert check_error(httpx.post(gateway.url(TRANSCRIBE), headers=auth(), json={"model": "whisper-1"}), 400)["code"] == "invalid_content_type"
    assert check_error(httpx.post(gateway.url(TRANSCRIBE), headers=auth(), data={"language": "en"}, files=file), 400)["param"] == "model"
    assert check_error(httpx.post(gateway.url(TRANSCRIBE), headers=auth(), data={"model": "no-such"}, files=file), 404)["code"] == "model_not_found"
    error = check_error(httpx.post(gateway.url(TRANSCRIBE), headers=auth(), data={"model": "deepseek-chat"}, files=file), 404)
    assert error["code"] == "operation_not_supported"
    check_error(httpx.post(gateway.url(TRANSCRIBE), data={"model": "whisper-1"}, files=file), 401)
    garbage = httpx.post(gateway.url(TRANSCRIBE), headers={**auth(), "Content-Type": "multipart/form-data; boundary=xyz"}, content=os.urandom(5000))
    assert check_error(garbage, 400)["param"] == "model"
    assert not vendor.received


# --- speech -------------------------------------------------------------------

def test_speech_audio_is_streamed_through_with_its_content_type(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    audio = [b"ID3\x04" + os.urandom(20_000), os.urandom(20_000), os.urandom(5_000)]
    vendor.reply("POST", SPEECH, Reply(chunks=audio, delays=[0, 0.6, 0.6], content_type="audio/mpeg"))

    started = time.monotonic()
    with sdk.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input="The quick brown fox.") as response:
        assert response.headers["content-type"] == "audio/mpeg"
        pieces = response.iter_bytes()
        first = next(pieces)
        first_at = time.monotonic() - started
        data = first + b"".join(pieces)
    total = time.monotonic() - started

    assert data == b"".join(audio)
    assert first_at < total - 0.8  # the first bytes came before the vendor had finished
    sent = vendor.requests_to(SPEECH)[-1]
    assert sent.json() == {"model": "tts-1", "voice": "alloy", "input": "The quick brown fox."}
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_speech_read_whole_by_the_sdk(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    audio = b"RIFF" + os.urandom(30_000)
    vendor.reply("POST", SPEECH, Reply(body=audio, content_type="audio/wav"))

    response = sdk.audio.speech.create(model="gpt-4o-mini-tts", voice="coral", input="hi", response_format="wav", instructions="cheerful")

    assert response.content == audio
    assert vendor.requests_to(SPEECH)[-1].json()["instructions"] == "cheerful"


def test_speech_asked_as_a_stream_is_still_relayed_by_its_content_type(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    audio = [b"ID3\x04" + os.urandom(8_000), os.urandom(8_000)]
    vendor.reply("POST", SPEECH, Reply(chunks=audio, delay=0.05, content_type="audio/mpeg"))

    response = httpx.post(gateway.url(SPEECH), headers=auth(), timeout=20,  # some vendors take `stream: true` for chunked audio
                          json={"model": "tts-1", "voice": "alloy", "input": "hi", "stream": True})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/mpeg" and response.content == b"".join(audio)


def test_speech_cut_upstream_is_an_error_for_the_client(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply("POST", SPEECH, Reply(chunks=[os.urandom(10_000), os.urandom(10_000)], delay=0.05, content_type="audio/mpeg", cut=True))

    with pytest.raises(httpx.HTTPError):  # a truncated file must not look like a whole one
        with httpx.stream("POST", gateway.url(SPEECH), headers=auth(), timeout=20,
                          json={"model": "tts-1", "voice": "alloy", "input": "hi"}) as response:
            assert response.status_code == 200
            response.read()
    assert httpx.get(gateway.url("/health")).status_code == 200


def test_speech_errors(sdk: openai.OpenAI, gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_json(SPEECH, {"error": {"message": "Invalid voice 'nope'.", "type": "invalid_request_error", "param": "voice", "code": None}}, status=400)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.audio.speech.create(model="tts-1", voice="nope", input="hi")  # type: ignore[arg-type]
    assert "Invalid voice" in caught.value.message

    assert check_error(httpx.post(gateway.url(SPEECH), headers=auth(), json={"model": "tts-1", "voice": "alloy"}), 400)["param"] == "input"
    assert check_error(httpx.post(gateway.url(SPEECH), headers=auth(), json={"model": "deepseek-chat", "input": "x"}), 404)["code"] == "operation_not_supported"
    vendor.reply_json(SPEECH, {"error": {"message": "upstream overloaded", "code": 503}})  # an error in a 200
    check_error(httpx.post(gateway.url(SPEECH), headers=auth(), json={"model": "tts-1", "voice": "alloy", "input": "x"}), 502)


# --- accounting ---------------------------------------------------------------

def model_usage(gateway: GatewayProcess, model: str, requests: int, since: float) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        totals = httpx.get(gateway.url("/admin/usage"), params={"model": model, "since": since},
                           headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10).json()["totals"]
        if totals["requests"] >= requests or time.monotonic() > deadline:
            return totals
        time.sleep(0.1)


def test_audio_is_metered_from_the_vendors_usage_or_estimated(sdk: openai.OpenAI, gateway: GatewayProcess, vendor: FakeVendor) -> None:
    since = time.time()
    vendor.reply_fixture(TRANSCRIBE, "openai/docs_audio_transcription.json")
    sdk.audio.transcriptions.create(model="gpt-4o-transcribe", file=("a.mp3", os.urandom(3000)))
    vendor.reply_sse(TRANSCRIBE, "openai/docs_audio_transcription_stream.sse")
    list(sdk.audio.transcriptions.create(model="gpt-4o-transcribe", file=("a.mp3", os.urandom(3000)), stream=True))

    recorded = fixture_json("openai/docs_audio_transcription.json")["usage"]  # both answers report 14 in, 45 out
    totals = model_usage(gateway, "gpt-4o-transcribe", 2, since)
    assert totals["requests"] == 2 and totals["estimated_requests"] == 0
    assert totals["prompt_tokens"] == 2 * recorded["input_tokens"] and totals["completion_tokens"] == 2 * recorded["output_tokens"]

    vendor.reply("POST", SPEECH, Reply(body=b"ID3" + os.urandom(5000), content_type="audio/mpeg"))
    sdk.audio.speech.create(model="gpt-4o-mini-tts", voice="alloy", input="The quick brown fox jumps over the lazy dog.")
    speech = model_usage(gateway, "gpt-4o-mini-tts", 1, since)
    assert speech["requests"] == 1 and speech["estimated_requests"] == 1 and speech["prompt_tokens"] > 0  # estimated from `input`
