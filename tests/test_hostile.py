"""Hostile input: whatever a client sends, it gets a clean OpenAI-shaped 4xx (or a relayed answer), never a 5xx,
never a stack trace, and the gateway stays healthy. Property-based, bounded in count and time."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CLIENT_KEY, GatewayProcess, base_config, serve_for_module, write_config
from fakevendor import FakeVendor, Reply, fixture_bytes, sse_events
from oneapi.nesting import MAX_NESTING
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


# --- bodies nested deep, fields given twice (issue 13, points 5 and 7) ------------------------------------

BUDGETED_KEY = "sk-budgeted-client-0123456789"
ADMIN = {"Authorization": "Bearer admin-secret-key-for-tests"}
CLAUDE = "claude-haiku-4-5"
ANTHROPIC_EVENTS = sse_events(fixture_bytes("anthropic/stream_text_raw.sse"))


def nested(levels: int) -> bytes:
    """An object `levels` deep, as JSON text: {"a": {"a": ... {}}}."""
    return b'{"a": ' * (levels - 1) + b"{}" + b"}" * (levels - 1)


def body_nested(total: int, where: str, model: str, stream: bool) -> bytes:
    """A chat request whose deepest point is `total` levels down (the body itself is level 1), placed at `where`."""
    body: dict[str, Any] = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    if where == "tools":  # body > tools > tool > function > parameters
        body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": "DEEP"}}]
        levels = total - 4
    elif where == "content":  # body > messages > message > content > part > extra
        body["messages"] = [{"role": "user", "content": [{"type": "text", "text": "hi", "extra": "DEEP"}]}]
        levels = total - 5
    else:  # a field the gateway does not read, or one it does
        body[where] = "DEEP"
        levels = total - 1
    return json.dumps(body).encode().replace(b'"DEEP"', nested(levels))


def post_raw(gateway: GatewayProcess, raw: bytes, key: str = CLIENT_KEY, path: str = "/v1/chat/completions",
             content_type: str = "application/json") -> httpx.Response:
    return httpx.post(gateway.url(path), content=raw, timeout=30, headers={"Authorization": f"Bearer {key}", "Content-Type": content_type})


def admin_usage(gateway: GatewayProcess) -> dict[str, Any]:
    return httpx.get(gateway.url("/admin/usage"), headers=ADMIN, timeout=10).json()["totals"]


def answer_as_recorded(vendor: FakeVendor) -> None:
    """OpenAI's and Anthropic's recorded answers: a stream when asked for one."""
    stream = Reply(chunks=sse_events(fixture_bytes("openai/chat_stream_text_include_usage.sse")), content_type="text/event-stream")
    plain = Reply(body=fixture_bytes("openai/chat_completion_text.json"))
    vendor.reply("POST", "/v1/chat/completions", lambda r: stream if r.json().get("stream") is True else plain)
    claude_stream = Reply(chunks=ANTHROPIC_EVENTS, content_type="text/event-stream")
    claude = Reply(body=fixture_bytes("anthropic/message_text.json"))
    vendor.reply("POST", "/v1/messages", lambda r: claude_stream if r.json().get("stream") is True else claude)


@pytest.fixture(scope="module")
def deep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, FakeVendor]]:
    """An OpenAI channel (with a renamed model, so its bodies are re-serialised), an Anthropic one (translated), a token
    without limits and one with a budget (its prompts are estimated)."""
    with FakeVendor() as vendor:
        answer_as_recorded(vendor)
        config = base_config(vendor, pricing={"models": {"gpt-4o-mini": {"input": 1.0, "output": 2.0}, CLAUDE: {"input": 1.0, "output": 5.0}}})
        config["channels"][0]["model_map"] = {"mini-alias": "gpt-4o-mini"}
        config["channels"].append({"name": "claude", "provider": "anthropic", "base_url": vendor.base_url, "keys": ["sk-ant-0123456789"],
                                   "models": [CLAUDE], "max_concurrency": 1})
        config["tokens"].append({"name": "budgeted", "key": BUDGETED_KEY, "budget": 1000.0, "rpm": 100000})
        yield from ((gateway, vendor) for gateway in serve_for_module(tmp_path_factory, "deep", config))


MODELS = ["gpt-4o-mini", "mini-alias", CLAUDE]  # pass-through, pass-through re-serialised, translated
PLACES = ["tools", "content", "metadata", "stream_options"]


@pytest.mark.parametrize("total", [MAX_NESTING + 1, 600, 2000])
def test_json_nested_too_deep_is_a_400_wherever_it_is(deep: tuple[GatewayProcess, FakeVendor], total: int) -> None:
    gateway, vendor = deep
    before = len(vendor.received)
    for model in MODELS:
        for where in PLACES:
            for key in (CLIENT_KEY, BUDGETED_KEY):
                for stream in (False, True):
                    response = post_raw(gateway, body_nested(total, where, model, stream), key)
                    check_answer(response)
                    assert response.status_code == 400, (model, where, key, stream, response.text)
                    assert response.json()["error"]["code"] == "invalid_json"
    assert len(vendor.received) == before
    assert "Traceback" not in gateway.log()
    assert httpx.post(gateway.url("/v1/chat/completions"), headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=30,
                      json={"model": CLAUDE, "messages": [{"role": "user", "content": "hi"}]}).status_code == 200  # no slot leaked


def test_json_nested_too_deep_is_a_400_on_every_json_endpoint(hostile: tuple[GatewayProcess, FakeVendor]) -> None:
    gateway, vendor = hostile
    before = len(vendor.received)
    for path in PATHS:
        raw = json.dumps({**VALID, "model": "gpt-4o-mini", "voice": "alloy", "query": "q", "documents": ["d"], "extra": "DEEP"}).encode()
        response = post_raw(gateway, raw.replace(b'"DEEP"', nested(600)), path=path)
        check_answer(response)
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json", (path, response.text)
    assert len(vendor.received) == before


def test_json_nested_to_the_limit_is_relayed_intact(deep: tuple[GatewayProcess, FakeVendor]) -> None:
    gateway, vendor = deep
    for model in MODELS:
        for where in ("tools", "metadata"):
            for key in (CLIENT_KEY, BUDGETED_KEY):
                for stream in (False, True):
                    raw = body_nested(MAX_NESTING, where, model, stream)
                    body = json.loads(raw)
                    response = post_raw(gateway, raw, key)
                    assert response.status_code == 200, (model, where, key, stream, response.text)
                    if stream:
                        assert response.text.rstrip().endswith("data: [DONE]") and '"error"' not in response.text
                    sent = vendor.received[-1].json()
                    if model != CLAUDE:  # the vendor gets what the client sent (the model renamed)
                        assert sent[where] == body[where]
                    elif where == "tools":
                        assert sent["tools"][0]["input_schema"] == body["tools"][0]["function"]["parameters"]
    assert "Traceback" not in gateway.log()


def test_upstream_answers_nested_deep_are_relayed_or_fail_over_never_a_500(deep: tuple[GatewayProcess, FakeVendor]) -> None:
    gateway, vendor = deep
    ask = {"messages": [{"role": "user", "content": "hi"}]}
    # a pass-through answer is relayed byte for byte; with no usage in it, the record is estimated from its size
    answer = json.loads(fixture_bytes("openai/chat_completion_text.json"))
    del answer["usage"]
    answer["choices"][0]["message"]["content"] = "DEEP"
    raw_answer = json.dumps(answer).encode().replace(b'"DEEP"', nested(600))
    estimated = admin_usage(gateway)["estimated_requests"]
    vendor.reply("POST", "/v1/chat/completions", Reply(body=raw_answer))
    try:
        response = post_raw(gateway, json.dumps({"model": "gpt-4o-mini", **ask}).encode())
        assert response.status_code == 200 and response.content == raw_answer
        deadline = time.monotonic() + 10
        while admin_usage(gateway)["estimated_requests"] == estimated and time.monotonic() < deadline:
            time.sleep(0.1)
        assert admin_usage(gateway)["estimated_requests"] == estimated + 1

        # a translated answer is mapped and re-serialised: too deep for that is a bad answer (502, tried elsewhere)
        message = json.loads(fixture_bytes("anthropic/message_text.json"))
        message["content"][0]["text"] = "DEEP"
        vendor.reply("POST", "/v1/messages", Reply(body=json.dumps(message).encode().replace(b'"DEEP"', nested(600))))
        response = post_raw(gateway, json.dumps({"model": CLAUDE, **ask}).encode())
        assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_bad_response"

        # a translated stream event too deep to re-serialise ends the stream with an error event the SDKs raise
        events = [e.replace(b'"text":"2"', b'"text":' + nested(600)) for e in ANTHROPIC_EVENTS]
        assert events != ANTHROPIC_EVENTS
        vendor.reply("POST", "/v1/messages", Reply(chunks=events, content_type="text/event-stream"))
        requests = admin_usage(gateway)["requests"]
        response = post_raw(gateway, json.dumps({"model": CLAUDE, "stream": True, **ask}).encode())
        assert response.status_code == 200 and '"upstream_bad_response"' in response.text
        deadline = time.monotonic() + 10
        while admin_usage(gateway)["requests"] == requests and time.monotonic() < deadline:
            time.sleep(0.1)
        assert admin_usage(gateway)["requests"] == requests + 1
    finally:
        answer_as_recorded(vendor)
    assert "Traceback" not in gateway.log()


@pytest.mark.parametrize("fault", ["reading the reported usage", "estimating the prompt"])
def test_a_translated_stream_the_client_leaves_keeps_its_record_and_frees_its_slot_whatever_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    """The gateway in this process, so that its finishing can be made to fail: the usage record is still written
    and the channel's only slot (max_concurrency: 1) is given back."""
    import oneapi.metering
    import oneapi.streams
    from oneapi.app import Gateway
    from oneapi.ledger import UsageQuery
    from oneapi.relay import ENDPOINTS

    def broken(*args: Any) -> Any:
        raise RuntimeError(f"{fault} failed")

    if fault == "reading the reported usage":
        monkeypatch.setattr(oneapi.streams.StreamTranslator, "reported_usage", broken)
    else:
        monkeypatch.setattr(oneapi.metering, "estimate_prompt_tokens", broken)

    async def run(vendor: FakeVendor, config_path: Path) -> tuple[list[dict[str, Any]], Any, str | None]:
        gateway = Gateway(config_path)
        await gateway.start()
        try:
            left = asyncio.Event()
            requests = [{"type": "http.request", "more_body": False,
                         "body": json.dumps({"model": CLAUDE, "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()}]
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                if requests:
                    return requests.pop(0)
                await left.wait()
                return {"type": "http.disconnect"}

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)
                if b'"content":"2"' in message.get("body", b""):
                    left.set()  # the client has its first token and hangs up

            scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "client": ("127.0.0.1", 50000),
                     "headers": [(b"authorization", f"Bearer {CLIENT_KEY}".encode()), (b"content-type", b"application/json")]}
            await asyncio.wait_for(gateway.serve_relay(scope, receive, send, ENDPOINTS["chat"]), 20)
            await gateway.accounting.flush()
            report = await gateway.accounting.query(UsageQuery())
            slot = await gateway.accounting.acquire_slot("claude", 1, 10)
            return sent, report, slot
        finally:
            await gateway.stop()

    with FakeVendor() as vendor:
        # the vendor stalls after the first token: the client leaves before the usage event
        delays = [0.0] * len(ANTHROPIC_EVENTS)
        delays[ANTHROPIC_EVENTS.index(next(e for e in ANTHROPIC_EVENTS if b"content_block_stop" in e))] = 5.0
        vendor.reply("POST", "/v1/messages", Reply(chunks=ANTHROPIC_EVENTS, content_type="text/event-stream", delays=delays))
        config = base_config(vendor)
        config["channels"] = [{"name": "claude", "provider": "anthropic", "base_url": vendor.base_url, "keys": ["sk-ant-0123456789"],
                               "models": [CLAUDE], "max_concurrency": 1}]
        config_path = tmp_path / "config.yaml"
        write_config(config_path, config)
        sent, report, slot = asyncio.run(run(vendor, config_path))

    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert report.totals.requests == 1 and report.totals.estimated_requests == 1  # the record, estimated
    assert slot is not None  # the slot came back


@pytest.mark.parametrize("raw", [
    b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o"}',
    b'{"model": "gpt-4o-mini", "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "model": "' + CLAUDE.encode() + b'"}',
    b'{"model": "gpt-4o-mini", "stream": false, "messages": [{"role": "user", "content": "hi"}], "stream": true}',
    b'{"model": "gpt-4o-mini", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}',
], ids=["model", "model-same", "model-translated", "stream", "max_tokens"])
def test_a_deciding_field_given_twice_is_a_400(deep: tuple[GatewayProcess, FakeVendor], raw: bytes) -> None:
    gateway, vendor = deep
    before = len(vendor.received)
    for key in (CLIENT_KEY, BUDGETED_KEY):
        response = post_raw(gateway, raw, key)
        check_answer(response)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "duplicate_field" and error["param"] in ("model", "stream", "max_tokens")
        assert raw.count(b'"%s"' % error["param"].encode()) == 2 and f"'{error['param']}'" in error["message"]
    assert len(vendor.received) == before


def test_the_same_names_elsewhere_in_a_body_are_no_duplicates(deep: tuple[GatewayProcess, FakeVendor]) -> None:
    gateway, vendor = deep
    raw = (b'{"model": "mini-alias", "messages": [{"role": "user", "content": "model"}, {"role": "user", "content": "\\"model\\": 1"}],'
           b' "tools": [{"type": "function", "function": {"name": "pick", "parameters": {"type": "object",'
           b' "properties": {"model": {"type": "string"}, "stream": {"type": "boolean"}, "n": {"type": "integer"}}}}}], "stream": false}')
    response = post_raw(gateway, raw)
    assert response.status_code == 200, response.text
    sent = vendor.received[-1].json()
    assert sent["model"] == "gpt-4o-mini" and sent["tools"] == json.loads(raw)["tools"]


def multipart(parts: list[tuple[str, bytes, bool]], boundary: str = "b0undary") -> bytes:
    body = b""
    for name, value, is_file in parts:
        filename = b'; filename="a.mp3"' if is_file else b""
        body += b"--%s\r\nContent-Disposition: form-data; name=\"%s\"%s\r\n\r\n%s\r\n" % (boundary.encode(), name.encode(), filename, value)
    return body + b"--%s--\r\n" % boundary.encode()


@pytest.mark.parametrize("parts", [
    [("model", b"whisper-1", False), ("model", b"gpt-4o-transcribe", False), ("file", b"ID3" * 100, True)],
    [("model", b"whisper-1", False), ("file", b"ID3" * 60_000, True), ("model", b"gpt-4o-transcribe", False)],
    [("model", b"whisper-1", False), ("file", b"ID3" * 60_000, True), ("model", b"whisper-1", True)],
    [("file", b"ID3" * 1000, True), ("model", b"whisper-1", False), ("language", b"en", False), ("model", b"whisper-1", False)],
], ids=["both-first", "second-after-the-file", "second-as-a-file", "same-twice"])
def test_an_upload_with_two_model_fields_is_a_400_and_never_reaches_a_vendor_whole(hostile: tuple[GatewayProcess, FakeVendor],
                                                                                  parts: list[tuple[str, bytes, bool]]) -> None:
    gateway, vendor = hostile
    before = len(vendor.requests_to("/v1/audio/transcriptions"))
    for chunked in (False, True):
        body = multipart(parts)
        content: Any = body if not chunked else iter([body[i:i + 4096] for i in range(0, len(body), 4096)])
        response = httpx.post(gateway.url("/v1/audio/transcriptions"), content=content, timeout=30,
                              headers={"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "multipart/form-data; boundary=b0undary"})
        check_answer(response)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "duplicate_field" and response.json()["error"]["param"] == "model"
    time.sleep(0.2)  # a try cut mid-upload reaches the fake vendor's handler a moment later, if at all
    assert len(vendor.requests_to("/v1/audio/transcriptions")) == before


@pytest.mark.parametrize("status", [200, 400, 429, 500])
def test_upstream_bodies_nested_deep_anywhere_are_never_a_500(deep: tuple[GatewayProcess, FakeVendor], status: int) -> None:
    """Error bodies, in-band errors and answers nested as deep as orjson reads (1000 levels), on both kinds of channel."""
    gateway, vendor = deep
    deep_value = nested(1000)
    bodies = [
        b'{"error": {"message": %s, "type": "x"}}' % deep_value,
        b'{"error": %s}' % deep_value,
        b'{"type": "error", "error": {"type": "overloaded_error", "message": %s}}' % deep_value,
        b'{"choices": [], "usage": %s}' % deep_value,
        deep_value,
    ]
    try:
        for body in bodies:
            for stream in (False, True):
                reply = Reply(status=status, body=body) if not stream or status != 200 else Reply(
                    chunks=[b"data: " + body + b"\n\n"], content_type="text/event-stream")
                vendor.reply("POST", "/v1/chat/completions", reply)
                vendor.reply("POST", "/v1/messages", reply if not stream or status != 200 else Reply(
                    chunks=[b"event: message_start\ndata: " + body + b"\n\n"], content_type="text/event-stream"))
                for model in MODELS:
                    ask = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
                    response = post_raw(gateway, json.dumps(ask).encode())
                    assert response.status_code != 500, (status, body[:60], stream, model, response.text[:300])
                    if response.status_code >= 400:
                        assert set(response.json()["error"]) == {"message", "type", "code", "param"}
    finally:
        answer_as_recorded(vendor)
    assert "Traceback" not in gateway.log()
