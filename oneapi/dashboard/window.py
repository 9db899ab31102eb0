"""The window's routes: who is looking (admin key or a client key), and what each may read."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any, Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from .. import billing
from ..config import TokenConfig
from ..errors import GatewayError
from ..health import HealthRegistry
from ..limits import Accounting
from ..metrics import Metrics
from ..probe import ProbeResult, probe_channel, probe_plan
from ..requestlog import log_query
from ..snapshot import SnapshotHolder
from ..tokens import key_from_headers
from ..upstream import Upstream
from . import views

# the pages load nothing but this origin's own files, run no inline script, and cannot be framed
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".svg": "image/svg+xml"}


@dataclass(frozen=True)
class Viewer:
    """Who signed in: the admin (token None), or the holder of one client token."""

    token: TokenConfig | None

    @property
    def admin(self) -> bool:
        return self.token is None

    @property
    def scope(self) -> str | None:
        """The token name every query is narrowed to; None for the admin."""
        return None if self.token is None else self.token.name


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers={**API_HEADERS, **(headers or {})})


class Window:
    """Per-worker: reads the live snapshot and the store; keeps the last probe of each channel run here."""

    def __init__(self, holder: SnapshotHolder, accounting: Accounting, health: HealthRegistry, upstream: Upstream, metrics: Metrics):
        self.holder = holder
        self.accounting = accounting
        self.health = health
        self.upstream = upstream
        self.metrics = metrics
        self.probes: dict[str, ProbeResult] = {}
        self._static = resources.files(__package__).joinpath("static")
        self._files: dict[str, tuple[bytes, str]] = {}

    # --- who is looking -----------------------------------------------------

    def viewer(self, request: Request, admin_only: bool = False) -> Viewer:
        """The admin key or a client key from the Authorization (or x-api-key) header; 401/403 otherwise."""
        snapshot = self.holder.current
        presented = key_from_headers(request.headers.get("authorization"), request.headers.get("x-api-key"))
        admin_key = snapshot.config.admin_key
        if presented and admin_key and hmac.compare_digest(presented.encode(), admin_key.encode()):
            return Viewer(None)
        if admin_only:
            if not admin_key:
                raise GatewayError(404, "The admin API is off: set admin_key in config.yaml.", code="not_found")
            raise GatewayError(401, "Admin endpoints need 'Authorization: Bearer <admin_key>'.", code="invalid_api_key")
        return Viewer(snapshot.tokens.authenticate(presented, request.client.host if request.client else None))

    # --- routes -------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        api: list[tuple[str, Callable[[Request], Awaitable[Response]]]] = [
            ("/ui/api/me", self.me), ("/ui/api/overview", self.overview), ("/ui/api/tokens", self.tokens),
            ("/ui/api/channels", self.channels), ("/ui/api/logs", self.logs), ("/ui/api/config", self.config),
        ]
        billing_routes = [(prefix + path, handler) for prefix in ("", "/v1")
                          for path, handler in (("/dashboard/billing/subscription", self.subscription),
                                                ("/dashboard/billing/usage", self.usage))]
        return [
            Route("/", lambda request: RedirectResponse("/ui/", status_code=302), methods=["GET"]),
            Route("/ui", lambda request: RedirectResponse("/ui/", status_code=302), methods=["GET"]),
            *(Route(path, handler, methods=["GET"]) for path, handler in api),
            Route("/ui/{file:path}", self.page, methods=["GET"]),
            Route("/admin/logs", self.admin_logs, methods=["GET"]),
            Route("/dashboard/logs", self.token_logs, methods=["GET"]),
            Route("/admin/channels/{name}/probe", self.probe, methods=["POST"]),
            *(Route(path, handler, methods=["GET"]) for path, handler in billing_routes),
        ]

    async def page(self, request: Request) -> Response:
        name = request.path_params["file"] or "index.html"
        found = self._files.get(name)
        if found is None:
            if "/" in name or name.startswith(".") or not any(name.endswith(ext) for ext in STATIC_TYPES):
                raise GatewayError(404, f"No page /ui/{name}.", code="not_found")
            item = self._static.joinpath(name)
            if not item.is_file():
                raise GatewayError(404, f"No page /ui/{name}.", code="not_found")
            found = self._files[name] = (item.read_bytes(), STATIC_TYPES["." + name.rsplit(".", 1)[1]])
        return Response(found[0], media_type=found[1], headers=PAGE_HEADERS)

    async def me(self, request: Request) -> Response:
        viewer = self.viewer(request)
        return _json({"role": "admin" if viewer.admin else "token", "token": viewer.scope,
                      "config_version": self.holder.current.version})

    async def overview(self, request: Request) -> Response:
        viewer = self.viewer(request)
        span = request.query_params.get("range") or "24h"
        if span not in views.RANGES:
            raise GatewayError(400, f"'range' takes {', '.join(views.RANGES)}.", code="invalid_request", param="range")
        return _json(await views.overview(self.accounting, viewer.scope, span, time.time()))

    async def tokens(self, request: Request) -> Response:
        viewer = self.viewer(request)
        params = request.query_params
        page = await views.tokens(self.accounting, self.holder.current.config.tokens, viewer.token, params.get("q") or "",
                                  _int(params.get("offset"), 0, "offset"), _int(params.get("limit"), 50, "limit", 500), time.time())
        return _json(page)

    async def channels(self, request: Request) -> Response:
        self.viewer(request, admin_only=True)
        return _json(await views.channels(self.holder.current, self.health, self.accounting, self.probes, time.time()))

    async def config(self, request: Request) -> Response:
        viewer = self.viewer(request)
        snapshot = self.holder.current
        data: dict[str, Any] = {"config_version": snapshot.version, "loaded_at": snapshot.loaded_at, "reload_ms": snapshot.build_ms}
        if viewer.admin:
            data.update({"last_reload_error": self.holder.last_reload_error, "channels": len(snapshot.channels),
                         "tokens": len(snapshot.tokens), "store": snapshot.config.store.split("://", 1)[0],
                         "retention_days": snapshot.config.retention_days, "log_format": snapshot.config.log_format})
        return _json(data)

    async def logs(self, request: Request) -> Response:
        viewer = self.viewer(request)
        page = await self.accounting.logs(log_query(request.query_params, viewer.scope))
        return _json(page.as_dict())

    async def admin_logs(self, request: Request) -> Response:
        self.viewer(request, admin_only=True)
        page = await self.accounting.logs(log_query(request.query_params))
        return _json(page.as_dict())

    async def token_logs(self, request: Request) -> Response:
        """The request log of the client key presented (the admin key reads everyone's)."""
        viewer = self.viewer(request)
        page = await self.accounting.logs(log_query(request.query_params, viewer.scope))
        return _json(page.as_dict(), headers=billing.CORS_HEADERS)

    async def subscription(self, request: Request) -> Response:
        token = self._client_token(request)
        return _json(await billing.subscription(self.accounting, token), headers=billing.CORS_HEADERS)

    async def usage(self, request: Request) -> Response:
        token = self._client_token(request)
        return _json(await billing.usage(self.accounting, token, request.query_params), headers=billing.CORS_HEADERS)

    def _client_token(self, request: Request) -> TokenConfig:
        snapshot = self.holder.current
        presented = key_from_headers(request.headers.get("authorization"), request.headers.get("x-api-key"))
        return snapshot.tokens.authenticate(presented, request.client.host if request.client else None)

    async def probe(self, request: Request) -> Response:
        self.viewer(request, admin_only=True)
        params = request.query_params
        (channel, model), = probe_plan(self.holder.current, request.path_params["name"], params.get("model") or None)
        result = await probe_channel(channel, model, self.upstream, self.health, self.metrics)
        self.probes[channel.name] = result
        return _json(result.as_dict())


def _int(text: str | None, default: int, name: str, most: int = 1 << 31) -> int:
    if not text:
        return default
    if not text.isdigit() or int(text) > most:
        raise GatewayError(400, f"'{name}' takes a whole number up to {most}.", code="invalid_request", param=name)
    return int(text)
