"""The ASGI application: routes, lifespan, and the mapping of every failure to an OpenAI-shaped answer."""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import os
import signal
import time
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import parse_qsl

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .asgi import Answer, ClientGone, Inbound, Receive, Scope, Send, StreamAnswer
from .config import Config
from .credits import Credit, already_redeemed, check_redemption, code_digest, credit_nano
from .dialects import RouteMatch, match_route
from .dialects.answers import error_answer
from .documents import ConfigError
from .errors import GatewayError, bad_request
from . import accesslog
from .billing import PREFLIGHT_HEADERS
from .dashboard import Window
from .health import HealthRegistry, describe_health
from .ledger import GROUP_FIELDS, SqliteLedger, UsageQuery, parse_time, sqlite_path
from .limits import Accounting, SqliteAccounting
from .usage import NANO_USD
from .routing import Channel
from .metrics import METRICS_DIR_ENV, Metrics
from .relay import ENDPOINTS, Endpoint, Services, client_key, relay, relay_stored_answer
from .signers import token_exchanges
from .snapshot import SnapshotHolder
from .upstream import Upstream

log = logging.getLogger("oneapi")

CONFIG_ENV = "ONEAPI_CONFIG"
TRIM_INTERVAL = float(os.environ.get("ONEAPI_TRIM_INTERVAL", "3600"))  # seconds between retention trims (tests shorten it)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def open_accounting(config: Config) -> Accounting:
    """The limits and ledger for config.store: SQLite (the default, shared by the processes of one host)
    or redis (shared by every replica). Chosen at start-up: a reload never moves the ledger."""
    if config.store.startswith(("redis://", "rediss://")):
        from .redisstore import RedisAccounting  # the redis client is needed only by those who use it

        return RedisAccounting(config.store)
    return SqliteAccounting(SqliteLedger(sqlite_path(config.store, config.path.parent)))


MAX_SMALL_BODY = 16 * 1024  # the admin and redeem endpoints take a few fields


