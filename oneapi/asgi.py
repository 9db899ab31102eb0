"""The relay's own ASGI layer: the request read straight from the scope, answers sent without a framework.

Starlette serves the admin and listing routes; the relay routes, which carry nearly every request, skip its
middleware stack, Request and Response objects and the task group it starts for each stream (Granian speaks
ASGI 2.3). Every answer here is an ASGI app itself, so Starlette's handlers can return one as well.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Mapping

if TYPE_CHECKING:
    from .usage import Usage

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ClientGone(Exception):
    """The client hung up while its request body was still being read: there is no one left to answer."""


class Inbound:
    """What the relay reads of a request: headers (lower-case names; the first of repeated ones), the client's
    address, and the body as it arrives."""

    __slots__ = ("headers", "client_host", "_receive")

    def __init__(self, scope: Scope, receive: Receive):
        # reversed: for a repeated header the first one wins, as with Starlette's Headers.get
        self.headers: dict[str, str] = {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(scope["headers"])}
        client = scope.get("client")
        self.client_host: str | None = client[0] if client else None
        self._receive = receive

    async def stream(self) -> AsyncIterator[bytes]:
        """The body's chunks as they arrive; ClientGone if the client leaves first."""
        receive = self._receive
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ClientGone()
            body = message.get("body", b"")
            if body:
                yield body
            if not message.get("more_body", False):
                return


def _encode(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


class Answer:
    """A whole answer: status, body, content type and headers (a plain dict, extended until it is sent).
    `after` runs once it is sent, or failed to be: work the client need not wait for (the usage record)."""

    __slots__ = ("body", "status_code", "media_type", "headers", "after")

    def __init__(self, body: bytes, status_code: int = 200, media_type: str = "application/json",
                 headers: Mapping[str, str] | None = None):
        self.body = body
        self.status_code = status_code
        self.media_type = media_type
        self.headers: dict[str, str] = dict(headers) if headers else {}
        self.after: Callable[[], None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = [(b"content-type", self.media_type.encode("latin-1")), (b"content-length", b"%d" % len(self.body))]
        if self.headers:
            raw += _encode(self.headers)
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": raw})
            await send({"type": "http.response.body", "body": self.body})
        finally:
            if self.after is not None:
                self.after()


class Unfinished(Exception):
    """Raised by a stream's chunks to leave the answer unfinished on purpose: the server drops the connection,
    so the client cannot take a truncated binary body for a whole one (see passthrough.UpstreamCut)."""


class StreamAnswer:
    """An answer relayed as its chunks arrive. `closers` run once when it ends, however it ends: to the last
    byte, the client hanging up (noticed even while the upstream is silent), or never started at all."""

    __slots__ = ("chunks", "status_code", "media_type", "headers", "closers", "watch_client", "usage")

    def __init__(self, chunks: AsyncIterator[bytes], status_code: int = 200, media_type: str = "text/event-stream",
                 headers: Mapping[str, str] | None = None):
        self.chunks = chunks
        self.status_code = status_code
        self.media_type = media_type
        self.headers: dict[str, str] = dict(headers) if headers else {}
        self.closers: list[Callable[[], None]] = []
        # off while someone else still reads the request body (an upload streamed upstream as it arrives)
        self.watch_client = True
        # where the stream's usage comes from when not from its bytes (a translated stream: what the translator saw)
        self.usage: Callable[[], Usage | None] | None = None

    def close(self) -> None:
        """Run every closer, even past one that fails (an upstream connection must not stay open because a
        usage record failed); the first failure is raised once all have run."""
        closers, self.closers = self.closers, []
        failed: Exception | None = None
        for close in closers:
            try:
                close()
            except Exception as exc:
                failed = failed or exc
        if failed is not None:
            raise failed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        gone = finished = False

        def hung_up(watch: asyncio.Future[Any]) -> None:
            nonlocal gone
            if not finished and not watch.cancelled() and watch.exception() is None and task is not None:
                gone = True
                task.cancel()

        # Granian does not fail a send to a closed connection, so the client's leaving is watched for: it must
        # close the upstream (which stops the vendor generating, and billing, tokens nobody will read)
        watch = asyncio.ensure_future(_disconnected(receive)) if self.watch_client else None
        if watch is not None:
            watch.add_done_callback(hung_up)
        raw = [(b"content-type", self.media_type.encode("latin-1"))]
        if self.headers:
            raw += _encode(self.headers)
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": raw})
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Unfinished:
            pass
        except asyncio.CancelledError:
            if not gone:
                raise
            if task is not None:
                task.uncancel()
        finally:
            finished = True
            if watch is not None:
                watch.cancel()
            try:
                aclose = getattr(self.chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
            finally:
                self.close()


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone (the request body is read by then)."""
    while (await receive())["type"] != "http.disconnect":
        pass
