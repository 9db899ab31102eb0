"""The budget path end to end: admission and settlement price the same name, a refusal says what would fit,
the prompt is reserved at a bound no recorded vendor exceeded (so concurrent requests cannot overspend, on
SQLite or on redis), and a client hanging up cannot cut its bill."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from conftest import CLIENT_KEY, ROOT, GatewayProcess, base_config
from fakevendor import FakeVendor, Reply, fixture_bytes, fixture_json, sse_events
from oneapi.usage import BOUND_IMAGE, BOUND_REMOTE_MEDIA, Usage, normalise_usage, prompt_token_bound, usage_from_body, usage_from_sse

ADMIN = {"Authorization": "Bearer admin-secret-key-for-tests"}
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
FIXTURES = ROOT / "tests" / "fixtures"


def usage_report(gateway: GatewayProcess, predicate: Any = None, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        report = httpx.get(gateway.url("/admin/usage"), headers=ADMIN, timeout=10).json()
        if predicate is None or predicate(report) or time.monotonic() > deadline:
            return report
        time.sleep(0.1)


def post(gateway: GatewayProcess, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(gateway.url("/v1/chat/completions"), json=body, headers=AUTH, timeout=20)


# --- the prompt's bound against every recorded request and its vendor's count -----------------------------------


def _recorded_prompt(request: Path) -> tuple[dict[str, Any], int] | None:
    """The body of a recorded request and the prompt tokens its vendor billed in the recorded answer."""
    stem = request.name[: -len(".request.json")]
    body = json.loads(request.read_text()).get("body")
    answer = next((p for p in (request.with_name(stem + ".json"), request.with_name(stem + ".sse")) if p.exists()), None)
    if not isinstance(body, dict) or answer is None:
        return None
    data = answer.read_bytes()
    if answer.suffix == ".sse":
        found = usage_from_sse(data)
        for event in sse_events(data) if found is None else ():  # a Responses or Gemini stream: usage inside its last event
            payload = json.loads(event.split(b"data:", 1)[1]) if b"data:" in event else {}
            nested = payload.get("response") if isinstance(payload.get("response"), dict) else payload
            found = normalise_usage(nested.get("usage") or nested.get("usageMetadata")) or found
    else:
        payload = json.loads(data)
        found = usage_from_body(data) or normalise_usage(payload.get("usageMetadata"))
        if found is None and isinstance(payload.get("usage"), dict):
            usage = payload["usage"]
            # Bedrock Converse counts inputTokens; Cohere bills billed_units (its `tokens` add its own preamble)
            prompt = usage.get("inputTokens", usage.get("billed_units", {}).get("input_tokens"))
            found = Usage(prompt) if prompt is not None else None
    return (body, found.prompt_tokens) if found is not None else None


# docs_response_reasoning: an example printed in OpenAI's reference whose request names o3-mini and whose answer
# o1 (SOURCES.md): not one exchange, so its count says nothing about its request
NOT_ONE_EXCHANGE = {"openai_responses/docs_response_reasoning.request.json"}
# every recorded request whose answer has a count (an error answer counts nothing)
RECORDED = sorted(name for name in (str(p.relative_to(FIXTURES)) for p in FIXTURES.rglob("*.request.json"))
                  if name not in NOT_ONE_EXCHANGE and _recorded_prompt(FIXTURES / name) is not None)


@pytest.mark.parametrize("request_file", RECORDED)
def test_the_prompt_bound_covers_what_the_vendor_counted(request_file: str) -> None:
    body, counted = _recorded_prompt(FIXTURES / request_file)  # type: ignore[misc]
    assert prompt_token_bound(body) >= counted


def test_the_recorded_exchanges_cover_every_request_shape() -> None:
    vendors = {name.split("/")[0] for name in RECORDED}
    assert {"openai", "openai_responses", "anthropic", "gemini", "bedrock", "cohere", "ollama", "openrouter", "zhipu"} <= vendors
    assert len(RECORDED) >= 25


def test_media_parts_are_reserved_at_their_documented_bounds() -> None:
    text = {"messages": [{"role": "user", "content": "hi"}]}
    inline = "data:image/png;base64," + "A" * 500_000
    image = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": inline}}]}]}
    remote_image = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}
    audio = "B" * 40_000
    inline_audio = {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}}]}]}
    pdf = {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}}]}]}
    gemini_image = {"contents": [{"role": "user", "parts": [{"inline_data": {"mime_type": "image/jpeg", "data": "C" * 100_000}}]}]}
    remote_audio = {"contents": [{"role": "user", "parts": [{"file_data": {"mime_type": "audio/mp3", "file_uri": "gs://b/talk.mp3"}}]}]}

    base = prompt_token_bound(text) - len("hi") - 1
    assert prompt_token_bound(image) - base == BOUND_IMAGE  # not its 500 kB: vendors downscale an image first
    assert prompt_token_bound(remote_image) - base == BOUND_IMAGE
    assert prompt_token_bound(gemini_image) - base == BOUND_IMAGE
    assert prompt_token_bound(inline_audio) - base >= len(audio)  # inline audio: its base64 size bounds its tokens
    assert prompt_token_bound(pdf) - base == BOUND_REMOTE_MEDIA
    assert prompt_token_bound(remote_audio) - base == BOUND_REMOTE_MEDIA  # its length is unknown: a reserve, not a bound


def test_the_bound_walks_any_depth_without_recursion() -> None:
    deep: Any = "x"
    for _ in range(100_000):
        deep = [deep]
    assert prompt_token_bound({"messages": [{"role": "user", "content": deep}]}) > 2


# --- point 1: one pricing rule for admission, settlement and `oneapi check` --------------------------------------

# chat_completion_text.json reports 24 prompt + 8 completion tokens: $0.025 at these (deliberately dear) prices
PRICING = {"models": {"gpt-4o-mini": {"input": 625.0, "output": 1250.0}}}
REQUEST_COST = 0.025
RECORDED_MESSAGES = fixture_json("openai/chat_completion_text.request.json")["body"]["messages"]


def budget_config(vendor: FakeVendor, store: str | None = None, **token: Any) -> dict[str, Any]:
    config = base_config(vendor, pricing=PRICING)
    config["tokens"][0].update(token)
    if store:
        config["store"] = store
    return config


def test_a_model_map_alias_is_reserved_and_charged_at_its_targets_price(vendor: FakeVendor, start_gateway) -> None:
    config = budget_config(vendor, budget=0.2)
    config["channels"][0]["model_map"] = {"alias": "gpt-4o-mini"}  # the README's pattern: priced only as its target
    gateway = start_gateway(config)
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")

    # the target until refused, then the alias: the alias must not spend what the target could not
    answers = [post(gateway, {"model": name, "max_tokens": 8, "messages": RECORDED_MESSAGES})
               for name in ("gpt-4o-mini", "alias", "gpt-4o-mini", "alias", "gpt-4o-mini", "alias", "alias")]

    statuses = [a.status_code for a in answers]
    assert statuses[:2] == [200, 200] and 429 in statuses, statuses
    assert statuses.index(429) == statuses.count(200)  # once refused, refused under either name
    assert float(answers[1].headers["x-budget-remaining-usd"]) < float(answers[0].headers["x-budget-remaining-usd"])
    totals = usage_report(gateway)["totals"]
    assert totals["requests"] == statuses.count(200)
    assert totals["cost_usd"] == pytest.approx(statuses.count(200) * REQUEST_COST)  # the alias charged at its target's price
    assert totals["cost_usd"] <= 0.2
    assert [r.json()["model"] for r in vendor.received] == ["gpt-4o-mini"] * statuses.count(200)


def check(config: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    return subprocess.run([sys.executable, "-m", "oneapi.cli", "check", "--config", str(path)], capture_output=True, text=True,
                          timeout=60, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_check_warns_about_every_request_that_will_be_free(vendor: FakeVendor, tmp_path: Path) -> None:
    config = budget_config(vendor)
    config["channels"][0].update(models=["gpt-4o-mini"], model_map={"alias": "gpt-4o-mini"})  # priced through its target
    config["channels"].append({"name": "spare", "provider": "openai", "base_url": vendor.base_url, "keys": ["k"],
                               "models": ["gpt-4o-mini"], "model_map": {"alias": "cheap-model"}})  # the same alias, sent unpriced
    config["groups"] = {"default": {"ratio": 1.0}, "friends": {"ratio": 0}}

    done = check(config, tmp_path)

    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.endswith("(warning)")]
    assert len(warnings) == 2, done.stderr
    assert "'alias' (channel 'spare') is sent as 'cheap-model' and neither name has a price" in warnings[0]
    assert "group 'friends' has ratio 0" in warnings[1]
    assert all("never count against a budget" in w for w in warnings)


# --- point 2: honest refusals --------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_url") if request.param == "redis" else None


def test_a_budget_refusal_says_what_it_may_cost_what_remains_and_what_would_fit(vendor: FakeVendor, start_gateway,
                                                                                 store: str | None) -> None:
    gateway = start_gateway(budget_config(vendor, store, budget=0.1, rpm=100))
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    assert post(gateway, {"model": "gpt-4o-mini", "max_tokens": 8, "messages": RECORDED_MESSAGES}).status_code == 200

    refused = post(gateway, {"model": "gpt-4o-mini", "max_tokens": 20, "messages": RECORDED_MESSAGES})

    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["code"], error["type"]) == ("budget_exceeded", "insufficient_quota")
    message = error["message"]
    cost = float(re.search(r"may cost up to \$([0-9.]+)", message).group(1))
    remaining = float(re.search(r"and \$([0-9.]+) of its budget of \$0.10 remains", message).group(1))
    fits = int(re.search(r"With max_tokens (\d+) or less it would fit", message).group(1))
    assert remaining == pytest.approx(0.1 - REQUEST_COST, abs=1e-6) and cost > remaining
    assert "no period and does not reset" in message and "try again" not in message
    assert "retry-after" not in refused.headers  # an all-time budget: nothing resets by waiting
    # the limit headers ride on the refusal too
    assert float(refused.headers["x-budget-remaining-usd"]) == pytest.approx(remaining, abs=1e-6)
    assert refused.headers["x-budget-limit-usd"] == "0.100000"
    assert refused.headers["x-ratelimit-limit-requests"] == "100"
    # what it said would fit, fits; one more token does not
    assert post(gateway, {"model": "gpt-4o-mini", "max_tokens": fits + 1, "messages": RECORDED_MESSAGES}).status_code == 429
    assert post(gateway, {"model": "gpt-4o-mini", "max_tokens": fits, "messages": RECORDED_MESSAGES}).status_code == 200
    assert usage_report(gateway)["totals"]["requests"] == 2


def test_retry_after_is_the_real_time_to_the_period_reset_and_absent_when_waiting_cannot_help(vendor: FakeVendor, start_gateway) -> None:
    gateway = start_gateway(budget_config(vendor, budget=0.1, budget_period="daily"))
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    assert post(gateway, {"model": "gpt-4o-mini", "max_tokens": 8, "messages": RECORDED_MESSAGES}).status_code == 200

    after_reset = post(gateway, {"model": "gpt-4o-mini", "max_tokens": 20, "messages": RECORDED_MESSAGES})
    never = post(gateway, {"model": "gpt-4o-mini", "max_tokens": 1000, "messages": RECORDED_MESSAGES})

    assert after_reset.status_code == 429
    assert abs(int(after_reset.headers["retry-after"]) - (86400 - time.time() % 86400)) < 5
    assert "resets in" in after_reset.json()["error"]["message"]
    assert after_reset.headers["x-budget-reset"].endswith("s")
    assert never.status_code == 429 and "retry-after" not in never.headers  # larger than the whole budget
    assert "larger than the whole budget" in never.json()["error"]["message"]


def test_a_rate_limit_refusal_carries_every_limit_header(vendor: FakeVendor, start_gateway, store: str | None) -> None:
    gateway = start_gateway(budget_config(vendor, store, budget=5.0, rpm=1))
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    if time.time() % 60 > 50:
        time.sleep(60 - time.time() % 60 + 0.1)  # both requests in one minute
    ok = post(gateway, {"model": "gpt-4o-mini", "max_tokens": 8, "messages": RECORDED_MESSAGES})
    time.sleep(0.5)  # its settlement is written
    refused = post(gateway, {"model": "gpt-4o-mini", "max_tokens": 8, "messages": RECORDED_MESSAGES})

    assert ok.status_code == 200 and refused.status_code == 429
    assert refused.json()["error"]["code"] == "rpm_limit_exceeded"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert float(refused.headers["x-budget-remaining-usd"]) == pytest.approx(5.0 - REQUEST_COST, abs=1e-6)


def test_a_request_larger_than_the_tpm_limit_gets_no_retry_after(vendor: FakeVendor, start_gateway) -> None:
    gateway = start_gateway(budget_config(vendor, tpm=50))
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")

    never = post(gateway, {"model": "gpt-4o-mini", "max_tokens": 100, "messages": RECORDED_MESSAGES})

    assert never.status_code == 429 and never.json()["error"]["code"] == "tpm_limit_exceeded"
    assert "retry-after" not in never.headers and "try again" not in never.json()["error"]["message"]
    assert post(gateway, {"model": "gpt-4o-mini", "max_tokens": 8, "messages": RECORDED_MESSAGES}).status_code == 200


# --- point 3: zero overspend under concurrency -----------------------------------------------------------------------


async def _forty_at_once(urls: list[str]) -> list[Any]:
    clients = [openai.AsyncOpenAI(base_url=url, api_key=CLIENT_KEY, max_retries=0, timeout=60) for url in urls]
    try:
        calls = [clients[i % len(clients)].chat.completions.create(model="gpt-4o-mini", max_tokens=16, messages=RECORDED_MESSAGES)
                 for i in range(40)]
        return await asyncio.gather(*calls, return_exceptions=True)
    finally:
        for client in clients:
            await client.close()


def _assert_no_overspend(results: list[Any], budget: float, gateway: GatewayProcess) -> None:
    admitted = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(r, openai.RateLimitError) and r.code == "budget_exceeded" for r in refused), refused[:1]
    assert all(r.usage.prompt_tokens == 24 and r.usage.completion_tokens == 8 for r in admitted)  # the vendor's recorded usage
    assert len(admitted) >= 2, f"only {len(admitted)} admitted"  # two reservations fit the budget at once
    # then one client at a time until the budget refuses: it is used up to less than one request's worst case
    body = {"model": "gpt-4o-mini", "max_tokens": 16, "messages": RECORDED_MESSAGES}
    more = 0
    for _ in range(40):
        last = post(gateway, body)
        if last.status_code == 200:
            more += 1
        elif "retry-after" in last.headers:  # held by a request or a sibling's allotment in flight: back soon, as a client would
            time.sleep(float(last.headers["retry-after"]))
        else:
            break
    assert last.status_code == 429 and "retry-after" not in last.headers
    worst_case = float(re.search(r"may cost up to \$([0-9.]+)", last.json()["error"]["message"]).group(1))
    totals = usage_report(gateway, lambda r: r["totals"]["requests"] == len(admitted) + more)["totals"]
    assert totals["requests"] == len(admitted) + more
    assert totals["cost_usd"] == pytest.approx((len(admitted) + more) * REQUEST_COST)
    assert totals["cost_usd"] <= budget + 1e-9  # not a cent over, however the 40 interleaved
    assert budget - totals["cost_usd"] < worst_case  # and refused only when the worst case no longer fit


def test_no_overspend_under_40_concurrent_requests_on_two_sqlite_workers(vendor: FakeVendor, start_gateway) -> None:
    budget = 0.25
    gateway = start_gateway(budget_config(vendor, budget=budget), workers=2)
    vendor.reply("POST", "/v1/chat/completions", Reply(body=fixture_bytes("openai/chat_completion_text.json"), delay=0.05))

    results = asyncio.run(_forty_at_once([gateway.url("/v1")]))

    _assert_no_overspend(results, budget, gateway)


def test_no_overspend_under_40_concurrent_requests_on_two_gateways_sharing_redis(vendor: FakeVendor, start_gateway, redis_url: str) -> None:
    budget = 0.25
    config = budget_config(vendor, redis_url, budget=budget)
    first, second = start_gateway(config), start_gateway(config)
    vendor.reply("POST", "/v1/chat/completions", Reply(body=fixture_bytes("openai/chat_completion_text.json"), delay=0.05))

    results = asyncio.run(_forty_at_once([first.url("/v1"), second.url("/v1")]))

    _assert_no_overspend(results, budget, first)
    assert usage_report(second)["totals"] == usage_report(first)["totals"]  # one ledger, whichever replica is asked


# --- point 6: hanging up cannot cut the bill -------------------------------------------------------------------------


def _hang_up_after_first_chunk(gateway: GatewayProcess, model: str, max_tokens: int) -> None:
    sdk = openai.OpenAI(base_url=gateway.url("/v1"), api_key=CLIENT_KEY, max_retries=0, timeout=20)
    with sdk.chat.completions.create(model=model, max_tokens=max_tokens, stream=True,
                                     messages=[{"role": "user", "content": "What is 2+2?"}]) as stream:
        next(iter(stream))


def _read_to_the_end(gateway: GatewayProcess, model: str, max_tokens: int) -> None:
    sdk = openai.OpenAI(base_url=gateway.url("/v1"), api_key=CLIENT_KEY, max_retries=0, timeout=20)
    assert list(sdk.chat.completions.create(model=model, max_tokens=max_tokens, stream=True,
                                            messages=[{"role": "user", "content": "What is 2+2?"}]))


def test_hanging_up_a_reasoning_stream_is_charged_its_reserved_end(vendor: FakeVendor, start_gateway) -> None:
    gateway = start_gateway(base_config(vendor, pricing=PRICING))
    # OpenRouter's recorded reasoning stream: 43 prompt + 36 completion tokens, 13 of them reasoning never streamed
    recorded = usage_from_sse(fixture_bytes("openrouter/stream_reasoning_details.sse"))
    assert recorded == Usage(43, 36, 0, 13)
    vendor.reply_sse("/v1/chat/completions", "openrouter/stream_reasoning_details.sse", delay=0.3)

    _read_to_the_end(gateway, "gpt-4o-mini", 100)
    _hang_up_after_first_chunk(gateway, "gpt-4o-mini", 100)

    usage_report(gateway, lambda r: r["totals"]["requests"] == 2)
    whole, left = _records(gateway)
    assert (whole["prompt_tokens"], whole["completion_tokens"], whole["estimated"]) == (43, 36, 0)  # read to the end: exact
    # left after the first chunk: the reserved output (max_tokens), never less than the vendor bills for the whole
    assert left["estimated"] == 1 and left["completion_tokens"] == 100 and left["prompt_tokens"] >= 43
    assert left["cost_nano"] >= whole["cost_nano"]
    deadline = time.monotonic() + 5
    while vendor.disconnects == 0 and time.monotonic() < deadline:  # noticed at the vendor's next write
        time.sleep(0.05)
    assert vendor.disconnects == 1  # the upstream was closed, not read on


def test_hanging_up_an_anthropic_stream_before_its_output_count_is_charged_its_reserved_end(vendor: FakeVendor, start_gateway) -> None:
    config = base_config(vendor, pricing={"models": {"claude-sonnet-4-5": {"input": 3.0, "output": 15.0}}})
    config["channels"] = [{"name": "claude", "provider": "anthropic", "base_url": vendor.base_url, "keys": ["sk-ant"],
                           "models": ["claude-sonnet-4-5"]}]
    gateway = start_gateway(config)
    # the recorded stream says 20 input and 1 output token when it starts; its 5 output tokens come only at its end
    vendor.reply_sse("/v1/messages", "anthropic/stream_text_raw.sse", delay=0.3)

    _read_to_the_end(gateway, "claude-sonnet-4-5", 64)
    _hang_up_after_first_chunk(gateway, "claude-sonnet-4-5", 64)

    usage_report(gateway, lambda r: r["totals"]["requests"] == 2)
    whole, left = _records(gateway)
    assert (whole["prompt_tokens"], whole["completion_tokens"], whole["estimated"]) == (20, 5, 0)
    # the prompt at its bound (the translated stream reports no count before its end), the output at max_tokens
    assert (left["completion_tokens"], left["estimated"]) == (64, 1) and left["prompt_tokens"] >= 20
    assert left["cost_nano"] >= whole["cost_nano"]


def _records(gateway: GatewayProcess) -> list[dict[str, Any]]:
    """The ledger's records, in the order they were written (after /admin/usage flushed them)."""
    with sqlite3.connect(gateway.config_path.parent / "data" / "oneapi.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT prompt_tokens, completion_tokens, estimated, cost_nano FROM usage ORDER BY id")]
