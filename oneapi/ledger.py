"""The ledger: one durable record per relayed request, the spend per token and period, and the shared
limit state that workers and gateway processes draw their allotments from.

The embedded store is one SQLite file in WAL mode. Every process writes through one thread of its own, in
short `BEGIN IMMEDIATE` transactions, so the event loop never waits on the file lock; records are written
in batches, never on the request path.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

from . import credits, rollup
from .usage import MAX_REQUEST_TOKENS, nano_to_usd

T = TypeVar("T")

# grants of a process not heard from for this long are taken back (it crashed or was killed)
STALE_GRANT_SECONDS = 30.0
BUSY_TIMEOUT_MS = 5000

RECORD_FIELDS = ("ts", "request_id", "token", "channel", "model", "upstream_model", "operation", "stream",
                 "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "estimated",
                 "cost_nano", "duration_ms", "status", "ttft_ms", "error_type")
GROUP_FIELDS = ("token", "channel", "model", "day", "hour")
# a record's counts are bounded so that sums over millions of them stay inside SQLite's and redis's 64-bit integers
MAX_RECORD_TOKENS = 4 * MAX_REQUEST_TOKENS  # a prompt is input + cache reads + cache writes
MAX_RECORD_COST_NANO = 10**15  # $1,000,000 for one request
MAX_DURATION_MS = 10**12
_INT_BOUNDS = {"prompt_tokens": MAX_RECORD_TOKENS, "completion_tokens": MAX_RECORD_TOKENS, "cached_tokens": MAX_RECORD_TOKENS,
               "reasoning_tokens": MAX_RECORD_TOKENS, "cost_nano": MAX_RECORD_COST_NANO, "duration_ms": MAX_DURATION_MS}
_TEXT_FIELDS = ("request_id", "token", "channel", "model", "upstream_model", "operation")

log = logging.getLogger("oneapi.ledger")

_INSERT_RECORD = f"INSERT INTO usage ({', '.join(RECORD_FIELDS)}) VALUES ({', '.join('?' * len(RECORD_FIELDS))})"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    token TEXT NOT NULL,
    channel TEXT NOT NULL,
    model TEXT NOT NULL,
    upstream_model TEXT NOT NULL,
    operation TEXT NOT NULL,
    stream INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    cost_nano INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    status INTEGER NOT NULL DEFAULT 200,
    ttft_ms INTEGER NOT NULL DEFAULT 0,
    error_type TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts);
CREATE INDEX IF NOT EXISTS usage_token_ts ON usage (token, ts);
CREATE TABLE IF NOT EXISTS spend (
    token TEXT NOT NULL,
    window TEXT NOT NULL,
    cost_nano INTEGER NOT NULL,
    PRIMARY KEY (token, window)
);
CREATE TABLE IF NOT EXISTS rate_buckets (
    name TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    used INTEGER NOT NULL,
    PRIMARY KEY (name, bucket)
);
CREATE TABLE IF NOT EXISTS grants (
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    amount INTEGER NOT NULL,
    seen REAL NOT NULL,
    PRIMARY KEY (owner, name)
);
"""


@dataclass(frozen=True, slots=True)
class UsageRecord:
    ts: float
    request_id: str
    token: str
    channel: str
    model: str
    upstream_model: str
    operation: str
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    estimated: bool
    cost_nano: int
    duration_ms: int
    status: int = 200  # what the client was answered
    ttft_ms: int = 0  # until the answer's first bytes were in (a whole body: the same as duration_ms)
    error_type: str = ""  # the error's code when status >= 400

    def row(self) -> tuple[Any, ...]:
        return (self.ts, self.request_id, self.token, self.channel, self.model, self.upstream_model, self.operation,
                int(self.stream), self.prompt_tokens, self.completion_tokens, self.cached_tokens, self.reasoning_tokens,
                int(self.estimated), self.cost_nano, self.duration_ms, self.status, self.ttft_ms, self.error_type)


