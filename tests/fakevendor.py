"""A fake vendor: a real HTTP server on 127.0.0.1 that replays recorded payloads from tests/fixtures (origins in tests/fixtures/SOURCES.md).

It runs aiohttp in a background thread, records every request it receives, and answers each
(method, path) with a configured reply: a JSON body, raw bytes, or a stream written chunk by
chunk (optionally with delays) so that tests can see whether the gateway buffers.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

FIXTURES = Path(os.environ.get("ONEAPI_FIXTURES", Path(__file__).resolve().parent / "fixtures"))


def fixture_path(name: str) -> Path:
    return FIXTURES / name


def fixture_bytes(name: str) -> bytes:
    return fixture_path(name).read_bytes()


def fixture_json(name: str) -> Any:
    return json.loads(fixture_path(name).read_text())


def sse_events(raw: bytes) -> list[bytes]:
    """Split a recorded SSE body into its events, each with its own blank-line terminator, byte for byte."""
    sep = b"\r\n\r\n" if b"\r\n\r\n" in raw else b"\n\n"
    parts = raw.split(sep)
    events = [p + sep for p in parts[:-1]]
    if parts[-1]:
        events.append(parts[-1])
    return events


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class InMemoryReply:
    """An upstream reply (as relay code reads one) whose body is already here, handed over in the given reads:
    for driving a stream translator or the pass-through without sockets."""

    def __init__(self, reads: list[bytes]):
        self._reads = iter(reads)

    async def next_chunk(self) -> bytes:
        return next(self._reads, b"")

    def close(self) -> None:
        pass


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    raw_path: str = ""  # the path as it came on the wire, percent-escapes kept
    body_started: float | None = None  # time.monotonic() when the first body bytes arrived

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    chunks: list[bytes] | None = None  # a stream: each written and flushed on its own
    delay: float = 0.0  # seconds before each chunk (or before the body)
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delays: list[float] | None = None  # per-chunk delays, overriding `delay`: [0, 0, 30] stalls before the third
    cut: bool = False  # drop the connection after the chunks instead of ending the response


class FakeVendor:
    def __init__(self) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.received: list[Received] = []
        self.disconnects = 0  # streams the gateway hung up on before they ended
        self._routes: dict[tuple[str, str], Reply | Callable[[Received], Reply]] = {}
        self.fallback: Reply | Callable[[Received], Reply] | None = None  # the reply to any request no route names
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None

    # --- configuring replies ---------------------------------------------

    def reply(self, method: str, path: str, reply: Reply | Callable[[Received], Reply]) -> None:
        self._routes[(method.upper(), path)] = reply

    def reply_json(self, path: str, body: Any, status: int = 200, method: str = "POST", headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.reply(method, path, Reply(status=status, body=data, headers=headers or {}))

    def reply_fixture(self, path: str, fixture: str, status: int = 200, method: str = "POST") -> None:
        self.reply(method, path, Reply(status=status, body=fixture_bytes(fixture)))

    def reply_sse(self, path: str, fixture: str, delay: float = 0.0, method: str = "POST") -> None:
        """Replay a recorded .sse body event by event, exactly as recorded."""
        self.reply(method, path, Reply(chunks=sse_events(fixture_bytes(fixture)), delay=delay, content_type="text/event-stream"))

    def requests_to(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    # --- lifecycle -------------------------------------------------------

    def start(self) -> "FakeVendor":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake vendor did not start")
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> "FakeVendor":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        pieces, started = [], None
        async for piece in request.content.iter_any():
            started = started or time.monotonic()
            pieces.append(piece)
        received = Received(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=b"".join(pieces),
            raw_path=request.raw_path,
            body_started=started,
        )
        self.received.append(received)
        reply = self._routes.get((request.method, request.path)) or self.fallback
        if reply is None:
            return web.json_response({"error": {"message": f"fake vendor has no reply for {request.method} {request.path}", "type": "invalid_request_error", "code": None, "param": None}}, status=404)
        if callable(reply):
            reply = reply(received)
        if reply.chunks is None:
            if reply.delay:
                await asyncio.sleep(reply.delay)
            return web.Response(status=reply.status, body=reply.body, content_type=None, headers={"Content-Type": reply.content_type, **reply.headers})
        response = web.StreamResponse(status=reply.status, headers={"Content-Type": reply.content_type, **reply.headers})
        await response.prepare(request)
        delays = (reply.delays or []) + [reply.delay] * len(reply.chunks)
        try:
            for chunk, delay in zip(reply.chunks, delays):
                if delay:
                    await asyncio.sleep(delay)
                await response.write(chunk)
                if request.transport is None or request.transport.is_closing():
                    raise ConnectionResetError
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        if reply.cut:
            assert request.transport is not None
            request.transport.abort()  # no terminating chunk: the client sees a broken transfer
            return response
        await response.write_eof()
        return response
