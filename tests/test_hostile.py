"""Hostile input: whatever a client sends, it gets a clean OpenAI-shaped 4xx (or a relayed answer), never a 5xx,
never a stack trace, and the gateway stays healthy. Property-based, bounded in count and time."""

from __future__ import annotations

import json
import socket
from typing import Any, Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CLIENT_KEY, GatewayProcess, base_config, write_config
from fakevendor import FakeVendor, Reply, fixture_bytes, sse_events
from test_rerank import JINA_ANSWER

PATHS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/moderations", "/v1/images/generations",
         "/v1/audio/speech", "/v1/rerank"]

ANSWERS = {
    "/v1/completions": fixture_bytes("openai/completions.json"),
    "/v1/embeddings": fixture_bytes("openai/embeddings_float.json"),
    "/v1/images/generations": fixture_bytes("openai/images_generations_b64.json"),
    "/v1/rerank": json.dumps(JINA_ANSWER).encode(),
    # no recording: the shape of the API reference's example (platform.openai.com/docs/api-reference/moderations)
    "/v1/moderations": b'{"id": "modr-5558", "model": "omni-moderation-latest", "results": [{"flagged": false, "categories": {}, '
                       b'"category_scores": {}}]}',
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, FakeVendor]]:
    with FakeVendor() as vendor:
        stream = Reply(chunks=sse_events(fixture_bytes("openai/chat_stream_text_include_usage.sse")), content_type="text/event-stream")
        for path in PATHS:  # a well-behaved vendor: a stream when asked for one, else the answer of the path's own shape
            plain = Reply(body=ANSWERS.get(path) or fixture_bytes("openai/chat_completion_text.json"))
            vendor.reply("POST", path, lambda r, plain=plain: stream if r.json().get("stream") is True else plain)
        config_path = tmp_path_factory.mktemp("hostile") / "config.yaml"
        config = base_config(vendor, max_body_bytes=256 * 1024)
        config["channels"][0]["models"].extend(["omni-moderation-latest", "whisper-1"])
        vendor.reply_fixture("/v1/audio/transcriptions", "openai/docs_audio_transcription.json")
        write_config(config_path, config)
        gateway = GatewayProcess(config_path).start()
        try:
            yield gateway, vendor
        finally:
            gateway.stop()


def check_answer(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code == 400 and not response.content and response.headers.get("connection") == "close":
        return  # refused by Granian's HTTP parser (e.g. a control character in a header) before the app saw it
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "code", "param"}
        assert "Traceback" not in response.text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
VALID = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "prompt": "hi", "input": "hi"}
# near-valid requests: a valid one with a few fields replaced by anything at all, or by plausible values
overrides = st.dictionaries(
    st.sampled_from(["model", "messages", "stream", "n", "max_tokens", "temperature", "stream_options", "tools"]) | st.text(max_size=12),
    json_values | st.booleans() | st.sampled_from(["gpt-4o", "no-such", "", [], {}]),
    max_size=4,
)
bodies = st.tuples(st.sets(st.sampled_from(sorted(VALID))), overrides).map(
    lambda t: {**{k: VALID[k] for k in t[0]}, **t[1]}
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), body=bodies)
def test_any_json_body_gets_a_clean_answer(hostile: tuple[GatewayProcess, FakeVendor], path: str, body: dict[str, Any]) -> None:
    gateway, _ = hostile
    response = httpx.post(gateway.url(path), content=json.dumps(body), timeout=20,
                          headers={"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"})
    check_answer(response)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=2048))
def test_any_bytes_get_a_clean_answer(hostile: tuple[GatewayProcess, FakeVendor], raw: bytes) -> None:
    gateway, _ = hostile
    response = httpx.post(gateway.url("/v1/chat/completions"), content=raw, timeout=20,
                          headers={"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"})
    check_answer(response)
    assert response.status_code in (200, 400)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.text(max_size=200), extra=st.dictionaries(st.from_regex(r"\Ax-[a-z]{1,12}\Z"), st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=200), max_size=5))
def test_any_headers_get_a_clean_answer(hostile: tuple[GatewayProcess, FakeVendor], key: str, extra: dict[str, str]) -> None:
    gateway, _ = hostile
    headers = {"Authorization": "Bearer " + key.encode("utf-8", "surrogatepass").decode("latin-1"), **extra}
    try:
        response = httpx.post(gateway.url("/v1/chat/completions"), json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
                              headers=headers, timeout=20)
    except (httpx.LocalProtocolError, UnicodeEncodeError):
        return  # the client library itself refuses such a header; nothing reached the gateway
    check_answer(response)


form_parts = st.lists(
    st.tuples(st.sampled_from(["model", "file", "stream", "response_format", "language"]) | st.text(max_size=8),
              st.sampled_from([b"whisper-1", b"true", b"no-such", b""]) | st.binary(max_size=300),
              st.booleans()),  # sent as a file part
    max_size=5,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=form_parts, cut=st.none() | st.integers(min_value=0, max_value=2000),
       boundary=st.sampled_from(["b0undary", "a b", "x" * 70]), junk=st.binary(max_size=40))
def test_any_multipart_upload_gets_a_clean_answer(hostile: tuple[GatewayProcess, FakeVendor], parts: list[tuple[str, bytes, bool]],
                                                 cut: int | None, boundary: str, junk: bytes) -> None:
    gateway, _ = hostile
    body = junk
    for name, value, is_file in parts:
        filename = '; filename="a.mp3"' if is_file else ""
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n\r\n'.encode("utf-8", "replace") + value + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    if cut is not None:
        body = body[:cut]
    response = httpx.post(gateway.url("/v1/audio/transcriptions"), content=body, timeout=20,
                          headers={"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": f'multipart/form-data; boundary="{boundary}"'})
    check_answer(response)


def raw_request(gateway: GatewayProcess, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


@pytest.mark.parametrize(
    "head",
    [
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\nConnection: close\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\nConnection: close\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"k" * 60000 + b"\r\nConnection: close\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(500)) + b"Connection: close\r\n\r\n",
        b"GARBAGE\r\n\r\n",
    ],
)
def test_header_abuse_never_breaks_the_gateway(hostile: tuple[GatewayProcess, FakeVendor], head: bytes) -> None:
    gateway, _ = hostile
    answer = raw_request(gateway, head)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else None
    assert status is None or 400 <= status < 500, answer[:300]
    assert httpx.get(gateway.url("/health")).status_code == 200


def test_huge_body_is_refused_and_the_gateway_stays_healthy(hostile: tuple[GatewayProcess, FakeVendor]) -> None:
    gateway, vendor = hostile
    before = len(vendor.received)
    response = httpx.post(gateway.url("/v1/chat/completions"), content=b"{" + b" " * (8 * 1024 * 1024) + b"}",
                          headers={"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 413
    assert len(vendor.received) == before
    assert gateway.health()["status"] == "ok"
    assert "Traceback" not in gateway.log()
