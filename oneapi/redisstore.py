"""`store: redis://...`: budgets, rpm/tpm windows, channel concurrency and the ledger shared by every replica.

Each decision is one Lua script, run atomically by redis, so replicas never race on a read-modify-write.
Settlements and records are pipelined in batches off the request path. Records go to one redis stream,
as durable as the server's persistence (run it with appendonly yes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Iterable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .config import TokenConfig
from .errors import GatewayError
from .ledger import RECORD_FIELDS, UsageQuery, UsageRecord, UsageReport, aggregate, budget_window, spend_windows
from .requestlog import LogPage, LogQuery, log_entry
from .limits import (
    FLUSH_BATCH, FLUSH_INTERVAL, HOLD_SECONDS, Accounting, Admission, Demand, budget_cap, budget_headers, budget_refusal,
    minute_window, refusal, reset_text, seconds_to_next_minute,
)

log = logging.getLogger("oneapi.limits")

PREFIX = "oneapi:"
USAGE_STREAM = PREFIX + "usage"
WINDOW_TTL = 120  # a minute window's counter outlives its minute by one

# KEYS: spend hash, held zset, held amounts hash, rpm counter, tpm counter
# ARGV: now, request id, hold deadline, budget cap (-1: none), spend field, cost, rpm cap, tpm cap, tokens
_ADMIT = """
local now = tonumber(ARGV[1])
local budget_cap, cost = tonumber(ARGV[4]), tonumber(ARGV[6])
local rpm_cap, tpm_cap, tokens = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local rpm_used, tpm_used, budget_left = 0, 0, -1
if rpm_cap >= 0 then
  rpm_used = tonumber(redis.call('GET', KEYS[4]) or '0')
  if rpm_used + 1 > rpm_cap then return {1, rpm_used, 0} end
end
if tpm_cap >= 0 then
  tpm_used = tonumber(redis.call('GET', KEYS[5]) or '0')
  if tpm_used + tokens > tpm_cap then return {2, tpm_used, 0} end
end
if budget_cap >= 0 then
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
  for _, id in ipairs(expired) do redis.call('HDEL', KEYS[3], id) end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) end
  local held = 0
  for _, v in ipairs(redis.call('HVALS', KEYS[3])) do held = held + tonumber(v) end
  local spent = tonumber(redis.call('HGET', KEYS[1], ARGV[5]) or '0')
  if spent + held + cost > budget_cap then return {3, spent, held} end
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
  redis.call('HSET', KEYS[3], ARGV[2], cost)
  budget_left = budget_cap - spent - held - cost
end
if rpm_cap >= 0 then redis.call('INCR', KEYS[4]); redis.call('EXPIRE', KEYS[4], 120) end
if tpm_cap >= 0 then redis.call('INCRBY', KEYS[5], tokens); redis.call('EXPIRE', KEYS[5], 120) end
return {0, rpm_cap - rpm_used - 1, tpm_cap - tpm_used - tokens, budget_left}
"""

# KEYS: spend hash, held zset, held amounts hash, tpm counter of the admission's minute, usage stream
# ARGV: request id, cost, 3 spend fields, tpm correction ('' for none), then the record's field/value pairs
_SETTLE = """
local cost = tonumber(ARGV[2])
if cost > 0 then
  for i = 3, 5 do redis.call('HINCRBY', KEYS[1], ARGV[i], cost) end
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if ARGV[6] ~= '' and redis.call('EXISTS', KEYS[4]) == 1 then redis.call('INCRBY', KEYS[4], ARGV[6]) end
if #ARGV > 6 then redis.call('XADD', KEYS[5], '*', unpack(ARGV, 7)) end
return 1
"""

# KEYS: the channel's slot zset. ARGV: now, slot id, deadline, limit
_ACQUIRE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
return 1
"""


def _keys(token: str, window: int) -> list[str]:
    return [f"{PREFIX}spend:{token}", f"{PREFIX}held:{token}", f"{PREFIX}heldamt:{token}",
            f"{PREFIX}rpm:{token}:{window}", f"{PREFIX}tpm:{token}:{window}"]


def _limit_headers(token: TokenConfig, requests_left: int, tokens_left: int, budget_left: int, now: float) -> dict[str, str]:
    headers: dict[str, str] = {}
    reset = reset_text(seconds_to_next_minute(now))
    if token.rpm is not None:
        headers.update({"x-ratelimit-limit-requests": str(token.rpm), "x-ratelimit-remaining-requests": str(max(0, requests_left)),
                        "x-ratelimit-reset-requests": reset})
    if token.tpm is not None:
        headers.update({"x-ratelimit-limit-tokens": str(token.tpm), "x-ratelimit-remaining-tokens": str(max(0, tokens_left)),
                        "x-ratelimit-reset-tokens": reset})
    if token.budget is not None:
        headers.update(budget_headers(token, max(0, budget_left), now))
    return headers


