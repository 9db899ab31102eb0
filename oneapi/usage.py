"""Token usage of one request: read from the upstream's own fields, normalised across vendors, estimated when absent.

Every vendor names the same four numbers differently; this module turns each into `Usage`, and prices it.
No tokenizer is ever loaded: an offline estimate must not depend on a download at start-up.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator, Mapping

import orjson

from .config import Price
from .nesting import nests_deeper

# an image or audio part of unknown size: a flat guess, in tokens (a 512x512 image tile is ~255-765 tokens)
MEDIA_PART_TOKENS = 800  # an estimate for records; prompt_token_bound's BOUND_IMAGE is the reservation's ceiling
# per-message framing tokens of chat formats (role markers, separators)
MESSAGE_OVERHEAD_TOKENS = 4
# bytes of the end of a stream kept to find the usage event in; the usage event is the last or next to last
STREAM_TAIL_BYTES = 16 * 1024

# the most tokens one request is billed for: past every context window; a larger count is a broken upstream
MAX_REQUEST_TOKENS = 100_000_000

log = logging.getLogger("oneapi.usage")

# bodies up to this size are parsed whole to find their usage
WHOLE_PARSE_BYTES = 32 * 1024

_USAGE_KEY = b'"usage"'
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one request. `prompt_tokens` includes `cached_tokens`; `completion_tokens` includes `reasoning_tokens`."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class RejectedUsage(ValueError):
    """A usage value no vendor could mean: negative, fractional, not finite, not a number, or past the bound."""


def _int(value: Any) -> int:
    if type(value) is int and 0 <= value <= MAX_REQUEST_TOKENS:
        return value
    if value is None:
        return 0
    if type(value) is float and value.is_integer() and 0 <= value <= MAX_REQUEST_TOKENS:  # 12.0 from a JSON writer
        return int(value)
    raise RejectedUsage(_described(value))


def _described(value: Any) -> str:
    """A rejected value for the log: a number as it is, anything else by its type and size (never its text)."""
    if type(value) in (int, float):
        return f"{value!r}"
    return f"a {type(value).__name__}" + (f" of {len(value)}" if isinstance(value, (str, list, dict)) else "")


def normalise_usage(raw: Any) -> Usage | None:
    """One vendor usage object as `Usage`; None when it carries no token counts at all, or a count that is not
    a plausible whole number of tokens (logged; the request is then billed by the offline estimate)."""
    if not isinstance(raw, dict):
        return None
    try:
        return _normalised(raw)
    except RejectedUsage as exc:
        log.warning("upstream usage rejected: a count is %s (counts are whole numbers 0..%d); the request is estimated",
                    exc, MAX_REQUEST_TOKENS)
        return None


def _normalised(raw: dict[str, Any]) -> Usage | None:
    if "prompt_tokens" in raw or "completion_tokens" in raw:
        # OpenAI and everyone compatible with it; DeepSeek adds prompt_cache_hit_tokens
        prompt = _int(raw.get("prompt_tokens"))
        completion = _int(raw.get("completion_tokens"))
        if not completion and "total_tokens" in raw:
            completion = max(0, _int(raw.get("total_tokens")) - prompt)
        prompt_details = raw.get("prompt_tokens_details")
        completion_details = raw.get("completion_tokens_details")
        cached = _int(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0
        cached = cached or _int(raw.get("prompt_cache_hit_tokens"))
        reasoning = _int(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0
        return Usage(prompt, completion, min(cached, prompt), min(reasoning, completion))
    if "input_tokens" in raw or "output_tokens" in raw:
        # Messages-style APIs (and OpenAI images/responses): cache reads and writes are outside input_tokens there
        cache_read = _int(raw.get("cache_read_input_tokens"))
        input_details = raw.get("input_tokens_details")
        output_details = raw.get("output_tokens_details")
        prompt = _int(raw.get("input_tokens"))
        if cache_read or "cache_creation_input_tokens" in raw:
            prompt += cache_read + _int(raw.get("cache_creation_input_tokens"))
        elif isinstance(input_details, dict):
            cache_read = _int(input_details.get("cached_tokens"))
        reasoning = _int(output_details.get("reasoning_tokens")) if isinstance(output_details, dict) else 0
        completion = _int(raw.get("output_tokens"))
        return Usage(prompt, completion, min(cache_read, prompt), min(reasoning, completion))
    if "promptTokenCount" in raw or "candidatesTokenCount" in raw:
        # generateContent usageMetadata: thoughts are billed as output but counted apart from candidates
        thoughts = _int(raw.get("thoughtsTokenCount"))
        prompt = _int(raw.get("promptTokenCount"))
        return Usage(prompt, _int(raw.get("candidatesTokenCount")) + thoughts, min(_int(raw.get("cachedContentTokenCount")), prompt), thoughts)
    return None


def _usage_in_event(payload: Any) -> Usage | None:
    if not isinstance(payload, dict):
        return None
    found = normalise_usage(payload.get("usage"))
    if found is None:
        for value in payload.values():  # vendor extension objects such as x_<vendor>.usage
            if isinstance(value, dict) and "usage" in value:
                found = normalise_usage(value["usage"])
                if found is not None:
                    break
    return found


def _object_at(content: bytes, start: int) -> Any:
    """The JSON object starting at content[start] ('{'), parsed: the first balanced closing brace that parses.
    Brace counting runs in C (bytes.count); a usage object is a few hundred bytes of numbers."""
    end = start
    limit = min(len(content), start + 8192)
    while True:
        end = content.find(b"}", end + 1, limit)
        if end < 0:
            return None
        piece = content[start:end + 1]
        if piece.count(b"{") == piece.count(b"}"):
            try:
                return orjson.loads(piece)
            except orjson.JSONDecodeError:
                continue  # a brace inside a string: look further


def usage_from_body(content: bytes) -> Usage | None:
    """Usage of a non-stream OpenAI-shaped body. A small body is parsed whole (orjson beats any scan there);
    a large one (an embeddings body can be megabytes of floats) only from its last "usage" object."""
    if len(content) <= WHOLE_PARSE_BYTES:
        try:
            return _usage_in_event(orjson.loads(content))
        except orjson.JSONDecodeError:
            return None
    for match in _usage_objects_from_end(content):
        at = match.start()
        if at and content[at - 1] == 0x5C:  # text inside a string
            continue
        found = normalise_usage(_object_at(content, match.end() - 1))
        if found is not None:
            return found
    return None


def _usage_objects_from_end(buffer: bytes) -> Iterator[re.Match[bytes]]:
    """Each `"usage": {` in `buffer`, the last first; `"usage": null` is passed over."""
    end = len(buffer)
    while (at := buffer.rfind(_USAGE_KEY, 0, end)) >= 0:
        end = at
        match = _USAGE_OBJECT.match(buffer, at)
        if match is not None:
            yield match


def usage_from_sse(tail: bytes) -> Usage | None:
    """The usage reported by the last SSE event of `tail` that has one (a final usage chunk, a finish chunk
    with usage, or an x_<vendor>.usage extension). Found from the end: only the lines that hold a usage object
    are parsed (OpenAI-format chunks carry `"usage": null` in every event)."""
    for match in _usage_objects_from_end(tail):
        at = match.start()
        line_start = tail.rfind(b"\n", 0, at) + 1
        if not tail.startswith(b"data:", line_start):
            continue
        line_end = tail.find(b"\n", at)
        try:
            found = _usage_in_event(orjson.loads(tail[line_start + 5:line_end if line_end >= 0 else len(tail)]))
        except orjson.JSONDecodeError:
            continue  # the cut first event of the tail, or not JSON
        if found is not None:
            return found
    return None


def event_boundary(buffer: bytes) -> int:
    """Length of the prefix of `buffer` that ends with a complete SSE event (LF or CRLF framing); 0 if none."""
    if buffer.endswith(b"\n\n") or buffer.endswith(b"\r\n\r\n"):
        return len(buffer)  # the usual case: the upstream sends whole events
    lf = buffer.rfind(b"\n\n")
    crlf = buffer.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


def _event_span(buffer: bytes, at: int) -> tuple[int, int, int]:
    """(start, end of data, end after the blank line) of the complete SSE event in `buffer` holding buffer[at]."""
    lf, crlf = buffer.rfind(b"\n\n", 0, at), buffer.rfind(b"\r\n\r\n", 0, at)
    start = max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
    lf, crlf = buffer.find(b"\n\n", at), buffer.find(b"\r\n\r\n", at)
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return start, crlf, crlf + 4
    if lf >= 0:
        return start, lf, lf + 2
    return start, len(buffer), len(buffer)


# what a StreamTap hides from a client that did not ask for usage, when the gateway asked for it: an OpenAI-format
# upstream's usage-only chunk (choices: []). A translated stream leaves usage out itself (streams.StreamTranslator).
HIDE_USAGE_CHUNK = "chunk"


def _without_usage(event: bytes) -> bytes:
    """The event (without its blank line) as the client would have had it without asking for usage: b"" to drop it."""
    for line in event.splitlines():
        if not line.startswith(b"data:"):
            continue
        try:
            payload = orjson.loads(line[5:])
        except orjson.JSONDecodeError:
            return event
        if not isinstance(payload, dict) or not isinstance(payload.get("usage"), dict):
            return event
        return b"" if payload.get("choices") == [] else event
    return event


def hide_usage(events: bytes) -> bytes:
    """Complete SSE events with the usage the client did not ask for removed; only the events that hold a
    usage object are parsed."""
    out: list[bytes] = []
    done = 0  # events[:done] is settled
    for match in _USAGE_OBJECT.finditer(events):
        if match.start() < done:
            continue  # a second usage object in an event already seen
        start, data_end, end = _event_span(events, match.start())
        kept = _without_usage(events[start:data_end])
        out.append(events[done:start])
        if kept:
            out.append(kept + events[data_end:end])
        done = end
    if not out:
        return events
    out.append(events[done:])
    return b"".join(out)


class StreamTap:
    """Passes an OpenAI-format SSE stream through while keeping what is needed to account for it:
    the tail (for the usage event), the number of data events (for an estimate), and whether it ended.
    With `hide_usage`, the usage the gateway asked for (and the client did not) is removed from the client's view."""

    def __init__(self, chunks: AsyncIterator[bytes], hide_usage: str | None):
        self._chunks = chunks
        self._strip = hide_usage is not None
        self._tail: deque[bytes] = deque()
        self._tail_size = 0
        self.data_events = 0
        self.bytes_out = 0
        self.completed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        pending = b""
        async for chunk in self._chunks:
            self._keep(chunk)
            self.data_events += chunk.count(b"data:")
            if self._strip:
                if pending:
                    chunk, pending = pending + chunk, b""
                cut = event_boundary(chunk)  # usually all of it: the relay passes whole events on
                if cut < len(chunk):
                    chunk, pending = chunk[:cut], chunk[cut:]
                    if not chunk:
                        continue
                chunk = hide_usage(chunk)  # one scan; the same bytes back when there is no usage
                if not chunk:
                    continue
            self.bytes_out += len(chunk)
            yield chunk
        if pending:
            self.bytes_out += len(pending)
            yield pending
        self.completed = True

    def _keep(self, chunk: bytes) -> None:
        self._tail.append(chunk)
        self._tail_size += len(chunk)
        while self._tail_size - len(self._tail[0]) >= STREAM_TAIL_BYTES:
            self._tail_size -= len(self._tail.popleft())

    def usage(self) -> Usage | None:
        return usage_from_sse(b"".join(self._tail))

    def estimated_completion_tokens(self) -> int:
        """About one token per content event (OpenAI-format streams send a token or two per delta),
        less the role and finish events and [DONE]."""
        return max(0, self.data_events - 3)


