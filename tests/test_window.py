"""The operator's window, end to end: the request log (/admin/logs and a client key's own), records that migrate
and age out, OpenAI's billing endpoints as NextChat calls them, channel probes, and JSON access logs."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
import pytest
import redis

from conftest import CLIENT_KEY, ROOT, UPSTREAM_KEY, GatewayProcess, base_config, write_config
from fakevendor import FakeVendor, Reply, fixture_json, fixture_path

ADMIN_KEY = "admin-secret-key-for-tests"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
OTHER_KEY = "sk-test-other-client-99887766554433"
PRICING = {"models": {"gpt-4o-mini": {"input": 1.0, "output": 2.0}, "gpt-4o": {"input": 3.0, "output": 5.0}}}
HI = [{"role": "user", "content": "hi"}]


def window_config(vendor: FakeVendor, **overrides: Any) -> dict[str, Any]:
    config = base_config(vendor, pricing=PRICING, **overrides)
    config["tokens"] = [{"name": "tester", "key": CLIENT_KEY, "budget": 5.0},
                        {"name": "other", "key": OTHER_KEY, "rpm": 1}]
    return config


def client(gateway: GatewayProcess, key: str = CLIENT_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url("/v1"), api_key=key, max_retries=0, timeout=20)


def logs(gateway: GatewayProcess, path: str = "/admin/logs", headers: dict[str, str] = ADMIN, **params: Any) -> dict[str, Any]:
    response = httpx.get(gateway.url(path), params=params, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for_logs(gateway: GatewayProcess, count: int, **params: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        data = logs(gateway, limit=500, **params)["data"]
        if len(data) >= count or time.monotonic() > deadline:
            return data
        time.sleep(0.1)


def make_traffic(gateway: GatewayProcess, vendor: FakeVendor) -> dict[str, str]:
    """One of each outcome the log must tell apart; returns request ids by outcome."""
    ids: dict[str, str] = {}
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    ok = client(gateway).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)
    ids["ok"] = ok.headers["x-request-id"]
    vendor.reply_sse("/v1/chat/completions", "openai/chat_stream_text_include_usage.sse", delay=0.05)
    stream = client(gateway).chat.completions.with_raw_response.create(model="gpt-4o", messages=HI, stream=True)
    ids["stream"] = stream.headers["x-request-id"]
    assert list(stream.parse())
    vendor.reply_fixture("/v1/chat/completions", "openai/error_400_context_length_exceeded.json", status=400)
    with pytest.raises(openai.BadRequestError) as bad:
        client(gateway).chat.completions.create(model="gpt-4o-mini", messages=HI)
    ids["upstream_400"] = bad.value.response.headers["x-request-id"]
    vendor.reply_json("/v1/chat/completions", {"error": {"message": "overloaded"}}, status=503)
    with pytest.raises(openai.APIStatusError) as failed:
        client(gateway).chat.completions.create(model="gpt-4o-mini", messages=HI)
    ids["failed"] = failed.value.response.headers["x-request-id"]
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    client(gateway, OTHER_KEY).chat.completions.create(model="gpt-4o-mini", messages=HI)
    with pytest.raises(openai.RateLimitError) as limited:
        client(gateway, OTHER_KEY).chat.completions.create(model="gpt-4o-mini", messages=HI)
    ids["rpm"] = limited.value.response.headers["x-request-id"]
    return ids


def check_log_contents(gateway: GatewayProcess, ids: dict[str, str]) -> None:
    entries = wait_for_logs(gateway, 6)
    assert len(entries) == 6
    assert [e["ts"] for e in entries] == sorted((e["ts"] for e in entries), reverse=True)  # newest first
    by_id = {e["request_id"]: e for e in entries}
    ok, stream = by_id[ids["ok"]], by_id[ids["stream"]]
    assert (ok["status"], ok["channel"], ok["model"], ok["upstream_model"], ok["stream"]) == (200, "main", "gpt-4o-mini", "gpt-4o-mini", False)
    assert (ok["prompt_tokens"], ok["completion_tokens"], ok["error_type"]) == (24, 8, None)  # the recorded body's usage
    assert ok["cost_usd"] == pytest.approx((24 * 1.0 + 8 * 2.0) / 1e6)
    assert ok["ttft_ms"] <= ok["duration_ms"]
    assert stream["stream"] is True and stream["status"] == 200 and stream["completion_tokens"] > 0
    # the stream's first bytes came before its last (the fake vendor paces its events 50 ms apart)
    assert stream["ttft_ms"] < stream["duration_ms"] and stream["duration_ms"] >= 100
    bad, failed, limited = by_id[ids["upstream_400"]], by_id[ids["failed"]], by_id[ids["rpm"]]
    assert (bad["status"], bad["error_type"], bad["channel"], bad["cost_usd"]) == (400, "context_length_exceeded", "main", 0.0)
    assert (failed["status"], failed["error_type"], failed["channel"]) == (502, "upstream_error", "main")
    assert (limited["status"], limited["error_type"], limited["token"], limited["channel"]) == (429, "rpm_limit_exceeded", "other", "")

    # usage counts what was answered; the errors are counted beside it, and cost nothing
    totals = httpx.get(gateway.url("/admin/usage"), headers=ADMIN, timeout=10).json()["totals"]
    assert (totals["requests"], totals["errors"]) == (3, 3)
    # the dashboard's overview (hourly totals on SQLite, the records themselves on redis) says the same
    for span in ("24h", "7d"):
        overview = httpx.get(gateway.url("/ui/api/overview"), params={"range": span}, headers=ADMIN, timeout=10).json()
        assert (overview["totals"]["requests"], overview["totals"]["errors"]) == (3, 3)
        assert {r["model"]: (r["requests"], r["errors"]) for r in overview["by_model"]} == {"gpt-4o-mini": (2, 3), "gpt-4o": (1, 0)}
        assert {r["token"]: r["requests"] for r in overview["by_token"]} == {"tester": 2, "other": 1}
    own = httpx.get(gateway.url("/ui/api/overview"), headers={"Authorization": f"Bearer {OTHER_KEY}"}, timeout=10).json()
    assert (own["totals"]["requests"], own["totals"]["errors"], own["token"]) == (1, 1, "other") and "by_token" not in own

    # filters
    assert {e["request_id"] for e in logs(gateway, status="error")["data"]} == {ids["upstream_400"], ids["failed"], ids["rpm"]}
    assert {e["request_id"] for e in logs(gateway, status="429")["data"]} == {ids["rpm"]}
    assert len(logs(gateway, status="ok")["data"]) == 3
    assert {e["token"] for e in logs(gateway, token="other")["data"]} == {"other"}
    assert {e["request_id"] for e in logs(gateway, model="gpt-4o")["data"]} == {ids["stream"]}
    assert logs(gateway, channel="nope")["data"] == []
    assert logs(gateway, since=time.time() + 60)["data"] == []
    assert len(logs(gateway, until="2100-01-01T00:00:00Z", since="2000-01-01")["data"]) == 6

    # pages: cursor by cursor, every entry once, newest first
    seen, cursor = [], None
    while True:
        page = logs(gateway, limit=4, **({"cursor": cursor} if cursor else {}))
        assert len(page["data"]) <= 4
        seen.extend(e["request_id"] for e in page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            assert page["has_more"] is False
            break
    assert seen == [e["request_id"] for e in entries]

    # a client key reads its own log only; the admin log is the admin's
    own = logs(gateway, "/dashboard/logs", {"Authorization": f"Bearer {OTHER_KEY}"})["data"]
    assert {e["token"] for e in own} == {"other"} and len(own) == 2
    assert logs(gateway, "/dashboard/logs", {"Authorization": f"Bearer {OTHER_KEY}"}, token="tester")["data"] == own  # cannot widen it
    refused = httpx.get(gateway.url("/admin/logs"), headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=10)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(gateway.url("/dashboard/logs"), timeout=10).status_code == 401


def test_request_log_on_sqlite(vendor: FakeVendor, start_gateway) -> None:
    gateway = start_gateway(window_config(vendor))
    check_log_contents(gateway, make_traffic(gateway, vendor))


def test_request_log_on_redis(vendor: FakeVendor, start_gateway, redis_url: str) -> None:
    gateway = start_gateway(window_config(vendor, store=redis_url))
    check_log_contents(gateway, make_traffic(gateway, vendor))


def test_requests_refused_before_admission_are_in_the_log_too(vendor: FakeVendor, start_gateway) -> None:
    """A known token's refusal (unknown or disallowed model, bad body) is logged, free; a request without a valid key
    belongs to no token and is not."""
    config = window_config(vendor)
    config["tokens"][1]["models"] = ["gpt-4o"]  # `other` may not use gpt-4o-mini
    gateway = start_gateway(config)
    with pytest.raises(openai.NotFoundError) as unknown:
        client(gateway).chat.completions.create(model="no-such-model", messages=HI)
    with pytest.raises(openai.PermissionDeniedError) as disallowed:
        client(gateway, OTHER_KEY).chat.completions.create(model="gpt-4o-mini", messages=HI)
    bad = httpx.post(gateway.url("/v1/chat/completions"), headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                     json={"model": "gpt-4o-mini", "messages": HI, "stream": "yes"}, timeout=10)
    assert bad.status_code == 400
    nobody = httpx.post(gateway.url("/v1/chat/completions"), headers={"Authorization": "Bearer sk-not-a-key-0123456789"},
                        json={"model": "gpt-4o-mini", "messages": HI}, timeout=10)
    assert nobody.status_code == 401
    entries = {e["request_id"]: e for e in wait_for_logs(gateway, 3)}
    assert len(entries) == 3
    seen = [entries[r.value.response.headers["x-request-id"]] for r in (unknown, disallowed)] + [entries[bad.headers["x-request-id"]]]
    assert [(e["token"], e["model"], e["status"], e["error_type"], e["channel"], e["cost_usd"]) for e in seen] == [
        ("tester", "no-such-model", 404, "model_not_found", "", 0.0),
        ("other", "gpt-4o-mini", 403, seen[1]["error_type"], "", 0.0),
        ("tester", "", 400, seen[2]["error_type"], "", 0.0),
    ]
    assert seen[1]["error_type"] and seen[2]["error_type"]
    assert nobody.headers["x-request-id"] not in entries


@pytest.mark.parametrize("params, message", [
    ({"status": "bad"}, "'status'"), ({"limit": "0"}, "'limit'"), ({"limit": "9999"}, "'limit'"),
    ({"since": "yesterday"}, "'since'"), ({"cursor": "nonsense"}, "'cursor'"),
])
def test_bad_log_filters_are_a_clear_400(gateway: GatewayProcess, params: dict[str, str], message: str) -> None:
    response = httpx.get(gateway.url("/admin/logs"), params=params, headers=ADMIN, timeout=10)
    assert response.status_code == 400
    error = response.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"


# the usage table as the first release wrote it, before records had a status, ttft and error type
OLD_SCHEMA = """
CREATE TABLE usage (id INTEGER PRIMARY KEY, ts REAL NOT NULL, request_id TEXT NOT NULL, token TEXT NOT NULL, channel TEXT NOT NULL,
    model TEXT NOT NULL, upstream_model TEXT NOT NULL, operation TEXT NOT NULL, stream INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL, reasoning_tokens INTEGER NOT NULL, estimated INTEGER NOT NULL,
    cost_nano INTEGER NOT NULL, duration_ms INTEGER NOT NULL);
