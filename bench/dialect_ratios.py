"""Issue 11's three ratios and issue 12's Gemini and Responses ones, measured in one run: Anthropic Messages,
Gemini and OpenAI Responses clients next to an OpenAI chat one.

    python bench/dialect_ratios.py [--seconds 5] [--concurrency 50] [--rounds 2]

One gateway (1 worker) serves both an OpenAI channel and an Anthropic channel, both on one loopback aiohttp
upstream that answers with the bench's recorded bodies (mock_upstream.py: a 50-event OpenAI stream, a 50-delta
Messages stream, a chat completion). An aiohttp client keeps `--concurrency` requests in flight for `--seconds`
per scenario, scenarios interleaved over `--rounds` (best of the rounds kept), and checks every stream ends.

| ratio | target | scenario / baseline |
|---|---|---|
| translated stream | >= 50% | Messages client on the OpenAI channel (POST /v1/messages, stream) / OpenAI pass-through stream |
| native stream | >= 90% | Messages client on the Anthropic channel (relayed as it is) / OpenAI pass-through stream |
| count_tokens | >= 80% | POST /v1/messages/count_tokens, estimate path / non-stream chat relay |
| translated Gemini stream | >= 50% | Gemini client on the OpenAI channel (:streamGenerateContent?alt=sse) / OpenAI pass-through stream |
| translated Responses stream | >= 50% | Responses client on a chat-completions channel (DeepSeek) / OpenAI pass-through stream |
| native Responses stream | >= 90% | Responses client on the OpenAI channel (relayed as it is, its id remembered) / OpenAI pass-through stream |

The Responses stream the upstream sends is tests/fixtures/openai_responses/stream_text.sse with its text deltas
grown to 50, as long as the chat stream.

`python bench/run.py --scenarios stream,messages-stream,messages-native-stream,relay-c50,count-tokens --subjects
oneapi` measures the same with wrk and nginx (bench/setup.sh); this script needs neither. Loopback only, bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from mock_upstream import OPENAI_COMPLETION_FIXTURE, build_anthropic_stream, build_openai_stream  # noqa: E402

KEY = "sk-bench-dialects-0123456789"
first_failure: str | None = None  # what the first failed answer looked like, for the message

UPSTREAM = """
import sys
from aiohttp import web
folder = sys.argv[2]
completion, chat_stream, messages_stream, responses_stream = (open(f'{folder}/{name}', 'rb').read()
                                                              for name in ('completion.json', 'chat.sse', 'messages.sse', 'responses.sse'))
async def chat(request):
    body = await request.read()
    if b'"stream":true' in body or b'"stream": true' in body:
        return web.Response(body=chat_stream, content_type='text/event-stream')
    return web.Response(body=completion, content_type='application/json')
async def messages(request):
    await request.read()
    return web.Response(body=messages_stream, content_type='text/event-stream')
async def responses(request):
    await request.read()
    return web.Response(body=responses_stream, content_type='text/event-stream')
