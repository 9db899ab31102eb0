"""One client request relayed to a vendor: validate, choose a channel, send, pass the answer back."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, AsyncIterator, Callable

import orjson
from .answers import answer_problem, first_event_problem
from .affinity import Holder
from .asgi import Answer, Inbound, StreamAnswer
from .config import TokenConfig
from .dialects import RouteMatch
from .dialects.answers import CanonicalBody, DialectRequest, read_request
from .dialects.counting import count_tokens
from .dialects.native import native_attempt, native_operation, record_native_body
from .dialects.stored import continued, holder_of, pinned_key, relay_stored, remember
from .errors import GatewayError, bad_request
from .failures import Failure, bad_body_failure, classify, error_reply_failure, in_band_error, in_band_status, transport_failure
from .forms import Upload, form_boundary
from .health import ChannelHealth, HealthRegistry
from .limits import Accounting
from .metering import Meter, new_request_id, translated_body, upstream_body
from .metrics import Metrics
from .nesting import MAX_NESTING, nests_deeper
from .passthrough import first_byte_deadline, first_chunk, first_event, pass_bytes, pass_through
from .redaction import redact_outcome
from .routing import Channel, ChannelKey
from .snapshot import Snapshot
from .tokens import check_model, key_from_headers
from .translate import attempt as translated_attempt
from .upstream import TRANSPORT_ERRORS, Timeouts, TooLarge, Upstream, UpstreamReply

log = logging.getLogger("oneapi.relay")

OVERHEAD_HEADER = "x-oneapi-overhead-ms"
_OBJECT_START = re.compile(rb"\s*\{")
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _require_messages(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array.", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad_request(f"messages[{i}] must be an object with a string 'role'.", param=f"messages.{i}")


def _require(field: str) -> Callable[[dict[str, Any]], None]:
    def check(body: dict[str, Any]) -> None:
        if body.get(field) is None:
            raise bad_request(f"'{field}' is required.", param=field)

    return check


def _require_text(field: str) -> Callable[[dict[str, Any]], None]:
    def check(body: dict[str, Any]) -> None:
        if not isinstance(body.get(field), str):
            raise bad_request(f"'{field}' is required and must be a string.", param=field)

    return check


def _require_rerank(body: dict[str, Any]) -> None:
    """The rerank shape most gateways and vendors share: {model, query, documents, top_n}."""
    query = body.get("query")
    if not isinstance(query, (str, dict)) or not query:
        raise bad_request("'query' is required and must be a non-empty string.", param="query")
    documents = body.get("documents")
    if not isinstance(documents, list) or not documents:
        raise bad_request("'documents' must be a non-empty array.", param="documents")
    top_n = body.get("top_n")
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1):
        raise bad_request("'top_n' must be a positive integer.", param="top_n")


def _no_check(body: dict[str, Any]) -> None:
    return None


@dataclass(frozen=True)
class Endpoint:
    operation: str  # the provider operation it maps to
    validate: Callable[[dict[str, Any]], None]
    streams: bool
    form: bool = False  # the body is multipart/form-data (a file upload), not JSON
    any_answer: bool = False  # the answer is relayed by its own content type (audio, text, SSE), not only JSON


ENDPOINTS = {
    "chat": Endpoint("chat", _require_messages, streams=True),
    "completions": Endpoint("completions", _require("prompt"), streams=True),
    "embeddings": Endpoint("embeddings", _require("input"), streams=False),
    "moderations": Endpoint("moderations", _require("input"), streams=False),
    "images": Endpoint("images", _require("prompt"), streams=True),
    "audio_speech": Endpoint("audio_speech", _require_text("input"), streams=True, any_answer=True),
    "audio_transcriptions": Endpoint("audio_transcriptions", _no_check, streams=True, form=True, any_answer=True),
    "rerank": Endpoint("rerank", _require_rerank, streams=False),
}


def declared_length(request: Inbound, limit: int) -> int | None:
    """The body size the client announced, refused early (413) when it is over `limit`."""
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    if not declared.isdigit():
        raise bad_request("Content-Length is not a number.")
    if int(declared) > limit:
        raise GatewayError(413, f"Request body is larger than {limit} bytes.", code="request_too_large")
    return int(declared)


async def read_json_body(request: Inbound, limit: int) -> tuple[bytes, dict[str, Any]]:
    """The raw body and its parsed object; 413 past `limit`, 400 for anything that is not a JSON object."""
    declared_length(request, limit)  # refuse an announced oversize body before reading it
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise GatewayError(413, f"Request body is larger than {limit} bytes.", code="request_too_large")
        chunks.append(chunk)
    raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if not raw:
        raise bad_request("Request body is empty: send a JSON object.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"Request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("Request body must be a JSON object.", code="invalid_json")
    if len(raw) > 2 * MAX_NESTING and nests_deeper(body):  # n levels take 2n brackets: a short body is never too deep
        raise bad_request(f"Request body nests objects and arrays more than {MAX_NESTING} levels deep.", code="invalid_json")
    repeated = _repeated_deciding_field(raw, body)
    if repeated is not None:
        raise bad_request(f"'{repeated}' appears more than once in the request body: send it once.", code="duplicate_field", param=repeated)
    return raw, body


# the fields the gateway routes, prices, admits and streams by: with two values the gateway could check one
# while the vendor, whose parser may keep the first, acts on the other (the body is forwarded untouched)
DECIDING_FIELDS = ("model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "max_output_tokens", "n")
_DECIDING_KEY = re.compile(rb'"(%s)"\s*:' % b"|".join(f.encode() for f in DECIDING_FIELDS))


def _repeated_deciding_field(raw: bytes, body: dict[str, Any]) -> str | None:
    """A deciding field given more than once at the top level of the body. One scan of the bytes, unless such a
    key occurs twice at any depth (a tool parameter called "model", say): only then is the body parsed again."""
    keys = _DECIDING_KEY.findall(raw)
    if len(keys) == len(set(keys)):
        return None
    repeated: list[str] = []

    def note_repeated(pairs: list[tuple[str, Any]]) -> None:
        seen: set[str] = set()
        repeated.clear()  # the outermost object is the last one parsed: its keys are what remains
        for key, _ in pairs:
            if key in seen:
                repeated.append(key)
            seen.add(key)

    json.loads(raw, object_pairs_hook=note_repeated)  # json reads all that orjson read, and more (NaN)
    return next((key for key in repeated if key in DECIDING_FIELDS), None)


def client_key(request: Any) -> str | None:
    """The client's key from an Inbound or a Starlette Request (both have a `headers.get` by lower-case name)."""
    headers = request.headers
    return key_from_headers(headers.get("authorization"), headers.get("x-api-key"))


