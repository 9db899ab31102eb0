"""GET /metrics: Prometheus text, summed over workers, never a secret; the overhead header on every relay."""

from __future__ import annotations

import re
import time

import httpx

from conftest import CLIENT_KEY, UPSTREAM_KEY, base_config
from fakevendor import FakeVendor, Reply, fixture_bytes

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}


def sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, value = line.rsplit(" ", 1)
        found = dict(re.findall(r'(\w+)="([^"]*)"', series))
        if series.split("{")[0] == name and all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return None


def test_metrics_add_up_across_workers_and_hold_no_secret(vendor: FakeVendor, start_gateway) -> None:
    config = base_config(vendor)
    config["channels"][0]["keys"] = [UPSTREAM_KEY]
    gateway = start_gateway(config, workers=2)
    vendor.reply("POST", "/v1/chat/completions", Reply(body=fixture_bytes("openai/chat_completion_text.json")))
    n = 30
    overheads = []
    for _ in range(n):
        with httpx.Client() as fresh:  # fresh connections spread over both workers
            response = fresh.post(gateway.url("/v1/chat/completions"), json=CHAT, headers={"Authorization": f"Bearer {CLIENT_KEY}"})
        assert response.status_code == 200
        overheads.append(float(response.headers["x-oneapi-overhead-ms"]))
    for _ in range(3):
        assert httpx.post(gateway.url("/v1/chat/completions"), json=CHAT, headers={"Authorization": "Bearer sk-wrong"}).status_code == 401

    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline:
        text = httpx.get(gateway.url("/metrics")).text
        if sample(text, "oneapi_requests_total", endpoint="chat", status="200") == n and \
           sample(text, "oneapi_requests_total", endpoint="chat", status="401") == 3:
            break
        time.sleep(0.2)
    assert sample(text, "oneapi_requests_total", endpoint="chat", status="200") == n, text
    assert sample(text, "oneapi_requests_total", endpoint="chat", status="401") == 3
    assert sample(text, "oneapi_upstream_attempts_total", channel="main", outcome="ok") == n
    assert sample(text, "oneapi_overhead_seconds_count", endpoint="chat") == n
    assert sample(text, "oneapi_config_info", version=gateway.health()["config_version"]) == 1
    assert all(0 < o < 1000 for o in overheads)
    for secret in (UPSTREAM_KEY, CLIENT_KEY, "sk-wrong"):
        assert secret not in text


def test_failed_attempts_and_open_breakers_are_counted(vendor: FakeVendor, start_gateway) -> None:
    gateway = start_gateway(base_config(vendor, breaker={"failures": 2, "cooldown": 60}))
    vendor.reply_json("/v1/chat/completions", {"error": {"message": "down"}}, status=500)
    for _ in range(3):
        httpx.post(gateway.url("/v1/chat/completions"), json=CHAT, headers={"Authorization": f"Bearer {CLIENT_KEY}"})

    text = httpx.get(gateway.url("/metrics")).text
    assert sample(text, "oneapi_upstream_attempts_total", channel="main", outcome="upstream_error") == 2
    assert sample(text, "oneapi_channel_breaker_open", channel="main") == 1
    assert sample(text, "oneapi_requests_total", endpoint="chat", status="502") == 2
    assert sample(text, "oneapi_requests_total", endpoint="chat", status="503") == 1
