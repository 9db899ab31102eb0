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

from conftest import CLIENT_KEY, ROOT, GatewayProcess, base_config
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