@dataclass
class Services:
    """What a relay uses besides the snapshot: per-worker, and outliving every reload."""

    upstream: Upstream
    health: HealthRegistry
    metrics: Metrics
    accounting: Accounting


async def relay(request: Inbound, snapshot: Snapshot, services: Services, endpoint: Endpoint,
                dialect: RouteMatch | None = None) -> Answer | StreamAnswer:
    """`dialect`: the request is in a client dialect (dialects.d) rather than OpenAI's format."""
    received = time.perf_counter()
    request_id = new_request_id()
    try:
        return await _relay(request, snapshot, services, endpoint, received, request_id, dialect)
    except GatewayError as exc:
        exc.headers.setdefault("x-request-id", request_id)
        raise


async def _relay(request: Inbound, snapshot: Snapshot, services: Services, endpoint: Endpoint, received: float,
                 request_id: str, dialect: RouteMatch | None = None) -> Answer | StreamAnswer:
    key = client_key(request) if dialect is None else dialect.dialect.client_key(request.headers, dialect.query)
    token = snapshot.tokens.authenticate(key, request.client_host)
    try:
        return await _relay_token(request, snapshot, services, endpoint, received, request_id, dialect, token)
    except GatewayError as exc:
        if not exc.logged:  # refused before admission (bad body, a model not allowed or unknown): still in the log
            _meter(services, snapshot, token, endpoint, exc.model, {}, False, request_id).fail(exc.status, exc.code or exc.type)
        raise


