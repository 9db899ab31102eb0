"""One client request relayed to a vendor: validate, choose a channel, send, pass the answer back."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from .errors import GatewayError, bad_request
from .routing import Channel, ChannelKey
from .snapshot import Snapshot
from .tokens import check_model, key_from_headers
from .translate import attempt as translated_attempt
from .upstream import TRANSPORT_ERRORS, Timeouts, Upstream, UpstreamReply

log = logging.getLogger("oneapi.relay")

MAX_ATTEMPTS = 3
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _require_messages(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array.", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad_request(f"messages[{i}] must be an object with a string 'role'.", param=f"messages.{i}")


def _require(field: str) -> Callable[[dict[str, Any]], None]:
    def check(body: dict[str, Any]) -> None:
        if body.get(field) is None:
            raise bad_request(f"'{field}' is required.", param=field)

    return check


@dataclass(frozen=True)
class Endpoint:
    operation: str  # the provider operation it maps to
    validate: Callable[[dict[str, Any]], None]
    streams: bool


ENDPOINTS = {
    "chat": Endpoint("chat", _require_messages, streams=True),
    "completions": Endpoint("completions", _require("prompt"), streams=True),
    "embeddings": Endpoint("embeddings", _require("input"), streams=False),
    "moderations": Endpoint("moderations", _require("input"), streams=False),
    "images": Endpoint("images", _require("prompt"), streams=True),
}


async def read_json_body(request: Request, limit: int) -> tuple[bytes, dict[str, Any]]:
    """The raw body and its parsed object; 413 past `limit`, 400 for anything that is not a JSON object."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise bad_request("Content-Length is not a number.")
        if int(declared) > limit:
            raise GatewayError(413, f"Request body is larger than {limit} bytes.", code="request_too_large")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise GatewayError(413, f"Request body is larger than {limit} bytes.", code="request_too_large")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise bad_request("Request body is empty: send a JSON object.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"Request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("Request body must be a JSON object.", code="invalid_json")
    return raw, body


def client_key(request: Request) -> str | None:
    headers = request.headers
    return key_from_headers(headers.get("authorization"), headers.get("x-api-key"))


async def relay(request: Request, snapshot: Snapshot, upstream: Upstream, endpoint: Endpoint) -> Response:
    client = request.client
    token = snapshot.tokens.authenticate(client_key(request), client.host if client else None)
    raw, body = await read_json_body(request, snapshot.config.max_body_bytes)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a string.", param="model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean.", param="stream")
    endpoint.validate(body)
    if stream and not endpoint.streams:
        raise bad_request("'stream' is not supported on this endpoint.", param="stream")
    check_model(token, model)
    if not snapshot.routes.knows(token.group, model):
        raise GatewayError(404, f"The model '{model}' does not exist or you do not have access to it.", code="model_not_found", param="model")

    failure: GatewayError | None = None
    attempts = 0
    for channel in snapshot.routes.candidates(token.group, model, endpoint.operation):
        if attempts == MAX_ATTEMPTS:
            break
        attempts += 1
        key = channel.next_key()
        outcome = await _attempt(channel, key, endpoint, model, raw, body, stream, upstream)
        if isinstance(outcome, Response):
            return outcome
        failure = outcome
    if failure is None:
        raise GatewayError(503, f"No channel can serve '{endpoint.operation}' for model '{model}'.", type="upstream_error", code="no_available_channel")
    raise failure


async def _attempt(channel: Channel, key: ChannelKey, endpoint: Endpoint, model: str, raw: bytes, body: dict[str, Any],
                   stream: bool, upstream: Upstream) -> Response | GatewayError:
    """One try on one channel: a Response to return, or the GatewayError that makes the relay try the next channel."""
    operation = channel.provider.operations[endpoint.operation]
    upstream_model = channel.config.upstream_model(model)
    if operation.translated:  # a vendor that does not speak OpenAI, or needs a signer: translate.py
        return await translated_attempt(channel, key, operation, upstream_model, body, stream, upstream)
    if upstream_model != model:
        # fast path otherwise: the client's bytes go upstream untouched
        raw = orjson.dumps({**body, "model": upstream_model})
    url = channel.url(operation, upstream_model, key)
    headers = {**key.headers, "Content-Type": "application/json", "Accept": "text/event-stream" if stream else "application/json"}
    timeouts = Timeouts(total=channel.config.timeout, first_byte=channel.config.ttft_timeout)
    try:
        reply = await upstream.send(operation.method, url, headers, raw, timeouts)
    except TRANSPORT_ERRORS as exc:
        kind = "timed out" if isinstance(exc, TimeoutError) else "failed"
        log.warning("channel %s: upstream request %s: %s", channel.name, kind, type(exc).__name__)
        status = 504 if isinstance(exc, TimeoutError) else 502
        return GatewayError(status, f"Upstream request {kind} on channel '{channel.name}'.", type="upstream_error", code="upstream_unavailable")

    if reply.status < 400:
        if stream:
            return StreamingResponse(reply.chunks(), status_code=reply.status, media_type=reply.content_type, headers=STREAM_HEADERS)
        try:
            content = await reply.read()
        except TRANSPORT_ERRORS as exc:
            log.warning("channel %s: reading upstream body failed: %s", channel.name, type(exc).__name__)
            return GatewayError(502, f"Upstream response was cut on channel '{channel.name}'.", type="upstream_error", code="upstream_unavailable")
        return Response(content, status_code=reply.status, media_type=reply.content_type)
    return await _upstream_error(channel, key, reply)


async def _upstream_error(channel: Channel, key: ChannelKey, reply: UpstreamReply) -> Response | GatewayError:
    """A vendor's error: the client's own mistakes are passed back; the gateway's problems become a retry."""
    try:
        content = await reply.read()
    except TRANSPORT_ERRORS:
        content = b""
    if key.secret:
        content = content.replace(key.secret.encode(), key.masked.encode())
    status = reply.status
    log.warning("channel %s: upstream answered %s", channel.name, status)
    if status in (401, 403):
        return GatewayError(502, f"Upstream rejected the credentials of channel '{channel.name}'.", type="upstream_error", code="upstream_auth_failed")
    if status == 429:
        retry_after = reply.headers.get("Retry-After")
        return GatewayError(429, f"Upstream rate limit on channel '{channel.name}'.", type="rate_limit_error", code="upstream_rate_limited",
                            headers={"Retry-After": retry_after} if retry_after else None)
    if status >= 500 or status == 408:
        return GatewayError(502, f"Upstream error {status} on channel '{channel.name}'.", type="upstream_error", code="upstream_error")
    return Response(_openai_error_body(content, status), status_code=status, media_type="application/json")


def _openai_error_body(content: bytes, status: int) -> bytes:
    """The vendor's error body if it is already OpenAI-shaped, else the same message wrapped in that shape."""
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict) and "message" in parsed["error"]:
        return content
    message = content.decode("utf-8", "replace").strip()[:2000] or f"Upstream answered HTTP {status}."
    if isinstance(parsed, dict):
        inner = parsed.get("error")
        message = str(parsed.get("message") or (inner if isinstance(inner, str) else None) or message)
    return orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "code": f"upstream_{status}", "param": None}})

