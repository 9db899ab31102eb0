"""Client tokens: who is calling, and whether they may."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from datetime import datetime, timezone
from operator import is_not
from typing import Iterable

from .config import TokenConfig
from .errors import GatewayError
from .incremental import unchanged_ends


class TokenIndex:
    """Tokens by the sha256 of their key: the plain key is never stored."""

    def __init__(self, tokens: Iterable[TokenConfig]):
        self.tokens = tuple(tokens)
        self._by_digest = {t.key_sha256: t for t in self.tokens if t.key_sha256}

    def replaced(self, tokens: tuple[TokenConfig, ...]) -> TokenIndex:
        """The index of `tokens`, made from this one: only the tokens that are not the very same objects are taken
        out and put in (a reload of a one-token edit touches one entry of ten thousand). Keys are unique in both."""
        head, tail = unchanged_ends(self.tokens, tokens, is_not)
        if head + tail == len(tokens) == len(self.tokens):
            return self
        index = TokenIndex(())
        index.tokens, index._by_digest = tokens, dict(self._by_digest)
        for token in self.tokens[head:len(self.tokens) - tail]:
            if token.key_sha256 and index._by_digest.get(token.key_sha256) is token:
                del index._by_digest[token.key_sha256]
        for token in tokens[head:len(tokens) - tail]:
            if token.key_sha256:
                index._by_digest[token.key_sha256] = token
        return index

    def __len__(self) -> int:
        return len(self._by_digest)

    def authenticate(self, key: str | None, client_ip: str | None) -> TokenConfig:
        """The token presenting `key`, or a 401/403 GatewayError; the key itself is never echoed."""
        if not key:
            raise GatewayError(401, "Missing API key: send 'Authorization: Bearer <key>'.", code="invalid_api_key")
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
        token = self._by_digest.get(digest)
        if token is None or not hmac.compare_digest(token.key_sha256 or "", digest):
            raise GatewayError(401, "Incorrect API key provided.", code="invalid_api_key")
        if not token.enabled:
            raise GatewayError(403, f"Token {token.name!r} is disabled.", type="permission_error", code="token_disabled")
        if token.expires is not None and datetime.now(timezone.utc) >= token.expires:
            raise GatewayError(403, f"Token {token.name!r} expired at {token.expires.isoformat()}.", type="permission_error", code="token_expired")
        if token.subnets and not _in_subnets(client_ip, token.subnets):
            raise GatewayError(403, f"Token {token.name!r} may not be used from {client_ip or 'this address'}.", type="permission_error", code="ip_not_allowed")
        return token


def check_model(token: TokenConfig, model: str) -> None:
    if token.models is not None and model not in token.models:
        raise GatewayError(403, f"Token {token.name!r} may not use model {model!r}.", type="permission_error", code="model_not_allowed", param="model")


def _in_subnets(client_ip: str | None, subnets: tuple) -> bool:
    if not client_ip:
        return False
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address.version == net.version and address in net for net in subnets)


def key_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """Bearer key from Authorization (OpenAI clients) or x-api-key (clients of SDKs that send it there)."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip() or None
        return None
    return x_api_key or None
