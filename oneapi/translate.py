"""The translated relay: one attempt on a channel whose vendor does not speak OpenAI (or needs a signer).

relay.py hands an operation here when `Operation.translated` is set, and gets an Answer, a StreamAnswer or a Failure back. The attempt maps the
request (mapping.py), signs it (signers.py), sends it through the shared upstream client,
and maps the answer back: a body through the response mapping, a stream through its
framing (framing.py) and state machine (streams.py), an error through the provider's
`errors:` section into OpenAI's error shape, classified retryable or not.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, AsyncIterator, Callable, Mapping
from urllib.parse import urlencode

import orjson
from yarl import URL

from .answers import answer_problem
from .asgi import Answer, StreamAnswer
from .errors import GatewayError
from .failures import Failure, bad_body_failure, parse_retry_after, transport_failure
from .passthrough import cut_stream_event, first_byte_deadline, first_event, no_first_event, pass_through
from .framing import PARSERS, FramingError
from .mapping import ErrorSpec, MappingError, map_request, map_response
from .nesting import MAX_NESTING, nests_deeper
from .providers import Operation, Provider, Template
from .redaction import Redaction, redact_outcome
from .routing import Channel, ChannelKey
from .signers import SignerError, derived_secrets, sign
from .streams import StreamTranslator
from .upstream import TRANSPORT_ERRORS, Timeouts, TooLarge, Upstream

log = logging.getLogger("oneapi.translate")

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

# what the engine fills in when a response mapping leaves it out: OpenAI's envelope per operation
_ENVELOPES: dict[str, tuple[str, str | None]] = {
    "chat": ("chat.completion", "chatcmpl-"),
    "completions": ("text_completion", "cmpl-"),
    "embeddings": ("list", None),
}


async def attempt(channel: Channel, key: ChannelKey, operation: Operation, upstream_model: str, body: dict[str, Any],
                  stream: bool, upstream: Upstream, timeouts: Timeouts, record: Callable[[bool], None],
                  withhold_usage: bool = False) -> Answer | StreamAnswer | Failure:
    """One try on one channel: an answer for the client, or the Failure that decides what the relay does next.
    `withhold_usage`: the body asks for stream usage the client did not; a translated stream leaves it out of
    the chunks and hands it to the meter as `StreamAnswer.usage`. Nothing of the key, nor of what a signer
    derived from it (an access token, a JWT), is left in what the client would receive."""
    derived: list[str] = []
    outcome = await _attempt(channel, key, operation, upstream_model, body, stream, upstream, timeouts, record, withhold_usage, derived)
    # (relay.py redacts with the key's own pieces; what the signer derived is known here only)
    return redact_outcome(outcome, key.redaction.with_derived(derived)) if derived else outcome


async def _attempt(channel: Channel, key: ChannelKey, operation: Operation, upstream_model: str, body: dict[str, Any],
                   stream: bool, upstream: Upstream, timeouts: Timeouts, record: Callable[[bool], None],
                   withhold_usage: bool, derived: list[str]) -> Answer | StreamAnswer | Failure:
    provider = channel.provider
    config = channel.config
    spec = operation.stream
    request = {**body, "model": upstream_model}
    try:
        payload = map_request(operation.mapping, request, channel.options) if operation.mapping else request
    except MappingError as exc:
        log.error("channel %s: request mapping failed: %s", channel.name, exc)
        return Failure(GatewayError(500, f"Provider '{provider.name}' could not map this request: {exc}", type="server_error",
                                    code="mapping_failed"), channel_fault=False)
    raw = orjson.dumps(payload)
    redaction = key.redaction
    url = build_url(channel, operation, upstream_model, key, stream)
    headers = {**key.headers, **operation.headers, "Content-Type": "application/json"}
    if stream:
        headers.update(operation.stream_headers)
    if provider.auth.signer:
        try:
            url, headers = await sign(provider.auth, key.secret, channel.options, operation.method, url, headers, raw)
        except SignerError as exc:
            log.warning("channel %s: signing failed: %s", channel.name, key.redaction.text(str(exc)))
            return Failure(GatewayError(502, f"Could not authenticate to the upstream of channel '{channel.name}': {exc.public}",
                                        type="upstream_error", code="upstream_auth_failed"))
        derived.extend(derived_secrets(provider.auth, url, headers))
    redaction = key.redaction.with_derived(derived) if derived else key.redaction
    first_by = first_byte_deadline(channel, timeouts.total)
    try:
        # sent exactly as built: a signature covers the path bytes (e.g. %3A in a model id); a stream's
        # ttft_timeout counts from here, so a vendor that takes the request and never answers fails over
        async with asyncio.timeout_at(first_by if stream else None):
            reply = await upstream.send(operation.method, URL(url, encoded=True), headers, raw, timeouts)  # type: ignore[arg-type]
    except TRANSPORT_ERRORS as exc:
        log.warning("channel %s: upstream request failed: %s", channel.name, type(exc).__name__)
        return transport_failure(channel.name, exc)

    if reply.status >= 400:
        content = await _read_quietly(reply, config.max_response_bytes)
        return upstream_failure(provider, channel.name, reply.status, content, key.secret, reply.headers.get("Retry-After"))

    if stream and not (spec is not None and _is_json(reply.content_type) and spec.framing in ("sse", "aws_eventstream")):
        # wait for the first event before answering: a slow, failing or empty start can still fail over
        if spec is None:
            first = await first_event(channel, reply, first_by)
            if isinstance(first, Failure):
                return first
            return StreamAnswer(pass_through(channel, reply, first, config.idle_timeout, record, redaction), reply.status,
                                reply.content_type, STREAM_HEADERS)
        translator = StreamTranslator(spec, request, channel.options, client_usage=False if withhold_usage else None)
        parser = PARSERS[spec.framing](config.max_event_bytes)
        opening = await _first_chunks(channel, translator, parser, reply, first_by, redaction)
        if isinstance(opening, Failure):
            return opening
        answer = StreamAnswer(_translate_stream(channel, translator, parser, reply, opening, redaction, config.idle_timeout, record),
                              headers=STREAM_HEADERS)
        answer.usage = translator.reported_usage
        return answer

    try:
        content = await reply.read(config.max_response_bytes)
    except TooLarge as exc:
        return bad_body_failure(channel.name, f"answered a body where {exc}")
    except TRANSPORT_ERRORS as exc:
        log.warning("channel %s: reading upstream body failed: %s", channel.name, type(exc).__name__)
        return transport_failure(channel.name, exc, "response")
    try:
        vendor = orjson.loads(content)
    except orjson.JSONDecodeError:
        return bad_body_failure(channel.name, "answered with a body that is not JSON")
    if nests_deeper(vendor):  # its mapping and re-serialisation would run out of stack
        return bad_body_failure(channel.name, f"answered with a body nested more than {MAX_NESTING} levels deep")
    if is_error_body(provider.errors, vendor):
        return upstream_failure(provider, channel.name, None, content, key.secret, None)
    if stream:
        return bad_body_failure(channel.name, "answered a stream request without a stream")
    try:
        answer = map_response(operation.mapping, vendor, request, channel.options) if operation.mapping else vendor
    except MappingError as exc:
        log.error("channel %s: response mapping failed: %s", channel.name, key.redaction.text(str(exc)))
        return bad_body_failure(channel.name, f"answered with a body provider '{provider.name}' could not map ({exc})")
    answer = with_envelope(operation.name, answer, request)
    problem = answer_problem(operation.name, answer)
    if problem is not None:
        return bad_body_failure(channel.name, problem)
    record(True)
    return Answer(orjson.dumps(answer))


def build_url(channel: Channel, operation: Operation, model: str, key: ChannelKey, stream: bool) -> str:
    path: Template = operation.stream_path if stream and operation.stream_path else operation.path
    query = operation.stream_query if stream and operation.stream_query is not None else operation.query
    url = channel.endpoint + path.render(model, key.secret, channel.options)
    params = [(name, t.render(model, key.secret, channel.options, escape=False)) for name, t in query]
    params.extend(key.query)
    if params:
        url += ("&" if "?" in url else "?") + urlencode(params)
    return url


def with_envelope(operation: str, answer: Any, request: Mapping[str, Any]) -> Any:
    """Fill OpenAI's id / object / created / model where the mapping left them out."""
    envelope = _ENVELOPES.get(operation)
    if envelope is None or not isinstance(answer, dict):
        return answer
    kind, id_prefix = envelope
    head: dict[str, Any] = {}
    if id_prefix is not None:
        head["id"] = answer.get("id") or id_prefix + uuid.uuid4().hex
    head["object"] = kind
    if id_prefix is not None:
        head["created"] = answer.get("created") or int(time.time())
    head["model"] = answer.get("model") or request.get("model")
    return {**answer, **head}