async def _relay_token(request: Inbound, snapshot: Snapshot, services: Services, endpoint: Endpoint, received: float,
                       request_id: str, dialect: RouteMatch | None, token: TokenConfig) -> Answer | StreamAnswer:
    if endpoint.form:
        return await _relay_upload(request, snapshot, services, endpoint, token, received, request_id)
    raw, body = await read_json_body(request, snapshot.config.max_body_bytes)
    if dialect is not None:
        return await _relay_dialect(dialect, request, raw, body, snapshot, services, endpoint, token, received, request_id)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a string.", param="model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean.", param="stream")
    endpoint.validate(body)
    if stream and not endpoint.streams:
        raise bad_request("'stream' is not supported on this endpoint.", param="stream")
    _check_route(snapshot, token, model, endpoint)
    call = Call(endpoint, model, raw, body, stream, received, _meter(services, snapshot, token, endpoint, model, body, stream, request_id),
                accept=request.headers.get("accept"))
    return await _metered_failover(call, snapshot, services, token.group)


async def _relay_dialect(dialect: RouteMatch, request: Inbound, raw: bytes, body: dict[str, Any], snapshot: Snapshot, services: Services,
                         endpoint: Endpoint, token: TokenConfig, received: float, request_id: str) -> Answer | StreamAnswer:
    """A request in a client dialect (dialects.d): routed and metered like chat; read into the canonical chat form
    only where an attempt is translated (or the meter needs an estimate)."""
    spoken = read_request(dialect.dialect, dialect.operation, raw, body, dialect.path, dialect.query, request.headers)
    _check_route(snapshot, token, spoken.model, endpoint)
    if spoken.operation == "count_tokens":
        return await count_tokens(spoken, snapshot.routes.candidates(token.group, spoken.model, endpoint.operation), services.upstream)
    stored = continued(spoken)
    holder = None if stored is None else await holder_of(spoken, stored, token.name, services.accounting,
                                                         snapshot.routes.candidates(token.group, spoken.model, endpoint.operation))
    canonical = CanonicalBody(spoken)
    call = Call(endpoint, spoken.model, b"", canonical, spoken.stream, received,  # type: ignore[arg-type]
                _meter(services, snapshot, token, endpoint, spoken.model, canonical, spoken.stream, request_id),
                accept=request.headers.get("accept"), dialect=spoken, pinned=holder)
    return await _metered_failover(call, snapshot, services, token.group)


async def relay_stored_answer(request: Inbound, snapshot: Snapshot, services: Services, match: RouteMatch, method: str, path: str,
                              query: str) -> Answer:
    """GET / DELETE of a stored answer (a dialect's `stored` route): to the channel and key that made it, for the
    token it was made for."""
    token = snapshot.tokens.authenticate(match.dialect.client_key(request.headers, match.query), request.client_host)
    return await relay_stored(match.dialect, path, method, query, match.path, request.headers, snapshot.routes.channels, token.name,
                              services.accounting, services.upstream)


def _check_route(snapshot: Snapshot, token: TokenConfig, model: str, endpoint: Endpoint) -> None:
    try:
        check_model(token, model)
        if not snapshot.routes.knows(token.group, model):
            raise GatewayError(404, f"The model '{model}' does not exist or you do not have access to it.", code="model_not_found", param="model")
        if not snapshot.routes.offers(token.group, model, endpoint.operation):
            raise GatewayError(404, f"The model '{model}' does not support this endpoint: no channel serving it offers "
                                    f"'{endpoint.operation}'.", code="operation_not_supported", param="model")
    except GatewayError as exc:
        exc.model = model  # the request log names what was refused
        raise


def _meter(services: Services, snapshot: Snapshot, token: TokenConfig, endpoint: Endpoint, model: str, body: dict[str, Any],
           stream: bool, request_id: str) -> Meter:
    return Meter(services.accounting, token, endpoint.operation, model, body, stream, request_id,
                 snapshot.config.prices, snapshot.config.groups.get(token.group, 1.0), snapshot.routes)


async def _metered_failover(call: Call, snapshot: Snapshot, services: Services, group: str) -> Answer | StreamAnswer:
    """Admission, the tries, and the accounting of their outcome."""
    meter = call.meter
    try:
        await meter.admit()
    except GatewayError as exc:
        meter.fail(exc.status, exc.code or exc.type)
        exc.logged = True
        exc.headers.update(meter.headers)
        raise
    try:
        response = await _failover(call, snapshot, services, group)
    except BaseException as exc:
        if isinstance(exc, GatewayError):
            meter.fail(exc.status, exc.code or exc.type, call.channel)
            exc.logged = True
            exc.headers.update(meter.headers)
        else:
            meter.abandon()
        raise
    if not isinstance(response, StreamAnswer) and response.status_code >= 400:
        # the client's own mistake passed back, or every channel failed: nothing was used, the error is logged
        meter.fail(response.status_code, response.body, call.channel)
    response.headers.update(meter.headers)
    if call.overhead is not None:
        services.metrics.observe("oneapi_overhead_seconds", (call.endpoint.operation,), call.overhead)
    return response