async def small_json(request: Request) -> dict[str, Any]:
    """The JSON object body of an admin or redeem call, or a 400/413 saying what is wrong with it."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_SMALL_BODY:
            raise GatewayError(413, f"The body is larger than {MAX_SMALL_BODY} bytes.", code="request_too_large")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_request("The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise bad_request("The body must be a JSON object.")
    return data


def usage_query(params: Any) -> UsageQuery:
    """The filters of GET /admin/usage (and `oneapi usage`): token, channel, model, since, until, group_by."""
    try:
        since = parse_time(params["since"]) if params.get("since") else None
        until = parse_time(params["until"]) if params.get("until") else None
    except ValueError:
        raise bad_request("'since' and 'until' take unix seconds or an ISO 8601 date-time.", param="since") from None
    group_by = tuple(g for g in (params.get("group_by") or "token,channel,model").split(",") if g)
    unknown = [g for g in group_by if g not in GROUP_FIELDS]
    if unknown:
        raise bad_request(f"group_by takes {', '.join(GROUP_FIELDS)}; not {', '.join(unknown)}.", param="group_by")
    return UsageQuery(token=params.get("token") or None, channel=params.get("channel") or None, model=params.get("model") or None,
                      since=since, until=until, group_by=group_by)


class Gateway:
    """Per-worker state: the live snapshot holder, the upstream client, and the limits and ledger, which
    outlive every reload."""

    def __init__(self, config_path: str | Path):
        self.holder = SnapshotHolder(config_path)
        self.accounting = open_accounting(self.holder.current.config)
        self.channel_health = HealthRegistry(self.holder.current.config.breaker)
        self.holder.listeners.append(lambda s: self.channel_health.update(s.config.breaker, s.channels.values()))
        self.channel_health.update(self.holder.current.config.breaker, self.holder.current.channels.values())
        self.channel_health.publish = self.accounting.share_set_aside_keys(self.channel_health.learn)  # one view of bad keys (redis)
        self.metrics = Metrics(os.environ.get(METRICS_DIR_ENV))
        self.metrics.gauge_sources.append(self.channel_health.gauges)
        self.metrics.gauge_sources.append(lambda: [("oneapi_config_info", (self.holder.current.version,), 1.0)])
        self.holder.on_result = lambda ok: self.metrics.inc("oneapi_config_reloads_total", ("ok" if ok else "refused",))
        self.services = Services(Upstream(), self.channel_health, self.metrics, self.accounting)
        self.window = Window(self.holder, self.accounting, self.channel_health, self.services.upstream, self.metrics)
        self.holder.listeners.append(lambda s: accesslog.configure(s.config.log_format))
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.accounting.start()
        await self.services.upstream.start()
        # Everything alive now (modules, the compiled providers, the first snapshot: ~70,000 objects) stays for
        # the worker's life: out of the collector's sight, a full collection stops costing ~50 ms of stalled
        # event loop. A snapshot has no reference cycles, so once a reload replaces it, it is still freed.
        gc.collect()
        gc.freeze()
        self._tasks.append(asyncio.create_task(self.holder.watch()))
        self._tasks.append(asyncio.create_task(self.metrics.publish_forever()))
        self._tasks.append(asyncio.create_task(self._trim_forever()))
        accesslog.configure(self.holder.current.config.log_format)
        with suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)

    def _on_sighup(self) -> None:
        task = asyncio.create_task(self._reload_quietly())
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def _reload_quietly(self) -> None:
        with suppress(ConfigError):
            await self.holder.reload(broadcast=True)

    async def _trim_forever(self) -> None:
        """ledger.retention_days: request records older than that are trimmed at start and every TRIM_INTERVAL."""
        while True:
            days = self.holder.current.config.retention_days
            if days is not None:
                try:
                    removed = await self.accounting.trim_records(time.time() - days * 86400)
                    if removed:
                        log.info("retention: trimmed %d request records older than %s days", removed, days)
                except Exception:
                    log.exception("retention: trimming the request log failed; trying again later")
            await asyncio.sleep(TRIM_INTERVAL)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.metrics.publish()
        await self.services.upstream.close()
        await self.accounting.close()  # SIGTERM: every pending record is written before the worker exits
        await token_exchanges().close()  # the signers' token-exchange client, opened on first use

    # --- routes -------------------------------------------------------------

    async def serve_relay(self, scope: Scope, receive: Receive, send: Send, endpoint: Endpoint) -> None:
        """A relay route, straight on ASGI (asgi.py says why)."""
        if scope["method"] != "POST":
            answer: Answer | StreamAnswer = GatewayError(405, f"No route {scope['method']} {scope['path']}.",
                                                         code="method_not_allowed", headers={"Allow": "POST"}).response()
            await answer(scope, receive, send)
            return
        try:
            answer = await relay(Inbound(scope, receive), self.holder.current, self.services, endpoint)
        except GatewayError as exc:
            answer = exc.response()
        except ClientGone:
            return  # hung up before its body was in: nothing was sent upstream, no one to answer
        except Exception:
            log.exception("unexpected error on POST %s", scope["path"])
            answer = internal_error()
        self.metrics.inc("oneapi_requests_total", (endpoint.operation, str(answer.status_code)))
        await answer(scope, receive, send)

    async def serve_dialect(self, scope: Scope, receive: Receive, send: Send, match: RouteMatch) -> None:
        """A route of a client dialect (dialects.d): relayed like chat, every answer and refusal in the dialect."""
        answer: Answer | StreamAnswer
        if match.operation == "stored" and scope["method"] in ("GET", "DELETE"):  # a stored answer, read or deleted
            try:
                answer = await relay_stored_answer(Inbound(scope, receive), self.holder.current, self.services, match, scope["method"],
                                                   scope["path"], scope.get("query_string", b"").decode("latin-1"))
            except GatewayError as exc:
                answer = error_answer(match.dialect, exc)
            if answer.status_code >= 400:
                answer = error_answer(match.dialect, answer)
            self.metrics.inc("oneapi_requests_total", (f"{match.dialect.name}/{match.operation}", str(answer.status_code)))
            await answer(scope, receive, send)
            return
        allowed = "GET" if match.operation == "models" else "POST"
        if scope["method"] != allowed:
            answer = error_answer(match.dialect, GatewayError(405, f"No route {scope['method']} {scope['path']}.", headers={"Allow": allowed}))
            await answer(scope, receive, send)
            return
        try:
            if match.operation == "models":
                answer = self.dialect_models(Inbound(scope, receive), match)
            else:
                answer = await relay(Inbound(scope, receive), self.holder.current, self.services, ENDPOINTS["chat"], match)
        except GatewayError as exc:
            answer = error_answer(match.dialect, exc)
        except ClientGone:
            return
        except Exception:
            log.exception("unexpected error on POST %s", scope["path"])
            answer = error_answer(match.dialect, GatewayError(500, "The gateway failed unexpectedly; the error was logged.", type="server_error"))
        if isinstance(answer, Answer) and answer.status_code >= 400:
            answer = error_answer(match.dialect, answer)
        # the endpoint label tells a dialect's traffic from chat's: anthropic-messages/chat, anthropic-messages/count_tokens
        self.metrics.inc("oneapi_requests_total", (f"{match.dialect.name}/{match.operation}", str(answer.status_code)))
        await answer(scope, receive, send)

    async def list_models(self, request: Request) -> Response:
        return json_response(self.model_list(client_key(request), request.client.host if request.client else None))

    def model_list(self, key: str | None, host: str | None) -> dict[str, Any]:
        """OpenAI's model list: what the key's group is routed to, within its allowlist."""
        snapshot = self.holder.current
        token = snapshot.tokens.authenticate(key, host)
        models = snapshot.routes.models_by_group.get(token.group, {})
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": channel.provider.name}
            for name, channel in sorted(models.items())
            if token.models is None or name in token.models
        ]
        return {"object": "list", "data": data}

    def dialect_models(self, request: Inbound, match: RouteMatch) -> Answer:
        """A dialect's model list (its `models:` mapping of OpenAI's); with a {model} hole, that model alone."""
        listed = self.model_list(match.dialect.client_key(request.headers, match.query), request.client_host)
        name = match.path.get("model")
        if name is not None:
            listed["data"] = [entry for entry in listed["data"] if entry["id"] == name]
            if not listed["data"]:
                raise GatewayError(404, f"The model '{name}' does not exist or you do not have access to it.", code="model_not_found", param="model")
        if match.dialect.models is None:
            return Answer(orjson.dumps(listed))
        return Answer(orjson.dumps(match.dialect.models.search({**listed, "_path": dict(match.path)})))

    async def get_model(self, request: Request) -> Response:
        snapshot = self.holder.current
        token = snapshot.tokens.authenticate(client_key(request), request.client.host if request.client else None)
        name = request.path_params["model"]
        channel = snapshot.routes.models_by_group.get(token.group, {}).get(name)
        if channel is None or (token.models is not None and name not in token.models):
            raise GatewayError(404, f"The model '{name}' does not exist or you do not have access to it.", code="model_not_found", param="model")
        return json_response({"id": name, "object": "model", "created": 0, "owned_by": channel.provider.name})

    async def prometheus(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def health(self, request: Request) -> Response:
        """For probes and anyone: whether the last reload failed. Its details (file paths, token, channel and
        variable names) only for the admin key."""
        holder = self.holder
        snapshot = holder.current
        health = {
            "status": "ok",
            "config_version": snapshot.version,
            "loaded_at": snapshot.loaded_at,
            "reload_ms": snapshot.build_ms,  # how long building the live config took
            "last_reload_failed": holder.last_reload_error is not None,
            "channels": len(snapshot.channels),
            "tokens": len(snapshot.tokens),
            "pid": os.getpid(),
        }
        if self._is_admin(request):
            health["last_reload_error"] = holder.last_reload_error
        return json_response(health)

    def _is_admin(self, request: Request) -> bool:
        admin_key = self.holder.current.config.admin_key
        presented = client_key(request) or ""
        return bool(admin_key) and hmac.compare_digest(presented.encode(), admin_key.encode())

    def _require_admin(self, request: Request) -> None:
        admin_key = self.holder.current.config.admin_key
        if not admin_key:
            raise GatewayError(404, "The admin API is off: set admin_key in config.yaml.", code="not_found")
        if not self._is_admin(request):
            raise GatewayError(401, "Admin endpoints need 'Authorization: Bearer <admin_key>'.", code="invalid_api_key")

    async def admin_reload(self, request: Request) -> Response:
        self._require_admin(request)
        try:
            snapshot = await self.holder.reload(broadcast=True)
        except ConfigError as exc:
            return json_response({
                "reloaded": False,
                "config_version": self.holder.current.version,
                "error": {"message": "config refused; the previous config keeps serving", "type": "invalid_config",
                          "code": "config_invalid", "param": None, "problems": [str(p) for p in exc.problems]},
            }, status=422)
        return json_response({"reloaded": True, "config_version": snapshot.version})

    async def admin_usage(self, request: Request) -> Response:
        self._require_admin(request)
        query = usage_query(request.query_params)
        report = (await self.accounting.query(query)).as_dict()
        report["credits_usd"] = {name: nano / NANO_USD for name, nano in sorted((await self.accounting.credit_totals(query.token)).items())}
        return json_response(report)

    async def redeem(self, request: Request) -> Response:
        """POST /v1/dashboard/redeem {"code"}: a client credits a redemption code's value to its own token, once."""
        snapshot = self.holder.current
        token = snapshot.tokens.authenticate(client_key(request), request.client.host if request.client else None)
        code = (await small_json(request)).get("code")
        if not isinstance(code, str) or not code.strip():
            raise bad_request("Send the redemption code as {\"code\": \"...\"}.", param="code")
        if token.budget is None:
            raise GatewayError(400, f"Token {token.name!r} has no budget: it is unlimited and has nothing to top up.",
                               code="token_unlimited", param="code")
        digest, now = code_digest(code), time.time()
        redemption = snapshot.config.redemptions.get(digest)
        check_redemption(redemption, token.group, now)
        assert redemption is not None
        credit = Credit(now, token.name, round(redemption.value * NANO_USD), f"code:{digest}", "redemption code")
        claimed = await self.accounting.add_credit(credit, digest)
        if claimed is not None:
            raise already_redeemed(claimed)
        log.info("token %r redeemed a code worth $%.2f", token.name, redemption.value)
        return json_response({"token": token.name, "credited_usd": redemption.value, **await self.accounting.budget_state(token)})

    async def admin_credit(self, request: Request) -> Response:
        """POST /admin/credits {"token", "usd", "note"}: the operator credits (or, negative, debits) a token by hand."""
        self._require_admin(request)
        body = await small_json(request)
        name, note = body.get("token"), body.get("note")
        token = next((t for t in self.holder.current.config.tokens if t.name == name), None)
        if token is None:
            raise GatewayError(404, "No token of that name in config.yaml.", code="token_not_found", param="token")
        if not isinstance(note, str) or not note.strip() or len(note) > 1000:
            raise bad_request("A credit needs a 'note' saying why (1 to 1000 characters).", param="note")
        credit = Credit(time.time(), token.name, credit_nano(body.get("usd")), "admin", note.strip())
        await self.accounting.add_credit(credit)
        log.info("admin credited $%.6f to token %r", credit.amount_nano / NANO_USD, token.name)
        state = await self.accounting.budget_state(token) if token.budget is not None else {}
        return json_response({"credit": credit.as_dict(), **state})

    async def admin_credits(self, request: Request) -> Response:
        """GET /admin/credits?token=: the newest credits, as the ledger keeps them."""
        self._require_admin(request)
        credits = await self.accounting.credit_history(request.query_params.get("token") or None)
        return json_response({"credits": [c.as_dict() for c in credits]})

    async def admin_channels(self, request: Request) -> Response:
        self._require_admin(request)
        snapshot = self.holder.current
        data = []
        for cc in snapshot.config.channels:
            channel = snapshot.channels.get(cc.name)
            data.append({
                "name": cc.name,
                "provider": cc.provider,
                "enabled": cc.enabled,
                "routed": channel is not None,
                "endpoint": channel.endpoint if channel else None,
                "models": list(cc.serves()),
                "groups": list(cc.groups),
                "priority": cc.priority,
                "weight": cc.weight,
                "keys": [k.masked for k in channel.keys] if channel else [],
                "max_concurrency": cc.max_concurrency,
                **self._health_of(channel),
                "last_probe": probe.as_dict() if (probe := self.window.probes.get(cc.name)) else None,
            })
        return json_response({"config_version": snapshot.version, "channels": data})


    def _health_of(self, channel: Channel | None) -> dict[str, Any]:
        """This worker's view: breaker state and keys set aside (masked), as of now."""
        return describe_health(self.channel_health, channel, time.monotonic())


