"""`oneapi import` of a big One API database, timed against loading what it wrote (the baseline, same run).

A One API SQLite database built from its own table definitions (tests/oneapi_tables.py) with 1,000 channels of three
keys each and 10,000 tokens; the import (read, convert, write) is timed in-process, then `build_snapshot` on the
config.yaml it wrote, with secrets.env in the environment. Prints both medians and their ratio.

    python bench/import_big_database.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from configs import BIG_CHANNEL_COUNT, BIG_TOKEN_COUNT, PROVIDERS_DIR, REPO_DIR

sys.path[:0] = [str(REPO_DIR), str(REPO_DIR / "tests")]  # this checkout's oneapi, and the tests' table definitions
import oneapi_tables  # noqa: E402

from oneapi.importer import import_database  # noqa: E402
from oneapi.snapshot import build_snapshot  # noqa: E402

MODELS = 300


def build_database(path: Path) -> None:
    rows = {
        "users": [{"id": i, "username": f"user{i}", "password": "x", "status": 1, "group": "default", "access_token": f"{i:032d}",
                   "aff_code": f"a{i}"} for i in range(1, 1001)],
        "options": [{"key": "ModelRatio", "value": json.dumps({f"model-{i}": 0.5 for i in range(MODELS)})},
                    {"key": "CompletionRatio", "value": json.dumps({f"model-{i}": 2 for i in range(MODELS)})}],
        "channels": [{"id": i, "type": 1, "key": "\n".join(f"sk-{i}-{j}" for j in range(3)), "status": 1, "name": f"channel {i}",
                      "models": ",".join(f"model-{(i + k) % MODELS}" for k in range(5)), "group": "default"}
                     for i in range(1, BIG_CHANNEL_COUNT + 1)],
        "tokens": [{"id": i, "user_id": 1 + i % 1000, "key": f"{i:048d}", "status": 1, "name": "default", "expired_time": -1,
                    "remain_quota": 500_000, "unlimited_quota": False, "models": "", "subnet": ""} for i in range(1, BIG_TOKEN_COUNT + 1)],
    }
    connection = sqlite3.connect(path)
    oneapi_tables.build(connection, "sqlite", "one-api", rows)
    connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="oneapi-import-bench-") as folder:
        database, out = Path(folder) / "one-api.db", Path(folder) / "out"
        build_database(database)
        imports, loads = [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            import_database(str(database), out, str(PROVIDERS_DIR))
            imports.append(time.perf_counter() - started)
            environ = dict(os.environ)
            for line in (out / "secrets.env").read_text().splitlines():
                if line and not line.startswith("#"):
                    name, _, value = line.partition("=")
                    (environ[name],) = shlex.split(value)
            started = time.perf_counter()
            snapshot = build_snapshot(out / "config.yaml", environ)
            loads.append(time.perf_counter() - started)
        assert len(snapshot.tokens) == BIG_TOKEN_COUNT
    imported, loaded = statistics.median(imports), statistics.median(loads)
    print(f"{BIG_CHANNEL_COUNT} channels, {BIG_TOKEN_COUNT} tokens, {args.runs} runs: import {imported:.2f} s, "
          f"loading its output {loaded:.2f} s: import = {imported / loaded:.2f}x the load")


if __name__ == "__main__":
    main()
