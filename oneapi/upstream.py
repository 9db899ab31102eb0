"""The one seam to the vendors' HTTP APIs.

The client here sets the gateway's throughput ceiling (DESIGN.md: aiohttp ~15k req/s,
httpx's default transport ~770 on this machine kind), so the hot path uses one pooled
aiohttp session per worker; everything else talks about `UpstreamReply` only.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Mapping

import aiohttp

# what a failed attempt looks like to the relay, whichever client library raised it
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class TooLarge(Exception):
    """An upstream body or stream event past its cap (a decompression bomb, a stream that never ends an event)."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"{what} is larger than {limit} bytes")


class Timeouts:
    """Seconds for a whole upstream request and for its connection; a channel keeps its usual one."""

    __slots__ = ("total", "connect", "client")

    def __init__(self, total: float, connect: float = 10.0):
        self.total = total
        self.connect = connect
        self.client = aiohttp.ClientTimeout(total=total, sock_connect=connect)


class UpstreamReply:
    """An upstream response whose body has not been read yet."""

    def __init__(self, response: aiohttp.ClientResponse):
        self._response = response
        self.status = response.status
        self.headers = response.headers

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "application/json")

    async def read(self, limit: int) -> bytes:
        """The whole body, decompressed; TooLarge past `limit` bytes (counted after decompression)."""
        content = self._response.content
        chunks: list[bytes] = []
        size = 0
        try:
            while chunk := await content.readany():
                size += len(chunk)
                if size > limit:
                    raise TooLarge("the body", limit)
                chunks.append(chunk)
        except BaseException:
            self._response.close()  # unread bytes left: the connection cannot be reused
            raise
        self._response.release()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def next_chunk(self) -> bytes:
        """Whatever body bytes have arrived, without waiting to fill a buffer; b"" at the end."""
        return await self._response.content.readany()

    def close(self) -> None:
        self._response.close()


class Upstream:
    """A pooled HTTP client for one worker process."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector,
            # vendors' own headers only: no cookies carried between tokens, no added user agent
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent",),
            auto_decompress=True,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, method: str, url: str, headers: Mapping[str, str], body: bytes | AsyncIterator[bytes] | None,
                   timeouts: Timeouts) -> UpstreamReply:
        """Send and wait for the status line; a body given as an async iterator is streamed (chunked unless
        the headers carry Content-Length)."""
        assert self._session is not None, "Upstream.start() was not awaited"
        response = await self._session.request(method, url, headers=headers, data=body, timeout=timeouts.client, allow_redirects=False)
        return UpstreamReply(response)
