"""One request's accounting, from admission to the ledger record: the few hooks the relay calls.

A token without limits costs a request id, a usage lookup at the end of the body and one list append;
everything else (estimates, reservations) happens only for tokens that have a budget, rpm or tpm.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Mapping

import orjson

from . import accesslog
from .config import Price, TokenConfig, price_of
from .errors import GatewayError
from .ledger import UsageRecord
from .limits import Accounting, Admission, Demand, has_limits, refusal
from .usage import (
    FREE, HIDE_USAGE_CHUNK, NANO_USD, StreamTap, Usage, cost_nano, estimate_completion_from_body, estimate_prompt_tokens,
    prompt_token_bound, requested_choices, requested_completion_tokens, usage_from_body,
)

log = logging.getLogger("oneapi.metering")

if TYPE_CHECKING:
    from .routing import Routes

# output tokens reserved against a budget when the client set no max_tokens: the reservation bounds how far
# concurrent requests can overspend, and is replaced by the real cost when the answer is in
DEFAULT_COMPLETION_RESERVE = 1024
# operations whose OpenAI-format streams can carry a usage chunk when asked (stream_options.include_usage)
STREAM_USAGE_OPERATIONS = frozenset({"chat", "completions"})


class _RequestIds:
    """Unique request ids without a system call each: a random per-process prefix and a counter. The prefix is
    drawn again in each forked worker (the ids also name reservations in a store shared by every replica)."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = "req_" + os.urandom(8).hex()
        self.counter = itertools.count()

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter):08x}"


new_request_id = _RequestIds()