async def _relay_upload(request: Inbound, snapshot: Snapshot, services: Services, endpoint: Endpoint,
                        token: TokenConfig, received: float, request_id: str) -> Answer | StreamAnswer:
    """A multipart upload: routed once its `model` field has arrived, while the rest is still on its way."""
    limit = snapshot.config.max_body_bytes
    declared = declared_length(request, limit)
    upload = Upload(request.stream(), form_boundary(request.headers.get("content-type")), limit, declared)
    try:
        model = await upload.read_fields()
        if upload.failure is not None:
            raise upload.failure
        fields = upload.fields
        endpoint.validate(fields)
        _check_route(snapshot, token, model, endpoint)
        stream = fields.get("stream") == "true"
        call = Call(endpoint, model, b"", fields, stream, received, _meter(services, snapshot, token, endpoint, model, fields, stream, request_id),
                    accept=request.headers.get("accept"), upload=upload, content_type=request.headers.get("content-type", ""))
        response = await _metered_failover(call, snapshot, services, token.group)
    except BaseException:
        upload.close()
        raise
    if isinstance(response, StreamAnswer):
        response.closers.append(upload.close)  # the spool outlives the answer's first bytes
        response.watch_client = False  # the upload's reader may still be taking the client's body
    else:
        upload.close()
    return response


@dataclass
class Call:
    """One client request on its way upstream."""

    endpoint: Endpoint
    model: str
    raw: bytes
    body: dict[str, Any]
    stream: bool
    received: float  # perf_counter() when the request arrived, for the overhead header
    meter: Meter
    overhead: float | None = None  # seconds the gateway itself spent, once known
    accept: str | None = None  # the client's Accept header, passed on where the answer is not only JSON
    upload: Upload | None = None  # a multipart body, streamed from its spool instead of `raw`
    content_type: str = ""  # the client's Content-Type, for a multipart body (its boundary)
    channel: str = ""  # the channel tried last, for the request log
    dialect: DialectRequest | None = None  # the request as the client sent it, when not in OpenAI's format
    pinned: Holder | None = None  # the only channel and key that may answer (they hold the stored answer it continues)


async def _failover(call: Call, snapshot: Snapshot, services: Services, group: str) -> Answer | StreamAnswer:
    """Try channels in routing order until one answers: the rest of a tier before lower tiers, never the same
    key twice, never more than retry.attempts calls or past retry.deadline."""
    retry = snapshot.config.retry
    health = services.health
    deadline = time.monotonic() + retry.deadline
    plan = snapshot.routes.candidates(group, call.model, call.endpoint.operation)
    pinned = call.pinned
    if pinned is not None:
        plan = (c for c in plan if c.name == pinned.channel)
    channel = next(plan, None)
    failed_keys: set[str] = set()
    failure: Failure | None = None
    attempts = 0
    full = False
    while channel is not None and attempts < retry.attempts:
        now = time.monotonic()
        if now >= deadline:
            break
        state = health.of(channel)
        key = health.next_key(channel, state, failed_keys, now) if pinned is None else pinned_key(channel, pinned)
        if key is None or key.secret in failed_keys or not state.breaker.allows(now):
            channel = next(plan, None)
            continue
        slot = await call.meter.acquire(channel.name, channel.config.max_concurrency, channel.config.timeout)
        if slot is None:
            full = True  # at its max_concurrency: the next channel may have room, and this was no attempt
            channel = next(plan, None)
            continue
        attempts += 1
        call.channel = channel.name
        outcome: Answer | StreamAnswer | Failure | None = None
        try:
            outcome = await _attempt(channel, state, key, call, services, deadline - now, slot)
        finally:
            if not isinstance(outcome, StreamAnswer):
                call.meter.release(channel.name, slot)  # a stream releases its slot when it ends
        if not isinstance(outcome, Failure):
            return outcome
        failure = outcome
        failed_keys.add(key.secret)
        if not failure.retryable:
            return failure.response()
        if failure.key_fault:
            state.set_key_aside(key, failure.key_fault, time.monotonic())
            log.warning("channel %s: key %s set aside (%s)", channel.name, key.masked, failure.key_fault)
        if failure.rate_limited:
            # another channel first; the same one again only after its Retry-After, with another key
            following = next(plan, None)
            if following is not None:
                channel = following
                continue
            if health.next_key(channel, state, failed_keys, time.monotonic()) is None:
                break
            wait = failure.retry_after or 0.0
            if wait > deadline - time.monotonic():
                break
            await asyncio.sleep(wait)
            continue
        if failure.key_fault and health.next_key(channel, state, failed_keys, time.monotonic()) is not None:
            continue  # same channel, another of its keys
        channel = next(plan, None)
    if failure is None and full:
        raise call.meter.refuse_full()
    if failure is None:
        raise GatewayError(503, f"No channel is available for model '{call.model}' right now.", type="upstream_error",
                           code="no_available_channel", headers={"Retry-After": "5"})
    return failure.response()


