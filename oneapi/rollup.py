"""Hourly totals per model, token and channel, written with each SQLite ledger batch: what the dashboard's charts
read, so a month of a million requests is summed from thousands of rows, not a million; they outlive retention.

One row per (dimension, hour, value): dimension "" holds every request (value ""), the others one row per model,
token or channel seen in that hour, and "token_model" one per token and model (a token holder's own view). Each
dimension but "" also has a row per UTC day ("model/day", ..., `hour` then the day's start), so a month's ranking
sums ~30 rows per value rather than ~720.
"""

from __future__ import annotations

import calendar
import sqlite3
import time
from typing import Any, Iterable

DIMENSIONS = ("model", "token", "channel")
SEPARATOR = "\x1f"  # between token and model in a token_model value; token names cannot hold it
COUNTS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "estimated_requests", "cost_nano")

SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_hourly (
    dim TEXT NOT NULL,
    hour INTEGER NOT NULL,
    value TEXT NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    estimated_requests INTEGER NOT NULL,
    cost_nano INTEGER NOT NULL,
    PRIMARY KEY (dim, hour, value)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_hourly_value ON usage_hourly (dim, value, hour);
"""

_UPSERT = (f"INSERT INTO usage_hourly (dim, hour, value, {', '.join(COUNTS)}) VALUES (?, ?, ?, {', '.join('?' * len(COUNTS))}) "
           f"ON CONFLICT (dim, hour, value) DO UPDATE SET " + ", ".join(f"{c} = {c} + excluded.{c}" for c in COUNTS))


def add_records(db: sqlite3.Connection, records: Iterable[Any]) -> None:
    """Fold a batch of UsageRecords into the hourly totals (inside the batch's own transaction)."""
    sums: dict[tuple[str, int, str], list[int]] = {}
    for r in records:
        hour = int(r.ts // 3600) * 3600
        failed = r.status >= 400
        counts = (0 if failed else 1, 1 if failed else 0, r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.reasoning_tokens,
                  int(r.estimated), r.cost_nano)
        day = hour // 86400 * 86400
        pairs = r.token + SEPARATOR + r.model
        for key in (("", hour, ""), ("model", hour, r.model), ("token", hour, r.token), ("channel", hour, r.channel),
                    ("token_model", hour, pairs), ("model/day", day, r.model), ("token/day", day, r.token),
                    ("channel/day", day, r.channel), ("token_model/day", day, pairs)):
            total = sums.get(key)
            if total is None:
                sums[key] = list(counts)
            else:
                for i, n in enumerate(counts):
                    total[i] += n
    db.executemany(_UPSERT, [(*key, *counts) for key, counts in sums.items()])


def backfill(db: sqlite3.Connection) -> None:
    """Fill the totals from the request records already in a ledger written before they existed."""
    sums = ("SUM(status < 400), SUM(status >= 400), SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens), "
            "SUM(reasoning_tokens), SUM(estimated), SUM(cost_nano)")
    hour = "CAST(ts / 3600 AS INTEGER) * 3600"
    db.execute(f"INSERT INTO usage_hourly SELECT '', {hour} AS h, '', {sums} FROM usage GROUP BY h")
    for suffix, bucket in (("", hour), ("/day", "CAST(ts / 86400 AS INTEGER) * 86400")):
        for dim in DIMENSIONS:
            db.execute(f"INSERT INTO usage_hourly SELECT '{dim}{suffix}', {bucket} AS h, {dim}, {sums} FROM usage GROUP BY h, {dim}")
        db.execute(f"INSERT INTO usage_hourly SELECT 'token_model{suffix}', {bucket} AS h, token || char(31) || model AS v, {sums} "
                   "FROM usage GROUP BY h, v")


def series(db: sqlite3.Connection, token: str | None, since: float, step: int) -> dict[int, dict[str, int]]:
    """Totals per `step` seconds (3600 or 86400) from `since` on: of everyone, or of one token."""
    dim, value = ("token", token) if token is not None else ("", "")
    rows = db.execute(f"SELECT hour / {step} * {step} AS b, {', '.join(f'SUM({c})' for c in COUNTS)} FROM usage_hourly "
                      "WHERE dim = ? AND value = ? AND hour >= ? GROUP BY b", (dim, value, int(since)))
    return {row[0]: dict(zip(COUNTS, row[1:])) for row in rows}


def ranking(db: sqlite3.Connection, dim: str, since: float) -> list[tuple[str, dict[str, int]]]:
    """Totals per model, token or channel from `since` on, most requests first."""
    assert dim in DIMENSIONS
    rows = db.execute(f"SELECT value, {', '.join(f'SUM({c})' for c in COUNTS)} FROM usage_hourly WHERE dim = ? AND hour >= ? "
                      "GROUP BY value ORDER BY SUM(requests) DESC", (_granular(dim, since), int(since)))
    return [(row[0], dict(zip(COUNTS, row[1:]))) for row in rows]


def token_models(db: sqlite3.Connection, token: str, since: float) -> list[tuple[str, dict[str, int]]]:
    """One token's totals per model from `since` on, most requests first."""
    prefix = token + SEPARATOR
    rows = db.execute(f"SELECT value, {', '.join(f'SUM({c})' for c in COUNTS)} FROM usage_hourly INDEXED BY usage_hourly_value "
                      "WHERE dim = ? AND value >= ? AND value < ? AND hour >= ? GROUP BY value ORDER BY SUM(requests) DESC",
                      (_granular("token_model", since), prefix, token + chr(ord(SEPARATOR) + 1), int(since)))
    return [(row[0][len(prefix):], dict(zip(COUNTS, row[1:]))) for row in rows]


def _granular(dim: str, since: float) -> str:
    """The day rows when the range starts at a day's start (they then hold exactly the same requests), else the hours."""
    return dim + "/day" if int(since) % 86400 == 0 else dim


# --- the same, summed from a UsageReport (a store without hourly totals: redis) ---------------------


def series_of(report: Any, step: int) -> dict[int, dict[str, int]]:
    """A report grouped by ("hour",) as `series` answers."""
    out: dict[int, dict[str, int]] = {}
    for (label,), totals in report.groups.items():
        start = calendar.timegm(time.strptime(label, "%Y-%m-%dT%H:00")) // step * step
        counts = out.setdefault(start, dict.fromkeys(COUNTS, 0))
        for name in COUNTS:
            counts[name] += getattr(totals, name)
    return out


def ranking_of(report: Any) -> list[tuple[str, dict[str, int]]]:
    """A report grouped by one dimension as `ranking` answers."""
    rows = [(key[0], {name: getattr(totals, name) for name in COUNTS}) for key, totals in report.groups.items()]
    return sorted(rows, key=lambda row: -row[1]["requests"])