def is_error_body(spec: ErrorSpec | None, vendor: Any) -> bool:
    """A 2xx body that is an error all the same (the provider's `errors.when`)."""
    if spec is None or spec.when is None:
        return False
    doc = dict(vendor) if isinstance(vendor, dict) else {"_data": vendor}
    try:
        return _truthy(spec.when.search(doc))
    except MappingError:
        return False


def describe_error(spec: ErrorSpec | None, status: int | None, content: bytes) -> tuple[int, dict[str, Any], bool | None]:
    """(status, OpenAI error object, retryable or None for 'decide by status') for a vendor error body."""
    try:
        parsed: Any = orjson.loads(content)
    except orjson.JSONDecodeError:
        parsed = None
    if nests_deeper(parsed):
        parsed = None  # read as text: its message could not even be printed
    doc = dict(parsed) if isinstance(parsed, dict) else {"_data": parsed if parsed is not None else content.decode("utf-8", "replace")}
    doc["_status"] = status

    def pick(expr: Any) -> Any:
        if expr is None:
            return None
        try:
            return expr.search(doc)
        except MappingError:
            return None

    message = pick(spec.message) if spec else None
    if message is None:
        inner = doc.get("error")
        message = (inner.get("message") if isinstance(inner, dict) else inner) or doc.get("message") or doc.get("_data")
    message = str(message or f"Upstream answered HTTP {status}.").strip()[:2000]
    if status is None:
        mapped = pick(spec.status) if spec else None
        status = int(mapped) if isinstance(mapped, (int, float)) else 502
    error_type = pick(spec.type) if spec else None
    code = pick(spec.code) if spec else None
    retryable = pick(spec.retryable) if spec else None
    error = {
        "message": message,
        "type": str(error_type) if error_type is not None else ("invalid_request_error" if status < 500 else "upstream_error"),
        "code": str(code) if code is not None else f"upstream_{status}",
        "param": None,
    }
    return status, error, (bool(retryable) if retryable is not None else None)


