"""Upstream health shared through the store: a key set aside by one gateway process is set aside by all."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai

from conftest import CLIENT_KEY, GatewayProcess, base_config
from fakevendor import Received, Reply, fixture_bytes

ADMIN = {"Authorization": "Bearer admin-secret-key-for-tests"}
TEXT = fixture_bytes("openai/chat_completion_text.json")


def ask(gateway: GatewayProcess) -> Any:
    sdk = openai.OpenAI(base_url=gateway.url("/v1"), api_key=CLIENT_KEY, max_retries=0, timeout=30)
    return sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])


def test_a_key_set_aside_is_set_aside_for_every_gateway_and_worker_sharing_redis(vendor, start_gateway, redis_url) -> None:
    import redis

    revoked, working = "sk-revoked-key-000000", "sk-working-key-111111"
    cfg = base_config(vendor, store=redis_url)
    cfg["channels"][0]["keys"] = [revoked, working]

    def by_key(request: Received) -> Reply:
        if request.headers["authorization"] == f"Bearer {revoked}":
            return Reply(status=401, body=fixture_bytes("openai/error_401_invalid_api_key.json"))
        return Reply(body=TEXT)

    def revoked_tries() -> int:
        return sum(r.headers["authorization"] == f"Bearer {revoked}" for r in vendor.received)

    def set_aside_in(gateway: GatewayProcess) -> list[dict[str, Any]]:
        return httpx.get(gateway.url("/admin/channels"), headers=ADMIN, timeout=5).json()["channels"][0]["keys_set_aside"]

    vendor.reply("POST", "/v1/chat/completions", by_key)
    first, second = start_gateway(cfg, workers=2), start_gateway(cfg)
    while revoked_tries() == 0:  # the keys take turns: the revoked one comes up within two requests
        ask(first)
        assert len(vendor.received) <= 4

    deadline = time.monotonic() + 10
    while not set_aside_in(second) and time.monotonic() < deadline:  # told by redis, not found out
        time.sleep(0.05)
    aside = set_aside_in(second)
    assert [(k["key"], k["reason"]) for k in aside] == [("...0000", "auth")] and 0 < aside[0]["seconds_left"] <= 600  # breaker.key_cooldown
    for gateway in (second, first, second, first, second, first):  # every worker of both
        ask(gateway)
        ask(gateway)
    third = start_gateway(cfg)  # started after: knows before its first request
    assert [k["key"] for k in set_aside_in(third)] == ["...0000"]
    for _ in range(4):
        ask(third)
    assert revoked_tries() == 1  # found out once, for everyone

    # redis names the key by a hash, never the key
    shared = redis.Redis.from_url(redis_url, decode_responses=True)
    names = list(shared.scan_iter(match="oneapi:keyaside:*"))
    assert len(names) == 1 and revoked not in names[0]
    assert all(revoked not in str(shared.dump(name)) for name in shared.scan_iter())
    shared.close()
