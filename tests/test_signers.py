"""Signers: SigV4 against botocore, TC3 against an independent computation of Tencent's documented steps,
JWT HS256 verified, and token exchanges (cached, refreshed early) against pytest-httpx."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from datetime import datetime, timezone
from unittest import mock

import pytest
from pytest_httpx import HTTPXMock

from oneapi import signers
from oneapi.providers import AuthSpec
from oneapi.signers import SignerError, jwt_hs256, sign, sigv4_headers, tc3_headers, token_exchanges


@pytest.fixture(autouse=True)
def fresh_cache():
    token_exchanges().clear()
    yield
    asyncio.run(token_exchanges().close())


def test_sigv4_matches_botocore() -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = "https://bedrock-runtime.us-east-1.amazonaws.com/model/us.amazon.nova-micro-v1%3A0/converse?b=2&a=x%20y"
    body = b'{"messages": []}'
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    for key, token in (("AKID|SECRET", None), ("AKID|SECRET|SESSIONTOKEN", "SESSIONTOKEN")):
        ours = sigv4_headers(key, "us-east-1", "bedrock", "POST", url, {"Content-Type": "application/json"}, body, now=now)
        request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
        with mock.patch("botocore.auth.get_current_datetime", return_value=now.replace(tzinfo=None)):
            SigV4Auth(Credentials("AKID", "SECRET", token), "bedrock", "us-east-1").add_auth(request)
        assert ours["Authorization"] == request.headers["Authorization"]
        assert ours["X-Amz-Date"] == "20250102T030405Z"
        assert ours.get("X-Amz-Security-Token") == token


def test_sigv4_needs_both_halves_of_the_key() -> None:
    with pytest.raises(SignerError, match="ACCESS_KEY_ID"):
        sigv4_headers("only-one-part", "us-east-1", "bedrock", "POST", "https://h/", {}, b"")


def test_tc3_follows_the_documented_steps() -> None:
    body = b'{"Model":"hunyuan-lite"}'
    out = tc3_headers("AKIDz8krbsJ5yKBZQpn74WFkmLPx3|Gu5t9xGARNpq86cd98joQYCN3", "hunyuan",
                      "https://hunyuan.tencentcloudapi.com/", {"Content-Type": "application/json", "X-TC-Action": "ChatCompletions"},
                      body, now=1551113065)
    # Tencent Cloud API 3.0 signature v3: canonical request -> string to sign -> derived key chain
    canonical = "\n".join(["POST", "/", "", "content-type:application/json\nhost:hunyuan.tencentcloudapi.com\n", "content-type;host",
                           hashlib.sha256(body).hexdigest()])
    to_sign = "\n".join(["TC3-HMAC-SHA256", "1551113065", "2019-02-25/hunyuan/tc3_request", hashlib.sha256(canonical.encode()).hexdigest()])
    key = b"TC3Gu5t9xGARNpq86cd98joQYCN3"
    for part in ("2019-02-25", "hunyuan", "tc3_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    assert out["Authorization"] == ("TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3/2019-02-25/hunyuan/tc3_request, "
                                    f"SignedHeaders=content-type;host, Signature={signature}")
    assert out["X-TC-Timestamp"] == "1551113065"
    assert out["X-TC-Action"] == "ChatCompletions"


def test_jwt_hs256_from_id_dot_secret() -> None:
    params = {"jwt_header": {"alg": "HS256", "sign_type": "SIGN"},
              "claims": {"api_key": "{id}", "exp": "{exp_ms}", "timestamp": "{now_ms}"}, "ttl": 600}
    token, expires = jwt_hs256("myid.mysecret", params, now=1_700_000_000)
    head, payload, signature = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    assert json.loads(base64.urlsafe_b64decode(pad(head))) == {"alg": "HS256", "sign_type": "SIGN"}
    assert json.loads(base64.urlsafe_b64decode(pad(payload))) == {"api_key": "myid", "exp": 1_700_000_600_000, "timestamp": 1_700_000_000_000}
    expected = hmac.new(b"mysecret", f"{head}.{payload}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(pad(signature)) == expected
    assert expires == 1_700_000_600
    with pytest.raises(SignerError, match="ID.SECRET"):
        jwt_hs256("no-dot", params)


def test_jwt_is_cached_until_near_expiry() -> None:
    auth = AuthSpec(style="jwt_hs256", prefix="Bearer ", params={"ttl": 3600})
    first = asyncio.run(sign(auth, "id.secret", {}, "POST", "https://h/x", {}, b""))[1]["Authorization"]
    second = asyncio.run(sign(auth, "id.secret", {}, "POST", "https://h/x", {}, b""))[1]["Authorization"]
    assert first == second and first.startswith("Bearer ")
    with mock.patch.object(signers.time, "time", return_value=time.time() + 3500):
        renewed = asyncio.run(sign(auth, "id.secret", {}, "POST", "https://h/x", {}, b""))[1]["Authorization"]
    assert renewed != first


def test_client_credentials_exchange_is_cached_and_refreshed(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url="https://auth.example/oauth/token?grant_type=client_credentials&client_id=cid&client_secret=csecret",
                            json={"access_token": "tok-1", "expires_in": 3600})
    auth = AuthSpec(style="oauth_client_credentials", param="access_token", params={"token_url": "https://auth.example/oauth/token"})

    async def twice() -> list[str]:
        return [(await sign(auth, "cid|csecret", {}, "POST", "https://api.example/chat?x=1", {}, b""))[0] for _ in range(2)]

    urls = asyncio.run(twice())
    assert urls == ["https://api.example/chat?x=1&access_token=tok-1"] * 2
    assert len(httpx_mock.get_requests()) == 1  # cached

    httpx_mock.add_response(json={"access_token": "tok-2", "expires_in": 3600})
    with mock.patch.object(signers.time, "time", return_value=time.time() + 3600 - 60):
        url, _ = asyncio.run(sign(auth, "cid|csecret", {}, "POST", "https://api.example/chat", {}, b""))
    assert url.endswith("access_token=tok-2")  # renewed before it expired


def test_concurrent_requests_share_one_exchange(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(json={"access_token": "tok", "expires_in": 3600})
    auth = AuthSpec(style="oauth_client_credentials", param="access_token", params={"token_url": "https://auth.example/token"})

    async def many() -> None:
        await asyncio.gather(*(sign(auth, "a|b", {}, "POST", "https://api.example/", {}, b"") for _ in range(5)))

    asyncio.run(many())
    assert len(httpx_mock.get_requests()) == 1


def test_failed_exchange_is_a_signer_error(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(status_code=401, json={"error": "invalid_client", "error_description": "unknown client id"})
    auth = AuthSpec(style="oauth_client_credentials", param="access_token", params={"token_url": "https://auth.example/token"})
    with pytest.raises(SignerError, match="unknown client id"):
        asyncio.run(sign(auth, "a|b", {}, "POST", "https://api.example/", {}, b""))


def test_service_account_jwt_bearer(httpx_mock: HTTPXMock) -> None:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    account = {"type": "service_account", "client_email": "sa@proj.iam.gserviceaccount.com", "private_key": pem,
               "private_key_id": "kid1", "token_uri": "https://oauth2.example/token"}
    httpx_mock.add_response(url="https://oauth2.example/token", json={"access_token": "ya29.token", "expires_in": 3599})
    auth = AuthSpec(style="oauth_jwt_bearer", params={"scope": "https://www.googleapis.com/auth/cloud-platform"})

    async def twice() -> list[dict[str, str]]:
        return [(await sign(auth, json.dumps(account), {}, "POST", "https://api.example/", {}, b""))[1] for _ in range(2)]

    assert [h["Authorization"] for h in asyncio.run(twice())] == ["Bearer ya29.token"] * 2
    [request] = httpx_mock.get_requests()
    form = dict(pair.split("=", 1) for pair in request.content.decode().split("&"))
    assert form["grant_type"] == "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
    head, claims, signature = form["assertion"].split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    decoded = json.loads(base64.urlsafe_b64decode(pad(claims)))
    assert decoded["iss"] == account["client_email"] and decoded["aud"] == account["token_uri"]
    assert decoded["scope"] == "https://www.googleapis.com/auth/cloud-platform"
    assert json.loads(base64.urlsafe_b64decode(pad(head)))["kid"] == "kid1"
    private.public_key().verify(base64.urlsafe_b64decode(pad(signature)), f"{head}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())


def test_the_app_closes_the_token_exchange_client_at_shutdown(tmp_path) -> None:
    from starlette.testclient import TestClient

    from conftest import PROVIDERS_DIR, write_config
    from oneapi.app import create_app

    config = tmp_path / "config.yaml"
    write_config(config, {"listen": "127.0.0.1:3000", "providers_dir": str(PROVIDERS_DIR), "channels": [], "tokens": []})
    with TestClient(create_app(config)) as client:
        assert client.get("/health").status_code == 200
        exchange_client = token_exchanges().client()  # what the first signed request would open
        assert not exchange_client.is_closed
    assert exchange_client.is_closed


def test_a_token_endpoints_own_words_stay_out_of_what_a_client_reads(httpx_mock: HTTPXMock) -> None:
    # token endpoints echo what they were sent: the client secret must not travel on to the client
    httpx_mock.add_response(status_code=400, json={"error": "invalid_client", "error_description": "bad secret client-secret-0123456789"})
    auth = AuthSpec(style="oauth_client_credentials", param="access_token", params={"token_url": "https://auth.example/token"})
    with pytest.raises(SignerError) as caught:
        asyncio.run(sign(auth, "cid|client-secret-0123456789", {}, "POST", "https://api.example/", {}, b""))
    assert "client-secret-0123456789" in str(caught.value)  # the operator's log gets it (redacted there by the key's pieces)
    assert caught.value.public == "token exchange at auth.example answered 400"


@pytest.mark.parametrize("answer", [{"access_token": 42}, {"access_token": "tok\nen"}, {"access_token": {"a": 1}}])
def test_an_access_token_that_is_not_a_header_value_is_refused(httpx_mock: HTTPXMock, answer: dict) -> None:
    httpx_mock.add_response(json=answer)
    auth = AuthSpec(style="oauth_client_credentials", param="access_token", params={"token_url": "https://auth.example/token"})
    with pytest.raises(SignerError, match="no access_token"):
        asyncio.run(sign(auth, "a|b", {}, "POST", "https://api.example/", {}, b""))


@pytest.mark.parametrize("expires_in", ["soon", None, float("nan"), 1e30, -5])
def test_an_odd_expires_in_is_bounded(httpx_mock: HTTPXMock, expires_in: object) -> None:
    httpx_mock.add_response(content=json.dumps({"access_token": "tok", "expires_in": expires_in}).encode())
    auth = AuthSpec(style="oauth_client_credentials", param="access_token", params={"token_url": "https://auth.example/token"})
    before = time.time()
    url, _ = asyncio.run(sign(auth, "a|b", {}, "POST", "https://api.example/", {}, b""))
    assert url.endswith("access_token=tok")
    cached = next(iter(token_exchanges()._cache.values()))
    assert before <= cached.expires <= time.time() + 86400


def test_what_a_signer_derived_is_named_for_redaction(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(json={"access_token": "derived-token-abcdef", "expires_in": 3600})
    oauth = AuthSpec(style="oauth_client_credentials", param="access_token", params={"token_url": "https://auth.example/token"})
    url, headers = asyncio.run(sign(oauth, "a|b", {}, "POST", "https://api.example/?x=1", {}, b""))
    assert signers.derived_secrets(oauth, url, headers) == ["derived-token-abcdef"]

    jwt = AuthSpec(style="jwt_hs256", prefix="Bearer ", params={})
    url, headers = asyncio.run(sign(jwt, "id.secret", {}, "POST", "https://h/x", {}, b""))
    assert signers.derived_secrets(jwt, url, headers) == [headers["Authorization"].removeprefix("Bearer ")]

    aws = AuthSpec(style="aws_sigv4", params={"service": "bedrock"})
    url, headers = asyncio.run(sign(aws, "AKIDEXAMPLE|secret-key", {"region": "us-east-1"}, "POST", "https://h/x", {}, b""))
    assert signers.derived_secrets(aws, url, headers) == [headers["Authorization"].rpartition("Signature=")[2]]
