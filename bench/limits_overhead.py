"""What the ledger and the limits cost per request: the gateway relaying to a static loopback upstream,
a token without limits against one with budget + rpm + tpm, over SQLite or redis.

    python bench/limits_overhead.py [--checkout PATH] [--store sqlite|redis] [--seconds 5]

Loopback only, bounded in time. Compare checkouts (e.g. one before the ledger) on the same machine and load.
"""

from __future__ import annotations

import argparse
import asyncio
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
BODY = ROOT / "tests" / "fixtures" / "openai" / "chat_completion_text.json"
FREE_KEY, LIMITED_KEY = "sk-bench-free-0123456789", "sk-bench-limited-0123456789"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


UPSTREAM = """
import sys
from aiohttp import web
body = open(sys.argv[2], 'rb').read()
async def chat(request):
    await request.read()
    return web.Response(body=body, content_type='application/json')
app = web.Application()
app.router.add_post('/v1/chat/completions', chat)
web.run_app(app, host='127.0.0.1', port=int(sys.argv[1]), access_log=None, print=None)
"""


async def load(url: str, key: str, seconds: float, concurrency: int) -> float:
    payload = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}'
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    done = 0
    failed = 0
    stop_at = time.monotonic() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done, failed
        while time.monotonic() < stop_at:
            async with session.post(url, data=payload, headers=headers) as response:
                await response.read()
                if response.status == 200:
                    done += 1
                else:
                    failed += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        started = time.monotonic()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    if failed:
        print(f"  ({failed} non-200 answers)")
    return done / elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkout", default=str(ROOT))
    parser.add_argument("--store", default="sqlite", choices=["sqlite", "redis"])
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="oneapi-bench-"))
    upstream_port, gateway_port = free_port(), free_port()
    store = args.redis_url if args.store == "redis" else "sqlite:///data/oneapi.db"
    limited = {"name": "limited", "key": LIMITED_KEY, "budget": 1_000_000.0, "rpm": 1_000_000_000, "tpm": 1_000_000_000_000}
    config = {
        "listen": f"127.0.0.1:{gateway_port}",
        "providers_dir": str(Path(args.checkout) / "providers.d"),
        "store": store,
        "pricing": {"models": {"gpt-4o-mini": {"input": 0.15, "output": 0.6}}},
        "channels": [{"name": "local", "provider": "openai", "base_url": f"http://127.0.0.1:{upstream_port}", "keys": ["k"], "models": ["gpt-4o-mini"]}],
        "tokens": [{"name": "free", "key": FREE_KEY}, limited],
    }
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": args.checkout}
    upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(upstream_port), str(BODY)])
    gateway = subprocess.Popen([sys.executable, "-m", "oneapi.cli", "serve", "--config", str(config_path), "--workers", "1",
                                "--log-level", "warning"], env=env, cwd=folder)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{gateway_port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        url = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
        asyncio.run(load(url, FREE_KEY, 1.0, args.concurrency))  # warm-up
        for label, key in (("no limits", FREE_KEY), (f"budget+rpm+tpm ({args.store})", LIMITED_KEY)):
            rate = asyncio.run(load(url, key, args.seconds, args.concurrency))
            print(f"{Path(args.checkout).name}: {label}: {rate:,.0f} req/s")
    finally:
        gateway.terminate()
        upstream.terminate()
        gateway.wait(20)
        upstream.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