def upstream_failure(provider: Provider, channel_name: str, status: int | None, content: bytes, secret: str,
                     retry_after: str | None) -> Failure:
    """A vendor error: the client's own mistakes are answered as they are; the rest move on to the next channel."""
    status, error, retryable = describe_error(provider.errors, status, content)
    if secret:
        error["message"] = error["message"].replace(secret, "***")
    if retryable is None:
        retryable = status in (401, 403, 408, 429) or status >= 500
    log.warning("channel %s: upstream error %s (%s)", channel_name, status, error["code"])
    if not retryable:
        client_status = status if 400 <= status < 600 else 400
        return Failure(GatewayError(client_status, error["message"], type=error["type"], code=error["code"]),
                       retryable=False, channel_fault=False, body=orjson.dumps({"error": error}))
    where = f"on channel '{channel_name}': {error['message']}"
    if status == 429:
        wait = parse_retry_after(retry_after)
        wait = wait if wait is not None and wait < 86400 else None  # an "inf" or a year is no promise to wait for
        return Failure(GatewayError(429, f"Upstream rate limit {where}", type="rate_limit_error", code="upstream_rate_limited",
                                    headers={"Retry-After": str(max(1, round(wait)))} if wait is not None else None),
                       channel_fault=False, rate_limited=True, retry_after=wait)
    if status in (401, 403):
        return Failure(GatewayError(502, f"Upstream rejected the credentials {where}", type="upstream_error", code="upstream_auth_failed"),
                       channel_fault=False, key_fault="auth")
    return Failure(GatewayError(502, f"Upstream error {status} {where}", type="upstream_error", code=str(error["code"])))


# how the reads before the client's answer left the stream
OPEN, ENDED, BROKEN = "open", "ended", "broken"


async def _first_chunks(channel: Channel, translator: StreamTranslator, parser: Any, reply: Any, first_by: float,
                        redaction: Redaction) -> tuple[list[bytes], str] | Failure:
    """The stream read and translated up to the first chunk that says something (text, a tool call, a finish,
    usage, the vendor's error: a bare role chunk does not), and how the stream stands. A stream that ends before
    one (`{}` as ndjson, comments alone), cannot be read before one, or is slow to start is a Failure, so the
    request can fail over instead of answering an empty success."""
    out: list[bytes] = []
    try:
        async with asyncio.timeout_at(first_by):
            while chunk := await reply.next_chunk():
                if _translate_opening(translator, parser.feed(chunk), redaction, out):
                    return out, OPEN
        if _translate_opening(translator, parser.close(), redaction, out):
            return out, ENDED
    except (FramingError, MappingError, orjson.JSONEncodeError, RecursionError) as exc:  # as in _translate_events
        if out:  # the events before the error are the client's, then the error, as later in the stream
            out.append(_unreadable(channel, exc, redaction))
            return out, BROKEN
        reply.close()
        return bad_body_failure(channel.name, f"answered a stream that could not be read ({exc})")
    except (TimeoutError, *TRANSPORT_ERRORS) as exc:
        return no_first_event(channel, reply, exc)
    reply.close()
    return bad_body_failure(channel.name, "ended its stream without an answer")


