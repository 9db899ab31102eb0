"""Limits end to end: a 429 with Retry-After for each of budget, rpm, tpm and channel concurrency; budgets
that hold under 50 concurrent requests, over SQLite with two workers and over redis with two gateways."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest

from conftest import CLIENT_KEY, GatewayProcess, base_config
from fakevendor import FakeVendor, Reply, fixture_bytes

ADMIN = {"Authorization": "Bearer admin-secret-key-for-tests"}
# chat_completion_text.json reports 24 prompt + 8 completion tokens: at these prices a request costs $0.04
PRICING = {"models": {"gpt-4o-mini": {"input": 100.0, "output": 4700.0}}}
REQUEST_COST = 0.04
# a budget reserves the prompt's upper bound (135 tokens) + max_tokens 8 ($0.0511); tpm the estimate (~29 + 8 tokens)
BODY = {"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "x" * 100}]}
# the longest wait a sliding minute asks for: its oldest one-second bucket is counted whole, so up to 61 s
WINDOW_RETRY = 61


def limited_config(vendor: FakeVendor, store: str | None = None, **token: Any) -> dict[str, Any]:
    config = base_config(vendor, pricing=PRICING)
    config["tokens"][0].update(token)
    if store:
        config["store"] = store
    return config


def post(gateway: GatewayProcess, body: dict[str, Any] = BODY) -> httpx.Response:
    return httpx.post(gateway.url("/v1/chat/completions"), json=body, headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=20)


def assert_refused(response: httpx.Response, code: str, max_retry_after: int | None) -> None:
    """A 429 naming the limit; Retry-After up to `max_retry_after`, or none when waiting cannot help."""
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == code and set(error) == {"message", "type", "code", "param"}
    if max_retry_after is None:
        assert "retry-after" not in response.headers
    else:
        assert 1 <= int(response.headers["retry-after"]) <= max_retry_after
    assert response.headers["x-request-id"].startswith("req_")


def spent(gateway: GatewayProcess) -> dict[str, Any]:
    return httpx.get(gateway.url("/admin/usage"), headers=ADMIN, timeout=10).json()["totals"]


def same_minute(margin: float = 15.0) -> None:
    """Start a per-minute test early enough in a minute that it cannot straddle two windows."""
    if time.time() % 60 > 60 - margin:
        time.sleep(60 - time.time() % 60 + 0.1)


def test_rpm_refuses_with_retry_after_and_reports_headers(vendor: FakeVendor, start_gateway) -> None:
    gateway = start_gateway(limited_config(vendor, rpm=2))
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    same_minute()

    first, second, third = post(gateway), post(gateway), post(gateway)

    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert (first.headers["x-ratelimit-remaining-requests"], second.headers["x-ratelimit-remaining-requests"]) == ("1", "0")
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    assert_refused(third, "rpm_limit_exceeded", WINDOW_RETRY)
    assert "requests per min" in third.json()["error"]["message"]
    assert len(vendor.received) == 2


def test_tpm_counts_real_tokens_and_refuses(vendor: FakeVendor, start_gateway) -> None:
    gateway = start_gateway(limited_config(vendor, tpm=100))
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    same_minute()

    responses = [post(gateway) for _ in range(3)]

    # 32 real tokens each: 32 + 32 + a 37-token reservation would pass 100
    assert [r.status_code for r in responses[:2]] == [200, 200]
    assert responses[0].headers["x-ratelimit-limit-tokens"] == "100"
    assert_refused(responses[2], "tpm_limit_exceeded", WINDOW_RETRY)


@pytest.mark.parametrize("period, max_retry_after", [(None, None), ("daily", 86400)])
def test_budget_refuses_once_spent(vendor: FakeVendor, start_gateway, period: str | None, max_retry_after: int | None) -> None:
    token: dict[str, Any] = {"budget": 0.1}
    if period:
        token["budget_period"] = period
    gateway = start_gateway(limited_config(vendor, **token))
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")

    responses = [post(gateway) for _ in range(3)]

    assert [r.status_code for r in responses[:2]] == [200, 200]
    assert float(responses[0].headers["x-budget-limit-usd"]) == 0.1
    assert float(responses[1].headers["x-budget-remaining-usd"]) < float(responses[0].headers["x-budget-remaining-usd"])
    assert_refused(responses[2], "budget_exceeded", max_retry_after)
    if period == "daily":
        assert abs(int(responses[2].headers["retry-after"]) - (86400 - time.time() % 86400)) < 5
    assert responses[2].json()["error"]["type"] == "insufficient_quota"
    assert spent(gateway)["cost_usd"] == pytest.approx(2 * REQUEST_COST)


def _concurrently(calls: list[Any], in_flight: Any = None) -> list[httpx.Response]:
    """Each call started on its own thread, the next once the previous is in flight: `in_flight(i)` true
    (e.g. the vendor has i requests), else 50 ms later; a fixed gap alone loses the race on a loaded machine."""
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for n, t in enumerate(threads, start=1):
        t.start()
        deadline = time.monotonic() + 5
        while in_flight is not None and not in_flight(n) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
    for t in threads:
        t.join(30)
    return results


def test_channel_max_concurrency_refuses_then_frees_its_slot(vendor: FakeVendor, start_gateway) -> None:
    config = limited_config(vendor)
    config["channels"][0]["max_concurrency"] = 1
    gateway = start_gateway(config)
    vendor.reply("POST", "/v1/chat/completions", Reply(body=fixture_bytes("openai/chat_completion_text.json"), delay=1.0))

    slow, refused = _concurrently([lambda: post(gateway), lambda: post(gateway)], in_flight=lambda n: len(vendor.received) >= min(n, 1))

    assert slow.status_code == 200
    assert_refused(refused, "concurrency_limit_exceeded", 1)
    assert len(vendor.received) == 1
    assert post(gateway).status_code == 200  # the slot came back


def test_a_full_channel_hands_over_to_the_next(vendor: FakeVendor, start_gateway) -> None:
    spare = FakeVendor().start()
    try:
        config = limited_config(vendor)
        config["channels"][0].update(max_concurrency=1, priority=10)
        config["channels"].append({"name": "spare", "provider": "openai", "base_url": spare.base_url, "keys": ["k2"], "models": ["gpt-4o-mini"]})
        gateway = start_gateway(config)
        for fake in (vendor, spare):
            fake.reply("POST", "/v1/chat/completions", Reply(body=fixture_bytes("openai/chat_completion_text.json"), delay=1.0))

        results = _concurrently([lambda: post(gateway), lambda: post(gateway)])

        assert [r.status_code for r in results] == [200, 200]
        assert (len(vendor.received), len(spare.received)) == (1, 1)
        channels = httpx.get(gateway.url("/admin/channels"), headers=ADMIN, timeout=5).json()["channels"]
        assert channels[0]["max_concurrency"] == 1
    finally:
        spare.stop()


async def _burst(urls: list[str], n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=30,
                                 limits=httpx.Limits(max_connections=n)) as http:
        return await asyncio.gather(*(http.post(urls[i % len(urls)], json=BODY) for i in range(n)))


def _assert_budget_held(responses: list[httpx.Response], budget: float, recorded: dict[str, Any]) -> None:
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert all(r.status_code == 429 and r.json()["error"]["code"] == "budget_exceeded" for r in refused)
    # an all-time budget: come back only when requests in flight may free enough, never "in an hour"
    assert all(r.headers.get("retry-after") in (None, "1") for r in refused)
    # every reservation covers its request, so the budget holds exactly however the 50 interleave
    assert len(ok) * REQUEST_COST <= budget + 1e-9
    assert len(ok) >= 5, f"only {len(ok)} of {len(responses)} admitted under a budget for {budget / REQUEST_COST:.0f}"
    assert recorded["requests"] == len(ok)
    assert recorded["cost_usd"] == pytest.approx(len(ok) * REQUEST_COST)


def test_budget_holds_under_50_concurrent_requests_on_two_sqlite_workers(vendor: FakeVendor, start_gateway) -> None:
    budget = 0.4
    gateway = start_gateway(limited_config(vendor, budget=budget), workers=2)
    vendor.reply("POST", "/v1/chat/completions", Reply(body=fixture_bytes("openai/chat_completion_text.json"), delay=0.05))

    responses = asyncio.run(_burst([gateway.url("/v1/chat/completions")], 50))

    time.sleep(0.5)  # the other worker's records reach the file within a flush interval
    _assert_budget_held(responses, budget, spent(gateway))


def test_budget_holds_under_50_concurrent_requests_on_two_gateways_sharing_redis(vendor: FakeVendor, start_gateway, redis_url: str) -> None:
    budget = 0.4
    config = limited_config(vendor, store=redis_url, budget=budget)
    first, second = start_gateway(config), start_gateway(config)
    vendor.reply("POST", "/v1/chat/completions", Reply(body=fixture_bytes("openai/chat_completion_text.json"), delay=0.05))

    responses = asyncio.run(_burst([first.url("/v1/chat/completions"), second.url("/v1/chat/completions")], 50))

    time.sleep(0.5)
    _assert_budget_held(responses, budget, spent(first))
    assert spent(second) == spent(first)  # one ledger, whichever replica is asked


def test_rpm_window_is_shared_by_two_gateways_over_redis(vendor: FakeVendor, start_gateway, redis_url: str) -> None:
    config = limited_config(vendor, store=redis_url, rpm=5)
    first, second = start_gateway(config), start_gateway(config)
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    same_minute()

    statuses = [post(g).status_code for g in (first, second) * 5]

    assert statuses.count(200) == 5 and statuses.count(429) == 5
    assert len(vendor.received) == 5


def test_redis_ledger_and_budget_survive_a_gateway_restart(vendor: FakeVendor, start_gateway, redis_url: str) -> None:
    config = limited_config(vendor, store=redis_url, budget=0.1)
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    first = start_gateway(config)
    assert [post(first).status_code for _ in range(2)] == [200, 200]
    assert first.stop() == 0

    second = start_gateway(config)
    assert spent(second)["requests"] == 2
    assert_refused(post(second), "budget_exceeded", None)  # an all-time budget: waiting does not help


def test_every_relay_answer_carries_a_request_id(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    ok = post(gateway)
    bad_key = httpx.post(gateway.url("/v1/chat/completions"), json=BODY, headers={"Authorization": "Bearer sk-wrong"}, timeout=10)
    assert ok.headers["x-request-id"].startswith("req_") and bad_key.headers["x-request-id"].startswith("req_")
    assert ok.headers["x-request-id"] != bad_key.headers["x-request-id"]
    assert "x-ratelimit-limit-requests" not in ok.headers  # no limits configured, none reported


def test_rpm_window_survives_a_restart(vendor: FakeVendor, start_gateway) -> None:
    config = limited_config(vendor, rpm=3)
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    same_minute(margin=30)
    first = start_gateway(config)
    assert [post(first).status_code for _ in range(2)] == [200, 200]
    assert first.stop() == 0

    second = start_gateway(config)
    assert post(second).status_code == 200
    assert_refused(post(second), "rpm_limit_exceeded", WINDOW_RETRY)


def test_channel_concurrency_is_shared_by_two_gateways_over_redis(vendor: FakeVendor, start_gateway, redis_url: str) -> None:
    config = limited_config(vendor, store=redis_url)
    config["channels"][0]["max_concurrency"] = 1
    first, second = start_gateway(config), start_gateway(config)
    vendor.reply("POST", "/v1/chat/completions", Reply(body=fixture_bytes("openai/chat_completion_text.json"), delay=1.0))

    slow, refused = _concurrently([lambda: post(first), lambda: post(second)], in_flight=lambda n: len(vendor.received) >= min(n, 1))

    assert slow.status_code == 200
    assert_refused(refused, "concurrency_limit_exceeded", 1)
    assert post(second).status_code == 200  # released across replicas


# --- allotments: two accountings on one SQLite file stand for two processes -------------------------


def _token(**limits: Any) -> Any:
    from oneapi.config import TokenConfig

    return TokenConfig(name="t", key_sha256=None, group="default", models=None, budget=limits.get("budget"),
                       budget_period=None, expires=None, subnets=(), rpm=limits.get("rpm"), tpm=limits.get("tpm"), enabled=True)


def _record(cost_nano: int, tokens: int) -> Any:
    from oneapi.ledger import UsageRecord

    return UsageRecord(time.time(), "r", "t", "c", "m", "m", "chat", False, tokens, 0, 0, 0, False, cost_nano, 1)


async def _admitted(accounting: Any, token: Any, cost: int, tokens: int, hold: float) -> bool:
    from oneapi.errors import GatewayError
    from oneapi.limits import Demand

    try:
        admission = await accounting.admit(token, Demand(cost, tokens), "r")
    except GatewayError as exc:
        assert exc.status == 429
        return False
    await asyncio.sleep(hold)
    accounting.settle(admission, _record(cost, tokens))
    return True


def test_allotments_of_two_processes_never_exceed_a_budget(tmp_path) -> None:
    from oneapi.ledger import SqliteLedger, UsageQuery
    from oneapi.limits import SqliteAccounting

    async def run() -> tuple[int, int]:
        path = tmp_path / "shared.db"
        first, second = SqliteAccounting(SqliteLedger(path)), SqliteAccounting(SqliteLedger(path))
        await first.start()
        await second.start()
        token = _token(budget=1.0)  # 1e9 nano-USD: 100 requests of 1e7
        results = await asyncio.gather(*(_admitted(first if i % 2 else second, token, 10_000_000, 1, 0.01 * (i % 5)) for i in range(300)))
        await first.close()  # hands its allotment back
        late = await asyncio.gather(*(_admitted(second, token, 10_000_000, 1, 0) for _ in range(50)))
        report = await second.query(UsageQuery())
        await second.close()
        return sum(results) + sum(late), report.totals.cost_nano

    admitted, recorded = asyncio.run(run())
    assert admitted == 100  # the whole budget, and not a request more
    assert recorded == 100 * 10_000_000


def test_a_dead_process_allotment_comes_back(tmp_path, monkeypatch) -> None:
    import oneapi.ledger
    from oneapi.ledger import SqliteLedger
    from oneapi.limits import SqliteAccounting

    monkeypatch.setattr(oneapi.ledger, "STALE_GRANT_SECONDS", 0.5)

    async def run() -> tuple[bool, bool]:
        path = tmp_path / "shared.db"
        dead, alive = SqliteAccounting(SqliteLedger(path)), SqliteAccounting(SqliteLedger(path))
        await dead.start()
        await alive.start()
        token = _token(rpm=4)
        assert await _admitted(dead, token, 0, 1, 0)  # draws an allotment of the window, then "dies" holding it
        dead._flusher.cancel()  # no heartbeat from now on, as after a kill -9
        while await _admitted(alive, token, 0, 1, 0):
            pass
        held_elsewhere = await _admitted(alive, token, 0, 1, 0)
        await asyncio.sleep(0.6)
        after_stale = await _admitted(alive, token, 0, 1, 0)
        await alive.close()
        return held_elsewhere, after_stale

    same_minute(margin=10)
    held_elsewhere, after_stale = asyncio.run(run())
    assert not held_elsewhere
    assert after_stale


# --- sliding windows: rpm/tpm over any 60 seconds, moved by the accountings' clock -------------------

MINUTE = 1_800_000_000.0  # a whole minute (divisible by 60), far from the real time: only the clock seam reaches it


async def _two_accountings(store: str, tmp_path: Any, redis_url: str | None, clock: list[float]) -> list[Any]:
    """Two accountings on one store, as two gateway processes (SQLite) or two replicas (redis), on one clock."""
    from oneapi.ledger import SqliteLedger
    from oneapi.limits import SqliteAccounting

    if store == "redis":
        from oneapi.redisstore import RedisAccounting

        accountings = [RedisAccounting(redis_url), RedisAccounting(redis_url)]  # type: ignore[arg-type]
    else:
        accountings = [SqliteAccounting(SqliteLedger(tmp_path / "shared.db")) for _ in range(2)]
    for accounting in accountings:
        accounting.clock = lambda: clock[0]
        await accounting.start()
    return accountings


async def _attempts(accountings: list[Any], token: Any, n: int, tokens: int = 1) -> tuple[int, list[int]]:
    """n requests spread over the accountings, each settled at once with `tokens` real tokens: (admitted, Retry-Afters)."""
    from oneapi.errors import GatewayError
    from oneapi.limits import Demand

    admitted, retries = 0, []
    for i in range(n):
        accounting = accountings[i % len(accountings)]
        try:
            admission = await accounting.admit(token, Demand(0, tokens), f"req-{id(accounting)}-{time.monotonic_ns()}")
        except GatewayError as exc:
            assert exc.status == 429
            retries.append(int(exc.headers["Retry-After"]))
            continue
        accounting.settle(admission, _record(0, tokens))
        admitted += 1
    return admitted, retries


@pytest.mark.parametrize("store", ["sqlite", "redis"])
@pytest.mark.parametrize("limit", ["rpm", "tpm"])
def test_a_burst_across_a_minute_boundary_stays_within_the_limit(store: str, limit: str, tmp_path, request) -> None:
    redis_url = request.getfixturevalue("redis_url") if store == "redis" else None
    tokens = 1 if limit == "rpm" else 100
    token = _token(rpm=10) if limit == "rpm" else _token(tpm=1000)  # either way, 10 requests a minute

    async def run() -> list[tuple[int, list[int]]]:
        clock = [MINUTE - 0.5]
        accountings = await _two_accountings(store, tmp_path, redis_url, clock)
        seen = [await _attempts(accountings, token, 15, tokens)]  # the last half second of a minute
        for at in (MINUTE + 0.5, MINUTE + 30, MINUTE + 59.4):  # the next minute, up to just before the burst slides out
            clock[0] = at
            seen.append(await _attempts(accountings, token, 15, tokens))
        clock[0] = MINUTE + 60.0
        seen.append(await _attempts(accountings, token, 15, tokens))
        for accounting in accountings:
            await accounting.close()
        return seen

    (burst, _), (after_boundary, retries), (mid, _), (late, _), (slid_out, _) = asyncio.run(run())
    assert burst == 10
    assert (after_boundary, mid, late) == (0, 0, 0)  # a fixed minute would have let 10 more in at once
    assert all(59 <= r <= 61 for r in retries), retries  # the burst's bucket leaves the window at MINUTE + 60
    assert slid_out == 10


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_no_60_seconds_ever_hold_more_than_rpm(store: str, tmp_path, request) -> None:
    import random

    redis_url = request.getfixturevalue("redis_url") if store == "redis" else None
    rng = random.Random(13)
    moments = sorted(MINUTE + rng.uniform(0, 200) for _ in range(300))
    token = _token(rpm=20)

    async def run() -> list[float]:
        clock = [moments[0]]
        accountings = await _two_accountings(store, tmp_path, redis_url, clock)
        admitted = []
        for at in moments:
            clock[0] = at
            if (await _attempts([rng.choice(accountings)], token, 1))[0]:
                admitted.append(at)
        for accounting in accountings:
            await accounting.close()
        return admitted

    admitted = asyncio.run(run())
    worst = max(sum(1 for t in admitted if start <= t < start + 60) for start in admitted)
    assert worst <= 20
    # and the window is not a lockout: about 20 in each 61 s of the 200 s (a fixed minute would allow ~70)
    assert len(admitted) >= 55, len(admitted)


def test_a_ledger_file_locked_past_its_busy_timeout_is_a_clear_503(tmp_path, monkeypatch) -> None:
    import sqlite3

    import oneapi.ledger
    from oneapi.errors import GatewayError
    from oneapi.ledger import SqliteLedger
    from oneapi.limits import Demand, SqliteAccounting

    monkeypatch.setattr(oneapi.ledger, "BUSY_TIMEOUT_MS", 200)

    async def run() -> GatewayError:
        accounting = SqliteAccounting(SqliteLedger(tmp_path / "shared.db"))
        await accounting.start()
        other = sqlite3.connect(tmp_path / "shared.db", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another process holds the file
        try:
            await accounting.admit(_token(rpm=5), Demand(0, 1), "r")
        except GatewayError as exc:
            return exc
        finally:
            other.execute("ROLLBACK")
            other.close()
            await accounting.close()
        raise AssertionError("admitted without an allotment")

    refused = asyncio.run(run())
    assert refused.status == 503 and refused.code == "store_unavailable" and refused.headers["Retry-After"] == "1"
