"""Built-in signers: auth styles computed per request, chosen by name in a provider file.

| style | key format | what reaches the vendor |
|---|---|---|
| aws_sigv4 | ACCESS_KEY_ID|SECRET_ACCESS_KEY[|SESSION_TOKEN] | Authorization: AWS4-HMAC-SHA256 ..., X-Amz-Date |
| tc3_hmac_sha256 | SECRET_ID|SECRET_KEY | Authorization: TC3-HMAC-SHA256 ..., X-TC-Timestamp |
| jwt_hs256 | ID.SECRET | Authorization: <prefix><JWT signed with SECRET> (cached until near expiry) |
| oauth_client_credentials | CLIENT_ID|CLIENT_SECRET | ?<param>=<access token> from token_url (cached, refreshed early) |
| oauth_jwt_bearer | a service-account JSON | Authorization: Bearer <access token> from an RS256 assertion (cached) |

Token exchanges go through one httpx.AsyncClient, never block the event loop, and are
cached per key; concurrent requests for the same key wait for one exchange.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import httpx
import orjson

from .providers import AuthSpec

REFRESH_MARGIN = 300.0  # seconds before expiry that a cached token is renewed


class SignerError(Exception):
    """A key in the wrong format, or a token exchange that failed. `public` is what a client may read: a token
    endpoint's own words (error_description) can quote the client secret, so they go to the log only."""

    def __init__(self, message: str, public: str | None = None) -> None:
        super().__init__(message)
        self.public = message if public is None else public


async def sign(auth: AuthSpec, secret: str, options: Mapping[str, Any], method: str, url: str, headers: Mapping[str, str],
               body: bytes) -> tuple[str, dict[str, str]]:
    """The URL and headers that carry `secret` in `auth.style` for this exact request."""
    headers = dict(headers)
    params = auth.params
    if auth.style == "aws_sigv4":
        region = str(options.get(params.get("region_option", "region")) or "")
        if not region:
            raise SignerError("aws_sigv4 needs the channel option 'region'")
        return url, sigv4_headers(secret, region, str(params.get("service", "")), method, url, headers, body)
    if auth.style == "tc3_hmac_sha256":
        return url, tc3_headers(secret, str(params.get("service", "")), url, headers, body)
    if auth.style == "jwt_hs256":
        headers["Authorization"] = auth.prefix + _JWT_CACHE.token(secret, params)
        return url, headers
    if auth.style == "oauth_client_credentials":
        token = await _TOKENS.client_credentials(str(options.get("token_url") or params["token_url"]), secret)
        return _with_query(url, auth.param or "access_token", token), headers
    if auth.style == "oauth_jwt_bearer":
        token = await _TOKENS.jwt_bearer(secret, str(params.get("scope", "")), options.get("token_url") or params.get("token_url"))
        headers["Authorization"] = f"Bearer {token}"
        return url, headers
    raise SignerError(f"unknown signer {auth.style!r}")


def derived_secrets(auth: AuthSpec, url: str, headers: Mapping[str, str]) -> list[str]:
    """What a signed request carries that was made from the key and must not reach a client: the signature,
    the JWT or access token (in the Authorization header or the query)."""
    derived = []
    authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    if auth.style in ("aws_sigv4", "tc3_hmac_sha256"):
        derived.append(authorization.rpartition("Signature=")[2])
    elif authorization:
        derived.append(authorization.removeprefix(auth.prefix).removeprefix("Bearer ").strip())
    if auth.style == "oauth_client_credentials":
        derived.extend(v for k, v in parse_qsl(urlsplit(url).query) if k == (auth.param or "access_token"))
    return [d for d in derived if d]


def _split_key(secret: str, parts: int, what: str) -> list[str]:
    fields = secret.split("|")
    if len(fields) < parts or not all(fields[:parts]):
        raise SignerError(f"the channel key must be {what}")
    return fields


def _with_query(url: str, name: str, value: str) -> str:
    return url + ("&" if "?" in url else "?") + urlencode([(name, value)])


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


# --- AWS Signature Version 4 ------------------------------------------------

_SIGV4_SKIP = {"authorization", "user-agent", "expect", "x-amzn-trace-id"}