async def _attempt(channel: Channel, state: ChannelHealth, key: ChannelKey, call: Call, services: Services,
                   time_left: float, slot: str) -> Answer | StreamAnswer | Failure:
    """One try on one channel: an answer for the client, or the Failure that decides what happens next."""
    recorded = False

    def record(ok: bool) -> None:
        nonlocal recorded
        recorded = True
        state.record(ok, time.monotonic())

    try:
        send = _send if call.dialect is None else _send_dialect
        outcome = redact_outcome(await send(channel, key, call, services.upstream, time_left, record, slot), key.redaction)
        if isinstance(outcome, Failure):
            if not recorded:
                record(not outcome.channel_fault)
            label = "client_error" if not outcome.retryable else outcome.error.code or "failed"
        else:
            label = "ok"
        services.metrics.inc("oneapi_upstream_attempts_total", (channel.name, label))
        return outcome
    finally:
        if not recorded:
            state.breaker.probing = False  # cancelled mid-try: let the next request probe


async def _send(channel: Channel, key: ChannelKey, call: Call, upstream: Upstream, time_left: float,
                record: Callable[[bool], None], slot: str) -> Answer | StreamAnswer | Failure:
    config = channel.config
    operation = channel.provider.operations[call.endpoint.operation]
    upstream_model = config.upstream_model(call.model)
    # the channel's usual timeouts, unless the retry deadline is nearer
    timeouts = channel.timeouts if time_left >= config.timeout else Timeouts(time_left, config.connect_timeout)
    if operation.translated:  # a vendor that does not speak OpenAI, or needs a signer: translate.py
        # gateway extensions reach a provider's own request mapping, never a body sent on as it is
        mapped = operation.mapping is not None and operation.mapping.request is not None
        extended = {**call.body, **call.dialect.extensions} if call.dialect is not None and mapped and call.dialect.extensions else call.body
        body, hide_usage = translated_body(extended, call.stream, call.endpoint.operation)
        answer = await translated_attempt(channel, key, operation, upstream_model, dict(body), call.stream, upstream, timeouts, record,
                                          hide_usage is not None)
        return _metered(answer, call, channel, upstream_model, hide_usage, slot, None)
    url = channel.url(operation, upstream_model, key)
    upload = call.upload
    content: bytes | AsyncIterator[bytes]
    hide_usage = None
    if upload is not None:
        if upload.failure is not None:
            raise upload.failure
        content = upload.body(upstream_model)
        headers = {**key.headers, "Content-Type": call.content_type, "Accept": call.accept or "*/*"}
        length = upload.length(upstream_model)
        if length is not None:
            headers["Content-Length"] = str(length)
    else:
        # the client's bytes go upstream untouched unless the model is renamed or stream usage must be asked for
        content, hide_usage = upstream_body(call.raw, call.body, call.model, upstream_model, call.stream, call.endpoint.operation,
                                            operation.format)
        if call.endpoint.any_answer:
            headers = {**key.headers, "Content-Type": "application/json", "Accept": call.accept or "*/*"}
        else:
            headers = key.json_headers[call.stream]  # built once per key
    sent = time.perf_counter()
    first_by = first_byte_deadline(channel, min(config.timeout, time_left))
    try:
        # a stream's ttft_timeout counts from here: a vendor that takes the request and never answers fails over
        async with asyncio.timeout_at(first_by if call.stream else None):
            reply = await upstream.send(operation.method, url, headers, content, timeouts)
    except TRANSPORT_ERRORS as exc:
        if upload is not None and upload.failure is not None:
            raise upload.failure from None  # the client's body, not the channel, is at fault
        log.warning("channel %s: upstream request failed: %s", channel.name, type(exc).__name__)
        return transport_failure(channel.name, exc)
    answered = time.perf_counter()
    overhead = sent - call.received
    if not call.stream:  # an answer that is not a stream (audio as it is made) gets ttft_timeout from its headers
        first_by = first_byte_deadline(channel, min(config.timeout, time_left))

    if reply.status >= 400:
        return await error_reply_failure(channel.name, reply, config.max_response_bytes)

    # an answer of any kind (audio, text, events) is told by its content type, not by the request's `stream`
    if _is_event_stream(reply.content_type) if call.endpoint.any_answer else call.stream:
        opened = await _open_stream(channel, reply, call, key, first_by, record, overhead, answered)
        return _metered(opened, call, channel, upstream_model, hide_usage, slot, reply)
    if call.endpoint.any_answer and not _is_json(reply.content_type):
        opened = await _open_bytes(channel, reply, call, key, first_by, record, overhead, answered)
        return _metered(opened, call, channel, upstream_model, None, slot, reply)

    try:
        content = await reply.read(config.max_response_bytes)
    except TooLarge as exc:
        return bad_body_failure(channel.name, f"answered a body where {exc}")
    except TRANSPORT_ERRORS as exc:
        log.warning("channel %s: reading the upstream body failed: %s", channel.name, type(exc).__name__)
        return transport_failure(channel.name, exc, "response")
    problem = _check_body(channel.name, content, call.endpoint.operation)
    if problem is not None:
        return problem
    record(True)
    overhead += time.perf_counter() - answered
    call.overhead = overhead
    answer = Answer(content, reply.status, reply.content_type, {OVERHEAD_HEADER: f"{overhead * 1000:.3f}"})
    answer.after = partial(call.meter.finish_body, channel.name, upstream_model, content)  # once the client has it
    return answer