app = web.Application()
app.router.add_post('/v1/responses', responses)
app.router.add_post('/v1/chat/completions', chat)
app.router.add_post('/v1/messages', messages)
web.run_app(app, host='127.0.0.1', port=int(sys.argv[1]), access_log=None, print=None)
"""

CHAT = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]%s}'
MESSAGES = '{"model":"%s","max_tokens":1024,"messages":[{"role":"user","content":"hi"}]%s}'
RESPONSES = '{"model":"%s","input":"hi","stream":true}'
# (name, path, body, the bytes a complete answer ends with)
SCENARIOS = {
    "openai-stream": ("/v1/chat/completions", CHAT % ',"stream":true', b"[DONE]"),
    "messages-translated-stream": ("/v1/messages", MESSAGES % ("gpt-4o-mini", ',"stream":true'), b"message_stop"),
    "messages-native-stream": ("/v1/messages", MESSAGES % ("claude-sonnet-4-5", ',"stream":true'), b"message_stop"),
    "chat-relay": ("/v1/chat/completions", CHAT % "", b"}"),
    "count-tokens": ("/v1/messages/count_tokens", MESSAGES % ("gpt-4o-mini", ""), b"}"),
    "gemini-translated-stream": ("/v1beta/models/gpt-4o-mini:streamGenerateContent?alt=sse", '{"contents":[{"parts":[{"text":"hi"}]}]}',
                                 b"totalTokenCount"),
    "responses-translated-stream": ("/v1/responses", RESPONSES % "deepseek-chat", b"event: response.completed"),
    "responses-native-stream": ("/v1/responses", RESPONSES % "gpt-4o-mini", b"event: response.completed"),
}
RATIOS = (
    ("translated Messages stream / OpenAI pass-through stream", "messages-translated-stream", "openai-stream", 0.50),
    ("native Messages stream / OpenAI pass-through stream", "messages-native-stream", "openai-stream", 0.90),
    ("count_tokens (estimate) / non-stream chat relay", "count-tokens", "chat-relay", 0.80),
    ("translated Gemini stream / OpenAI pass-through stream", "gemini-translated-stream", "openai-stream", 0.50),
    ("translated Responses stream / OpenAI pass-through stream", "responses-translated-stream", "openai-stream", 0.50),
    ("native Responses stream / OpenAI pass-through stream", "responses-native-stream", "openai-stream", 0.90),
)
RESPONSES_FIXTURE = ROOT / "tests" / "fixtures" / "openai_responses" / "stream_text.sse"
RESPONSES_TEXT_DELTAS = 42  # with the other eight events, 50 events: as many as the chat stream


def build_responses_stream(delta_count: int = RESPONSES_TEXT_DELTAS) -> bytes:
    """The recorded Responses stream with its text deltas grown into `delta_count`, numbered in order."""
    events = [e for e in RESPONSES_FIXTURE.read_text().split("\n\n") if e.strip()]
    deltas = [i for i, e in enumerate(events) if e.startswith("event: response.output_text.delta")]
    grown = [events[deltas[i % len(deltas)]] for i in range(delta_count)]
    stream = [*events[:deltas[0]], *grown, *events[deltas[-1] + 1:]]
    numbered = []
    for number, event in enumerate(stream):
        name, data = event.split("\ndata: ", 1)
        body = json.loads(data)
        body["sequence_number"] = number
        numbered.append(f"{name}\ndata: {json.dumps(body, separators=(',', ':'))}")
    return ("\n\n".join(numbered) + "\n\n").encode()



def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, body: bytes, end: bytes, seconds: float, concurrency: int) -> tuple[float, int]:
    """(completed answers per second, answers that failed or ended early)."""
    headers = {"x-api-key": KEY, "Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    done = failed = 0
    stop_at = time.monotonic() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done, failed
        global first_failure
        while time.monotonic() < stop_at:
            async with session.post(url, data=body, headers=headers) as response:
                content = await response.read()
            if response.status == 200 and end in content[-4096:]:  # a Responses stream ends with the whole Response
                done += 1
            else:
                failed += 1
                first_failure = first_failure or f"HTTP {response.status}: {content[-300:]!r}"

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        started = time.monotonic()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return done / (time.monotonic() - started), failed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="oneapi-bench-dialects-"))
    (folder / "completion.json").write_bytes(OPENAI_COMPLETION_FIXTURE.read_bytes())
    (folder / "chat.sse").write_bytes(build_openai_stream())
    (folder / "messages.sse").write_bytes(build_anthropic_stream())
    (folder / "responses.sse").write_bytes(build_responses_stream())
    upstream_port, gateway_port = free_port(), free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    config = {
        "listen": f"127.0.0.1:{gateway_port}",
        "providers_dir": str(ROOT / "providers.d"),
        "channels": [
            {"name": "openai", "provider": "openai", "base_url": upstream_url, "keys": ["sk-up"], "models": ["gpt-4o-mini"]},
            {"name": "anthropic", "provider": "anthropic", "base_url": upstream_url, "keys": ["sk-ant-up"], "models": ["claude-sonnet-4-5"]},
            {"name": "deepseek", "provider": "deepseek", "base_url": upstream_url, "keys": ["sk-ds-up"], "models": ["deepseek-chat"]},
        ],
        "tokens": [{"name": "bench", "key": KEY}],
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(upstream_port), str(folder)])
    gateway = subprocess.Popen([sys.executable, "-m", "oneapi.cli", "serve", "--config", str(folder / "config.yaml"), "--workers", "1",
                                "--log-level", "warning"], env=env, cwd=folder)
    best: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{gateway_port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        base = f"http://127.0.0.1:{gateway_port}"
        for name, (path, body, end) in SCENARIOS.items():  # warm-up, and a failing scenario is found before the timing
            rate, failed = asyncio.run(load(base + path, body.encode(), end, 1.0, args.concurrency))
            if failed:
                print(f"{name}: {failed} answers failed or ended early in the warm-up; the first: {first_failure}", file=sys.stderr)
                return 1
        for round_number in range(1, args.rounds + 1):
            for name, (path, body, end) in SCENARIOS.items():
                rate, failed = asyncio.run(load(base + path, body.encode(), end, args.seconds, args.concurrency))
                best[name] = max(best.get(name, 0.0), rate)
                print(f"round {round_number}: {name:28} {rate:8,.0f}/s" + (f"  ({failed} failed)" if failed else ""))
    finally:
        gateway.terminate()
        upstream.terminate()
        gateway.wait(20)
        upstream.wait(5)
    print()
    for label, scenario, baseline, target in RATIOS:
        ratio = best[scenario] / best[baseline]
        print(f"{label}: {ratio:.0%} (target >= {target:.0%}; {best[scenario]:,.0f} / {best[baseline]:,.0f} per s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