def sigv4_headers(secret: str, region: str, service: str, method: str, url: str, headers: Mapping[str, str], body: bytes,
                  now: datetime | None = None) -> dict[str, str]:
    """Headers plus X-Amz-Date (and X-Amz-Security-Token) and the SigV4 Authorization for this request."""
    fields = _split_key(secret, 2, "ACCESS_KEY_ID|SECRET_ACCESS_KEY[|SESSION_TOKEN]")
    access_key, secret_key = fields[0], fields[1]
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    out = {k: v for k, v in headers.items() if k.lower() != "authorization"}
    out["X-Amz-Date"] = stamp
    if len(fields) > 2 and fields[2]:
        out["X-Amz-Security-Token"] = fields[2]
    parts = urlsplit(url)
    signed = {k.lower(): " ".join(str(v).split()) for k, v in out.items() if k.lower() not in _SIGV4_SKIP}
    signed["host"] = parts.netloc
    names = sorted(signed)
    # every path segment URI-encoded once more, as non-S3 services expect
    canonical_path = quote(parts.path or "/", safe="/~")
    query = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in parse_qsl(parts.query, keep_blank_values=True))
    canonical = "\n".join([
        method.upper(),
        canonical_path,
        "&".join(f"{k}={v}" for k, v in query),
        "".join(f"{n}:{signed[n]}\n" for n in names),
        ";".join(names),
        hashlib.sha256(body).hexdigest(),
    ])
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret_key).encode(), stamp[:8]), region), service), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["Authorization"] = f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"
    return out


# --- TC3-HMAC-SHA256 (cloud API 3.0 signature v3) --------------------------

