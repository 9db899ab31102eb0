"""count_tokens: the vendor's own count where the channel speaks the dialect, the gateway's estimate elsewhere.

Clients call it often and wait for it (Claude Code before each turn), so it is never an error for a body that
reads: a vendor that fails or is slow to count is answered with the estimate instead. It costs no budget and is
not recorded in the ledger: nothing is generated.
"""

from __future__ import annotations

import logging
from typing import Iterator

import orjson

from ..asgi import Answer
from ..mapping import MappingError
from ..routing import Channel
from ..upstream import TRANSPORT_ERRORS, Timeouts, Upstream
from .answers import DialectRequest
from .native import native_attempt, native_operation

log = logging.getLogger("oneapi.dialects")

# a native count slower than this is not worth the wait: the estimate answers instead
NATIVE_COUNT_TIMEOUT = 5.0


async def count_tokens(request: DialectRequest, candidates: Iterator[Channel], upstream: Upstream) -> Answer:
    channel = next(candidates, None)
    if channel is not None:
        route = native_operation(request, channel)
        if route is not None:
            native, operation = route
            key = channel.next_key()
            timeouts = Timeouts(min(NATIVE_COUNT_TIMEOUT, channel.config.timeout), min(NATIVE_COUNT_TIMEOUT, channel.config.connect_timeout))
            try:
                answer = await native_attempt(request, native, operation, channel, key, request.model,
                                              channel.config.upstream_model(request.model), upstream, timeouts, lambda ok: None)
            except (TimeoutError, *TRANSPORT_ERRORS):
                answer = None
            if isinstance(answer, Answer) and answer.status_code < 400:
                return answer
            log.info("channel %s: native count_tokens failed; answering with the estimate", channel.name)
    return estimated_count(request)


def estimated_count(request: DialectRequest) -> Answer:
    doc = {"input_tokens": request.prompt_estimate, "_request": request.body}
    try:
        body = request.dialect.count.search(doc) if request.dialect.count is not None else doc
    except MappingError:
        body = {"input_tokens": request.prompt_estimate}
    return Answer(orjson.dumps(body))
