"""What translating a stream costs in CPU, next to passing one through: in process, no sockets.

    python bench/translate_stream.py [--streams 300] [--chunk-size 0] [--rounds 5]

The bench's 50-delta Messages stream goes through the real SSE parser, stream translator and
`_translate_stream`; the bench's 50-event OpenAI stream through `pass_through`. Both are drained
through the StreamTap a relayed stream gets, for a client that did not ask for usage: the pass-through
tap hides the usage chunk, the translator leaves usage out itself and hands it to the meter. `--chunk-size 0` hands each body over in one read, as the loopback mock
does; a size cuts it into reads of that many bytes. Prints CPU µs per stream and per upstream event,
and what the extra CPU of a translated stream means for a served worker: with a pass-through rate R
(streams/s, whose inverse includes everything a served stream costs), a translated stream takes
1/R + extra, so the translated rate is R / (1 + extra * R). The target is at least 50%.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, AsyncIterator, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))  # the in-memory upstream reply the tests use too

from fakevendor import InMemoryReply
from mock_upstream import (
    ANTHROPIC_TEXT_DELTAS,
    OPENAI_STREAM_EVENTS,
    build_anthropic_stream,
    build_openai_stream,
)

from oneapi.metering import translated_body, upstream_body
from oneapi.streams import StreamTranslator
from oneapi.framing import MAX_EVENT, PARSERS
from oneapi.passthrough import pass_through
from oneapi.providers import load_providers
from oneapi.redaction import Redaction, key_pieces
from oneapi.translate import _first_chunks, _translate_stream
from oneapi.usage import StreamTap

CLIENT_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def reads(body: bytes, size: int) -> list[bytes]:
    if size <= 0:
        return [body]
    return [body[i:i + size] for i in range(0, len(body), size)]


async def drain(make: Callable[[], tuple[AsyncIterator[bytes], Any]], hide: str | None, count: int) -> tuple[float, bytes, Any]:
    """Seconds for `count` streams, and the last stream's bytes and usage (to check the path did its work)."""
    last: list[bytes] = []
    usage = None
    started = time.process_time()  # CPU time: another process on the same cores does not count
    for _ in range(count):
        chunks, reported = make()
        tap = StreamTap(chunks, hide)
        last = [chunk async for chunk in tap]
        usage = reported() if reported is not None else tap.usage()  # as MeteredStream.close reads it
    return time.process_time() - started, b"".join(last), usage


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=300, help="streams per round and path")
    parser.add_argument("--chunk-size", type=int, default=0, help="bytes per upstream read; 0: the whole body in one read")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the best one counts")
    parser.add_argument("--pass-through-rate", type=float, default=423.0,
                        help="pass-through streams/s of one served worker (bench/run.py's stream scenario), for the estimate")
    parser.add_argument("--no-redaction", action="store_true", help="relay without redacting a channel key (to price redaction)")
    args = parser.parse_args()

    providers, _ = load_providers(ROOT / "providers.d")
    operation = providers["anthropic"].operations["chat"]
    channel = SimpleNamespace(name="bench", options=dict(providers["anthropic"].options), config=SimpleNamespace(max_event_bytes=MAX_EVENT))
    redaction = Redaction() if args.no_redaction else Redaction(key_pieces("sk-bench-secret-0123456789abcdef"))
    anthropic_reads = reads(build_anthropic_stream(), args.chunk_size)
    openai_reads = reads(build_openai_stream(), args.chunk_size)
    request, hide = translated_body(CLIENT_BODY, True, "chat")
    request = {**request, "model": "claude-sonnet-4-5"}
    _, passed_hide = upstream_body(b"", CLIENT_BODY, "gpt-4o-mini", "gpt-4o-mini", True, "chat", "openai")
    record: Callable[[bool], None] = lambda ok: None

    def translated() -> tuple[AsyncIterator[bytes], Any]:
        reply = InMemoryReply(anthropic_reads)
        translator = StreamTranslator(operation.stream, request, channel.options, client_usage=False if hide else None)

        async def chunks() -> AsyncIterator[bytes]:  # the opening read as translate.attempt does it, then the stream
            parser = PARSERS[operation.stream.framing]()
            opening = await _first_chunks(channel, translator, parser, reply, asyncio.get_running_loop().time() + 600, redaction)  # type: ignore[arg-type]
            async for piece in _translate_stream(channel, translator, parser, reply, opening, redaction, 600.0, record):  # type: ignore[arg-type]
                yield piece

        return chunks(), translator.reported_usage

    def passed() -> tuple[AsyncIterator[bytes], Any]:
        reply = InMemoryReply(openai_reads[1:])
        return pass_through(channel, reply, openai_reads[0], 600.0, record, redaction), None  # type: ignore[arg-type]

    best_translated = best_passed = float("inf")
    out_translated = out_passed = b""
    for _ in range(args.rounds):
        seconds, out_translated, usage_translated = await drain(translated, None, args.streams)
        best_translated = min(best_translated, seconds / args.streams)
        seconds, out_passed, usage_passed = await drain(passed, passed_hide, args.streams)
        best_passed = min(best_passed, seconds / args.streams)

    assert out_translated.endswith(b"data: [DONE]\n\n") and out_translated.count(b"data: ") == ANTHROPIC_TEXT_DELTAS + 3, out_translated[-300:]
    assert out_passed.endswith(b"data: [DONE]\n\n"), out_passed[-200:]
    assert b'"usage"' not in out_translated and b'"choices":[]' not in out_passed, "usage the client did not ask for"
    assert usage_translated is not None and usage_passed is not None and not usage_translated.estimated
    events_translated = len([e for e in b"".join(anthropic_reads).split(b"\n\n") if e.strip()])
    report: dict[str, Any] = {
        "translated": (best_translated, events_translated),
        "pass-through": (best_passed, OPENAI_STREAM_EVENTS),
    }
    print(f"{'path':<14}{'µs/stream':>12}{'events':>8}{'µs/event':>10}")
    for name, (seconds, events) in report.items():
        print(f"{name:<14}{seconds * 1e6:>12.1f}{events:>8}{seconds * 1e6 / events:>10.2f}")
    extra = best_translated - best_passed
    # a served stream also pays a fixed cost (request, routing, ASGI, sockets) that both paths share
    served = 1 / (1 + extra * args.pass_through_rate)
    print(f"translated / pass-through CPU here: {best_translated / best_passed:.2f}x; extra per translated stream: {extra * 1e6:.0f} µs")
    print(f"at {args.pass_through_rate:g} pass-through streams/s served, that extra alone would allow {served:.0%} of that rate")


if __name__ == "__main__":
    asyncio.run(main())