def tc3_headers(secret: str, service: str, url: str, headers: Mapping[str, str], body: bytes, now: int | None = None) -> dict[str, str]:
    """Headers plus X-TC-Timestamp and the TC3-HMAC-SHA256 Authorization (signed headers: content-type;host)."""
    secret_id, secret_key = _split_key(secret, 2, "SECRET_ID|SECRET_KEY")[:2]
    timestamp = int(time.time()) if now is None else now
    date = datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d")
    parts = urlsplit(url)
    out = {k: v for k, v in headers.items() if k.lower() != "authorization"}
    content_type = next((v for k, v in out.items() if k.lower() == "content-type"), "application/json")
    canonical = "\n".join([
        "POST",
        parts.path or "/",
        parts.query,
        f"content-type:{content_type.lower()}\nhost:{parts.netloc.lower()}\n",
        "content-type;host",
        hashlib.sha256(body).hexdigest(),
    ])
    scope = f"{date}/{service}/tc3_request"
    to_sign = "\n".join(["TC3-HMAC-SHA256", str(timestamp), scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(("TC3" + secret_key).encode(), date), service), "tc3_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["X-TC-Timestamp"] = str(timestamp)
    out["Authorization"] = f"TC3-HMAC-SHA256 Credential={secret_id}/{scope}, SignedHeaders=content-type;host, Signature={signature}"
    return out


# --- JWT HS256 from ID.SECRET -----------------------------------------------

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_hs256(secret: str, params: Mapping[str, Any], now: float | None = None) -> tuple[str, float]:
    """(token, expiry as unix seconds) for key 'ID.SECRET': claims from the provider file's template."""
    key_id, dot, key_secret = secret.partition(".")
    if not dot or not key_id or not key_secret:
        raise SignerError("the channel key must be ID.SECRET")
    issued = time.time() if now is None else now
    ttl = float(params.get("ttl", 3600))
    expires = issued + ttl
    values = {"{id}": key_id, "{now}": int(issued), "{now_ms}": int(issued * 1000), "{exp}": int(expires), "{exp_ms}": int(expires * 1000)}
    claims = {name: values.get(v, v) if isinstance(v, str) else v for name, v in (params.get("claims") or {"sub": "{id}", "exp": "{exp}"}).items()}
    header = dict(params.get("jwt_header") or {"alg": "HS256", "typ": "JWT"})
    signing_input = _b64url(orjson.dumps(header)) + "." + _b64url(orjson.dumps(claims))
    signature = hmac.new(key_secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64url(signature), expires


class _JWTCache:
    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}

    def token(self, secret: str, params: Mapping[str, Any]) -> str:
        cache_key = (secret, orjson.dumps(dict(params), option=orjson.OPT_SORT_KEYS).decode())
        cached = self._tokens.get(cache_key)
        margin = min(REFRESH_MARGIN, float(params.get("ttl", 3600)) / 4)
        if cached is None or cached[1] - margin <= time.time():
            cached = jwt_hs256(secret, params)
            self._tokens[cache_key] = cached
        return cached[0]


_JWT_CACHE = _JWTCache()


# --- OAuth token exchanges --------------------------------------------------

@dataclass
class _Token:
    value: str
    expires: float


class TokenExchanges:
    """Access tokens obtained over HTTP, cached per (token URL, key) and renewed before they expire."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], _Token] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            # httpx logs every request's URL at INFO, and a client-credentials exchange carries the secret in its query
            logging.getLogger("httpx").setLevel(logging.WARNING)
            self._client = httpx.AsyncClient(timeout=30)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def clear(self) -> None:
        self._cache.clear()

    async def _cached(self, cache_key: tuple[str, str], fetch: Any) -> str:
        token = self._cache.get(cache_key)
        if token is not None and token.expires - REFRESH_MARGIN > time.time():
            return token.value
        lock = self._locks.setdefault(cache_key, asyncio.Lock())
        async with lock:
            token = self._cache.get(cache_key)
            if token is None or token.expires - REFRESH_MARGIN <= time.time():
                token = await fetch()
                self._cache[cache_key] = token
            return token.value

    async def client_credentials(self, token_url: str, secret: str) -> str:
        client_id, client_secret = _split_key(secret, 2, "CLIENT_ID|CLIENT_SECRET")[:2]

        async def fetch() -> _Token:
            params = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret}
            return self._parse(await self._post(token_url, params=params), token_url)

        return await self._cached((token_url, secret), fetch)

    async def jwt_bearer(self, secret: str, scope: str, token_url: str | None = None) -> str:
        try:
            account = orjson.loads(secret)
            email, private_key = account["client_email"], account["private_key"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise SignerError("the channel key must be a service-account JSON with client_email and private_key") from None
        url = token_url or account.get("token_uri")
        if not url:
            raise SignerError("no token URL: set token_url in the provider's auth, or token_uri in the service-account JSON")

        async def fetch() -> _Token:
            assertion = await asyncio.to_thread(rs256_assertion, email, private_key, account.get("private_key_id"), scope, url)
            form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
            return self._parse(await self._post(url, data=form), url)

        return await self._cached((url, email + "|" + scope), fetch)

    async def _post(self, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self.client().post(url, **kwargs)
        except httpx.HTTPError as exc:
            raise SignerError(f"token exchange failed: {type(exc).__name__}") from None

    @staticmethod
    def _parse(response: httpx.Response, url: str) -> _Token:
        try:
            data = response.json()
        except ValueError:
            data = {}
        token = data.get("access_token") if isinstance(data, dict) else None
        if response.status_code >= 400 or not isinstance(token, str) or not token.isprintable():
            reason = (data.get("error_description") or data.get("error")) if isinstance(data, dict) else None
            where = f"token exchange at {urlsplit(url).netloc} answered {response.status_code}"
            raise SignerError(f"{where}: {reason or 'no access_token'}", public=where if reason else f"{where}: no access_token")
        try:
            expires_in = float(data.get("expires_in") or 3600)
        except (TypeError, ValueError):
            expires_in = 3600.0
        # the endpoint's word, bounded: a NaN or a year would keep a revoked token forever
        return _Token(token, time.time() + (min(max(expires_in, 0.0), 86400.0) if expires_in == expires_in else 3600.0))


def rs256_assertion(email: str, private_key_pem: str, key_id: str | None, scope: str, audience: str, now: float | None = None) -> str:
    """The signed JWT a service account presents for an access token (RFC 7523)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    issued = int(time.time() if now is None else now)
    header = {"alg": "RS256", "typ": "JWT", **({"kid": key_id} if key_id else {})}
    claims = {"iss": email, "scope": scope, "aud": audience, "iat": issued, "exp": issued + 3600}
    signing_input = _b64url(orjson.dumps(header)) + "." + _b64url(orjson.dumps(claims))
    try:
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    except ValueError:
        raise SignerError("the service-account private_key is not a PEM private key") from None
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr, call-arg]
    return signing_input + "." + _b64url(signature)


_TOKENS = TokenExchanges()


def token_exchanges() -> TokenExchanges:
    """The process-wide token cache (tests clear it; the app closes its client on shutdown)."""
    return _TOKENS


__all__ = ["SignerError", "sign", "sigv4_headers", "tc3_headers", "jwt_hs256", "rs256_assertion", "token_exchanges"]