async def _send_dialect(channel: Channel, key: ChannelKey, call: Call, upstream: Upstream, time_left: float,
                        record: Callable[[bool], None], slot: str) -> Answer | StreamAnswer | Failure:
    """A request in a client dialect: relayed as sent where the channel's vendor speaks the dialect, else sent in
    the canonical form like any chat request and its answer written back in the dialect."""
    spoken = call.dialect
    assert spoken is not None
    native = native_operation(spoken, channel)
    if native is None:
        if spoken.refusal is not None:  # another channel may speak the dialect; if none does, this is the answer
            return Failure(bad_request(spoken.refusal), channel_fault=False)
        body = spoken.canonical_within(channel.config.max_output_tokens)
        if call.body is not body:  # the canonical form, as any chat request has it (built once unless a channel lowers it)
            call.body = body
            call.raw = orjson.dumps(body)
        return spoken.translated(await _send(channel, key, call, upstream, time_left, record, slot))
    config = channel.config
    upstream_model = config.upstream_model(call.model)
    timeouts = channel.timeouts if time_left >= config.timeout else Timeouts(time_left, config.connect_timeout)
    opening: list[bytes] = []
    answer = await native_attempt(spoken, *native, channel, key, call.model, upstream_model, upstream, timeouts, record, opening.append)
    if opening and spoken.dialect.affinity_ttl:  # its name, with this channel and key, before the client can name it
        await remember(spoken, opening[0], channel, key, call.meter.token.name, call.meter.accounting)
    metered = _metered(answer, call, channel, upstream_model, None, slot, None)
    if isinstance(metered, Answer) and metered.after is not None:
        metered.after = partial(record_native_body, call.meter, spoken.dialect, channel.name, upstream_model, metered.body)
    return metered