def _translate_opening(translator: StreamTranslator, events: list[Any], redaction: Redaction, out: list[bytes]) -> bool:
    """_translate_events for the reads before the client is answered; whether a chunk that says something came."""
    said = False
    for event in events:
        for piece in translator.feed(event):
            out.append(_sse(piece, redaction))
            said = said or _says_something(piece)
        if translator.failed:
            return True
    return said


def _says_something(chunk: dict[str, Any]) -> bool:
    if "error" in chunk or chunk.get("usage"):
        return True
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        if choice.get("finish_reason") or (isinstance(delta, dict) and any(v for k, v in delta.items() if k != "role")):
            return True
    return False


async def _translate_stream(channel: Channel, translator: StreamTranslator, parser: Any, reply: Any, opening: tuple[list[bytes], str],
                            redaction: Redaction, idle_timeout: float, record: Callable[[bool], None]) -> AsyncIterator[bytes]:
    """The client's stream: whatever one upstream read translates to goes out as one piece (whole events only),
    so a read holding many vendor events costs one write, not one per chunk."""
    out, state = opening  # the events translated so far, not yet sent
    ended = state != OPEN
    try:
        if state == BROKEN:
            yield b"".join(out)
            record(False)
            return
        if out and not translator.failed and not ended:
            yield b"".join(out)
            out.clear()
        while not translator.failed and not ended:
            async with asyncio.timeout(idle_timeout):
                chunk = await reply.next_chunk()
            if not chunk:
                break
            _translate_events(translator, parser.feed(chunk), redaction, out)
            if out:
                yield b"".join(out)
                out.clear()
        if translator.failed:
            if out:
                yield b"".join(out)
            record(True)  # the vendor answered; its error is the client's to see
            return
        if not ended:
            _translate_events(translator, parser.close(), redaction, out)
        if not translator.failed:
            out.extend(_sse(piece, redaction) for piece in translator.finish())
        if not translator.failed:
            out.append(b"data: [DONE]\n\n")
        yield b"".join(out)
        record(True)
    # an event nested too deep to map (RecursionError) or to re-serialise (orjson's limit) is a broken stream too
    except (FramingError, MappingError, orjson.JSONEncodeError, RecursionError) as exc:
        record(False)
        out.append(_unreadable(channel, exc, redaction))
        yield b"".join(out)
    except (TimeoutError, *TRANSPORT_ERRORS) as exc:
        record(False)
        yield cut_stream_event(channel.name, exc, idle_timeout)
    finally:
        reply.close()


def _translate_events(translator: StreamTranslator, events: list[Any], redaction: Redaction, out: list[bytes]) -> None:
    """Append the SSE bytes of `events`' OpenAI chunks to `out`; after a vendor error nothing more."""
    dumps = orjson.dumps
    redact = redaction.bytes if redaction else None
    for event in events:
        for piece in translator.feed(event):
            data = b"data: %b\n\n" % dumps(piece)  # (_sse, inlined for the common chunk)
            out.append(redact(data) if redact else data)
        if translator.failed:
            return


def _unreadable(channel: Channel, exc: Exception, redaction: Redaction) -> bytes:
    """The error event that ends a stream the framing or the rules could not read on."""
    log.warning("channel %s: stream translation failed: %s", channel.name, redaction.text(str(exc)))
    return _sse({"error": {"message": f"Upstream stream could not be read: {exc}", "type": "upstream_error",
                           "code": "upstream_bad_response", "param": None}}, redaction)


def _sse(obj: dict[str, Any], redaction: Redaction) -> bytes:
    return redaction.bytes(b"data: " + orjson.dumps(obj) + b"\n\n")


async def _read_quietly(reply: Any, limit: int) -> bytes:
    try:
        return await reply.read(limit)
    except (TooLarge, *TRANSPORT_ERRORS):
        return b""


def _is_json(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "application/json"


def _truthy(value: Any) -> bool:
    return not (value is None or value is False or value == "" or value == [] or value == {})
