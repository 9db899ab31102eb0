"""The floor: the least a Python relay on Granian can do, as the bar the gateway is measured against.

No auth, no routing, no parsing: forward the body to the mock with one shared
aiohttp session, stream back SSE, return anything else whole.

    FLOOR_UPSTREAM=http://127.0.0.1:8081 granian --interface asgi --loop uvloop floor_app:app
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

UPSTREAM_URL = os.environ.get("FLOOR_UPSTREAM", "http://127.0.0.1:8081") + "/v1/chat/completions"
UPSTREAM_HEADERS = {"Authorization": "Bearer sk-upstream-bench", "Content-Type": "application/json"}


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        app.state.session = session
        yield


async def relay_chunks(upstream: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    async with upstream:
        async for chunk in upstream.content.iter_any():
            yield chunk


async def chat_completions(request: Request) -> Response:
    session: aiohttp.ClientSession = request.app.state.session
    upstream = await session.post(UPSTREAM_URL, data=await request.body(), headers=UPSTREAM_HEADERS)
    content_type = upstream.headers.get("Content-Type", "application/json")
    if content_type.startswith("text/event-stream"):
        return StreamingResponse(relay_chunks(upstream), status_code=upstream.status, media_type=content_type)
    async with upstream:
        body = await upstream.read()
    return Response(body, status_code=upstream.status, media_type=content_type)


async def health(request: Request) -> Response:
    return Response(b"ok", media_type="text/plain")


app = Starlette(
    routes=[Route("/v1/chat/completions", chat_completions, methods=["POST"]), Route("/health", health)],
    lifespan=lifespan,
)
