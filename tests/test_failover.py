"""Resilience end to end: a fault-injecting fake upstream drives every failover rule through the official SDK."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any, Iterator

import httpx
import openai
import pytest

from conftest import CLIENT_KEY, GatewayProcess, base_config, write_config
from fakevendor import FakeVendor, Received, Reply, fixture_bytes, fixture_json, sse_events

ADMIN = {"Authorization": "Bearer admin-secret-key-for-tests"}
TEXT = fixture_bytes("openai/chat_completion_text.json")
EVENTS = sse_events(fixture_bytes("openai/chat_stream_text_include_usage.sse"))


def sdk(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url("/v1"), api_key=CLIENT_KEY, max_retries=0, timeout=30)


def ask(gateway: GatewayProcess, **kwargs: Any) -> Any:
    return sdk(gateway).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], **kwargs)


def channel(name: str, vendor: FakeVendor, **extra: Any) -> dict[str, Any]:
    return {"name": name, "provider": "openai", "base_url": vendor.base_url, "keys": [f"sk-{name}-key-0123456789"],
            "models": ["gpt-4o-mini"], **extra}


@pytest.fixture
def backup() -> Iterator[FakeVendor]:
    with FakeVendor() as fake:
        fake.reply("POST", "/v1/chat/completions", Reply(body=TEXT))
        yield fake


def two_channels(vendor: FakeVendor, backup: FakeVendor, start_gateway, first: dict[str, Any] | None = None,
                 **config: Any) -> GatewayProcess:
    """`primary` on `vendor` in the top tier, `backup` one tier below."""
    cfg = base_config(vendor, **config)
    cfg["channels"] = [channel("primary", vendor, priority=1, **(first or {})), channel("backup", backup, priority=0)]
    return start_gateway(cfg)


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
def test_retryable_status_moves_to_the_next_channel(vendor, backup, start_gateway, status: int) -> None:
    gateway = two_channels(vendor, backup, start_gateway)
    vendor.reply_json("/v1/chat/completions", {"error": {"message": "nope", "type": "server_error"}}, status=status)

    completion = ask(gateway)

    assert completion.id == fixture_json("openai/chat_completion_text.json")["id"]
    assert len(vendor.received) == 1 and len(backup.received) == 1


def test_client_errors_are_not_retried(vendor, backup, start_gateway) -> None:
    gateway = two_channels(vendor, backup, start_gateway)
    vendor.reply_fixture("/v1/chat/completions", "openai/error_400_unsupported_parameter.json", status=400)

    with pytest.raises(openai.BadRequestError) as caught:
        ask(gateway)

    assert caught.value.body == fixture_json("openai/error_400_unsupported_parameter.json")["error"]
    assert not backup.received


def test_rest_of_the_tier_before_lower_tiers(vendor, backup, start_gateway) -> None:
    with FakeVendor() as sibling:
        sibling.reply("POST", "/v1/chat/completions", Reply(body=TEXT))
        cfg = base_config(vendor)
        cfg["channels"] = [channel("a", vendor, priority=5), channel("b", sibling, priority=5), channel("low", backup, priority=0)]
        gateway = start_gateway(cfg)
        vendor.reply_json("/v1/chat/completions", {"error": {"message": "down"}}, status=503)
        for _ in range(6):
            ask(gateway)
        assert len(sibling.received) == 6 and not backup.received


def test_attempts_are_bounded(vendor, start_gateway) -> None:
    fakes = [FakeVendor().start() for _ in range(3)]
    try:
        cfg = base_config(vendor, retry={"attempts": 2})
        cfg["channels"] = [channel(f"c{i}", fake) for i, fake in enumerate(fakes)]
        for fake in fakes:
            fake.reply_json("/v1/chat/completions", {"error": {"message": "down"}}, status=500)
        gateway = start_gateway(cfg)

        with pytest.raises(openai.APIStatusError) as caught:
            ask(gateway)

        assert caught.value.status_code == 502
        assert sum(len(f.received) for f in fakes) == 2
    finally:
        for fake in fakes:
            fake.stop()


def test_a_key_that_fails_auth_is_set_aside_and_the_channel_keeps_serving(vendor, start_gateway) -> None:
    cfg = base_config(vendor)
    cfg["channels"][0]["keys"] = ["sk-revoked-key-000000", "sk-working-key-111111"]

    def by_key(request: Received) -> Reply:
        if request.headers["authorization"] == "Bearer sk-revoked-key-000000":
            return Reply(status=401, body=fixture_bytes("openai/error_401_invalid_api_key.json"))
        return Reply(body=TEXT)

    vendor.reply("POST", "/v1/chat/completions", by_key)
    gateway = start_gateway(cfg)

    for _ in range(6):
        ask(gateway)

    used = [r.headers["authorization"] for r in vendor.received]
    assert used.count("Bearer sk-revoked-key-000000") == 1  # tried once, then set aside
    assert used.count("Bearer sk-working-key-111111") == 6
    state = httpx.get(gateway.url("/admin/channels"), headers=ADMIN).json()["channels"][0]
    assert [k["key"] for k in state["keys_set_aside"]] == ["...0000"] and state["keys_set_aside"][0]["reason"] == "auth"
    assert "sk-revoked-key-000000" not in httpx.get(gateway.url("/admin/channels"), headers=ADMIN).text


def test_quota_error_sets_the_key_aside_too(vendor, start_gateway) -> None:
    cfg = base_config(vendor)
    cfg["channels"][0]["keys"] = ["sk-broke-key-0000000", "sk-funded-key-111111"]

    def by_key(request: Received) -> Reply:
        if request.headers["authorization"].endswith("broke-key-0000000"):
            return Reply(status=429, body=fixture_bytes("openai/error_429_insufficient_quota.json"))
        return Reply(body=TEXT)

    vendor.reply("POST", "/v1/chat/completions", by_key)
    gateway = start_gateway(cfg)
    for _ in range(4):
        ask(gateway)
    assert sum(r.headers["authorization"].endswith("broke-key-0000000") for r in vendor.received) == 1


def test_retry_after_is_honoured_before_the_same_channel_is_tried_again(vendor, start_gateway) -> None:
    cfg = base_config(vendor)
    cfg["channels"][0]["keys"] = ["sk-limited-key-000000", "sk-other-key-11111111"]

    def by_key(request: Received) -> Reply:
        if request.headers["authorization"].endswith("limited-key-000000"):
            return Reply(status=429, body=b'{"error": {"message": "Rate limit reached", "type": "requests"}}', headers={"Retry-After": "1"})
        return Reply(body=TEXT)

    vendor.reply("POST", "/v1/chat/completions", by_key)
    gateway = start_gateway(cfg)
    # make the limited key come first in rotation: the first request of a fresh gateway uses keys[0]
    started = time.monotonic()
    ask(gateway)
    elapsed = time.monotonic() - started

    assert [r.headers["authorization"][-6:] for r in vendor.received] == ["000000", "111111"]
    assert elapsed >= 1.0


def test_rate_limit_with_nowhere_else_to_go_is_a_429_with_retry_after(vendor, start_gateway) -> None:
    gateway = start_gateway(base_config(vendor))
    vendor.reply_json("/v1/chat/completions", {"error": {"message": "Rate limit reached"}}, status=429, headers={"Retry-After": "7"})

    response = httpx.post(gateway.url("/v1/chat/completions"), headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                          json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})

    assert response.status_code == 429 and response.headers["retry-after"] == "7"
    assert response.json()["error"]["code"] == "upstream_rate_limited"
    assert len(vendor.received) == 1  # its only key must not be retried


def test_slow_first_byte_fails_over(vendor, backup, start_gateway) -> None:
    gateway = two_channels(vendor, backup, start_gateway, first={"ttft_timeout": 0.5})
    vendor.reply("POST", "/v1/chat/completions", Reply(chunks=EVENTS, delays=[5.0], content_type="text/event-stream"))
    backup.reply("POST", "/v1/chat/completions", Reply(chunks=EVENTS, content_type="text/event-stream"))

    started = time.monotonic()
    chunks = list(ask(gateway, stream=True))

    assert chunks and time.monotonic() - started < 4
    assert len(backup.received) == 1


@pytest.mark.parametrize("provider, path", [("openai", "/v1/chat/completions"), ("anthropic", "/v1/messages")])
def test_a_vendor_that_takes_a_stream_and_never_answers_fails_over_after_ttft_timeout(vendor, backup, start_gateway, provider: str,
                                                                                     path: str) -> None:
    gateway = two_channels(vendor, backup, start_gateway, first={"provider": provider, "ttft_timeout": 1})
    vendor.reply("POST", path, Reply(body=TEXT, delay=30))  # the status line would come after 30 s: the wait for it counts
    backup.reply("POST", "/v1/chat/completions", Reply(chunks=EVENTS, content_type="text/event-stream"))

    started = time.monotonic()
    chunks = list(ask(gateway, stream=True))

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)  # the backup's real answer
    assert time.monotonic() - started < 6  # not the channel's 300 s timeout
    assert len(vendor.received) == 1 and len(backup.received) == 1


NOT_A_STREAM = {
    "json {}": Reply(body=b"{}"),
    "{} as event-stream": Reply(body=b"{}", content_type="text/event-stream"),
    "comments only": Reply(chunks=[b": keep-alive\n\n", b": still here\n\n"], content_type="text/event-stream"),
    "nothing": Reply(body=b"", content_type="text/event-stream"),
    "a completion, not a stream": Reply(body=TEXT),
    "data: {}": Reply(chunks=[b"data: {}\n\n", b"data: [DONE]\n\n"], content_type="text/event-stream"),
    "[DONE] alone": Reply(chunks=[b": ping\n\n", b"data: [DONE]\n\n"], content_type="text/event-stream"),
}


@pytest.mark.parametrize("reply", NOT_A_STREAM.values(), ids=NOT_A_STREAM.keys())
def test_a_stream_request_answered_without_events_fails_over(vendor, backup, start_gateway, reply: Reply) -> None:
    gateway = two_channels(vendor, backup, start_gateway)
    vendor.reply("POST", "/v1/chat/completions", reply)
    backup.reply("POST", "/v1/chat/completions", Reply(chunks=EVENTS, content_type="text/event-stream"))

    chunks = list(ask(gateway, stream=True))

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(vendor.received) == 1 and len(backup.received) == 1


NOT_A_COMPLETION = [b"{}", b'{"id": "chatcmpl-1", "object": "chat.completion"}', b'{"choices": "none"}', b'{"choices": []}',
                    b'{"choices": [{"index": 0, "message": {"role": "assistant"}}]}', b"[]"]


@pytest.mark.parametrize("body", NOT_A_COMPLETION)
def test_a_200_that_is_not_a_completion_fails_over(vendor, backup, start_gateway, body: bytes) -> None:
    gateway = two_channels(vendor, backup, start_gateway)
    vendor.reply("POST", "/v1/chat/completions", Reply(body=body))

    completion = ask(gateway)

    assert completion.choices[0].message.content == fixture_json("openai/chat_completion_text.json")["choices"][0]["message"]["content"]
    assert len(backup.received) == 1


def test_a_200_that_is_not_an_answer_with_nowhere_else_to_go_is_a_502(vendor, start_gateway) -> None:
    cfg = base_config(vendor)
    gateway = start_gateway(cfg)
    vendor.reply("POST", "/v1/chat/completions", Reply(body=b"{}"))
    vendor.reply("POST", "/v1/embeddings", Reply(body=b"{}"))

    with pytest.raises(openai.APIStatusError) as caught:
        ask(gateway)
    assert caught.value.status_code == 502 and caught.value.body["code"] == "upstream_bad_response"
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(gateway).embeddings.create(model="text-embedding-3-small", input="hi")
    assert caught.value.status_code == 502

    vendor.reply("POST", "/v1/embeddings", Reply(body=fixture_bytes("openai/embeddings_float.json")))  # its own valid shape
    assert sdk(gateway).embeddings.create(model="text-embedding-3-small", input="hi").data


@pytest.mark.parametrize("stream", [False, True])
def test_a_translated_vendor_answering_nothing_fails_over(vendor, backup, start_gateway, stream: bool) -> None:
    gateway = two_channels(vendor, backup, start_gateway, first={"provider": "ollama-native"})
    vendor.reply("POST", "/api/chat", Reply(body=b"{}\n", content_type="application/x-ndjson"))
    backup.reply("POST", "/v1/chat/completions", Reply(chunks=EVENTS, content_type="text/event-stream") if stream else Reply(body=TEXT))

    answer = ask(gateway, stream=stream)

    assert "".join(c.choices[0].delta.content or "" for c in answer if c.choices) if stream else answer.choices[0].message.content
    assert len(vendor.received) == 1 and len(backup.received) == 1


def test_non_stream_timeout_fails_over(vendor, backup, start_gateway) -> None:
    gateway = two_channels(vendor, backup, start_gateway, first={"timeout": 0.5})
    vendor.reply("POST", "/v1/chat/completions", Reply(body=TEXT, delay=5.0))

    started = time.monotonic()
    ask(gateway)

    assert time.monotonic() - started < 4 and len(backup.received) == 1


def test_stalled_stream_ends_with_an_error_the_sdk_raises(vendor, backup, start_gateway) -> None:
    gateway = two_channels(vendor, backup, start_gateway, first={"idle_timeout": 1})
    vendor.reply("POST", "/v1/chat/completions", Reply(chunks=EVENTS, delays=[0, 0, 20], content_type="text/event-stream"))

    received = []
    started = time.monotonic()
    with pytest.raises(openai.APIError, match="stalled"):
        for chunk in ask(gateway, stream=True):
            received.append(chunk)

    assert len(received) == 2  # what had arrived was delivered whole
    assert time.monotonic() - started < 6
    assert not backup.received  # never fail over once the client has bytes


def test_cut_stream_ends_with_an_error_the_sdk_raises(vendor, backup, start_gateway) -> None:
    gateway = two_channels(vendor, backup, start_gateway)
    half_event = EVENTS[2][: len(EVENTS[2]) // 2]
    vendor.reply("POST", "/v1/chat/completions", Reply(chunks=[*EVENTS[:2], half_event], cut=True, content_type="text/event-stream"))

    received = []
    with pytest.raises(openai.APIError, match="cut"):
        for chunk in ask(gateway, stream=True):
            received.append(chunk)

    assert len(received) == 2 and not backup.received


def test_garbage_body_fails_over(vendor, backup, start_gateway) -> None:
    gateway = two_channels(vendor, backup, start_gateway)
    vendor.reply("POST", "/v1/chat/completions", Reply(body=b"<html>502 Bad Gateway</html>", content_type="text/html"))
    ask(gateway)
    assert len(backup.received) == 1


def test_error_inside_a_200_fails_over(vendor, backup, start_gateway) -> None:
    gateway = two_channels(vendor, backup, start_gateway)
    vendor.reply_json("/v1/chat/completions", {"error": {"message": "upstream overloaded", "code": 503}})
    ask(gateway)
    assert len(backup.received) == 1


def test_in_band_error_before_the_first_byte_fails_over(vendor, backup, start_gateway) -> None:
    gateway = two_channels(vendor, backup, start_gateway)
    error_event = b'data: {"error": {"message": "Provider returned error", "code": 502}}\n\n'
    vendor.reply("POST", "/v1/chat/completions", Reply(chunks=[error_event], content_type="text/event-stream"))
    backup.reply("POST", "/v1/chat/completions", Reply(chunks=EVENTS, content_type="text/event-stream"))

    chunks = list(ask(gateway, stream=True))

    assert chunks and len(backup.received) == 1


def test_circuit_breaker_opens_then_probes_after_cooldown(vendor, backup, start_gateway) -> None:
    gateway = two_channels(vendor, backup, start_gateway, breaker={"failures": 2, "cooldown": 1.5})
    vendor.reply_json("/v1/chat/completions", {"error": {"message": "down"}}, status=500)

    for _ in range(6):
        ask(gateway)
    assert len(vendor.received) == 2  # open after two failures: no more traffic
    state = httpx.get(gateway.url("/admin/channels"), headers=ADMIN).json()["channels"][0]
    assert state["breaker"] == "open"

    time.sleep(1.6)
    vendor.reply("POST", "/v1/chat/completions", Reply(body=TEXT))
    ask(gateway)  # the half-open probe, which succeeds
    assert len(vendor.received) == 3
    ask(gateway)
    assert len(vendor.received) == 4  # closed again
    assert httpx.get(gateway.url("/admin/channels"), headers=ADMIN).json()["channels"][0]["breaker"] == "closed"


def test_breaker_state_survives_a_reload_of_unchanged_channels(vendor, backup, start_gateway) -> None:
    gateway = two_channels(vendor, backup, start_gateway, breaker={"failures": 1, "cooldown": 60})
    vendor.reply_json("/v1/chat/completions", {"error": {"message": "down"}}, status=500)
    ask(gateway)
    version = gateway.health()["config_version"]
    cfg = base_config(vendor, breaker={"failures": 1, "cooldown": 60})
    cfg["channels"] = [channel("primary", vendor, priority=1), channel("backup", backup, priority=0)]
    cfg["tokens"].append({"name": "another", "key": "sk-another-token"})
    write_config(gateway.config_path, cfg)
    gateway.wait_for(lambda h: h["config_version"] != version)

    ask(gateway)

    assert len(vendor.received) == 1  # still open
    assert len(backup.received) == 2


def hang_up_after_the_first_bytes(gateway: GatewayProcess) -> None:
    with httpx.stream("POST", gateway.url("/v1/chat/completions"), headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "stream": True}) as response:
        next(response.iter_raw())


def vendor_saw_the_hang_up(vendor: FakeVendor, within: float) -> bool:
    deadline = time.monotonic() + within
    while vendor.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    return vendor.disconnects == 1


def test_client_disconnect_cancels_the_upstream_stream(vendor, start_gateway) -> None:
    gateway = start_gateway(base_config(vendor))
    slow = [EVENTS[0]] + [EVENTS[1]] * 40
    vendor.reply("POST", "/v1/chat/completions", Reply(chunks=slow, delay=0.1, content_type="text/event-stream"))

    hang_up_after_the_first_bytes(gateway)
    assert vendor_saw_the_hang_up(vendor, within=3)


def test_client_leaving_a_silent_stream_closes_the_upstream(vendor, start_gateway) -> None:
    """The client hangs up while the upstream says nothing (a model thinking): the gateway notices at once and
    closes the upstream, instead of reading on for no one once the vendor speaks again."""
    gateway = start_gateway(base_config(vendor))
    vendor.reply("POST", "/v1/chat/completions", Reply(chunks=[EVENTS[0]] + [EVENTS[1]] * 5, delays=[0, 2.0],
                                                       content_type="text/event-stream"))

    hang_up_after_the_first_bytes(gateway)
    # the vendor's next write, after its 2 s of silence, finds the connection closed
    assert vendor_saw_the_hang_up(vendor, within=5)


def test_sigterm_lets_streams_in_flight_finish(vendor, start_gateway) -> None:
    gateway = start_gateway(base_config(vendor))
    vendor.reply("POST", "/v1/chat/completions", Reply(chunks=EVENTS, delay=0.25, content_type="text/event-stream"))
    collected: list[bytes] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            # the recording has a usage chunk, which the gateway passes on only to a client that asked for it
            with httpx.stream("POST", gateway.url("/v1/chat/completions"), headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=30,
                              json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "stream": True,
                                    "stream_options": {"include_usage": True}}) as response:
                collected.extend(response.iter_raw())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    reader = threading.Thread(target=consume)
    reader.start()
    time.sleep(0.6)
    gateway.signal(signal.SIGTERM)
    reader.join(30)
    assert gateway.process.wait(30) == 0
    assert not errors
    assert b"".join(collected) == b"".join(EVENTS)


def test_reload_during_failover_drops_nothing(vendor, backup, start_gateway) -> None:
    gateway = two_channels(vendor, backup, start_gateway)
    vendor.reply("POST", "/v1/chat/completions", Reply(status=500, body=b'{"error": {"message": "slow death"}}', delay=1.0))
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(ask(gateway)))
    worker.start()
    time.sleep(0.3)
    version = gateway.health()["config_version"]
    cfg = base_config(vendor)
    cfg["channels"] = [channel("primary", vendor, priority=1), channel("backup", backup, priority=0)]
    cfg["tokens"].append({"name": "new", "key": "sk-new-token-during-failover"})
    write_config(gateway.config_path, cfg)
    gateway.wait_for(lambda h: h["config_version"] != version)
    worker.join(20)

    assert len(results) == 1 and results[0].choices[0].message.content
    assert len(backup.received) == 1


def test_kill_9_under_load_loses_no_committed_usage(vendor, start_gateway, tmp_path) -> None:
    import os
    import sqlite3

    vendor.reply("POST", "/v1/chat/completions", Reply(body=TEXT, delay=0.01))
    cfg = base_config(vendor)
    cfg["tokens"][0]["budget"] = 1000.0
    gateway = start_gateway(cfg, workers=2)
    stop = threading.Event()
    answered: list[int] = []

    def load() -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=10) as http:
            while not stop.is_set():
                try:
                    answered.append(http.post(gateway.url("/v1/chat/completions"),
                                              json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}).status_code)
                except httpx.HTTPError:
                    return  # the gateway is gone

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    db_path = tmp_path / "data" / "oneapi.db"
    deadline = time.monotonic() + 20
    committed = 0
    while committed < 20 and time.monotonic() < deadline:  # wait until the ledger has written some batches
        time.sleep(0.2)
        if db_path.exists():
            with sqlite3.connect(db_path, timeout=5) as db:
                committed = db.execute("SELECT COUNT(*) FROM usage").fetchone()[0]
    for pid in [gateway.process.pid, *_children(gateway.process.pid)]:
        os.kill(pid, signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(15)
    assert committed >= 20 and answered

    with sqlite3.connect(db_path, timeout=5) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        survived = db.execute("SELECT COUNT(*), SUM(prompt_tokens) FROM usage").fetchone()
    assert survived[0] >= committed and survived[1] == survived[0] * 24

    restarted = start_gateway(cfg)  # the same file: what was committed is what the new process sees
    report = httpx.get(restarted.url("/admin/usage"), headers=ADMIN, timeout=10).json()
    assert report["totals"]["requests"] == survived[0]


def _children(pid: int) -> list[int]:
    from pathlib import Path

    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        out.extend(int(c) for c in children)
    return out


# what vendors (or what sits in front of them) have been seen to put in Retry-After, sane or not
NONSENSE_RETRY_AFTER = ["inf", "-inf", "nan", "-1", "1e400", "1e300", "99999999999999999999", "Wed, 21 Oct 2015 07:28:00 GMT",
                        "Fri, 31 Dec 9999 23:59:59 GMT", "Mon, 99 Foo 2020 99:99:99 GMT", "soon", "", "0x10", "1_0 s"]


def test_nonsense_retry_after_still_fails_over(vendor, backup, start_gateway) -> None:
    header = {"value": ""}
    vendor.reply("POST", "/v1/chat/completions", lambda r: Reply(status=429, body=b'{"error": {"message": "Rate limit reached"}}',
                                                                 headers={"Retry-After": header["value"]}))
    gateway = two_channels(vendor, backup, start_gateway)
    for value in NONSENSE_RETRY_AFTER:
        header["value"] = value
        assert ask(gateway).choices[0].message.content, value  # the backup answered
    assert len(vendor.received) == len(NONSENSE_RETRY_AFTER) and len(backup.received) == len(NONSENSE_RETRY_AFTER)
    assert "Traceback" not in gateway.log()


def test_nonsense_retry_after_with_nowhere_else_to_go_is_a_clean_429(vendor, start_gateway) -> None:
    header = {"value": ""}
    vendor.reply("POST", "/v1/chat/completions", lambda r: Reply(status=429, body=b'{"error": {"message": "Rate limit reached"}}',
                                                                 headers={"Retry-After": header["value"]}))
    vendor.reply("POST", "/v1/messages", lambda r: Reply(status=429, body=fixture_bytes("anthropic/error_429_rate_limit.json"),
                                                         headers={"Retry-After": header["value"]}))
    cfg = base_config(vendor)
    cfg["channels"].append({"name": "claude", "provider": "anthropic", "base_url": vendor.base_url, "keys": ["sk-ant-0123456789"],
                            "models": ["claude-haiku-4-5"]})
    gateway = start_gateway(cfg)
    for model in ("gpt-4o-mini", "claude-haiku-4-5"):  # a pass-through and a translated channel
        for value in NONSENSE_RETRY_AFTER:
            header["value"] = value
            response = httpx.post(gateway.url("/v1/chat/completions"), headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=30,
                                  json={"model": model, "messages": [{"role": "user", "content": "x"}]})
            assert response.status_code == 429, (model, value, response.text)
            assert response.json()["error"]["code"] == "upstream_rate_limited"
            retry_after = response.headers.get("retry-after")
            assert retry_after is None or (retry_after.isdigit() and 1 <= int(retry_after) <= 86400), (value, retry_after)
    assert "Traceback" not in gateway.log()