CREATE INDEX usage_ts ON usage (ts);
CREATE INDEX usage_token_ts ON usage (token, ts);
CREATE TABLE spend (token TEXT NOT NULL, window TEXT NOT NULL, cost_nano INTEGER NOT NULL, PRIMARY KEY (token, window));
"""


def old_record(ts: float, request_id: str, cost_nano: int = 40_000) -> tuple[Any, ...]:
    return (ts, request_id, "tester", "main", "gpt-4o-mini", "gpt-4o-mini", "chat", 0, 24, 8, 0, 0, 0, cost_nano, 12)


def test_an_old_sqlite_ledger_migrates_on_start_and_loses_nothing(vendor: FakeVendor, start_gateway, tmp_path: Path) -> None:
    db_path = tmp_path / "data" / "oneapi.db"
    db_path.parent.mkdir()
    now = time.time()
    with sqlite3.connect(db_path) as db:
        db.executescript(OLD_SCHEMA)
        db.executemany("INSERT INTO usage (ts, request_id, token, channel, model, upstream_model, operation, stream, prompt_tokens, "
                       "completion_tokens, cached_tokens, reasoning_tokens, estimated, cost_nano, duration_ms) VALUES "
                       "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [old_record(now - 60, "req_old_1"), old_record(now - 30, "req_old_2")])
        day = time.strftime("%Y-%m-%d", time.gmtime(now - 30))
        db.executemany("INSERT INTO spend VALUES (?, ?, ?)", [("tester", "all", 80_000), ("tester", "d:" + day, 80_000),
                                                               ("tester", "m:" + day[:7], 80_000)])
    gateway = start_gateway(window_config(vendor))
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    client(gateway).chat.completions.create(model="gpt-4o-mini", messages=HI)

    entries = wait_for_logs(gateway, 3)
    assert [e["request_id"] for e in entries][1:] == ["req_old_2", "req_old_1"]
    assert all(e["status"] == 200 and e["error_type"] is None for e in entries)  # old rows read as the successes they were
    totals = httpx.get(gateway.url("/admin/usage"), headers=ADMIN, timeout=10).json()["totals"]
    assert (totals["requests"], totals["prompt_tokens"], totals["errors"]) == (3, 72, 0)
    with sqlite3.connect(db_path) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(usage)")}
    assert {"status", "ttft_ms", "error_type"} <= columns
    # the dashboard's hourly totals were filled from the old records, and count the new one
    overview = httpx.get(gateway.url("/ui/api/overview"), params={"range": "24h"}, headers=ADMIN, timeout=10).json()
    assert (overview["totals"]["requests"], overview["totals"]["prompt_tokens"]) == (3, 72)
    assert [(r["model"], r["requests"]) for r in overview["by_model"]] == [("gpt-4o-mini", 3)]


def test_retention_trims_request_records_and_keeps_spend_on_sqlite(vendor: FakeVendor, start_gateway, tmp_path: Path) -> None:
    db_path = tmp_path / "data" / "oneapi.db"
    db_path.parent.mkdir()
    now = time.time()
    old_day = time.strftime("%Y-%m-%d", time.gmtime(now - 10 * 86400))
    with sqlite3.connect(db_path) as db:
        db.executescript(OLD_SCHEMA)
        db.executemany("INSERT INTO usage (ts, request_id, token, channel, model, upstream_model, operation, stream, prompt_tokens, "
                       "completion_tokens, cached_tokens, reasoning_tokens, estimated, cost_nano, duration_ms) VALUES "
                       "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       [old_record(now - 10 * 86400, "req_aged"), old_record(now - 86400, "req_recent")])
        db.executemany("INSERT INTO spend VALUES (?, ?, ?)", [("tester", "all", 80_000), ("tester", "d:" + old_day, 40_000)])
    gateway = start_gateway(window_config(vendor, ledger={"retention_days": 5}))

    entries = wait_for_logs(gateway, 1)
    deadline = time.monotonic() + 10
    while len(entries) > 1 and time.monotonic() < deadline:  # the trim runs as the gateway starts
        time.sleep(0.1)
        entries = wait_for_logs(gateway, 1)
    assert [e["request_id"] for e in entries] == ["req_recent"]
    # what was spent stays: the budget view and the billing endpoint still count the trimmed request
    key = {"Authorization": f"Bearer {CLIENT_KEY}"}
    mine = httpx.get(gateway.url("/ui/api/tokens"), headers=key, timeout=10).json()["data"][0]
    assert mine["spent_usd"] == pytest.approx(80_000 / 1e9)
    next_day = time.strftime("%Y-%m-%d", time.gmtime(now - 9 * 86400))
    aged = httpx.get(gateway.url("/dashboard/billing/usage"), params={"start_date": old_day, "end_date": next_day}, headers=key, timeout=10)
    assert aged.json() == {"object": "list", "total_usage": pytest.approx(40_000 / 1e9 * 100)}
    month = httpx.get(gateway.url("/ui/api/overview"), params={"range": "30d"}, headers=ADMIN, timeout=10).json()
    assert month["totals"]["requests"] == 2  # the charts' hourly totals keep the trimmed request


def test_retention_trims_the_redis_stream(vendor: FakeVendor, start_gateway, redis_url: str) -> None:
    store = redis.Redis.from_url(redis_url, decode_responses=True)
    now_ms = int(time.time() * 1000)
    fields = {"ts": str(time.time() - 40 * 86400), "request_id": "req_aged", "token": "tester", "channel": "main", "model": "gpt-4o-mini",
              "upstream_model": "gpt-4o-mini", "operation": "chat", "stream": "0", "prompt_tokens": "24", "completion_tokens": "8",
              "cached_tokens": "0", "reasoning_tokens": "0", "estimated": "0", "cost_nano": "40000", "duration_ms": "12"}
    store.xadd("oneapi:usage", fields, id=f"{now_ms - 40 * 86400 * 1000}-0")  # written by an older release: no status field
    store.xadd("oneapi:usage", {**fields, "ts": str(time.time() - 60), "request_id": "req_recent"}, id=f"{now_ms - 60_000}-0")
    store.hset("oneapi:spend:tester", "all", 80_000)
    gateway = start_gateway(window_config(vendor, store=redis_url, ledger={"retention_days": 30}))

    deadline = time.monotonic() + 10
    while store.xlen("oneapi:usage") > 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    entries = logs(gateway)["data"]
    assert [e["request_id"] for e in entries] == ["req_recent"]
    assert entries[0]["status"] == 200  # an old record without a status reads as the success it was
    mine = httpx.get(gateway.url("/ui/api/tokens"), headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=10).json()["data"][0]
    assert mine["spent_usd"] == pytest.approx(80_000 / 1e9)


def nextchat_request(gateway: GatewayProcess, name: str, key: str) -> httpx.Response:
    """A NextChat request as recorded (tests/fixtures/clients/nextchat/), sent to this gateway with this key."""
    shape = json.loads(fixture_path(f"clients/nextchat/{name}.request.json").read_text())
    uri = urlsplit(shape["uri"])
    headers = {k: v.replace("{{CLIENT_KEY}}", key) for k, v in shape["headers"].items()}
    return httpx.request(shape["method"], gateway.url(uri.path + (f"?{uri.query}" if uri.query else "")), headers=headers, timeout=10)


def test_billing_endpoints_answer_nextchat(vendor: FakeVendor, start_gateway) -> None:
    config = window_config(vendor)
    config["tokens"][0]["expires"] = "2030-01-01T00:00:00Z"
    gateway = start_gateway(config)
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    for _ in range(3):
        client(gateway).chat.completions.create(model="gpt-4o", messages=HI)
    spent_usd = 3 * (24 * 3.0 + 8 * 5.0) / 1e6

    for way in ("via_server", "browser_direct"):
        if way == "browser_direct":  # the browser asks first, and NextChat shows nothing unless CORS allows it
            for path in ("/dashboard/billing/subscription", "/dashboard/billing/usage"):
                preflight = httpx.options(gateway.url(path), timeout=10, headers={
                    "Origin": "https://nextchat.example", "Access-Control-Request-Method": "GET",
                    "Access-Control-Request-Headers": "authorization,content-type"})
                assert preflight.status_code == 204
                assert preflight.headers["access-control-allow-origin"] == "*"
                assert "GET" in preflight.headers["access-control-allow-methods"]
                assert "authorization" in preflight.headers["access-control-allow-headers"]
        subscription = nextchat_request(gateway, f"billing_subscription_{way}", CLIENT_KEY)
        used = nextchat_request(gateway, f"billing_usage_{way}", CLIENT_KEY)
        assert subscription.status_code == 200 and used.status_code == 200
        assert subscription.headers["access-control-allow-origin"] == "*"
        body = subscription.json()
        assert body.keys() == fixture_json("clients/nextchat/relay_billing_subscription.response.json").keys()
        assert body["object"] == "billing_subscription" and body["hard_limit_usd"] == 5.0
        assert body["access_until"] == 1893456000  # the token's expiry
        assert used.json().keys() == fixture_json("clients/nextchat/relay_billing_usage.response.json").keys()

    # the recorded range is 2026-12-01 .. 2026-12-08: today's spend counts only when today is inside it
    today = time.strftime("%Y-%m-%d", time.gmtime())
    expected = spent_usd * 100 if "2026-12-01" <= today < "2026-12-08" else 0
    assert used.json()["total_usage"] == pytest.approx(expected)
    key = {"Authorization": f"Bearer {CLIENT_KEY}"}
    this_month = httpx.get(gateway.url("/v1/dashboard/billing/usage"), headers=key, timeout=10,
                           params={"start_date": today[:8] + "01", "end_date": "2100-01-01"})
    assert this_month.status_code == 400  # longer than any client asks for: refused, not summed for years
    window = httpx.get(gateway.url("/v1/dashboard/billing/usage"), headers=key, timeout=10,
                       params={"start_date": today, "end_date": time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))})
    assert window.json() == {"object": "list", "total_usage": pytest.approx(spent_usd * 100)}  # cents
    assert httpx.get(gateway.url("/dashboard/billing/usage"), headers=key, timeout=10).json()["total_usage"] == pytest.approx(spent_usd * 100)

    unlimited = httpx.get(gateway.url("/dashboard/billing/subscription"), headers={"Authorization": f"Bearer {OTHER_KEY}"}, timeout=10).json()
    assert unlimited["hard_limit_usd"] >= 1e8 and unlimited["access_until"] == 0
    bad = httpx.get(gateway.url("/dashboard/billing/subscription"), headers={"Authorization": "Bearer sk-wrong"}, timeout=10)
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key" and "sk-wrong" not in bad.text
    dates = httpx.get(gateway.url("/dashboard/billing/usage"), params={"start_date": "12/01/2026"}, headers=key, timeout=10)
    assert dates.status_code == 400 and "YYYY-MM-DD" in dates.json()["error"]["message"]


def probe_config(vendor: FakeVendor, broken: FakeVendor) -> dict[str, Any]:
    config = window_config(vendor)
    config["channels"].append({"name": "broken", "provider": "openai", "base_url": broken.base_url, "keys": ["sk-broken-upstream-key-777"],
                               "models": ["gpt-4o"]})
    config["channels"].append({"name": "off", "provider": "openai", "base_url": broken.base_url, "keys": ["sk-x"], "models": ["gpt-4o"],
                               "enabled": False})
    # a vendor that does not speak OpenAI: the probe goes through the same translation a request does
    config["channels"].append({"name": "claude", "provider": "anthropic", "base_url": vendor.base_url, "keys": ["sk-ant-probe-key-42"],
                               "models": ["claude-sonnet-4-5"]})
    vendor.reply_fixture("/v1/messages", "anthropic/message_text.json")
    return config


def run_check(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oneapi.cli", "check", "--config", str(config_path), "--probe", *args],
                          capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_check_probe_against_healthy_and_failing_vendors(vendor: FakeVendor, tmp_path: Path) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    with FakeVendor() as broken:
        broken.reply_fixture("/v1/chat/completions", "openai/error_401_invalid_api_key.json", status=401)
        config_path = tmp_path / "config.yaml"
        write_config(config_path, probe_config(vendor, broken))

        everything = run_check(config_path)
        assert everything.returncode == 1, everything.stdout + everything.stderr
        out = everything.stdout.splitlines()
        assert out[0].startswith("ok: ") and out[1].split() == ["channel", "model", "status", "latency", "error"]
        lines = {line.split()[0]: line for line in out[2:]}
        assert set(lines) == {"main", "broken", "claude"}  # the disabled channel is not probed
        assert " ok " in lines["main"] and "gpt-4o-mini" in lines["main"]  # the first model unless told
        assert " ok " in lines["claude"] and vendor.requests_to("/v1/messages")[-1].json()["max_tokens"] == 1
        assert "502" in lines["broken"] and "credentials" in lines["broken"]
        for secret in (UPSTREAM_KEY, "sk-broken-upstream-key-777", "sk-ant-probe-key-42", CLIENT_KEY):
            assert secret not in everything.stdout + everything.stderr
        sent = vendor.requests_to("/v1/chat/completions")[-1]
        assert sent.json()["max_tokens"] == 1 and sent.json()["model"] == "gpt-4o-mini"  # the smallest real request

        one = run_check(config_path, "--channel", "main", "--model", "gpt-4o", "--json")
        assert one.returncode == 0, one.stderr
        results = json.loads(one.stdout)
        assert [(r["channel"], r["model"], r["ok"], r["status"]) for r in results] == [("main", "gpt-4o", True, 200)]
        assert results[0]["latency_ms"] >= 0 and results[0]["error"] is None

        unknown = run_check(config_path, "--channel", "nope")
        assert unknown.returncode == 2 and "nope" in unknown.stderr


def test_server_probe_shows_on_the_channel_list(vendor: FakeVendor, start_gateway) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    with FakeVendor() as broken:
        broken.reply_json("/v1/chat/completions", {"error": {"message": "down"}}, status=500)
        gateway = start_gateway(probe_config(vendor, broken))
        good = httpx.post(gateway.url("/admin/channels/main/probe"), headers=ADMIN, timeout=30)
        bad = httpx.post(gateway.url("/admin/channels/broken/probe"), headers=ADMIN, timeout=30)
        assert good.status_code == 200 and good.json()["ok"] is True and good.json()["status"] == 200
        assert bad.status_code == 200 and bad.json()["ok"] is False and bad.json()["status"] == 502
        channels = {c["name"]: c for c in httpx.get(gateway.url("/admin/channels"), headers=ADMIN, timeout=10).json()["channels"]}
        assert channels["main"]["last_probe"]["ok"] is True and channels["broken"]["last_probe"]["ok"] is False
        view = {c["name"]: c for c in httpx.get(gateway.url("/ui/api/channels"), headers=ADMIN, timeout=10).json()["channels"]}
        assert view["broken"]["last_probe"]["error"] and "sk-broken" not in json.dumps(view)
        assert httpx.post(gateway.url("/admin/channels/nope/probe"), headers=ADMIN, timeout=10).status_code == 404
        refused = httpx.post(gateway.url("/admin/channels/main/probe"), headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=10)
        assert refused.status_code == 401
        assert logs(gateway)["data"] == []  # a probe bills no token and writes no request record


def test_json_access_log_has_one_line_per_request_and_no_secrets(vendor: FakeVendor, start_gateway) -> None:
    gateway = start_gateway(window_config(vendor, log_format="json"))
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    answer = client(gateway).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "secret-prompt-text"}])
    vendor.reply_json("/v1/chat/completions", {"error": {"message": "overloaded"}}, status=503)
    with pytest.raises(openai.APIStatusError):
        client(gateway).chat.completions.create(model="gpt-4o-mini", messages=HI)
    deadline = time.monotonic() + 10
    lines: list[dict[str, Any]] = []
    while len(lines) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        lines = [json.loads(line) for line in gateway.log().splitlines() if line.startswith("{")]
    assert len(lines) == 2
    assert lines[0]["request_id"] == answer.headers["x-request-id"]
    assert lines[0].keys() >= {"ts", "token", "channel", "model", "upstream_model", "status", "prompt_tokens", "completion_tokens",
                               "cost_usd", "duration_ms", "ttft_ms", "error_type", "stream", "estimated"}
    assert (lines[0]["status"], lines[1]["status"], lines[1]["error_type"]) == (200, 502, "upstream_error")
    log_text = gateway.log()
    for secret in (CLIENT_KEY, UPSTREAM_KEY, ADMIN_KEY, "secret-prompt-text"):
        assert secret not in log_text


def test_access_log_is_off_by_default(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    client(gateway).chat.completions.create(model="gpt-4o-mini", messages=HI)
    wait_for_logs(gateway, 1)
    assert not [line for line in gateway.log().splitlines() if line.startswith("{")]
