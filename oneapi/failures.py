"""What an upstream failure means: retry elsewhere or answer the client, and whose fault it was."""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Mapping

import orjson

from .asgi import Answer
from .errors import GatewayError
from .upstream import TRANSPORT_ERRORS, TooLarge

log = logging.getLogger("oneapi.relay")

# vendor wordings for "this key is bad" and "this account is out of money", in general terms
_KEY_INVALID = re.compile(rb"invalid[ _-]?(api[ _-]?)?key|incorrect api key|api key not valid|invalid[ _-]?x-api-key|"
                          rb"invalid[ _-]?authentication|authentication[ _-]?(error|failed)|unauthori[sz]ed", re.I)
_QUOTA = re.compile(rb"insufficient[ _-]?quota|exceeded your current quota|quota[ _-]?exceeded|"
                    rb"insufficient[ _-]?(balance|credit)|billing", re.I)

# the longest wait an upstream's Retry-After is believed for: beyond that it is a broken header, not a plan
MAX_RETRY_AFTER = 86400.0


@dataclass(frozen=True)
class Failure:
    error: GatewayError  # what the client gets if no other try succeeds
    retryable: bool = True
    channel_fault: bool = True  # counts against the channel's circuit breaker
    key_fault: str | None = None  # why the key should be set aside ("auth", "quota"), if it should
    rate_limited: bool = False
    retry_after: float | None = None
    body: bytes | None = None  # the vendor's own OpenAI-shaped error, passed to the client as it is

    def response(self) -> Answer:
        if self.body is not None:
            return Answer(self.body, self.error.status)
        return self.error.response()


def transport_failure(channel: str, exc: BaseException, stage: str = "request") -> Failure:
    timed_out = isinstance(exc, TimeoutError)
    what = "timed out" if timed_out else "failed"
    return Failure(GatewayError(504 if timed_out else 502, f"Upstream {stage} {what} on channel '{channel}'.",
                                type="upstream_error", code="upstream_timeout" if timed_out else "upstream_unavailable"))


def bad_body_failure(channel: str, why: str) -> Failure:
    return Failure(GatewayError(502, f"Upstream on channel '{channel}' {why}.", type="upstream_error", code="upstream_bad_response"))


def classify(channel: str, status: int, content: bytes, headers: Mapping[str, str]) -> Failure:
    """An upstream error answer, by status and wording. 4xx that are the client's own fault are not retried."""
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if status in (401, 403) or (status in (400, 402) and _KEY_INVALID.search(content)):
        return Failure(GatewayError(502, f"Upstream rejected the credentials of channel '{channel}'.", type="upstream_error",
                                    code="upstream_auth_failed"), channel_fault=False, key_fault="auth")
    if status in (402, 429) and _QUOTA.search(content):
        return Failure(GatewayError(502, f"The upstream account of channel '{channel}' is out of quota.", type="upstream_error",
                                    code="upstream_quota_exhausted"), channel_fault=False, key_fault="quota")
    if status == 429:
        headers_out = {"Retry-After": str(max(1, round(retry_after)))} if retry_after is not None else None
        return Failure(GatewayError(429, f"Upstream rate limit on channel '{channel}'.", type="rate_limit_error",
                                    code="upstream_rate_limited", headers=headers_out),
                       channel_fault=False, rate_limited=True, retry_after=retry_after)
    if status >= 500 or status == 408:
        return Failure(GatewayError(502, f"Upstream error {status} on channel '{channel}'.", type="upstream_error", code="upstream_error"),
                       retry_after=retry_after)
    return Failure(GatewayError(status, _error_message(content, status), type="invalid_request_error", code=f"upstream_{status}"),
                   retryable=False, channel_fault=False, body=openai_error_body(content, status))


def in_band_error(content: bytes) -> bytes | None:
    """The error object of a body like {"error": {...}} that arrived with a success status, else None.
    Cheap when there is none: bodies are only parsed when "error" shows up near the start."""
    head = content[:256]
    if b'"error"' not in head:
        return None
    start = head.find(b"{")
    if start < 0:
        return None
    payload = content[start:]
    if head.startswith(b"data:") or head.startswith(b"event:"):
        payload = _first_sse_data(content)
    try:
        parsed = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if isinstance(parsed, dict) and parsed.get("error") and not parsed.get("choices"):
        return payload.strip()  # as it came: orjson would not write an object nested past 255 levels back
    return None


def in_band_status(content: bytes) -> int:
    """The HTTP status an in-band error stands for, from its numeric code or its wording."""
    try:
        error = orjson.loads(content).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return 502
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, int) and 400 <= code <= 599:
        return code
    if _KEY_INVALID.search(content):
        return 401
    if _QUOTA.search(content):
        return 429
    return 502


def _first_sse_data(content: bytes) -> bytes:
    for line in content.splitlines():
        if line.startswith(b"data:"):
            return line[5:].strip()
    return b""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from an upstream's Retry-After (seconds or an HTTP date), within [0, MAX_RETRY_AFTER];
    None for anything else (garbage, inf, nan, 1e400): an upstream's header is never trusted to be sane."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError, IndexError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


def _error_message(content: bytes, status: int) -> str:
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        inner = parsed.get("error")
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
        if isinstance(inner, str):
            return inner
        if isinstance(parsed.get("message"), str):
            return parsed["message"]
    text = content.decode("utf-8", "replace").strip()[:2000]
    return text or f"Upstream answered HTTP {status}."


def openai_error_body(content: bytes, status: int) -> bytes:
    """The vendor's error body if it is already OpenAI-shaped, else its message wrapped in that shape."""
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict) and "message" in parsed["error"]:
        return content
    return orjson.dumps({"error": {"message": _error_message(content, status), "type": "invalid_request_error",
                                   "code": f"upstream_{status}", "param": None}})


async def error_reply_failure(channel: str, reply: Any, limit: int) -> Failure:
    """An upstream answer with an error status, read (at most `limit` bytes) and classified; the caller redacts
    what the client would see of it (redaction.py)."""
    try:
        content = await reply.read(limit)
    except (TooLarge, *TRANSPORT_ERRORS):
        content = b""
    log.warning("channel %s: upstream answered %s", channel, reply.status)
    return classify(channel, reply.status, content, reply.headers)