async def _gateway_error(request: Request, exc: Exception) -> Answer:
    assert isinstance(exc, GatewayError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Answer:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = f"No route {request.method} {request.url.path}." if exc.status_code in (404, 405) else str(exc.detail)
    return GatewayError(exc.status_code, message, code=code).response()


def internal_error() -> Answer:
    return GatewayError(500, "The gateway failed unexpectedly; the error was logged.", type="server_error", code="internal_error").response()


async def _unexpected_error(request: Request, exc: Exception) -> Answer:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return internal_error()


class GatewayApp:
    """The ASGI entry point: requests to the relay routes go straight to the relay, the rest to Starlette."""

    def __init__(self, gateway: Gateway, routes: Starlette, relays: dict[str, Endpoint]):
        self.gateway = gateway
        self.routes = routes
        self.relays = relays
        self.state = routes.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["method"] == "OPTIONS" and await preflight(scope, send):
                return
            endpoint = self.relays.get(scope["path"])
            if endpoint is not None:
                await self.gateway.serve_relay(scope, receive, send, endpoint)
                return
            routes = self.gateway.holder.current.dialect_routes
            match = match_route(routes, scope["method"], scope["path"], {}) if routes else None
            if match is not None:
                query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
                await self.gateway.serve_dialect(scope, receive, send, match._replace(query=query))
                return
        await self.routes(scope, receive, send)


async def preflight(scope: Scope, send: Send) -> bool:
    """Answer a browser's CORS preflight for the client-key reads (NextChat calls the billing endpoints straight
    from the page); everything else stays same-origin."""
    path: str = scope["path"]
    headers = dict(scope["headers"])
    if b"access-control-request-method" not in headers or not path.startswith(("/dashboard/", "/v1/dashboard/")):
        return False
    asked = headers.get(b"access-control-request-headers", b"authorization, content-type")
    raw = [(k.lower().encode(), v.encode()) for k, v in PREFLIGHT_HEADERS.items()]
    await send({"type": "http.response.start", "status": 204, "headers": [*raw, (b"access-control-allow-headers", asked),
                                                                          (b"vary", b"Origin")]})
    await send({"type": "http.response.body", "body": b""})
    return True


RELAY_PATHS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/moderations": "moderations",
    "/v1/images/generations": "images",
    "/v1/audio/speech": "audio_speech",
    "/v1/audio/transcriptions": "audio_transcriptions",
    "/v1/rerank": "rerank",
}


def create_app(config_path: str | Path | None = None) -> GatewayApp:
    """The ASGI app for `config_path` (default: $ONEAPI_CONFIG, then ./config.yaml)."""
    gateway = Gateway(config_path or os.environ.get(CONFIG_ENV) or "config.yaml")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    routes = [
        Route("/v1/models", gateway.list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", gateway.get_model, methods=["GET"]),
        Route("/health", gateway.health, methods=["GET"]),
        Route("/metrics", gateway.prometheus, methods=["GET"]),
        Route("/admin/reload", gateway.admin_reload, methods=["POST"]),
        Route("/admin/channels", gateway.admin_channels, methods=["GET"]),
        Route("/admin/usage", gateway.admin_usage, methods=["GET"]),
        Route("/admin/credits", gateway.admin_credit, methods=["POST"]),
        Route("/admin/credits", gateway.admin_credits, methods=["GET"]),
        Route("/v1/dashboard/redeem", gateway.redeem, methods=["POST"]),
        *gateway.window.routes(),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={GatewayError: _gateway_error, HTTPException: _http_error, Exception: _unexpected_error},
    )
    app.state.gateway = gateway
    return GatewayApp(gateway, app, {path: ENDPOINTS[name] for path, name in RELAY_PATHS.items()})
