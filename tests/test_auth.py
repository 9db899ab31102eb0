"""Client tokens and the errors a client can cause: always OpenAI-shaped, always the documented status."""

from __future__ import annotations

import hashlib

import httpx
import openai
import pytest

from conftest import CLIENT_KEY, UPSTREAM_KEY, GatewayProcess, base_config
from fakevendor import FakeVendor

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}


def post(gateway: GatewayProcess, body: object = CHAT, key: str | None = CLIENT_KEY, path: str = "/v1/chat/completions",
         **kwargs: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if isinstance(body, (bytes, str)):
        return httpx.post(gateway.url(path), content=body, headers={**headers, "Content-Type": "application/json"}, timeout=20, **kwargs)
    return httpx.post(gateway.url(path), json=body, headers=headers, timeout=20, **kwargs)


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["code"] == code and error["message"]
    return error


@pytest.fixture
def policy_gateway(vendor: FakeVendor, start_gateway) -> GatewayProcess:
    config = base_config(vendor, max_body_bytes=64 * 1024)
    config["tokens"] += [
        {"name": "expired", "key": "sk-expired-token", "expires": "2020-01-01T00:00:00Z"},
        {"name": "disabled", "key": "sk-disabled-token", "enabled": False},
        {"name": "far-away", "key": "sk-subnet-token", "subnets": ["10.0.0.0/8", "2001:db8::/32"]},
        {"name": "local", "key": "sk-local-token", "subnets": ["127.0.0.0/8"]},
        {"name": "narrow", "key_sha256": hashlib.sha256(b"sk-narrow-token").hexdigest(), "models": ["gpt-4o"]},
    ]
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    return start_gateway(config)


def test_missing_and_unknown_keys_are_401(policy_gateway: GatewayProcess) -> None:
    assert_openai_error(post(policy_gateway, key=None), 401, "invalid_api_key")
    error = assert_openai_error(post(policy_gateway, key="sk-not-a-token"), 401, "invalid_api_key")
    assert "sk-not-a-token" not in error["message"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=policy_gateway.url("/v1"), api_key="sk-wrong", max_retries=0).models.list()


def test_expired_disabled_and_out_of_subnet_tokens_are_403(policy_gateway: GatewayProcess) -> None:
    assert_openai_error(post(policy_gateway, key="sk-expired-token"), 403, "token_expired")
    assert_openai_error(post(policy_gateway, key="sk-disabled-token"), 403, "token_disabled")
    assert_openai_error(post(policy_gateway, key="sk-subnet-token"), 403, "ip_not_allowed")
    assert post(policy_gateway, key="sk-local-token").status_code == 200


def test_model_allowlist_limits_requests_and_the_model_list(policy_gateway: GatewayProcess, vendor: FakeVendor) -> None:
    assert_openai_error(post(policy_gateway, key="sk-narrow-token"), 403, "model_not_allowed")
    assert post(policy_gateway, {**CHAT, "model": "gpt-4o"}, key="sk-narrow-token").status_code == 200
    narrow = openai.OpenAI(base_url=policy_gateway.url("/v1"), api_key="sk-narrow-token", max_retries=0)
    assert [m.id for m in narrow.models.list()] == ["gpt-4o"]
    assert narrow.models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError):
        narrow.models.retrieve("gpt-4o-mini")
    everyone = openai.OpenAI(base_url=policy_gateway.url("/v1"), api_key=CLIENT_KEY, max_retries=0)
    assert {m.id for m in everyone.models.list()} == {"gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "gpt-3.5-turbo-instruct"}
    assert [r.json()["model"] for r in vendor.received] == ["gpt-4o"]


def test_unknown_model_is_404(policy_gateway: GatewayProcess) -> None:
    error = assert_openai_error(post(policy_gateway, {**CHAT, "model": "no-such-model"}), 404, "model_not_found")
    assert error["param"] == "model"


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (b"{not json", "invalid_json", None),
        (b"", "invalid_json", None),
        (b"[1, 2]", "invalid_json", None),
        (b"\xff\xfe{}", "invalid_json", None),
        ({"messages": [{"role": "user", "content": "x"}]}, "invalid_request", "model"),
        ({"model": 42, "messages": []}, "invalid_request", "model"),
        ({"model": "gpt-4o-mini"}, "invalid_request", "messages"),
        ({"model": "gpt-4o-mini", "messages": "hello"}, "invalid_request", "messages"),
        ({"model": "gpt-4o-mini", "messages": [{"content": "no role"}]}, "invalid_request", "messages.0"),
        ({**CHAT, "stream": "yes"}, "invalid_request", "stream"),
    ],
)
def test_malformed_bodies_are_400(policy_gateway: GatewayProcess, vendor: FakeVendor, body: object, code: str, param: str | None) -> None:
    error = assert_openai_error(post(policy_gateway, body), 400, code)
    assert error["param"] == param
    assert not vendor.received


def test_body_over_the_limit_is_413(policy_gateway: GatewayProcess, vendor: FakeVendor) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * (80 * 1024)}]}
    assert_openai_error(post(policy_gateway, big), 413, "request_too_large")

    def chunked():  # no Content-Length: the limit must hold while reading too
        yield b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}]}'

    response = httpx.post(policy_gateway.url("/v1/chat/completions"), content=chunked(),
                          headers={"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"}, timeout=20)
    assert_openai_error(response, 413, "request_too_large")
    assert not vendor.received


def test_unknown_routes_and_methods_are_openai_shaped(policy_gateway: GatewayProcess) -> None:
    assert_openai_error(httpx.get(policy_gateway.url("/v1/nothing-here")), 404, "not_found")
    assert_openai_error(httpx.get(policy_gateway.url("/v1/chat/completions")), 405, "method_not_allowed")


def test_secrets_never_reach_the_log(policy_gateway: GatewayProcess, vendor: FakeVendor) -> None:
    post(policy_gateway)
    post(policy_gateway, key="sk-guessing-1234567890")
    log = policy_gateway.log()
    for secret in (CLIENT_KEY, UPSTREAM_KEY, "sk-guessing-1234567890", "sk-narrow-token"):
        assert secret not in log
