"""The ledger end to end: recorded usage in, exact totals out of /admin/usage and `oneapi usage`; streams,
estimates, restarts and SIGTERM."""

from __future__ import annotations

import csv
import io
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import openai
import pytest

from conftest import CLIENT_KEY, ROOT, UPSTREAM_KEY, GatewayProcess, base_config
from fakevendor import FakeVendor, Received, Reply, fixture_bytes, fixture_json, sse_events

ADMIN = {"Authorization": "Bearer admin-secret-key-for-tests"}
VIP_KEY = "sk-test-vip-client-fedcba9876543210"
PRICING = {"models": {
    "gpt-4o-mini": {"input": 1.0, "output": 2.0},
    "gpt-4o": {"input": 3.0, "output": 5.0, "cached_input": 1.0},
    "text-embedding-3-small": {"input": 0.5},
}}


def client(gateway: GatewayProcess, key: str = CLIENT_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url("/v1"), api_key=key, max_retries=0, timeout=20)


def usage(gateway: GatewayProcess, **params: Any) -> dict[str, Any]:
    response = httpx.get(gateway.url("/admin/usage"), params=params, headers=ADMIN, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for_usage(gateway: GatewayProcess, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        report = usage(gateway)
        if predicate(report) or time.monotonic() > deadline:
            return report
        time.sleep(0.1)


def ledger_config(vendor: FakeVendor, **overrides: Any) -> dict[str, Any]:
    config = base_config(vendor, pricing=PRICING, groups={"default": {"ratio": 1.0}, "vip": {"ratio": 1.5}}, **overrides)
    config["channels"][0]["groups"] = ["default", "vip"]
    config["channels"][0]["models"].append("dall-e-3")
    config["tokens"].append({"name": "vip-user", "key": VIP_KEY, "group": "vip"})
    return config


def by_model(received: Received) -> Reply:
    """gpt-4o answers with DeepSeek's recorded reasoning body (cached and reasoning tokens), the rest with OpenAI's."""
    name = "deepseek/chat_reasoning.json" if received.json()["model"] == "gpt-4o" else "openai/chat_completion_tool_calls.json"
    return Reply(body=fixture_bytes(name))


def nano(tokens_price_pairs: list[tuple[int, float]], ratio: float = 1.0) -> int:
    return round(sum(t * p for t, p in tokens_price_pairs) * ratio * 1000)


def test_totals_are_exact_against_recorded_usage(vendor: FakeVendor, start_gateway) -> None:
    gateway = start_gateway(ledger_config(vendor))
    vendor.reply("POST", "/v1/chat/completions", by_model)
    vendor.reply_fixture("/v1/embeddings", "openai/embeddings_float.json")
    vendor.reply_fixture("/v1/completions", "openai/completions.json")
    sdk, vip = client(gateway), client(gateway, VIP_KEY)
    hi = [{"role": "user", "content": "hi"}]

    for _ in range(3):
        sdk.chat.completions.create(model="gpt-4o-mini", messages=hi)
    vip.chat.completions.create(model="gpt-4o", messages=hi)
    sdk.chat.completions.create(model="gpt-4o", messages=hi)
    sdk.embeddings.create(model="text-embedding-3-small", input="hello", encoding_format="float")
    sdk.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say this is a test")

    openai_usage = fixture_json("openai/chat_completion_tool_calls.json")["usage"]  # 68 in, 12 out
    deepseek_usage = fixture_json("deepseek/chat_reasoning.json")["usage"]  # 18 in, 345 out (315 reasoning)
    mini = nano([(openai_usage["prompt_tokens"], 1.0), (openai_usage["completion_tokens"], 2.0)])
    big = nano([(deepseek_usage["prompt_tokens"], 3.0), (deepseek_usage["completion_tokens"], 5.0)])
    embed = nano([(fixture_json("openai/embeddings_float.json")["usage"]["prompt_tokens"], 0.5)])
    report = usage(gateway)
    totals = report["totals"]
    assert totals["requests"] == 7
    assert totals["prompt_tokens"] == 3 * 68 + 2 * 18 + 12 + 14
    assert totals["completion_tokens"] == 3 * 12 + 2 * 345 + 0 + 16
    assert totals["reasoning_tokens"] == 2 * deepseek_usage["completion_tokens_details"]["reasoning_tokens"]
    assert totals["estimated_requests"] == 0
    # vip's group ratio multiplies; gpt-3.5-turbo-instruct has no price and is free
    assert round(totals["cost_usd"] * 1e9) == 3 * mini + big + round(big * 1.5) + embed

    rows = {(r["token"], r["model"]): r for r in report["breakdown"]}
    assert rows[("tester", "gpt-4o-mini")]["requests"] == 3
    assert rows[("vip-user", "gpt-4o")]["cost_usd"] == round(big * 1.5) / 1e9
    assert rows[("tester", "gpt-3.5-turbo-instruct")]["cost_usd"] == 0
    assert all(r["channel"] == "main" for r in report["breakdown"])

    assert usage(gateway, model="gpt-4o")["totals"]["requests"] == 2
    assert usage(gateway, token="vip-user")["totals"]["requests"] == 1
    assert usage(gateway, channel="nope")["totals"]["requests"] == 0
    assert usage(gateway, since=time.time() + 60)["totals"]["requests"] == 0
    assert usage(gateway, until="2000-01-01T00:00:00Z")["totals"]["requests"] == 0
    assert usage(gateway, since="2000-01-01", group_by="model")["breakdown"][0].keys() >= {"model", "requests", "cost_usd"}
    assert httpx.get(gateway.url("/admin/usage"), timeout=5).status_code == 401
    assert httpx.get(gateway.url("/admin/usage"), params={"group_by": "colour"}, headers=ADMIN, timeout=5).status_code == 400


def test_stream_usage_is_asked_for_counted_and_hidden_when_not_asked(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    recorded = "openai/chat_stream_text_include_usage.sse"
    vendor.reply_sse("/v1/chat/completions", recorded)
    events = sse_events(fixture_bytes(recorded))

    plain = list(client(gateway).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True))
    asked = list(client(gateway).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True,
                                                         stream_options={"include_usage": True}))

    sent = [r.json() for r in vendor.requests_to("/v1/chat/completions")]
    assert sent[0]["stream_options"] == {"include_usage": True}
    assert sent[1]["stream_options"] == {"include_usage": True}
    assert len(plain) == len(events) - 2  # less the usage chunk the client did not ask for, and [DONE]
    assert all(chunk.usage is None for chunk in plain)
    assert len(asked) == len(events) - 1
    assert asked[-1].usage is not None and asked[-1].usage.prompt_tokens == 78

    totals = usage(gateway)["totals"]
    assert (totals["requests"], totals["prompt_tokens"], totals["completion_tokens"]) == (2, 2 * 78, 2 * 9)
    assert totals["estimated_requests"] == 0


def test_missing_usage_is_estimated_and_marked(vendor: FakeVendor, start_gateway) -> None:
    gateway = start_gateway(ledger_config(vendor))
    vendor.reply_fixture("/v1/images/generations", "openai/images_generations_b64.json")

    client(gateway).images.generate(model="dall-e-3", prompt="a lighthouse at dusk, oil on canvas")

    totals = usage(gateway)["totals"]
    assert totals["requests"] == 1 and totals["estimated_requests"] == 1
    assert totals["prompt_tokens"] > 0


def test_client_hanging_up_mid_stream_is_still_recorded(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    events = sse_events(fixture_bytes("openai/chat_stream_text_include_usage.sse"))
    vendor.reply("POST", "/v1/chat/completions", Reply(chunks=events, delay=0.5, content_type="text/event-stream"))

    with httpx.stream("POST", gateway.url("/v1/chat/completions"), headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=20,
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}) as response:
        first = next(response.iter_bytes())
        assert first.startswith(b"data:")

    report = wait_for_usage(gateway, lambda r: r["totals"]["requests"] == 1)
    assert report["totals"]["requests"] == 1
    assert report["totals"]["estimated_requests"] == 1  # the usage chunk never came: estimated, and marked so


def test_records_and_spent_budget_survive_a_restart(vendor: FakeVendor, start_gateway) -> None:
    config = ledger_config(vendor)
    config["tokens"][0]["budget"] = 100.0
    vendor.reply("POST", "/v1/chat/completions", by_model)
    first = start_gateway(config)
    for _ in range(2):
        client(first).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    before = usage(first)["totals"]
    assert first.stop() == 0

    second = start_gateway(config)
    assert usage(second)["totals"] == before
    response = httpx.post(second.url("/v1/chat/completions"), headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=20,
                          json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200
    # the budget left counts what the first process spent, and this request's reservation
    assert float(response.headers["x-budget-remaining-usd"]) <= 100.0 - before["cost_usd"]
    assert float(response.headers["x-budget-remaining-usd"]) > 100.0 - before["cost_usd"] - 0.1


def test_sigterm_writes_every_pending_record(vendor: FakeVendor, start_gateway, tmp_path: Path) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    # records wait a minute before they are written: only the shutdown flush can write them in time
    gateway = start_gateway(ledger_config(vendor), workers=2, env={"ONEAPI_FLUSH_INTERVAL": "60"})
    n = 12
    with httpx.Client(headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=20) as http:
        for _ in range(n):
            assert http.post(gateway.url("/v1/chat/completions"), json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}).status_code == 200
    db_path = tmp_path / "data" / "oneapi.db"
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM usage").fetchone()[0] == 0  # still pending in the workers

    gateway.signal(signal.SIGTERM)
    assert gateway.process is not None and gateway.process.wait(20) == 0

    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT COUNT(*), SUM(prompt_tokens), SUM(completion_tokens) FROM usage").fetchone()
    assert rows == (n, n * 24, n * 8)


def test_oneapi_usage_prints_the_same_totals(vendor: FakeVendor, start_gateway, tmp_path: Path) -> None:
    gateway = start_gateway(ledger_config(vendor))
    vendor.reply("POST", "/v1/chat/completions", by_model)
    for model in ("gpt-4o-mini", "gpt-4o", "gpt-4o"):
        client(gateway).chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    report = usage(gateway)

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "oneapi.cli", "usage", "--config", str(tmp_path / "config.yaml"), *args],
                              capture_output=True, text=True, timeout=30, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, done.stderr
        return done.stdout

    table = cli()
    total_line = [line for line in table.splitlines() if line.startswith("TOTAL")][0]
    assert str(report["totals"]["requests"]) in total_line.split() and str(report["totals"]["cost_usd"]) in total_line.split()
    assert "gpt-4o-mini" in table

    rows = list(csv.DictReader(io.StringIO(cli("--csv", "--group-by", "model"))))
    assert {r["model"]: int(r["requests"]) for r in rows} == {"gpt-4o": 2, "gpt-4o-mini": 1}
    assert sum(float(r["cost_usd"]) for r in rows) == report["totals"]["cost_usd"]
    assert list(csv.DictReader(io.StringIO(cli("--csv", "--model", "nope")))) == []


