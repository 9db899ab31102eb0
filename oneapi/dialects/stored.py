"""Stored answers (a dialect's `affinity:`): a native answer's name remembered with the channel and key that made it,
and a request continuing one (Responses' previous_response_id) sent to that channel and key alone, or refused."""

from __future__ import annotations

import logging
from typing import Iterable, Iterator, Mapping

from yarl import URL

from ..affinity import Holder
from ..asgi import Answer
from ..errors import GatewayError, bad_request
from ..health import key_fingerprint
from ..limits import Accounting, store_unavailable
from ..mapping import MappingError
from ..routing import Channel, ChannelKey
from ..signers import SignerError, sign
from ..translate import build_url
from ..upstream import TRANSPORT_ERRORS, TooLarge, Upstream
from .answers import DialectRequest
from .spec import Dialect
from .native import answer_name, native_operation

log = logging.getLogger("oneapi.dialects")


def continued(request: DialectRequest) -> str | None:
    """The name of the stored answer `request` continues, if it names one."""
    expression = request.dialect.affinity_request
    if expression is None:
        return None
    try:
        found = expression.search({**request.body, "_path": dict(request.path)})
    except MappingError:
        return None
    return found if isinstance(found, str) and found else None


async def holder_of(request: DialectRequest, name: str, token: str, accounting: Accounting, candidates: Iterator[Channel]) -> Holder:
    """The channel and key holding the stored answer `name`, made for `token` and still serving the request's model;
    else a 400 saying why."""
    try:
        holder = Holder.decode(await accounting.recall(f"{request.dialect.name}:{name}"))
    except GatewayError:
        raise
    except Exception as exc:  # the store is down: no guess at another account
        log.warning("stored answer %s could not be looked up: %s", name, type(exc).__name__)
        raise store_unavailable() from None
    channels = list(candidates)
    if holder is not None and holder.token != token:
        holder = None  # another token's answer is none of this one's business: as unknown as any
    if holder is None:
        if request.refusal is not None and not any(native_operation(request, c) for c in channels):
            raise bad_request(request.refusal)  # no channel for this model speaks the dialect: that is the reason
        days = request.dialect.affinity_ttl / 86400
        raise bad_request(f"'{name}' is not an answer this gateway relayed in the last {days:g} days, so the channel and key "
                          f"that hold it are unknown; send the whole conversation instead.")
    for channel in channels:
        if channel.name == holder.channel and pinned_key(channel, holder) is not None:
            return holder
    raise bad_request(f"'{name}' was made on channel '{holder.channel}' with a key that no longer serves model '{request.model}' "
                      f"here; send the whole conversation instead.")


def pinned_key(channel: Channel, holder: Holder) -> ChannelKey | None:
    for key in channel.keys:
        if key_fingerprint(key.secret) == holder.key:
            return key
    return None


async def remember(request: DialectRequest, opening: bytes, channel: Channel, key: ChannelKey, token: str, accounting: Accounting) -> None:
    """Remember which channel and key made a native answer (its body, or its stream's first event); a store
    failure is logged, never the answer's failure."""
    name = answer_name(request.dialect, opening)
    if name is None:
        return
    try:
        await accounting.remember(f"{request.dialect.name}:{name}", Holder(channel.name, key_fingerprint(key.secret), token).encode(),
                                  request.dialect.affinity_ttl)
    except Exception as exc:
        log.warning("channel %s: the answer %s could not be remembered: %s", channel.name, name, type(exc).__name__)


async def relay_stored(dialect: Dialect, path: str, method: str, query: str, holes: Mapping[str, str], headers: Mapping[str, str],
                       channels: Iterable[Channel], token: str, accounting: Accounting, upstream: Upstream) -> Answer:
    """A request about a stored answer (a `stored` route: GET or DELETE under the chat route, e.g. /v1/responses/{id}):
    sent with its method, remainder and query to the channel and key that made the answer, its reply as it is."""
    chat_route = next((r for r in dialect.routes if r.operation == "chat" and r.pattern is None), None)
    request = DialectRequest(dialect, "stored", b"", {}, "", False, headers, path=holes)
    name = continued(request)
    if chat_route is None or name is None or not path.startswith(chat_route.path + "/"):
        raise GatewayError(404, f"No route {method} {path}.")
    try:
        holder = Holder.decode(await accounting.recall(f"{dialect.name}:{name}"))
    except Exception as exc:
        log.warning("stored answer %s could not be looked up: %s", name, type(exc).__name__)
        raise store_unavailable() from None
    channel = next((c for c in channels if holder is not None and c.name == holder.channel), None)
    key = pinned_key(channel, holder) if channel is not None and holder is not None and holder.token == token else None
    native = channel.provider.dialects.get(dialect.name) if channel is not None else None
    operation = native.operations.get("chat") if native is not None else None
    if channel is None or key is None or operation is None:
        raise GatewayError(404, f"'{name}' is not an answer this gateway relayed for this key in the last "
                                f"{dialect.affinity_ttl / 86400:g} days, or its channel is no longer configured.", code="not_found")
    # the chat operation's URL with the client's remainder after the chat route (/{id}/input_items) and its query
    base, _, own_query = build_url(channel, operation, "", key, False).partition("?")
    url = base + path[len(chat_route.path):]
    queries = [q for q in (own_query, query) if q]
    if queries:
        url += "?" + "&".join(queries)
    sent = {**key.headers, **operation.headers, "Accept": "application/json"}
    timeouts = channel.timeouts
    if channel.provider.auth.signer:
        try:
            url, sent = await sign(channel.provider.auth, key.secret, channel.options, method, url, sent, b"")
        except SignerError as exc:
            raise GatewayError(502, f"Could not authenticate to the upstream of channel '{channel.name}': {exc}", type="upstream_error") from None
    try:
        reply = await upstream.send(method, URL(url, encoded=True), sent, None, timeouts)  # type: ignore[arg-type]
        body = await reply.read(channel.config.max_response_bytes)
    except (TooLarge, *TRANSPORT_ERRORS) as exc:
        log.warning("channel %s: stored answer request failed: %s", channel.name, type(exc).__name__)
        raise GatewayError(502, f"The upstream of channel '{channel.name}' did not answer.", type="upstream_error") from None
    return Answer(key.redaction.bytes(body) if key.redaction else body, reply.status, reply.content_type or "application/json")
