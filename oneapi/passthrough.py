"""Streams relayed as they arrive: the first bytes awaited before the client is answered, the rest
passed through cut only at event boundaries, and a stall or a break turned into one error event."""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Callable

import orjson

from .asgi import Unfinished
from .failures import Failure, bad_body_failure, transport_failure
from .routing import Channel
from .upstream import TRANSPORT_ERRORS, UpstreamReply
from .usage import event_boundary

log = logging.getLogger("oneapi.relay")


async def first_chunk(channel: Channel, reply: UpstreamReply, time_left: float, allow_empty: bool = False) -> bytes | Failure:
    """The stream's first bytes, or the Failure that lets a slow or failing start still fail over
    (an empty answer is one too, unless `allow_empty`: a text transcript of silence is empty)."""
    config = channel.config
    try:
        async with asyncio.timeout(min(config.ttft_timeout or time_left, time_left)):
            first = await reply.next_chunk()
    except (TimeoutError, *TRANSPORT_ERRORS) as exc:
        reply.close()
        log.warning("channel %s: no first byte: %s", channel.name, type(exc).__name__)
        return transport_failure(channel.name, exc, "first byte")
    if not first and not allow_empty:
        reply.close()
        return bad_body_failure(channel.name, "closed the stream before sending anything")
    return first


async def pass_through(channel: Channel, reply: UpstreamReply, first: bytes, idle_timeout: float,
                        record: Callable[[bool], None]) -> AsyncIterator[bytes]:
    """Relay the stream as it arrives, cut only at event boundaries, so that if the upstream stalls or breaks
    the client gets one clean error event (which the SDKs raise) instead of half an event or a silent end."""
    pending = first
    try:
        while True:
            cut = event_boundary(pending)
            if cut:
                yield pending[:cut] if cut < len(pending) else pending
                pending = pending[cut:]
            async with asyncio.timeout(idle_timeout):
                chunk = await reply.next_chunk()
            if not chunk:
                break
            pending = pending + chunk if pending else chunk
        if pending:  # a last event without its blank line: completed, or SSE clients would drop it
            yield pending + (b"\r\n" if pending.endswith(b"\r\n") else b"\n" if pending.endswith(b"\n") else b"\n\n")
        record(True)
    except (TimeoutError, *TRANSPORT_ERRORS) as exc:
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
    """The one SSE event that ends a stalled or broken stream; the OpenAI SDKs raise it as an APIError."""
    stalled = isinstance(exc, TimeoutError)
    log.warning("channel %s: stream %s", channel, "stalled" if stalled else f"broke: {type(exc).__name__}")
    message = (f"Upstream stream stalled for {idle_timeout:g}s on channel '{channel}'." if stalled
               else f"Upstream stream was cut on channel '{channel}'.")
    error = {"message": message, "type": "upstream_error", "code": "stream_stalled" if stalled else "stream_interrupted", "param": None}
    return b"data: " + orjson.dumps({"error": error}) + b"\n\n"