def _unavailable() -> GatewayError:
    return GatewayError(503, "The gateway's limit store is unreachable; try again shortly.", type="server_error", code="store_unavailable",
                        headers={"Retry-After": "1"})


class RedisAccounting(Accounting):
    def __init__(self, url: str):
        self.url = url
        self.redis: aioredis.Redis = aioredis.Redis.from_url(url, decode_responses=True, health_check_interval=30)
        self._admit = self.redis.register_script(_ADMIT)
        self._settle = self.redis.register_script(_SETTLE)
        self._acquire = self.redis.register_script(_ACQUIRE_SLOT)
        self._pending: list[tuple[Admission | None, UsageRecord | None]] = []
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._releases: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        await self.redis.ping()
        self._flusher = asyncio.create_task(self._flush_loop())

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            try:
                await self._flusher
            except asyncio.CancelledError:
                pass
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)
        try:
            await self.flush()
        except RedisError:
            pass  # logged by flush
        await self.redis.aclose()

    async def admit(self, token: TokenConfig, demand: Demand, request_id: str) -> Admission:
        now = time.time()
        window = minute_window(now)
        cap = budget_cap(token) if token.budget is not None else -1
        args: list[Any] = [now, request_id, now + HOLD_SECONDS, cap, budget_window(token.budget_period, now), demand.cost_nano,
                token.rpm if token.rpm is not None else -1, token.tpm if token.tpm is not None else -1, demand.tokens]
        try:
            result = await self._admit(keys=_keys(token.name, window), args=args)
            if int(result[0]) == 3 and self._pending:  # this process's settlements are not in redis yet: write them, for an exact verdict
                await self.flush()
                result = await self._admit(keys=_keys(token.name, window), args=args)
        except RedisError as exc:
            log.error("redis admission failed: %s", type(exc).__name__)
            raise _unavailable() from None
        verdict = int(result[0])
        if verdict == 1:
            refused = refusal("rpm", token, seconds_to_next_minute(now))
        elif verdict == 2:
            refused = refusal("tpm", token, None if demand.tokens > (token.tpm or 0) else seconds_to_next_minute(now))  # None: never fits
        elif verdict == 3:
            spent, held = int(result[1]), int(result[2])
            refused = budget_refusal(token, demand, max(0, cap - spent - held), held, now)
        else:
            return Admission(token, demand, request_id, window=window,
                             headers=_limit_headers(token, int(result[1]), int(result[2]), int(result[3]), now))
        refused.headers.update(await self._headers_now(token, window, now))  # a refusal says where every limit stands, too
        raise refused

    async def _headers_now(self, token: TokenConfig, window: int, now: float) -> dict[str, str]:
        """The limit headers of a refused request, read after the verdict (for information: not part of it)."""
        spend, _, held, rpm, tpm = _keys(token.name, window)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.get(rpm).get(tpm).hget(spend, budget_window(token.budget_period, now)).hvals(held)
                rpm_used, tpm_used, spent, holds = await pipe.execute()
        except RedisError:
            return {}
        budget_left = budget_cap(token) - int(spent or 0) - sum(int(v) for v in holds) if token.budget is not None else 0
        return _limit_headers(token, (token.rpm or 0) - int(rpm_used or 0), (token.tpm or 0) - int(tpm_used or 0), budget_left, now)

    def settle(self, admission: Admission | None, record: UsageRecord | None) -> None:
        if admission is not None:
            if admission.settled:
                admission = None
            else:
                admission.settled = True
        if admission is None and record is None:
            return
        self._pending.append((admission, record))
        if len(self._pending) >= FLUSH_BATCH:
            self._wake.set()

    def _settle_call(self, admission: Admission | None, record: UsageRecord | None) -> tuple[list[str], list[Any]]:
        token = record.token if record else admission.token.name  # type: ignore[union-attr]
        window = admission.window if admission else minute_window(time.time())
        keys = _keys(token, window)
        keys = [keys[0], keys[1], keys[2], keys[4], USAGE_STREAM]
        cost = record.cost_nano if record else 0
        windows = spend_windows(record.ts if record else time.time())
        tpm_fix = ""
        if admission is not None and admission.token.tpm is not None:
            used = record.prompt_tokens + record.completion_tokens if record else 0
            tpm_fix = str(used - admission.demand.tokens)
        args: list[Any] = [admission.request_id if admission else "", cost, *windows, tpm_fix]
        if record is not None:
            for name, value in zip(RECORD_FIELDS, record.row()):
                args.extend((name, value))
        return keys, args

    async def flush(self) -> None:
        async with self._write_lock:
            pending, self._pending = self._pending, []
            if not pending:
                return
            pipe = self.redis.pipeline(transaction=False)
            for admission, record in pending:
                keys, args = self._settle_call(admission, record)
                await self._settle(keys=keys, args=args, client=pipe)
            try:
                await pipe.execute()
            except RedisError:
                log.exception("writing %d settlements to redis failed; they are kept for the next try", len(pending))
                self._pending[:0] = pending
                raise

    async def _flush_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except RedisError:
                await asyncio.sleep(1.0)

    async def acquire_slot(self, channel: str, limit: int, hold_seconds: float) -> str | None:
        now = time.time()
        handle = f"{now:.6f}:{id(asyncio.current_task())}:{time.monotonic_ns()}"
        try:
            got = await self._acquire(keys=[f"{PREFIX}slots:{channel}"], args=[now, handle, now + hold_seconds, limit])
        except RedisError as exc:
            log.error("redis slot acquisition failed: %s", type(exc).__name__)
            raise _unavailable() from None
        return handle if int(got) else None

    def release_slot(self, channel: str, handle: str) -> None:
        task = asyncio.get_running_loop().create_task(self._release(channel, handle))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, channel: str, handle: str) -> None:
        try:
            await self.redis.zrem(f"{PREFIX}slots:{channel}", handle)
        except RedisError as exc:  # the slot's deadline frees it later
            log.warning("redis slot release failed: %s", type(exc).__name__)

    async def query(self, query: UsageQuery) -> UsageReport:
        await self.flush()
        start = "-" if query.since is None else str(max(0, int(query.since * 1000) - 60_000))
        end = "+" if query.until is None else str(int(query.until * 1000) + 60_000)  # a record is written up to a flush after its ts
        records: list[dict[str, Any]] = []
        while True:
            page: list[tuple[str, dict[str, str]]] = await self.redis.xrange(USAGE_STREAM, start, end, count=5000)  # type: ignore[assignment]
            records.extend(_record(fields) for _, fields in page)
            if len(page) < 5000:
                break
            start = "(" + page[-1][0]
        return aggregate(records, query)


    async def logs(self, query: LogQuery) -> LogPage:
        """Newest first from the stream, read back LOG_SCAN entries at a time until the page is full."""
        await self.flush()
        # records reach the stream up to a flush after their ts, so the time bounds are widened by a minute
        if query.cursor is not None:
            start = "(" + query.cursor
        else:
            start = "+" if query.until is None else str(int(query.until * 1000) + 60_000)
        end = "-" if query.since is None else str(max(0, int(query.since * 1000) - 60_000))
        found: list[tuple[str, dict[str, Any]]] = []
        for _ in range(LOG_SCAN_PAGES):
            page: list[tuple[str, dict[str, str]]] = await self.redis.xrevrange(USAGE_STREAM, start, end, count=LOG_SCAN)  # type: ignore[assignment]
            for stream_id, fields in page:
                record = _record(fields)
                if query.matches(record):
                    found.append((stream_id, log_entry(record)))
                    if len(found) > query.limit:
                        return LogPage([e for _, e in found[:query.limit]], found[query.limit - 1][0])
            if len(page) < LOG_SCAN:
                return LogPage([e for _, e in found], None)
            start = "(" + page[-1][0]
        # scanned as far as one call may: a short page, and where the next one goes on from
        return LogPage([e for _, e in found], start[1:])

    async def trim_records(self, before: float) -> int:
        return int(await self.redis.xtrim(USAGE_STREAM, minid=str(int(before * 1000)), approximate=False))

    async def spent(self, token: str, windows: Iterable[str]) -> int:
        await self.flush()
        values = await self.redis.hmget(f"{PREFIX}spend:{token}", list(windows))
        return sum(int(v) for v in values if v)


LOG_SCAN = 2000
LOG_SCAN_PAGES = 50  # at most 100,000 stream entries looked at per page of the log

_INT_FIELDS = {"stream", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "estimated", "cost_nano", "duration_ms",
               "status", "ttft_ms"}


def _record(fields: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = dict(fields)
    for name in _INT_FIELDS:
        out[name] = int(fields.get(name, 0))
    out["ts"] = float(fields.get("ts", 0))
    if "status" not in fields:  # written before records had a status: a success
        out["status"] = 200
    out.setdefault("error_type", "")
    return out
