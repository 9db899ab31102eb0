"""The native path: a request in the vendor's own dialect relayed as sent (model mapped, auth replaced, the
headers the provider names forwarded) and its answer passed back byte for byte, its usage read on the way."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, AsyncIterator, Callable

import orjson
from yarl import URL

from ..asgi import Answer, StreamAnswer
from ..errors import GatewayError
from ..failures import Failure, bad_body_failure, error_reply_failure, transport_failure
from ..mapping import MappingError, map_request
from ..metering import Meter
from ..passthrough import first_byte_deadline, first_event, pass_through
from ..providers import NativeDialect, Operation
from ..routing import Channel, ChannelKey
from ..signers import SignerError, sign
from ..translate import build_url
from ..upstream import TRANSPORT_ERRORS, Timeouts, TooLarge, Upstream
from ..usage import Usage, normalise_usage
from .answers import DialectRequest
from .events import sse_as_json_array
from .spec import Dialect

log = logging.getLogger("oneapi.dialects")

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# how much of a native stream's start and end is kept to read its usage from (Anthropic: message_start, message_delta)
_KEPT_BYTES = 16384


def native_operation(request: DialectRequest, channel: Channel) -> tuple[NativeDialect, Operation] | None:
    """Where this request goes on `channel` if its provider speaks the request's dialect, else None."""
    native = channel.provider.dialects.get(request.dialect.name)
    if native is None:
        return None
    operation = native.operations.get(request.operation)
    return (native, operation) if operation is not None else None


def native_body(request: DialectRequest, operation: Operation, model: str, upstream_model: str, options: Any) -> bytes:
    """The client's bytes, unless the model is renamed or the provider sets body keys (request_set)."""
    if operation.mapping is None and (upstream_model == model or "model" not in request.body):  # a model in the path only
        return request.raw
    body = dict(request.body)
    if "model" in body:
        body["model"] = upstream_model
    if operation.mapping is not None:
        body = map_request(operation.mapping, body, options)
    return orjson.dumps(body)


async def native_attempt(request: DialectRequest, native: NativeDialect, operation: Operation, channel: Channel, key: ChannelKey,
                         model: str, upstream_model: str, upstream: Upstream, timeouts: Timeouts,
                         record: Callable[[bool], None], opened: Callable[[bytes], None] | None = None) -> Answer | StreamAnswer | Failure:
    """One try: the vendor's answer as it is (a stream once its first bytes are in), or the Failure that decides
    whether the next channel is tried. A StreamAnswer's `usage` reads the dialect's usage events. `opened` hears a
    successful answer's body, or its stream's first event."""
    try:
        content = native_body(request, operation, model, upstream_model, channel.options)
    except MappingError as exc:
        return Failure(GatewayError(500, f"Provider '{channel.provider.name}' could not set this request's fields: {exc}", type="server_error",
                                    code="mapping_failed"), channel_fault=False)
    url = build_url(channel, operation, upstream_model, key, request.stream)
    headers = {**key.headers, **operation.headers, "Content-Type": "application/json",
               "Accept": "text/event-stream" if request.stream else "application/json"}
    if request.stream:
        headers.update(operation.stream_headers)
    for name in native.forward_headers:
        value = request.headers.get(name)
        if value is not None:
            headers[name] = value
    if channel.provider.auth.signer:
        try:
            url, headers = await sign(channel.provider.auth, key.secret, channel.options, operation.method, url, headers, content)
        except SignerError as exc:
            log.warning("channel %s: signing failed: %s", channel.name, exc)
            return Failure(GatewayError(502, f"Could not authenticate to the upstream of channel '{channel.name}': {exc}",
                                        type="upstream_error", code="upstream_auth_failed"))
    first_by = first_byte_deadline(channel, timeouts.total)
    try:
        # a stream's ttft_timeout counts from here: a vendor that takes the request and never answers fails over
        async with asyncio.timeout_at(first_by if request.stream else None):
            reply = await upstream.send(operation.method, URL(url, encoded=True), headers, content, timeouts)  # type: ignore[arg-type]
    except TRANSPORT_ERRORS as exc:
        log.warning("channel %s: upstream request failed: %s", channel.name, type(exc).__name__)
        return transport_failure(channel.name, exc)
    if reply.status >= 400:
        return await error_reply_failure(channel.name, reply, channel.config.max_response_bytes)
    if request.stream and reply.content_type.startswith("text/event-stream"):
        first = await first_event(channel, reply, first_by)
        if isinstance(first, Failure):
            return first
        if opened is not None:
            opened(first)
        tap = UsageTap(request.dialect)
        chunks = tap.watch(pass_through(channel, reply, first, channel.config.idle_timeout, record, key.redaction))
        if request.json_array:
            chunks = sse_as_json_array(chunks)
        answer = StreamAnswer(chunks, reply.status, "application/json" if request.json_array else reply.content_type, STREAM_HEADERS)
        answer.usage = tap.usage
        answer.closers.append(reply.close)  # however the client's stream ends, the upstream connection closes
        return answer
    try:
        body = await reply.read(channel.config.max_response_bytes)
    except TooLarge as exc:
        return bad_body_failure(channel.name, f"answered a body where {exc}")
    except TRANSPORT_ERRORS as exc:
        return transport_failure(channel.name, exc, "response")
    if not body.lstrip().startswith(b"{"):
        return bad_body_failure(channel.name, "answered with a body that is not a JSON object")
    record(True)
    if opened is not None:
        opened(body)
    return Answer(body, reply.status, reply.content_type or "application/json")