# --- offline estimates --------------------------------------------------------------------------


def estimate_text_tokens(text: str) -> int:
    """~4 ASCII characters per token; about one token per other character (CJK, symbols)."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    return (ascii_chars + 3) // 4 + (len(text) - ascii_chars)


def _walk_tokens(value: Any) -> int:
    """The estimate of every text in `value`, walked without recursion (a body may nest deeper than any stack)."""
    tokens = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            tokens += MEDIA_PART_TOKENS if item.startswith("data:") else estimate_text_tokens(item)
        elif isinstance(item, dict):
            if item.get("type") in MEDIA_PART_TYPES:
                tokens += MEDIA_PART_TOKENS
            else:
                stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return tokens


def estimate_prompt_tokens(body: Mapping[str, Any]) -> int:
    """Prompt tokens of an OpenAI-shaped request body, estimated from its text (messages, prompt, input, tools)."""
    tokens = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        tokens += sum(_walk_tokens(m.get("content")) + _walk_tokens(m.get("tool_calls")) + MESSAGE_OVERHEAD_TOKENS
                      for m in messages if isinstance(m, dict))
    for field in ("prompt", "input", "tools", "functions"):
        if field in body:
            tokens += _walk_tokens(body[field])
    return max(1, tokens)


# --- upper bounds, for reservations -------------------------------------------------------------
# Every byte-level tokenizer the vendors use (BPE, SentencePiece with byte fallback) spends at least one byte of
# text per token, so a text's UTF-8 bytes bound its tokens; what a vendor adds around the text is bounded below.

BOUND_PER_STRING = 1  # a SentencePiece word-start marker can stand alone before a text
BOUND_PER_MESSAGE = 8  # role markers and separators of one chat message (OpenAI counts 3 or 4)
BOUND_PER_REQUEST = 8  # the tokens that prime the reply
BOUND_TOOLS = 600  # the tool-use system prompt a vendor adds once tools are declared (Anthropic: up to 530)
# one image by URL or inline: above what gpt-4o (1,445), gpt-4.1-mini/o4-mini (~2,650) and Claude up to 4.x (~1,600)
# count for an image they downscaled; a reserve, not a bound, for models that count more (README: gpt-4o-mini, Gemini)
BOUND_IMAGE = 2700
# audio or a document (PDF) by URL: a flat reserve, not a bound (its length is unknown before it is read);
# inline audio is bounded by its own base64 size instead (32 tokens a second is less than any codec's bytes)
BOUND_REMOTE_MEDIA = 3000
MEDIA_PART_TYPES = frozenset({"image_url", "input_image", "image", "input_audio", "audio", "file", "input_file", "document"})
_MEDIA_KEYS = frozenset({"inline_data", "inlineData", "file_data", "fileData"})


def _media_bound(part: Any) -> int:
    """The reserve of one media part: an image's ceiling, inline audio's base64 size, else the flat remote reserve."""
    inline = 0  # the size of the part's inline data (base64, or a data: URL), if it has any
    kind = ""
    stack = [part]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if item.startswith("data:"):
                kind, inline = kind or item[5:11], max(inline, len(item))
        elif isinstance(item, dict):
            for key in ("type", "mime_type", "mimeType", "media_type"):
                value = item.get(key)
                if not kind and isinstance(value, str) and ("image" in value or "audio" in value):
                    kind = "image" if "image" in value else "audio"
            if isinstance(item.get("data"), str):
                inline = max(inline, len(item["data"]))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    if kind.startswith("image"):
        return BOUND_IMAGE
    if kind.startswith("audio") and inline:
        return inline
    return BOUND_REMOTE_MEDIA


def prompt_token_bound(body: Mapping[str, Any]) -> int:
    """Prompt tokens no vendor counts more of for this body: the UTF-8 bytes of every text in it and of the keys
    of nested objects (a tool schema's or a tool call's keys are rendered into the prompt), media parts at their
    bound, and the framing each vendor adds. Walked without recursion, whatever the body's shape (any
    client dialect) or depth."""
    tokens = BOUND_PER_REQUEST
    items: list[Any] = []
    for key, value in body.items():  # the body's own keys and a turn's own keys (role, content) are not prompt text
        if key in ("messages", "contents") and isinstance(value, list):
            tokens += BOUND_PER_MESSAGE * len(value)
            for turn in value:
                if isinstance(turn, dict):
                    items.extend(turn.values())
                else:
                    items.append(turn)
        else:
            items.append(value)
    if body.get("tools") or body.get("functions"):
        tokens += BOUND_TOOLS
    while items:
        item = items.pop()
        if isinstance(item, str):
            tokens += _media_bound(item) if item.startswith("data:") else len(item.encode("utf-8", "surrogatepass")) + BOUND_PER_STRING
        elif isinstance(item, dict):
            if item.get("type") in MEDIA_PART_TYPES:
                tokens += _media_bound(item)
                continue
            for key, value in item.items():
                if key in _MEDIA_KEYS:
                    tokens += _media_bound(value)
                    continue
                tokens += len(str(key).encode("utf-8", "surrogatepass")) + BOUND_PER_STRING
                items.append(value)
        elif isinstance(item, list):
            items.extend(item)
        elif item is not None and not isinstance(item, bool):
            tokens += len(str(item))  # a number in a tool schema is rendered as text
    return tokens


def requested_choices(body: Mapping[str, Any]) -> int:
    """How many answers the client asked for (`n`): each may run to max_tokens."""
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def requested_completion_tokens(body: Mapping[str, Any]) -> int | None:
    """The client's own cap on output tokens, if it set one (for all its choices together)."""
    for field in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value * requested_choices(body)
    return None


