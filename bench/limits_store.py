"""What one limited request costs the store alone: admit + settle + its share of a flush, through the
accounting object itself (no HTTP), for two checkouts alternately in one run, on one redis or SQLite file.

    python bench/limits_store.py --baseline /work/main [--store redis|sqlite] [--requests 3000] [--rounds 3]

Loopback only, bounded in count. Prints microseconds per request and the ratio to the baseline; over redis
also the server's own microseconds per script call (INFO commandstats), which a loaded machine disturbs less.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ONE_RUN = """
import asyncio, sys, time
from oneapi.config import TokenConfig
from oneapi.ledger import SqliteLedger, UsageRecord
from oneapi.limits import Demand, SqliteAccounting
store, n = sys.argv[1], int(sys.argv[2])
token = TokenConfig(name="bench", key_sha256=None, group="default", models=None, budget=1e6, budget_period=None, expires=None,
                    subnets=(), rpm=10**9, tpm=10**12, enabled=True)
async def main():
    if store.startswith("redis://"):
        from oneapi.redisstore import RedisAccounting
        accounting = RedisAccounting(store)
    else:
        accounting = SqliteAccounting(SqliteLedger(__import__("pathlib").Path(store)))
    await accounting.start()
    started = time.perf_counter()
    for i in range(n):
        admission = await accounting.admit(token, Demand(1000, 100), f"req-{i}")
        accounting.settle(admission, UsageRecord(time.time(), f"req-{i}", "bench", "c", "m", "m", "chat", False, 90, 8, 0, 0, False, 900, 1))
        if i % 100 == 99:
            await accounting.flush()
    await accounting.flush()
    print((time.perf_counter() - started) / n * 1e6)
    await accounting.close()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_cli(port: int, *command: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *command], capture_output=True, text=True, timeout=30).stdout


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", required=True, help="the checkout to compare with, e.g. /work/main")
    parser.add_argument("--store", default="redis", choices=["redis", "sqlite"])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="oneapi-bench-"))
    server = None
    if args.store == "redis":
        port = free_port()
        server = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
        time.sleep(0.5)
    times: dict[str, list[float]] = {"baseline": [], "this": []}
    server_times: dict[str, list[float]] = {"baseline": [], "this": []}
    try:
        for round_ in range(args.rounds):
            for label, checkout in (("baseline", args.baseline), ("this", str(ROOT))):
                store = f"redis://127.0.0.1:{port}/{round_ % 16}" if server else str(folder / f"{label}-{round_}.db")
                if server:
                    redis_cli(port, "CONFIG", "RESETSTAT")
                done = subprocess.run([sys.executable, "-c", ONE_RUN, store, str(args.requests)], capture_output=True, text=True,
                                      env={"PYTHONPATH": checkout, "PATH": "/usr/bin:/bin"}, timeout=300)
                if done.returncode != 0:
                    print(done.stderr[-2000:])
                    return 1
                times[label].append(float(done.stdout.strip().splitlines()[-1]))
                if server:
                    stats = redis_cli(port, "INFO", "commandstats")
                    line = next(l for l in stats.splitlines() if l.startswith("cmdstat_evalsha:"))
                    server_times[label].append(float(line.split("usec_per_call=")[1].split(",")[0]))
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
    best = {label: min(values) for label, values in times.items()}
    for label, values in times.items():
        print(f"{label}: {', '.join(f'{v:.0f}' for v in values)} µs per limited request (best {best[label]:.0f})")
    print(f"this / baseline (best of {args.rounds}): {best['this'] / best['baseline']:.2f}")
    if server_times["this"]:
        mean = {label: sum(values) / len(values) for label, values in server_times.items()}
        print(f"redis server µs per script call: baseline {mean['baseline']:.1f}, this {mean['this']:.1f}, "
              f"ratio {mean['this'] / mean['baseline']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
