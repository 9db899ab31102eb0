"""Streams relayed as they arrive: the first event awaited before the client is answered, the rest
passed through cut only at event boundaries, and a stall or a break turned into one error event."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import AsyncIterator, Callable

import orjson

from .asgi import Unfinished
from .failures import Failure, bad_body_failure, classify, in_band_error, in_band_status, transport_failure
from .redaction import Redaction
from .routing import Channel
from .upstream import TRANSPORT_ERRORS, TooLarge, UpstreamReply
from .usage import event_boundary

_DATA_LINE = re.compile(rb"(?:^|[\r\n])data:")
_JSON_START = re.compile(rb"\s*[{\[]")  # a stream that starts like this is a JSON body, not events

log = logging.getLogger("oneapi.relay")


def first_byte_deadline(channel: Channel, time_left: float) -> float:
    """The event-loop time by which a stream's first event must be in: ttft_timeout from the request being sent
    (the wait for the response headers counts), never past the time left for the whole request."""
    return asyncio.get_running_loop().time() + min(channel.config.ttft_timeout or time_left, time_left)


async def first_chunk(channel: Channel, reply: UpstreamReply, deadline: float, allow_empty: bool = False) -> bytes | Failure:
    """The answer's first bytes, or the Failure that lets a slow or failing start still fail over
    (an empty answer is one too, unless `allow_empty`: a text transcript of silence is empty)."""
    try:
        async with asyncio.timeout_at(deadline):
            first = await reply.next_chunk()
    except (TimeoutError, *TRANSPORT_ERRORS) as exc:
        reply.close()
        log.warning("channel %s: no first byte: %s", channel.name, type(exc).__name__)
        return transport_failure(channel.name, exc, "first byte")
    if not first and not allow_empty:
        reply.close()
        return bad_body_failure(channel.name, "closed the stream before sending anything")
    return first


async def first_event(channel: Channel, reply: UpstreamReply, deadline: float) -> bytes | Failure:
    """An event stream's bytes up to its first complete event that carries data, or the Failure that lets the
    request fail over: a stream that is slow to start (comments alone do not count), ends before any event, opens
    with the vendor's error, or is a JSON body in a stream's clothes (`{}`, an error object) would otherwise reach
    the client as an empty success."""
    config = channel.config
    pending = b""
    ended = False
    try:
        async with asyncio.timeout_at(deadline):
            while True:
                chunk = await reply.next_chunk()
                if not chunk:
                    ended = True
                    break
                pending += chunk
                if _JSON_START.match(pending):
                    pending += await reply.read(max(0, config.max_response_bytes - len(pending)))
                    ended = True
                    break
                cut = event_boundary(pending)
                if cut and _DATA_LINE.search(pending, 0, cut):
                    break
                if len(pending) > config.max_event_bytes:
                    raise TooLarge("a stream event", config.max_event_bytes)
    except TooLarge as exc:
        reply.close()
        return bad_body_failure(channel.name, f"answered a stream where {exc}")
    except (TimeoutError, *TRANSPORT_ERRORS) as exc:
        return no_first_event(channel, reply, exc)
    if not ended or _DATA_LINE.search(pending) and not _JSON_START.match(pending):
        # a first event (or one the upstream did not end with a blank line: pass_through completes it), unless it is an error
        error = in_band_error(pending)
        if error is None:
            return pending
        reply.close()
        return classify(channel.name, in_band_status(error), error, {})
    reply.close()
    error = in_band_error(pending)
    if error is not None:
        return classify(channel.name, in_band_status(error), error, {})
    return bad_body_failure(channel.name, "answered a stream request without a stream" if pending.strip()
                            else "closed the stream before sending an event")


def no_first_event(channel: Channel, reply: UpstreamReply, exc: BaseException) -> Failure:
    """A stream whose first event did not come in time (or whose connection broke first): fail over."""
    reply.close()
    log.warning("channel %s: no first event: %s", channel.name, type(exc).__name__)
    return transport_failure(channel.name, exc, "first event")


async def pass_through(channel: Channel, reply: UpstreamReply, first: bytes, idle_timeout: float,
                       record: Callable[[bool], None], redaction: Redaction | None = None) -> AsyncIterator[bytes]:
    """Relay the stream as it arrives, cut only at event boundaries, so that if the upstream stalls or breaks
    the client gets one clean error event (which the SDKs raise) instead of half an event or a silent end.
    Every event goes out through the key's redaction: a late error event may quote the key."""
    redact = redaction.bytes if redaction else None
    max_event = channel.config.max_event_bytes
    pending = first
    try:
        while True:
            cut = event_boundary(pending)
            if cut:
                piece = pending[:cut] if cut < len(pending) else pending
                yield redact(piece) if redact else piece
                pending = pending[cut:]
            elif len(pending) > max_event:
                raise TooLarge("a stream event", max_event)
            async with asyncio.timeout(idle_timeout):
                chunk = await reply.next_chunk()
            if not chunk:
                break
            pending = pending + chunk if pending else chunk
        if pending:  # a last event without its blank line: completed, or SSE clients would drop it
            piece = pending + (b"\r\n" if pending.endswith(b"\r\n") else b"\n" if pending.endswith(b"\n") else b"\n\n")
            yield redact(piece) if redact else piece
        record(True)
    except (TimeoutError, TooLarge, *TRANSPORT_ERRORS) as exc:
        record(False)
        yield cut_stream_event(channel.name, exc, idle_timeout)
    finally:
        reply.close()


class UpstreamCut(Unfinished):
    """A binary answer broke off upstream: the response is left unfinished (asgi.StreamAnswer), so
    the server drops the connection and the client cannot take truncated audio for a whole file (a binary
    body has no place for an in-band error)."""


async def pass_bytes(channel: Channel, reply: UpstreamReply, first: bytes, idle_timeout: float,
                     record: Callable[[bool], None]) -> AsyncIterator[bytes]:
    """Relay a body that is not an event stream (audio, text) as it arrives; UpstreamCut if it breaks off."""
    try:
        chunk = first
        while chunk:
            yield chunk
            async with asyncio.timeout(idle_timeout):
                chunk = await reply.next_chunk()
        record(True)
    except (TimeoutError, *TRANSPORT_ERRORS) as exc:
        record(False)
        stalled = isinstance(exc, TimeoutError)
        log.warning("channel %s: answer %s", channel.name, "stalled" if stalled else f"broke: {type(exc).__name__}")
        raise UpstreamCut(f"upstream answer on channel '{channel.name}' {'stalled' if stalled else 'was cut'}") from None
    finally:
        reply.close()


def cut_stream_event(channel: str, exc: BaseException, idle_timeout: float) -> bytes:
    """The one SSE event that ends a stalled, broken or oversized stream; the OpenAI SDKs raise it as an APIError."""
    stalled = isinstance(exc, TimeoutError)
    log.warning("channel %s: stream %s", channel, "stalled" if stalled else f"broke: {exc if isinstance(exc, TooLarge) else type(exc).__name__}")
    if isinstance(exc, TooLarge):
        message, code = f"Upstream stream on channel '{channel}' sent {exc}.", "upstream_bad_response"
    else:
        message = (f"Upstream stream stalled for {idle_timeout:g}s on channel '{channel}'." if stalled
                   else f"Upstream stream was cut on channel '{channel}'.")
        code = "stream_stalled" if stalled else "stream_interrupted"
    error = {"message": message, "type": "upstream_error", "code": code, "param": None}
    return b"data: " + orjson.dumps({"error": error}) + b"\n\n"