def test_check_warns_about_models_without_a_price(vendor: FakeVendor, tmp_path: Path) -> None:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(json.dumps(ledger_config(vendor)))
    done = subprocess.run([sys.executable, "-m", "oneapi.cli", "check", "--config", str(config_path)], capture_output=True, text=True,
                          timeout=30, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "'gpt-3.5-turbo-instruct'" in done.stderr and "no price" in done.stderr and "(warning)" in done.stderr
    assert "'gpt-4o-mini'" not in done.stderr


GEMINI_PATH = "/v1beta/models/{model}:{method}"


def test_translated_vendors_are_metered_and_hide_the_usage_they_were_asked_for(vendor: FakeVendor, start_gateway) -> None:
    config = base_config(vendor, pricing=PRICING)
    config["channels"] = [
        {"name": "claude", "provider": "anthropic", "base_url": vendor.base_url, "keys": ["sk-ant"], "models": ["claude-sonnet-4-5"]},
        {"name": "gemini", "provider": "gemini", "base_url": vendor.base_url, "keys": ["g-key"], "models": ["gemini-2.0-flash-exp"]},
    ]
    gateway = start_gateway(config)
    vendor.reply_fixture("/v1/messages", "anthropic/message_text.json")
    sdk = client(gateway)
    hi = [{"role": "user", "content": "hi"}]

    sdk.chat.completions.create(model="claude-sonnet-4-5", messages=hi)
    vendor.reply_sse("/v1/messages", "anthropic/stream_text_raw.sse")
    claude_chunks = list(sdk.chat.completions.create(model="claude-sonnet-4-5", messages=hi, stream=True))
    vendor.reply_sse(GEMINI_PATH.format(model="gemini-2.0-flash-exp", method="streamGenerateContent"), "gemini/stream_generate_content_alt_sse_text.sse")
    gemini_chunks = list(sdk.chat.completions.create(model="gemini-2.0-flash-exp", messages=hi, stream=True))

    assert claude_chunks and gemini_chunks
    assert all(chunk.usage is None for chunk in claude_chunks + gemini_chunks)  # nobody asked for it
    recorded = fixture_json("anthropic/message_text.json")["usage"]  # 12 in, 29 out; the raw stream reports 20 in, 5 out
    report = usage(gateway)
    rows = {r["channel"]: r for r in report["breakdown"]}
    assert (rows["claude"]["requests"], rows["claude"]["prompt_tokens"], rows["claude"]["completion_tokens"]) == \
        (2, recorded["input_tokens"] + 20, recorded["output_tokens"] + 5)
    assert (rows["gemini"]["prompt_tokens"], rows["gemini"]["completion_tokens"]) == (13, 8)
    assert report["totals"]["estimated_requests"] == 0


# --- hostile usage: one absurd record never stops the ledger ----------------------------------------

HOSTILE_COUNTS: list[Any] = [1e19, 10**30, -5, "24", 12.5, True]


def _with_usage(prompt_tokens: Any) -> bytes:
    """The recorded OpenAI body, its prompt_tokens replaced by what a broken upstream might send."""
    body = fixture_json("openai/chat_completion_text.json")
    body["usage"]["prompt_tokens"] = prompt_tokens
    return json.dumps(body).encode()


def _stream_with_usage(prompt_tokens: Any) -> list[bytes]:
    """The recorded stream, its final usage chunk's prompt_tokens replaced."""
    events = sse_events(fixture_bytes("openai/chat_stream_text_include_usage.sse"))
    out = []
    for event in events:
        if b'"usage":{' in event:
            payload = json.loads(event[len(b"data: "):].strip())
            payload["usage"]["prompt_tokens"] = prompt_tokens
            event = b"data: " + json.dumps(payload).encode() + b"\n\n"
        out.append(event)
    return out


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_absurd_usage_is_refused_and_every_later_request_is_recorded(vendor: FakeVendor, start_gateway, request, store: str) -> None:
    config = ledger_config(vendor)
    config["tokens"][0].update(budget=1000.0, tpm=10_000_000, rpm=1000)  # the admission and settlement paths too
    if store == "redis":
        config["store"] = request.getfixturevalue("redis_url")
    gateway = start_gateway(config)
    sdk = client(gateway)
    hi = [{"role": "user", "content": "hi"}]

    for count in HOSTILE_COUNTS:
        vendor.reply("POST", "/v1/chat/completions", Reply(body=_with_usage(count)))
        assert sdk.chat.completions.create(model="gpt-4o-mini", messages=hi).choices[0].message.content
    vendor.reply("POST", "/v1/chat/completions", Reply(chunks=_stream_with_usage(1e19), content_type="text/event-stream"))
    assert list(sdk.chat.completions.create(model="gpt-4o-mini", messages=hi, stream=True))
    hostile = len(HOSTILE_COUNTS) + 1
    before = wait_for_usage(gateway, lambda r: r["totals"]["requests"] == hostile)["totals"]

    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    for _ in range(3):
        assert sdk.chat.completions.create(model="gpt-4o-mini", messages=hi).usage.prompt_tokens == 24
    after = wait_for_usage(gateway, lambda r: r["totals"]["requests"] == hostile + 3)["totals"]

    # each hostile answer is recorded, billed by the offline estimate and marked so; none blocks the ones after it
    assert before["requests"] == hostile and before["estimated_requests"] == hostile
    assert 0 < before["prompt_tokens"] < 1000 * hostile
    assert after["requests"] == hostile + 3 and after["estimated_requests"] == hostile
    assert (after["prompt_tokens"] - before["prompt_tokens"], after["completion_tokens"] - before["completion_tokens"]) == (3 * 24, 3 * 8)
    assert round((after["cost_usd"] - before["cost_usd"]) * 1e9) == 3 * nano([(24, 1.0), (8, 2.0)])
    log = gateway.log()
    assert log.count("upstream usage rejected") == hostile
    assert "Traceback" not in log and UPSTREAM_KEY not in log and CLIENT_KEY not in log


def _usage_record(request_id: str, **fields: Any) -> Any:
    from oneapi.ledger import UsageRecord

    values: dict[str, Any] = dict(ts=time.time(), request_id=request_id, token="t", channel="c", model="m", upstream_model="m",
                                  operation="chat", stream=False, prompt_tokens=24, completion_tokens=8, cached_tokens=0,
                                  reasoning_tokens=0, estimated=False, cost_nano=40, duration_ms=5)
    values.update(fields)
    return UsageRecord(**values)


def test_a_record_out_of_bounds_is_stored_clamped_and_marked(tmp_path: Path) -> None:
    import asyncio

    from oneapi.ledger import MAX_RECORD_COST_NANO, Batch, SqliteLedger

    async def run() -> list[tuple[Any, ...]]:
        ledger = SqliteLedger(tmp_path / "ledger.db")
        await ledger.open()
        bad = _usage_record("bad", prompt_tokens=10**19, completion_tokens=-3, cost_nano=10**20, token=None, ts=float("nan"))
        await ledger.write(Batch(records=[_usage_record("a"), bad, _usage_record("b")]), "owner")
        await ledger.write(Batch(records=[_usage_record("c")]), "owner")  # and the file takes the next batch as usual
        await ledger.close()
        with sqlite3.connect(tmp_path / "ledger.db") as db:
            return db.execute("SELECT request_id, token, prompt_tokens, completion_tokens, cost_nano, estimated, ts > 0 FROM usage "
                              "ORDER BY id").fetchall()

    rows = asyncio.run(run())
    assert [r[0] for r in rows] == ["a", "bad", "b", "c"]
    assert rows[1][1:] == ("", 4 * 100_000_000, 0, MAX_RECORD_COST_NANO, 1, 1)
    assert all(r[2:6] == (24, 8, 40, 0) for r in rows if r[0] != "bad")


def test_a_record_the_file_refuses_is_left_out_alone_and_never_retried(tmp_path: Path, monkeypatch, caplog) -> None:
    import asyncio

    import oneapi.ledger
    from oneapi.ledger import SqliteLedger, UsageQuery
    from oneapi.limits import SqliteAccounting

    monkeypatch.setattr(oneapi.ledger, "storable", lambda record: record)  # let a record past the bounds reach the file

    async def run() -> tuple[int, int, int]:
        accounting = SqliteAccounting(SqliteLedger(tmp_path / "ledger.db"))
        await accounting.start()
        for name in ("a", "b"):
            accounting.settle(None, _usage_record(name))
        accounting.settle(None, _usage_record("overflow", cost_nano=10**20))  # more than SQLite's 64-bit INTEGER
        accounting.settle(None, _usage_record("c"))
        await accounting.flush()
        accounting.settle(None, _usage_record("d"))
        await accounting.flush()
        left = len(accounting._records)
        report = await accounting.query(UsageQuery(group_by=()))
        await accounting.close()
        return report.totals.requests, report.totals.cost_nano, left

    requests, cost, left = asyncio.run(run())
    assert (requests, cost, left) == (4, 4 * 40, 0)
    refused = [r for r in caplog.records if "refused by the ledger file" in r.getMessage()]
    assert len(refused) == 1 and "overflow" in refused[0].getMessage()


def test_redis_settlements_are_applied_once_when_a_retry_follows_a_lost_answer(redis_url: str, monkeypatch) -> None:
    import asyncio

    from redis.asyncio.client import Pipeline
    from redis.exceptions import ConnectionError as RedisConnectionError

    from oneapi.ledger import UsageQuery
    from oneapi.limits import Demand
    from oneapi.redisstore import RedisAccounting

    original = Pipeline.execute
    failures = {"left": 1}

    async def answer_lost(self: Pipeline, raise_on_error: bool = True) -> Any:
        results = await original(self, raise_on_error)  # redis ran every script...
        if failures["left"]:
            failures["left"] -= 1
            raise RedisConnectionError("connection reset while reading the answer")  # ...and the client never heard
        return results

    async def run() -> tuple[int, int, int, int]:
        accounting = RedisAccounting(redis_url)
        await accounting.start()
        token = _limited_token(budget=10.0, tpm=1_000_000)
        for i in range(20):
            admission = await accounting.admit(token, Demand(100, 50), f"req-{i}")
            accounting.settle(admission, _usage_record(f"req-{i}", token="t"))
        monkeypatch.setattr(Pipeline, "execute", answer_lost)
        try:
            await accounting.flush()
        except RedisConnectionError:
            pass
        else:
            raise AssertionError("the simulated failure did not happen")
        assert len(accounting._pending) == 20  # kept for the next try
        for i in range(20, 25):  # new settlements join the retry
            accounting.settle(None, _usage_record(f"req-{i}", token="t"))
        await accounting.flush()
        report = await accounting.query(UsageQuery(group_by=()))
        spend = int(await accounting.redis.hget("oneapi:spend:t", "all") or 0)
        tpm = sum(int(v) for v in (await accounting.redis.hgetall("oneapi:tpm:t")).values())
        await accounting.close()
        return report.totals.requests, report.totals.cost_nano, spend, tpm

    requests, cost, spend, tpm = asyncio.run(run())
    assert (requests, cost, spend) == (25, 25 * 40, 25 * 40)
    assert tpm == 20 * 32  # each admission's reservation corrected to its real tokens, once


def test_redis_settlements_are_applied_once_when_redis_answers_after_the_client_timed_out(redis_url: str) -> None:
    import asyncio

    import redis
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from oneapi.ledger import UsageQuery
    from oneapi.redisstore import RedisAccounting

    async def run() -> tuple[int, int, int]:
        accounting = RedisAccounting(redis_url + "?socket_timeout=0.3")
        await accounting.start()
        accounting._flusher.cancel()  # the test decides when to flush
        for i in range(10):
            accounting.settle(None, _usage_record(f"req-{i}", token="t"))
        with redis.Redis.from_url(redis_url) as admin:
            admin.execute_command("CLIENT", "PAUSE", "1500", "WRITE")  # redis holds the scripts, runs them after 1.5 s
        timeouts = 0
        for _ in range(3):  # the client gives up after 0.3 s and tries again, each time with the scripts queued behind the pause
            try:
                await accounting.flush()
            except RedisTimeoutError:
                timeouts += 1
        for _ in range(40):
            if not accounting._pending:
                break
            await asyncio.sleep(0.25)
            try:
                await accounting.flush()
            except RedisTimeoutError:
                timeouts += 1
        report = await accounting.query(UsageQuery(group_by=()))
        await accounting.close()
        return timeouts, report.totals.requests, report.totals.cost_nano

    timeouts, requests, cost = asyncio.run(run())
    assert timeouts >= 1  # a try timed out (redis ran it later) and was sent again, maybe several times
    assert (requests, cost) == (10, 10 * 40)


def test_a_settlement_redis_refuses_is_left_out_and_the_rest_applied(redis_url: str, monkeypatch, caplog) -> None:
    import asyncio

    import oneapi.redisstore
    from oneapi.ledger import UsageQuery
    from oneapi.redisstore import RedisAccounting

    monkeypatch.setattr(oneapi.redisstore, "storable", lambda record: record)  # let a cost past the bounds reach the script

    async def run() -> tuple[int, int, int]:
        accounting = RedisAccounting(redis_url)
        await accounting.start()
        for name in ("a", "b"):
            accounting.settle(None, _usage_record(name, token="t"))
        accounting.settle(None, _usage_record("absurd", token="t", cost_nano=10**19))
        accounting.settle(None, _usage_record("c", token="t"))
        await accounting.flush()
        await accounting.flush()
        left = len(accounting._pending)
        report = await accounting.query(UsageQuery(group_by=()))
        await accounting.close()
        return report.totals.requests, report.totals.cost_nano, left

    assert asyncio.run(run()) == (3, 3 * 40, 0)
    assert any("settlement of absurd refused by redis" in r.getMessage() for r in caplog.records)


def _limited_token(**limits: Any) -> Any:
    from oneapi.config import TokenConfig

    return TokenConfig(name="t", key_sha256=None, group="default", models=None, budget=limits.get("budget"),
                       budget_period=None, expires=None, subnets=(), rpm=limits.get("rpm"), tpm=limits.get("tpm"), enabled=True)


@pytest.mark.parametrize("value", [1e19, 10**19, -1, -0.5, 12.5, float("nan"), float("inf"), "24", "sk-looks-like-a-secret", True, [3], {"n": 3},
                                   100_000_001])
@pytest.mark.parametrize("shape, field", [
    ("openai/chat_completion_text.json", ("prompt_tokens",)),
    ("openai/chat_completion_text.json", ("completion_tokens_details", "reasoning_tokens")),
    ("anthropic/message_text.json", ("output_tokens",)),
])
def test_a_usage_count_no_vendor_could_mean_is_refused_where_it_is_read(shape: str, field: tuple[str, ...], value: Any, caplog) -> None:
    from oneapi.usage import normalise_usage

    usage = fixture_json(shape)["usage"]
    assert normalise_usage(usage) is not None  # the recording as it is
    target = usage
    for name in field[:-1]:
        target = target[name]
    target[field[-1]] = value

    assert normalise_usage(usage) is None  # the request is then billed by the estimate, marked estimated
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "upstream usage rejected" in message and "sk-looks-like-a-secret" not in message


def test_whole_numbers_in_any_json_spelling_are_kept() -> None:
    from oneapi.usage import MAX_REQUEST_TOKENS, Usage, normalise_usage

    assert normalise_usage({"prompt_tokens": 24.0, "completion_tokens": None, "total_tokens": 32}) == Usage(24, 8)
    assert normalise_usage({"promptTokenCount": MAX_REQUEST_TOKENS, "candidatesTokenCount": 0}) == Usage(MAX_REQUEST_TOKENS, 0)