def estimate_completion_from_body(content: bytes) -> int:
    """Completion tokens of a non-stream body that reported none, from the text it carries."""
    try:
        payload = orjson.loads(content)
    except orjson.JSONDecodeError:
        return 0
    if not isinstance(payload, dict):
        return 0
    if nests_deeper(payload):
        return len(content) // 4  # too deep to walk: bounded by its size instead
    total = 0
    for choice in payload.get("choices") or ():
        if isinstance(choice, dict):
            message = choice.get("message")
            total += _walk_tokens(message.get("content")) + _walk_tokens(message.get("tool_calls")) if isinstance(message, dict) else 0
            total += _walk_tokens(choice.get("text"))
    return total


# --- pricing ------------------------------------------------------------------------------------

NANO_USD = 1_000_000_000  # costs are integers of 1e-9 USD: sums stay exact across millions of requests


def cost_nano(usage: Usage, price: Price, ratio: float = 1.0) -> int:
    """Cost in 1e-9 USD: (uncached input, cached input, output) tokens at their prices, times the group ratio."""
    cached_price = price.input if price.cached_input is None else price.cached_input
    per_million = ((usage.prompt_tokens - usage.cached_tokens) * price.input
                   + usage.cached_tokens * cached_price + usage.completion_tokens * price.output)
    return round(per_million * ratio * (NANO_USD / 1_000_000))


FREE = Price()


def nano_to_usd(nano: int | float) -> float:
    return round(nano / NANO_USD, 9)