def storable(record: UsageRecord) -> UsageRecord:
    """The record as every store accepts it: counts whole and within their bounds, names strings, a finite time.
    One that had to be changed is logged and marked estimated: its numbers are no longer the vendor's."""
    if _plain(record):
        return record
    changed = [name for name, cap in _INT_BOUNDS.items() if not _fits(getattr(record, name), cap)]
    changed += [name for name in _TEXT_FIELDS if type(getattr(record, name)) is not str]
    if type(record.ts) not in (int, float) or not math.isfinite(record.ts):
        changed.append("ts")
    log.warning("usage record %s: %s out of bounds, stored clamped and marked estimated", str(record.request_id)[:64], ", ".join(changed))
    fixed: dict[str, Any] = {name: _clamped(getattr(record, name), cap) for name, cap in _INT_BOUNDS.items()}
    fixed.update({name: _text(getattr(record, name)) for name in _TEXT_FIELDS})
    fixed["ts"] = record.ts if "ts" not in changed else time.time()
    return replace(record, **fixed, stream=bool(record.stream), estimated=True)


def _plain(r: UsageRecord) -> bool:
    """Every field as the meter makes it (one expression: this runs for each record written)."""
    prompt, completion, cached, reasoning = r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.reasoning_tokens
    return (type(prompt) is int and type(completion) is int and type(cached) is int and type(reasoning) is int
            and 0 <= prompt <= MAX_RECORD_TOKENS and 0 <= completion <= MAX_RECORD_TOKENS
            and 0 <= cached <= MAX_RECORD_TOKENS and 0 <= reasoning <= MAX_RECORD_TOKENS
            and type(r.cost_nano) is int and 0 <= r.cost_nano <= MAX_RECORD_COST_NANO
            and type(r.duration_ms) is int and 0 <= r.duration_ms <= MAX_DURATION_MS
            and type(r.ts) is float and math.isfinite(r.ts)
            and type(r.request_id) is str and type(r.token) is str and type(r.channel) is str and type(r.model) is str
            and type(r.upstream_model) is str and type(r.operation) is str)


def _fits(value: Any, cap: int) -> bool:
    return type(value) is int and 0 <= value <= cap


def _clamped(value: Any, cap: int) -> int:
    if type(value) is float and math.isfinite(value) or type(value) is int:
        return min(cap, max(0, int(value)))
    return 0


def _text(value: Any) -> str:
    return value if type(value) is str else "" if value is None else str(value)[:256]


_windows_of_day: tuple[int, tuple[str, str, str]] = (-1, ("all", "", ""))


