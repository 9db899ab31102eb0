"""Stored answers (a dialect's `affinity:`): a native answer's name remembered with the channel and key that made it,
and a request continuing one (Responses' previous_response_id) sent to that channel and key alone, or refused."""

from __future__ import annotations

import logging
from typing import Iterator

from ..affinity import Holder
from ..errors import GatewayError, bad_request
from ..health import key_fingerprint
from ..limits import Accounting, store_unavailable
from ..mapping import MappingError
from ..routing import Channel, ChannelKey
from .answers import DialectRequest
from .native import answer_name, native_operation

log = logging.getLogger("oneapi.dialects")


def continued(request: DialectRequest) -> str | None:
    """The name of the stored answer `request` continues, if it names one."""
    expression = request.dialect.affinity_request
    if expression is None:
        return None
    try:
        found = expression.search(request.body)
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
