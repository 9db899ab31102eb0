"""Reload time of a 1,000-channel, 10,000-token config.yaml: cold build, then one-item edits (issue 6).

    python bench/reload_big_config.py [--realistic] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import oneapi.snapshot as snapshot_module  # noqa: E402
from oneapi.snapshot import SnapshotHolder, build_snapshot  # noqa: E402


def big_config(realistic: bool, secret_file: Path) -> dict:
    channels = [{"name": f"c{i}", "provider": "openai", "base_url": "http://127.0.0.1:1", "keys": [f"sk-{i}"],
                 "models": [f"m{i % 50}", "gpt-4o-mini"]} for i in range(1000)]
    tokens: list[dict] = []
    for i in range(10000):
        if not realistic:
            tokens.append({"name": f"t{i}", "key_sha256": hashlib.sha256(str(i).encode()).hexdigest(), "rpm": 100})
            continue
        token: dict = {"name": f"t{i}", "key": f"${{TOKEN_{i}:-sk-client-{i:06d}}}", "rpm": 100}
        if i % 7 == 0:
            token["expires"] = "2099-01-01T00:00:00Z"
        if i % 11 == 0:
            token["subnets"] = ["10.0.0.0/8", "192.168.0.0/16"]
        if i % 5 == 0:
            token["models"] = [f"m{i % 50}", "gpt-4o-mini"]
        tokens.append(token)
    config = {"providers_dir": str(ROOT / "providers.d"), "channels": channels, "tokens": tokens}
    if realistic:
        config["admin_key"] = f"${{file:{secret_file}}}"
        config["pricing"] = {"models": {f"m{i}": {"input": 1.0, "output": 2.0} for i in range(50)} | {"gpt-4o-mini": {"input": 0.15, "output": 0.6}}}
    return config


def edits(text: str, rounds: int) -> list[str]:
    """Texts that each differ from the one before by one token or channel changed, added or removed."""
    out, rng = [], random.Random(6)
    for r in range(rounds):
        before, kind = text, r % 4
        while text == before:
            if kind == 0:  # change one token's rpm
                i = rng.randrange(10000)
                text = text.replace(f"name: t{i}\n  rpm: 100", f"name: t{i}\n  rpm: {200 + r}", 1)
            elif kind == 1:  # add a token at the end
                text += f"- key_sha256: {hashlib.sha256(f'new{r}'.encode()).hexdigest()}\n  name: new{r}\n"
            elif kind == 2:  # change one channel's model list
                i = rng.randrange(1000)
                text = text.replace(f"- m{i % 50}\n  - gpt-4o-mini\n  name: c{i}\n", f"- m{i % 50}\n  - gpt-4o\n  name: c{i}\n", 1)
            else:  # remove the token added before
                text = text.replace(f"- key_sha256: {hashlib.sha256(f'new{r - 2}'.encode()).hexdigest()}\n  name: new{r - 2}\n", "", 1)
        out.append(text)
    return out


async def loop_lag(stop: asyncio.Event, lags: list[float]) -> None:
    """How late a 1 ms timer fires: what a request on this worker's event loop waits for on top of its own work."""
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append((time.perf_counter() - started - 0.001) * 1000)


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    return (f"median {statistics.median(ordered):.0f} ms, p90 {ordered[int(len(ordered) * 0.9)]:.0f} ms, "
            f"max {ordered[-1]:.0f} ms")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--realistic", action="store_true", help="tokens with key: ${TOKEN_i:-...}, expires, subnets, models")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    secret = tmp / "admin"
    secret.write_text("admin-secret\n")
    path = tmp / "config.yaml"
    text = yaml.safe_dump(big_config(args.realistic, secret))
    path.write_text(text)
    print(f"config: {len(text) / 1e6:.1f} MB, {text.count(chr(10))} lines, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")

    cold = []
    for _ in range(3):
        started = time.perf_counter()
        build_snapshot(path)
        cold.append((time.perf_counter() - started) * 1000)
    print(f"cold build_snapshot: best {min(cold):.0f} ms of {len(cold)}")

    holder = SnapshotHolder(path)
    cpu: list[float] = []
    timed = snapshot_module.build_snapshot

    def build_timed(*args: object) -> object:
        started = time.thread_time()
        try:
            return timed(*args)  # type: ignore[arg-type]
        finally:
            cpu.append((time.thread_time() - started) * 1000)

    snapshot_module.build_snapshot = build_timed  # type: ignore[assignment]
    stop, lags, idle = asyncio.Event(), [], []
    ticker = asyncio.create_task(loop_lag(stop, idle))
    await asyncio.sleep(1)
    stop.set()
    await ticker
    stop = asyncio.Event()
    ticker = asyncio.create_task(loop_lag(stop, lags))
    times = []
    for new_text in edits(text, args.rounds):
        path.write_text(new_text)
        started = time.perf_counter()
        snapshot = await holder.reload()
        times.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.05)
    stop.set()
    await ticker
    print(f"one-edit reload (SnapshotHolder.reload, wall): {summary(times)} ({len(snapshot.tokens)} tokens, {len(snapshot.channels)} channels)")
    print(f"  CPU time of the build thread: {summary(cpu)}")
    print(f"  event-loop lag meanwhile: {summary(lags)}; idle: {summary(idle)}")
    secret.write_text("admin-rotated\n")
    started = time.perf_counter()
    snapshot = await holder.reload()
    print(f"reload after a ${{file:}} change: {(time.perf_counter() - started) * 1000:.0f} ms (admin_key {'rotated' if snapshot.config.admin_key == 'admin-rotated' else snapshot.config.admin_key!r})")


if __name__ == "__main__":
    asyncio.run(main())