def spend_windows(ts: float) -> tuple[str, str, str]:
    """The spend counters one request adds to: all time, its UTC day, its UTC month."""
    global _windows_of_day
    day_number = int(ts // 86400)
    if _windows_of_day[0] != day_number:  # strftime per request would cost more than the rest of the accounting
        day = time.strftime("%Y-%m-%d", time.gmtime(ts))
        _windows_of_day = (day_number, ("all", "d:" + day, "m:" + day[:7]))
    return _windows_of_day[1]


def budget_window(period: str | None, ts: float) -> str:
    return spend_windows(ts)[{None: 0, "daily": 1, "monthly": 2}[period]]


# rpm and tpm count over a sliding minute kept as one-second buckets: what was admitted in the buckets that
# overlap the last 60 seconds. Counting the oldest, partly elapsed bucket whole errs on the side of refusing,
# so no 60-second span, wherever it starts, ever holds more than the limit.
RATE_WINDOW_SECONDS = 60


def rate_bucket(now: float) -> int:
    return int(now // 1)


def first_counted_bucket(now: float) -> int:
    return rate_bucket(now) - RATE_WINDOW_SECONDS


def rate_window_retry(buckets: list[tuple[int, int]], excess: int, now: float) -> float:
    """Seconds until enough of the oldest (bucket, used) pairs leave the window to free `excess`; a whole window
    when even that would not do."""
    freed = 0
    for bucket, used in sorted(buckets):
        freed += used
        if freed >= excess:
            return max(1.0, bucket + RATE_WINDOW_SECONDS + 1 - now)
    return float(RATE_WINDOW_SECONDS + 1)


# --- queries -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageQuery:
    token: str | None = None
    channel: str | None = None
    model: str | None = None
    since: float | None = None
    until: float | None = None
    group_by: tuple[str, ...] = ("token", "channel", "model")

    def matches(self, record: Mapping[str, Any]) -> bool:
        ts = record["ts"]
        return ((self.token is None or record["token"] == self.token)
                and (self.channel is None or record["channel"] == self.channel)
                and (self.model is None or record["model"] == self.model)
                and (self.since is None or ts >= self.since)
                and (self.until is None or ts < self.until))


def parse_time(text: str) -> float:
    """Unix seconds, an ISO 8601 date-time or a date (UTC when no offset is given)."""
    try:
        return float(text)
    except ValueError:
        pass
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def _hour(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:00", time.gmtime(ts))


_TIME_BUCKETS = {"day": _day, "hour": _hour}
_SQL_BUCKETS = {"day": "strftime('%Y-%m-%d', ts, 'unixepoch')", "hour": "strftime('%Y-%m-%dT%H:00', ts, 'unixepoch')"}


@dataclass
class Totals:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    estimated_requests: int = 0
    cost_nano: int = 0
    errors: int = 0  # refused or failed (status >= 400): recorded, but not counted in `requests`

    def add(self, record: Mapping[str, Any]) -> None:
        if record.get("status", 200) >= 400:
            self.errors += 1
            return  # an error used nothing
        self.requests += 1
        self.prompt_tokens += record["prompt_tokens"]
        self.completion_tokens += record["completion_tokens"]
        self.cached_tokens += record["cached_tokens"]
        self.reasoning_tokens += record["reasoning_tokens"]
        self.estimated_requests += int(bool(record["estimated"]))
        self.cost_nano += record["cost_nano"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "estimated_requests": self.estimated_requests,
            "cost_usd": nano_to_usd(self.cost_nano),
            "errors": self.errors,
        }


@dataclass
class UsageReport:
    query: UsageQuery
    totals: Totals = field(default_factory=Totals)
    groups: dict[tuple[str, ...], Totals] = field(default_factory=dict)

    def add(self, record: Mapping[str, Any]) -> None:
        self.totals.add(record)
        key = tuple(_TIME_BUCKETS[g](record["ts"]) if g in _TIME_BUCKETS else str(record[g]) for g in self.query.group_by)
        self.groups.setdefault(key, Totals()).add(record)

    def as_dict(self) -> dict[str, Any]:
        q = self.query
        return {
            "filters": {"token": q.token, "channel": q.channel, "model": q.model, "since": q.since, "until": q.until},
            "group_by": list(q.group_by),
            "totals": self.totals.as_dict(),
            "breakdown": [{**dict(zip(q.group_by, key)), **totals.as_dict()} for key, totals in sorted(self.groups.items())],
        }


# --- the SQLite store ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Grant:
    granted: int
    used: int  # consumed in the current window, as the store knows it
    held: int  # allotted to all processes (this one included) and not yet consumed
    retry_after: float = 0.0  # for a sliding window refused: seconds until enough of it has slid out


@dataclass
class Batch:
    """One flush of one process: records, the counters they move, and what it hands back of its grants."""

    records: list[UsageRecord] = field(default_factory=list)
    counter_deltas: dict[tuple[str, int], int] = field(default_factory=dict)  # (name, rate bucket) -> consumed
    grant_deltas: dict[str, int] = field(default_factory=dict)  # name -> amount no longer held
    release_all: bool = False

    def __bool__(self) -> bool:
        return bool(self.records or self.counter_deltas or self.grant_deltas or self.release_all)


def sqlite_path(store: str, base_dir: Path) -> Path | None:
    """The file of a `sqlite:///relative` or `sqlite:////absolute` URL (None for `memory://`)."""
    if store.startswith("memory://"):
        return None
    rest = store[len("sqlite:///"):]
    path = Path(rest)
    return path if path.is_absolute() else (base_dir / path)


def connect(path: Path | None, readonly: bool = False) -> sqlite3.Connection:
    if path is None:
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    elif readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across process crashes, one fsync per checkpoint
        migrate(conn)
        conn.executescript(_SCHEMA)
        conn.executescript(rollup.SCHEMA)
        conn.executescript(credits.SCHEMA)
    return conn


# columns added to `usage` since its first release, with what rows written before them read as
_ADDED_COLUMNS = (("status", "INTEGER NOT NULL DEFAULT 200"), ("ttft_ms", "INTEGER NOT NULL DEFAULT 0"),
                  ("error_type", "TEXT NOT NULL DEFAULT ''"))


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a ledger file written by an older release up to this schema in place: nothing is lost."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(usage)")}
    if not present:
        return  # a new file: the schema creates it whole
    for name, declaration in _ADDED_COLUMNS:
        if name not in present:
            conn.execute(f"ALTER TABLE usage ADD COLUMN {name} {declaration}")
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'usage_hourly'").fetchone():
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in filter(str.strip, rollup.SCHEMA.split(";")):  # executescript would commit half-way
                conn.execute(statement)
            rollup.backfill(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


class SqliteLedger:
    """The SQLite file, used from one thread of this process; every method is awaited from the event loop."""

    def __init__(self, path: Path | None):
        self.path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="oneapi-ledger")
        self._conn: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        self._conn = await self._run(connect, self.path)

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._run(conn.close)
        self._executor.shutdown(wait=True)

    async def write(self, batch: Batch, owner: str) -> None:
        await self._run(self._write, batch, owner, time.time())

    async def grant(self, owner: str, name: str, cap: int, need: int, share: int, used_from: tuple[Any, ...] | None) -> Grant:
        return await self._run(self._grant, owner, name, cap, need, share, used_from, time.time())

    async def query(self, query: UsageQuery) -> UsageReport:
        return await self._run(query_usage, self._db(), query)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(connection, *args)` on the ledger's own thread (the request log's queries and trims)."""
        return await self._run(fn, self._db(), *args)

    def _db(self) -> sqlite3.Connection:
        assert self._conn is not None, "SqliteLedger.open() was not awaited"
        return self._conn

    def _write(self, batch: Batch, owner: str, now: float) -> None:
        """The whole batch in one transaction. A failure of the file itself (locked, full, gone) writes nothing and
        raises, so the batch is tried again; a record the file refuses is left out alone, logged, never retried."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            written = self._insert_records(db, [storable(r) for r in batch.records])
            rollup.add_records(db, written)
            spend: dict[tuple[str, str], int] = {}
            for record in written:
                if record.cost_nano:
                    for window in spend_windows(record.ts):
                        spend[(record.token, window)] = spend.get((record.token, window), 0) + record.cost_nano
            db.executemany("INSERT INTO spend (token, window, cost_nano) VALUES (?, ?, ?) "
                           "ON CONFLICT (token, window) DO UPDATE SET cost_nano = cost_nano + excluded.cost_nano",
                           [(t, w, c) for (t, w), c in spend.items()])
            db.executemany("INSERT INTO rate_buckets (name, bucket, used) VALUES (?, ?, ?) "
                           "ON CONFLICT (name, bucket) DO UPDATE SET used = used + excluded.used",
                           [(name, bucket, used) for (name, bucket), used in batch.counter_deltas.items()])
            db.executemany("UPDATE grants SET amount = MAX(0, amount - ?) WHERE owner = ? AND name = ?",
                           [(delta, owner, name) for name, delta in batch.grant_deltas.items()])
            if batch.release_all:
                db.execute("DELETE FROM grants WHERE owner = ?", (owner,))
            else:
                db.execute("UPDATE grants SET seen = ? WHERE owner = ?", (now, owner))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @staticmethod
    def _insert_records(db: sqlite3.Connection, records: list[UsageRecord]) -> list[UsageRecord]:
        """Insert the records, each alone inside a savepoint when the batch as a whole is refused; the ones written."""
        if not records:
            return records
        try:
            db.execute("SAVEPOINT records")
            db.executemany(_INSERT_RECORD, [r.row() for r in records])
            db.execute("RELEASE records")
            return records
        except sqlite3.OperationalError:
            raise  # the file, not a record: the caller rolls back and the batch waits for the next try
        except Exception:
            db.execute("ROLLBACK TO records")
            db.execute("RELEASE records")
        written = []
        for record in records:
            try:
                db.execute(_INSERT_RECORD, record.row())
            except sqlite3.OperationalError:
                raise
            except Exception as exc:
                log.error("usage record %s refused by the ledger file (%s) and left out", str(record.request_id)[:64], type(exc).__name__)
            else:
                written.append(record)
        return written

    def _grant(self, owner: str, name: str, cap: int, need: int, share: int, used_from: tuple[Any, ...] | None, now: float) -> Grant:
        """Allot `need` of `cap` to `owner`, or more (1/`share` of what is free) so that the next requests need no
        round trip; nothing when less than `need` is free. Atomic across processes."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM grants WHERE seen < ?", (now - STALE_GRANT_SECONDS,))
            used = 0
            buckets: list[tuple[int, int]] | None = None
            if used_from is not None:
                table, key, window, *carry_cap = used_from
                if table == "spend":
                    row = db.execute("SELECT cost_nano FROM spend WHERE token = ? AND window = ?", (key, window)).fetchone()
                    # a credit widens the budget
                    used = (row[0] if row else 0) - credits.credit_counted(db, key, window, carry_cap[0] if carry_cap else None)
                else:  # a sliding rate window: `window` is the time of the request
                    first = first_counted_bucket(window)
                    db.execute("DELETE FROM rate_buckets WHERE name = ? AND bucket < ?", (key, first))
                    buckets = db.execute("SELECT bucket, used FROM rate_buckets WHERE name = ? AND bucket >= ?", (key, first)).fetchall()
                    used = sum(u for _, u in buckets)
            held = db.execute("SELECT COALESCE(SUM(amount), 0) FROM grants WHERE name = ?", (name,)).fetchone()[0]
            free = cap - used - held
            granted = min(free, max(need, free // share if share else 0)) if free >= need else 0
            retry = rate_window_retry(buckets, used + held + need - cap, window) if buckets is not None and not granted else 0.0
            if granted > 0:
                db.execute("INSERT INTO grants (owner, name, amount, seen) VALUES (?, ?, ?, ?) ON CONFLICT (owner, name) "
                           "DO UPDATE SET amount = amount + excluded.amount, seen = excluded.seen", (owner, name, granted, now))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return Grant(granted, used, held + granted, retry)


def query_usage(db: sqlite3.Connection, query: UsageQuery) -> UsageReport:
    """Totals and a breakdown over the usage table, aggregated by SQLite."""
    where, args = [], []
    for column in ("token", "channel", "model"):
        value = getattr(query, column)
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if query.since is not None:
        where.append("ts >= ?")
        args.append(query.since)
    if query.until is not None:
        where.append("ts < ?")
        args.append(query.until)
    columns = [_SQL_BUCKETS.get(g, g) for g in query.group_by]
    select = ", ".join([*columns, "SUM(status < 400)", "SUM(prompt_tokens)", "SUM(completion_tokens)", "SUM(cached_tokens)",
                        "SUM(reasoning_tokens)", "SUM(estimated)", "SUM(cost_nano)", "SUM(status >= 400)"])
    sql = f"SELECT {select} FROM usage" + (f" WHERE {' AND '.join(where)}" if where else "")
    if columns:
        sql += f" GROUP BY {', '.join(columns)}"
    report = UsageReport(query)
    n = len(columns)
    for row in db.execute(sql, args):
        if row[n] == 0 and row[-1] == 0:
            continue
        totals = Totals(*row[n:])
        report.groups[tuple(str(v) for v in row[:n])] = totals
        for name in ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "estimated_requests", "cost_nano", "errors"):
            setattr(report.totals, name, getattr(report.totals, name) + getattr(totals, name))
    return report


def spend_of(db: sqlite3.Connection, token: str, windows: Iterable[str]) -> int:
    """What a token spent in the given spend windows ("all", "d:YYYY-MM-DD", "m:YYYY-MM"), in nano-USD."""
    windows = list(windows)
    row = db.execute(f"SELECT COALESCE(SUM(cost_nano), 0) FROM spend WHERE token = ? AND window IN ({', '.join('?' * len(windows))})",
                     (token, *windows)).fetchone()
    return int(row[0])


def aggregate(records: Iterable[Mapping[str, Any]], query: UsageQuery) -> UsageReport:
    """The same report, aggregated here from records that a store hands over one by one."""
    report = UsageReport(query)
    for record in records:
        if query.matches(record):
            report.add(record)
    return report