def answer_name(dialect: Dialect, opening: bytes) -> str | None:
    """The name a native answer gives itself (a Responses id), where the dialect's `affinity` says: in the body,
    or in a stream's first event."""
    try:
        if opening.lstrip().startswith(b"{"):
            found = dialect.affinity_answer.search(orjson.loads(opening)) if dialect.affinity_answer is not None else None
        else:
            found = next((expression.search(orjson.loads(data)) for _, expression, data in sorted(_named_events(opening, 0, dialect.affinity_events))), None)
    except (orjson.JSONDecodeError, MappingError):
        return None
    return found if isinstance(found, str) and found else None


def body_usage(dialect: Dialect, content: bytes) -> Usage | None:
    """The usage a native answer body reports, read where the dialect says it is."""
    if dialect.usage_body is None:
        return None
    try:
        return normalise_usage(dialect.usage_body.search(orjson.loads(content)))
    except (orjson.JSONDecodeError, MappingError):
        return None


class UsageTap:
    """Keeps a native stream's first and last bytes as they pass, and reads its usage from them when it ends:
    the dialect's usage events, merged in stream order (later counts win)."""

    def __init__(self, dialect: Dialect):
        self.dialect = dialect
        self.head = b""
        self.tail: deque[bytes] = deque()
        self.tail_size = 0
        self.dropped = False  # the tail lost its start: its first event may be cut

    async def watch(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            if len(self.head) < _KEPT_BYTES:
                self.head += chunk
            else:
                self.tail.append(chunk)
                self.tail_size += len(chunk)
                while self.tail_size - len(self.tail[0]) >= _KEPT_BYTES:
                    self.tail_size -= len(self.tail.popleft())
                    self.dropped = True
            yield chunk

    def usage(self) -> Usage | None:
        if not self.dialect.usage_events:
            return None
        tail = b"".join(self.tail)
        if self.dropped:  # its first event may be cut
            cut = tail.find(b"\n\n")
            tail = tail[cut + 2:] if cut >= 0 else b""
        merged: dict[str, Any] = {}
        for _, expression, data in sorted(_named_events(self.head, 0, self.dialect.usage_events) + _named_events(tail, len(self.head), self.dialect.usage_events)):
            try:
                found = expression.search(orjson.loads(data))
            except (orjson.JSONDecodeError, MappingError):
                continue
            if isinstance(found, dict):
                merged.update({k: v for k, v in found.items() if v is not None})
        return normalise_usage(merged) if merged else None


def _named_events(buffer: bytes, offset: int, events: tuple[tuple[str, Any], ...]) -> list[tuple[int, Any, bytes]]:
    """(position, expression, data line) of each of `events` (name, expression) in `buffer`: found by bytes search,
    so only those few events are ever parsed (a native stream is otherwise passed on unread)."""
    found = []
    for name, expression in events:
        if name == "*":  # every data line, named or not (streams whose events carry no names)
            start = 0
            while (at := buffer.find(b"data:", start)) >= 0:
                start = at + 5
                if at and buffer[at - 1:at] not in (b"\n", b"\r"):
                    continue
                line_end = buffer.find(b"\n", start)
                found.append((offset + at, expression, buffer[start:line_end if line_end >= 0 else len(buffer)].strip()))
            continue
        for marker in (b"event: " + name.encode(), b"event:" + name.encode()):
            start = 0
            while (at := buffer.find(marker, start)) >= 0:
                start = at + len(marker)
                if buffer[start:start + 1] not in (b"\n", b"\r"):
                    continue
                data_at = buffer.find(b"data:", start)
                if data_at < 0:
                    break
                line_end = buffer.find(b"\n", data_at)
                found.append((offset + at, expression, buffer[data_at + 5:line_end if line_end >= 0 else len(buffer)].strip()))
    return found


def record_native_body(meter: Meter, dialect: Dialect, channel: str, upstream_model: str, content: bytes) -> None:
    """The ledger record of a native answer body: its usage where the dialect says, else as any body's."""
    usage = body_usage(dialect, content)
    if usage is None:
        meter.finish_body(channel, upstream_model, content)
    else:
        meter.record(channel, upstream_model, usage)