def _metered(answer: Answer | StreamAnswer | Failure, call: Call, channel: Channel, upstream_model: str, hide_usage: str | None,
             slot: str, reply: UpstreamReply | None) -> Answer | StreamAnswer | Failure:
    """A successful answer with its usage metered: a stream as it ends, a body now."""
    if isinstance(answer, StreamAnswer):
        # a translated stream hides the usage the client did not ask for itself, and hands it over as answer.usage
        metered = call.meter.stream(answer.chunks, channel.name, upstream_model, None if answer.usage else hide_usage, slot, answer.usage)
        # however the answer ends (even before its first byte), its accounting and upstream connection close
        answer.chunks = metered.relayed()
        answer.closers.append(metered.close)
        if reply is not None:
            answer.closers.append(reply.close)
        return answer
    if isinstance(answer, Answer) and answer.status_code < 400 and not call.stream:
        answer.after = partial(call.meter.finish_body, channel.name, upstream_model, answer.body)  # once the client has it
    return answer


def _check_body(channel: str, content: bytes, operation: str) -> Failure | None:
    """A success status with a body that is not a JSON object, that carries an error, or that is not an answer
    of the operation (`{}`) is a failed try."""
    if _OBJECT_START.match(content) is None:
        return bad_body_failure(channel, "answered with a body that is not a JSON object")
    error = in_band_error(content)
    if error is not None:
        return classify(channel, in_band_status(error), error, {})
    try:
        problem = answer_problem(operation, orjson.loads(content))
    except orjson.JSONDecodeError:
        problem = "answered with a body that is not JSON"
    return bad_body_failure(channel, problem) if problem else None


async def _open_stream(channel: Channel, reply: UpstreamReply, call: Call, key: ChannelKey, first_by: float,
                       record: Callable[[bool], None], overhead: float, answered: float) -> StreamAnswer | Failure:
    """Wait for the first event before answering the client: a slow, failing or empty start can still fail over."""
    config = channel.config
    if not reply.content_type.startswith("text/event-stream"):
        try:
            content = await reply.read(config.max_response_bytes)
        except TooLarge as exc:
            return bad_body_failure(channel.name, f"answered a body where {exc}")
        except TRANSPORT_ERRORS as exc:
            return transport_failure(channel.name, exc, "response")
        return _check_body(channel.name, content, call.endpoint.operation) or bad_body_failure(
            channel.name, "answered a stream request without a stream")
    first = await first_event(channel, reply, first_by)
    if isinstance(first, Failure):
        return first
    problem = first_event_problem(call.endpoint.operation, first)
    if problem is not None:
        reply.close()
        return bad_body_failure(channel.name, problem)
    overhead += time.perf_counter() - answered
    call.overhead = overhead
    headers = {**STREAM_HEADERS, OVERHEAD_HEADER: f"{overhead * 1000:.3f}"}
    return StreamAnswer(pass_through(channel, reply, first, config.idle_timeout, record, key.redaction), reply.status,
                        reply.content_type, headers)


async def _open_bytes(channel: Channel, reply: UpstreamReply, call: Call, key: ChannelKey, first_by: float,
                      record: Callable[[bool], None], overhead: float, answered: float) -> StreamAnswer | Failure:
    """An answer that is not JSON (audio, plain text, subtitles): relayed as it arrives, with its content type,
    once its first bytes are in (until then a failure can still move to the next channel)."""
    # an empty answer (a transcript of silence in text format) is still an answer
    first = await first_chunk(channel, reply, first_by, allow_empty=True)
    if isinstance(first, Failure):
        return first
    overhead += time.perf_counter() - answered
    call.overhead = overhead
    chunks = pass_bytes(channel, reply, first, channel.config.idle_timeout, record)
    return StreamAnswer(key.redaction.stream(chunks) if key.redaction else chunks, reply.status, reply.content_type,
                        {OVERHEAD_HEADER: f"{overhead * 1000:.3f}"})


def _is_event_stream(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "text/event-stream"


def _is_json(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


async def attempt_once(channel: Channel, call: Call, services: Services, time_left: float) -> Answer | StreamAnswer | Failure:
    """One try on one channel outside failover and its concurrency slots (a channel probe); a key set aside is tried too."""
    state = services.health.of(channel)
    key = services.health.next_key(channel, state, set(), time.monotonic()) or channel.keys[0]
    return await _attempt(channel, state, key, call, services, time_left, "")
