"""Channel keys kept out of what anyone sees: masks for operators, redaction of every byte a client receives.

A key reaches a vendor whole or in pieces (`ID|SECRET` halves, a service account's private key, an access
token or JWT a signer derived from it), and a vendor may quote any of them back: in an error body, an
error event late in a stream, an echoed URL. Every answer relayed to a client passes through the channel
key's `Redaction`, which replaces each such piece with `***`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import AsyncIterator, Iterable
from urllib.parse import quote

import orjson

from .asgi import Answer, StreamAnswer
from .errors import GatewayError
from .failures import Failure

REPLACEMENT = "***"
SHORT_KEY = 16  # a key shorter than this is masked whole: 4 characters of it would be a quarter of it
MIN_PIECE = 8  # a shorter piece of a key is not redacted on its own: it is likely ordinary text ("Bearer", a region)
_ACCOUNT_SECRETS = ("private_key", "private_key_id", "client_secret", "refresh_token")  # a JSON key's secret fields


def mask(secret: str) -> str:
    """Enough of a key to tell two apart in /admin output and logs, never enough to use: at most its last 4
    characters, nothing of a short one."""
    if len(secret) < SHORT_KEY:
        return REPLACEMENT
    return "..." + secret[-4:]


def key_pieces(secret: str) -> tuple[str, ...]:
    """The key and every piece of it that works alone or gives it away: `A|B|C` fields, `ID.SECRET` halves,
    a service-account JSON's secret fields and each line of its PEM body."""
    pieces = {secret}
    try:
        account = orjson.loads(secret) if secret.lstrip().startswith("{") else None
    except orjson.JSONDecodeError:
        account = None
    if not isinstance(account, dict):
        pieces.update(secret.split("|"))
        pieces.update(secret.split("."))
    else:
        for name in _ACCOUNT_SECRETS:
            value = account.get(name)
            if isinstance(value, str):
                pieces.add(value)
                pieces.update(line.strip() for line in value.splitlines() if not line.startswith("-----"))
    return tuple(p for p in pieces if len(p) >= MIN_PIECE)


class Redaction:
    """What must never reach a client for one key (and what a signer derived from it), and the cutting out."""

    __slots__ = ("_pieces", "longest")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[bytes] = set()
        for piece in secrets:
            if len(piece) < MIN_PIECE:
                continue
            forms.add(piece.encode())
            forms.add(quote(piece, safe="").encode())  # as it sits in an echoed URL's query
            forms.add(orjson.dumps(piece)[1:-1])  # as it sits in a JSON string (a PEM's newlines escaped)
        # longest first, so a whole key goes before the pieces it holds
        self._pieces = tuple(sorted(forms, key=len, reverse=True))
        self.longest = len(self._pieces[0]) if self._pieces else 0

    def __bool__(self) -> bool:
        return bool(self._pieces)

    def with_derived(self, derived: Iterable[str]) -> Redaction:
        """This redaction plus secrets derived per request (a signer's access token, a JWT)."""
        return Redaction([p.decode() for p in self._pieces] + [d for d in derived if d])

    def bytes(self, data: bytes) -> bytes:
        for piece in self._pieces:
            if piece in data:
                data = data.replace(piece, REPLACEMENT.encode())
        return data

    def text(self, text: str) -> str:
        if self._pieces and text:
            encoded = text.encode("utf-8", "surrogatepass")
            redacted = self.bytes(encoded)
            if redacted is not encoded:
                return redacted.decode("utf-8", "replace")
        return text

    async def stream(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Bytes that may cut a secret in two (audio, plain text): the last `longest - 1` bytes of each read wait
        for the next one, so a secret split across reads is still found."""
        keep = self.longest - 1
        held = b""
        try:
            async for chunk in chunks:
                data = self.bytes(held + chunk) if held else self.bytes(chunk)
                held = data[-keep:] if keep and len(data) > keep else data if keep else b""
                out = data[:len(data) - len(held)]
                if out:
                    yield out
            if held:
                yield held
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()


def redact_error(error: GatewayError, redaction: Redaction) -> None:
    """A GatewayError's client-facing text, redacted in place."""
    error.message = redaction.text(error.message)
    for name in ("code", "type", "param"):
        value = getattr(error, name)
        if isinstance(value, str):
            setattr(error, name, redaction.text(value))
    for name, value in list(error.headers.items()):
        error.headers[name] = redaction.text(value)


def redact_failure(failure: Failure, redaction: Redaction) -> Failure:
    """A Failure with nothing of the key left in the answer it would give."""
    redact_error(failure.error, redaction)
    return replace(failure, body=redaction.bytes(failure.body)) if failure.body else failure


def redact_outcome(outcome: Answer | StreamAnswer | Failure, redaction: Redaction) -> Answer | StreamAnswer | Failure:
    """A try's outcome with nothing of the key left in what the client would receive (a stream's events are
    redacted as they are made: passthrough.py, translate.py)."""
    if not redaction:
        return outcome
    if isinstance(outcome, Failure):
        return redact_failure(outcome, redaction)
    if isinstance(outcome, Answer):
        outcome.body = redaction.bytes(outcome.body)
    outcome.media_type = redaction.text(outcome.media_type)
    return outcome


__all__ = ["REPLACEMENT", "Redaction", "key_pieces", "mask", "redact_failure", "redact_outcome"]