def stream_usage_patch(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stream_options that make an OpenAI-format upstream report usage, or None when the client asked already."""
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return None
    return {**(options if isinstance(options, dict) else {}), "include_usage": True}


class Meter:
    """Admission, channel slots, and the usage record of one relayed request."""

    def __init__(self, accounting: Accounting, token: TokenConfig, operation: str, model: str, body: Mapping[str, Any],
                 stream: bool, request_id: str, prices: Mapping[str, Price], ratio: float, routes: Routes | None = None):
        self.accounting = accounting
        self.token = token
        self.operation = operation
        self.model = model
        self.body = body
        self.streamed = stream
        self.request_id = request_id
        self.prices = prices
        self.ratio = ratio
        self.routes = routes  # the channels that may serve it, for the price admission reserves at
        self.admission: Admission | None = None
        self.headers: dict[str, str] = {"x-request-id": request_id}
        self.ts = time.time()
        self.started = time.monotonic()
        self.first_bytes: float | None = None  # monotonic time a stream's first bytes were in
        self._prompt_estimate: int | None = None

    def prompt_estimate(self) -> int:
        if self._prompt_estimate is None:
            self._prompt_estimate = estimate_prompt_tokens(self.body)
        return self._prompt_estimate

    def price(self, upstream_model: str) -> Price:
        """What the channel that answered prices it at (config.price_of); unpriced is free."""
        return price_of(self.prices, self.model, upstream_model) or FREE

    def admission_price(self) -> Price:
        """The price admission reserves at, by the same rule as settlement: the requested name's, or else the
        dearest of the upstream names the channels that may serve it send (which one will is not known yet)."""
        price = self.prices.get(self.model)
        if price is not None or self.routes is None:
            return price or FREE
        found = [p for c in self.routes.offering(self.token.group, self.model, self.operation)
                 if (p := price_of(self.prices, self.model, c.config.upstream_model(self.model))) is not None]
        if not found:
            return FREE
        return Price(max(p.input for p in found), max(p.output for p in found),
                     max(p.input if p.cached_input is None else p.cached_input for p in found))

    def reserved_output(self) -> int:
        """Output tokens a request may produce as far as admission knows: the client's cap, or the default reserve."""
        if self.operation not in STREAM_USAGE_OPERATIONS:
            return 0
        return requested_completion_tokens(self.body) or DEFAULT_COMPLETION_RESERVE

    async def admit(self) -> None:
        if not has_limits(self.token):
            return
        # tpm is a rate, not money: it reserves the estimate, and is corrected by the real count when settled
        tokens = self.prompt_estimate() + (requested_completion_tokens(self.body) or 0) if self.token.tpm is not None else 0
        demand = self._worst_case(tokens) if self.token.budget is not None else Demand(0, tokens)
        self.admission = await self.accounting.admit(self.token, demand, self.request_id)
        self.headers.update(self.admission.headers)

    def _worst_case(self, tokens: int) -> Demand:
        """The most the request can cost: the prompt's upper bound and the reserved output, at the admission price."""
        price = self.admission_price()
        prompt = prompt_token_bound(self.body)
        output = self.reserved_output()
        per_max_token = price.output * self.ratio * requested_choices(self.body) * NANO_USD / 1_000_000
        return Demand(cost_nano(Usage(prompt, output), price, self.ratio), tokens, prompt, output,
                      cost_nano(Usage(prompt), price, self.ratio), per_max_token)

    async def acquire(self, channel: str, limit: int | None, timeout: float) -> str | None:
        """A slot on the channel ("" when it has no max_concurrency), or None when it is full."""
        if limit is None:
            return ""
        return await self.accounting.acquire_slot(channel, limit, timeout + 60.0)

    def release(self, channel: str, slot: str | None) -> None:
        if slot:
            self.accounting.release_slot(channel, slot)

    def refuse_full(self) -> GatewayError:
        return refusal("concurrency", self.token, 1)

    def abandon(self) -> None:
        """No answer came through: give the reservation back (rpm stays counted: the request was made)."""
        self.accounting.settle(self.admission, None)

    def fail(self, status: int, error: bytes | str | None, channel: str = "") -> None:
        """No answer came through: the error goes to the request log (nothing was used), the reservation back."""
        upstream_model = self.model if channel else ""
        self.record(channel, upstream_model, Usage(), status, error_code(error) if error is not None else "")

    def record(self, channel: str, upstream_model: str, usage: Usage, status: int = 200, error_type: str = "") -> None:
        duration_ms = int((time.monotonic() - self.started) * 1000)
        record = UsageRecord(
            ts=self.ts, request_id=self.request_id, token=self.token.name, channel=channel, model=self.model,
            upstream_model=upstream_model, operation=self.operation, stream=self.streamed,
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, cached_tokens=usage.cached_tokens,
            reasoning_tokens=usage.reasoning_tokens, estimated=usage.estimated,
            cost_nano=cost_nano(usage, self.price(upstream_model), self.ratio),
            duration_ms=duration_ms, status=status, error_type=error_type,
            ttft_ms=duration_ms if self.first_bytes is None else int((self.first_bytes - self.started) * 1000),
        )
        self.accounting.settle(self.admission, record)
        if accesslog.enabled():
            accesslog.write(record)

    def left_early(self, reported: Usage | None, seen_output: int) -> Usage:
        """The charge of a stream that ended before the vendor's end (the client hung up, or never read it): the
        vendor bills what it generated, reasoning included, and may report output only at its end, so the stream
        is charged as if it ran to its reserved end. The prompt is the vendor's count if it came, else its upper
        bound; the output the reserved output (max_tokens, or the default reserve), or more if more was seen."""
        prompt = reported.prompt_tokens if reported is not None and reported.prompt_tokens else prompt_token_bound(self.body)
        output = max(self.reserved_output(), seen_output, reported.completion_tokens if reported is not None else 0)
        cached = min(reported.cached_tokens, prompt) if reported is not None else 0
        reasoning = reported.reasoning_tokens if reported is not None else 0
        return Usage(prompt, output, cached, reasoning, estimated=True)

    def finish_body(self, channel: str, upstream_model: str, content: bytes) -> None:
        usage = self.used(channel, lambda: usage_from_body(content), lambda: estimate_completion_from_body(content))
        self.record(channel, upstream_model, usage)

    def used(self, channel: str, reported: Callable[[], Usage | None], completion_estimate: Callable[[], int]) -> Usage:
        """What the request used: as the upstream reported it, else estimated. Never an exception: the usage
        record, and a stream's channel slot, wait on it (a vendor's broken numbers must not cost them)."""
        try:
            usage = reported()
            if usage is not None:
                return usage
        except Exception as exc:
            log.warning("channel %s: the reported usage could not be read (%r); the request is recorded as estimated", channel, exc)
        try:
            return Usage(self.prompt_estimate(), completion_estimate(), estimated=True)
        except Exception as exc:
            log.warning("channel %s: the usage could not be estimated (%r); the request is recorded without tokens", channel, exc)
            return Usage(estimated=True)

    def stream(self, chunks: AsyncIterator[bytes], channel: str, upstream_model: str, hide_usage: str | None,
               slot: str | None, usage: Callable[[], Usage | None] | None = None) -> "MeteredStream":
        self.first_bytes = time.monotonic()  # a stream is answered once its first bytes are in
        return MeteredStream(self, chunks, channel, upstream_model, hide_usage, slot, usage)


class MeteredStream:
    """The client's stream. Its usage is recorded and its slot released exactly once, however it ends:
    to the last byte, by the client hanging up mid-stream, or before its first byte was ever asked for."""

    def __init__(self, meter: Meter, chunks: AsyncIterator[bytes], channel: str, upstream_model: str, hide_usage: str | None,
                 slot: str | None, usage: Callable[[], Usage | None] | None = None):
        self.meter = meter
        self.channel = channel
        self.upstream_model = upstream_model
        self.slot = slot
        self.tap = StreamTap(chunks, hide_usage)
        self.usage = usage if usage is not None else self.tap.usage  # where the usage comes from: the stream's bytes by default
        self._relayed = self.tap.__aiter__()
        self._closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._relay()

    def relayed(self) -> AsyncIterator[bytes]:
        """The client's chunks, for a caller that calls close() itself however the stream ends (one generator
        fewer per chunk than iterating this object)."""
        return self._relayed

    async def _relay(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._relayed:
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            usage = self.meter.used(self.channel, self.usage, self.tap.estimated_completion_tokens)
            if not self.tap.completed:  # cut short: charged to its reserved end (Meter.left_early)
                try:
                    usage = self.meter.left_early(None if usage.estimated else usage, usage.completion_tokens)
                except Exception as exc:
                    log.warning("channel %s: a stream cut short could not be charged to its end (%r)", self.channel, exc)
            self.meter.record(self.channel, self.upstream_model, usage)
        finally:
            self.meter.release(self.channel, self.slot)  # whatever happened above, the slot is not leaked



def error_code(error: bytes | str) -> str:
    """The `code` (else `type`) of an OpenAI-shaped error body; a string is a code already."""
    if isinstance(error, str):
        return error
    try:
        detail = orjson.loads(error).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return "unreadable_error"
    if not isinstance(detail, dict):
        return "error"
    return str(detail.get("code") or detail.get("type") or "error")


def upstream_body(raw: bytes, body: Mapping[str, Any], model: str, upstream_model: str, stream: bool, operation: str,
                  upstream_format: str) -> tuple[bytes, str | None]:
    """The bytes to send upstream, and what usage to hide from the client because the gateway asked for it.
    The client's bytes go untouched unless the model is renamed or stream usage has to be asked for."""
    patch: dict[str, Any] = {}
    if upstream_model != model:
        patch["model"] = upstream_model
    hide = None
    if stream and upstream_format == "openai" and operation in STREAM_USAGE_OPERATIONS:
        options = stream_usage_patch(body)
        if options is not None:
            patch["stream_options"] = options
            hide = HIDE_USAGE_CHUNK
    if patch:
        raw = orjson.dumps({**body, **patch})
    return raw, hide


def translated_body(body: Mapping[str, Any], stream: bool, operation: str) -> tuple[Mapping[str, Any], str | None]:
    """The request a translated operation works from: asking for stream usage like upstream_body does, so the
    vendor reports it; what to hide from a client that did not ask (a translated stream leaves it out itself)."""
    if not stream or operation not in STREAM_USAGE_OPERATIONS:
        return body, None
    options = stream_usage_patch(body)
    if options is None:
        return body, None
    return {**body, "stream_options": options}, HIDE_USAGE_CHUNK
