"""`store: redis://...`: budgets, rpm/tpm windows, channel concurrency and the ledger shared by every replica.

Each decision is one Lua script, run atomically by redis, so replicas never race on a read-modify-write.
Settlements and records are pipelined in batches off the request path, each applied exactly once: a batch
tried again after a lost answer or a timeout finds the settlements that already ran marked, and skips them.
Records go to one redis stream, as durable as the server's persistence (run it with appendonly yes).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Callable, Iterable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .config import TokenConfig
from .credits import Credit, carried_credit
from .ledger import (
    MAX_RECORD_COST_NANO, RATE_WINDOW_SECONDS, RECORD_FIELDS, UsageQuery, UsageRecord, UsageReport, aggregate, budget_window,
    first_counted_bucket, rate_bucket, spend_windows, storable,
)
from .requestlog import LogPage, LogQuery, log_entry
from .limits import (
    FLUSH_BATCH, FLUSH_INTERVAL, HOLD_SECONDS, Accounting, Admission, Demand, budget_cap, budget_headers, budget_refusal, carry_cap,
    rate_retry_after, refusal, reset_text, stopped, store_unavailable,
)

log = logging.getLogger("oneapi.limits")

PREFIX = "oneapi:"
USAGE_STREAM = PREFIX + "usage"
WINDOW_TTL = RATE_WINDOW_SECONDS + 5  # a sliding window's hash outlives its last bucket
APPLIED_TTL = 3600  # seconds a batch's marks of what ran are kept: a retry comes long before
KEY_ASIDE = PREFIX + "keyaside:"  # + a key's fingerprint: the reason, expiring with the key's cooldown
AFFINITY = PREFIX + "affinity:"  # + a stored answer's name (affinity.py): the channel and key that hold it
KEY_ASIDE_NEWS = PREFIX + "keyaside"  # the pub/sub channel that tells every process at once

# KEYS: spend hash (credits under 'c:' + window), held zset, held amounts hash, rpm window hash, tpm window hash
# (bucket second -> count)
# ARGV: now, request id, hold deadline, budget cap (-1: none), spend field, cost, rpm cap, tpm cap, tokens,
#       this bucket, the first bucket still in the window, window seconds, window ttl, credits carry over ('1'/'0')
_ADMIT = """
local now = tonumber(ARGV[1])
local budget_cap, cost = tonumber(ARGV[4]), tonumber(ARGV[6])
local rpm_cap, tpm_cap, tokens = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local first, span = tonumber(ARGV[11]), tonumber(ARGV[12])
local rpm_used, tpm_used, budget_left = 0, 0, -1
-- what a sliding window holds (its stale buckets dropped), and 0 when `need` fits, else the second at which
-- enough of it has slid out (-1: never, the need is past the cap)
local function window(key, need, cap)
  local flat = redis.call('HGETALL', key)
  local used, live = 0, {}
  for i = 1, #flat, 2 do
    local bucket, n = tonumber(flat[i]), tonumber(flat[i + 1])
    if bucket < first then redis.call('HDEL', key, flat[i])
    else used = used + n; live[#live + 1] = {bucket, n} end
  end
  if used + need <= cap then return used, 0 end
  table.sort(live, function(a, b) return a[1] < b[1] end)
  local excess, freed = used + need - cap, 0
  for _, pair in ipairs(live) do
    freed = freed + pair[2]
    if freed >= excess then return used, pair[1] + span + 1 end
  end
  return used, -1
end
if rpm_cap >= 0 then
  local at
  rpm_used, at = window(KEYS[4], 1, rpm_cap)
  if at ~= 0 then return {1, rpm_used, at} end
end
if tpm_cap >= 0 then
  local at
  tpm_used, at = window(KEYS[5], tokens, tpm_cap)
  if at ~= 0 then return {2, tpm_used, at} end
end
if budget_cap >= 0 then
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
  for _, id in ipairs(expired) do redis.call('HDEL', KEYS[3], id) end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) end
  local held = 0
  for _, v in ipairs(redis.call('HVALS', KEYS[3])) do held = held + tonumber(v) end
  local spent_text, credit_text = unpack(redis.call('HMGET', KEYS[1], ARGV[5], 'c:' .. ARGV[5]))
  local credit = tonumber(credit_text or '0')
  if ARGV[14] == '1' and ARGV[5] ~= 'all' then
    -- every credit ever given, less what earlier periods spent past the budget (credits.credit_counted)
    credit = tonumber(redis.call('HGET', KEYS[1], 'c:all') or '0')
    if credit ~= 0 then
      local prefix, flat = string.sub(ARGV[5], 1, 2), redis.call('HGETALL', KEYS[1])
      for i = 1, #flat, 2 do
        if string.sub(flat[i], 1, 2) == prefix and flat[i] < ARGV[5] then
          local over = tonumber(flat[i + 1]) - budget_cap
          if over > 0 then credit = credit - over end
        end
      end
    end
  end
  local spent = tonumber(spent_text or '0') - credit
  if spent + held + cost > budget_cap then return {3, spent, held} end
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
  redis.call('HSET', KEYS[3], ARGV[2], cost)
  budget_left = budget_cap - spent - held - cost
end
if rpm_cap >= 0 then redis.call('HINCRBY', KEYS[4], ARGV[10], 1); redis.call('EXPIRE', KEYS[4], ARGV[13]) end
if tpm_cap >= 0 then redis.call('HINCRBY', KEYS[5], ARGV[10], tokens); redis.call('EXPIRE', KEYS[5], ARGV[13]) end
return {0, rpm_cap - rpm_used - 1, tpm_cap - tpm_used - tokens, budget_left}
"""

# KEYS: spend hash, held zset, held amounts hash, tpm window hash, usage stream, the batch's bitmap of what ran
# ARGV: request id, cost, 3 spend fields, tpm bucket and correction ('' for none), index in the batch, bitmap ttl,
#       max cost, then the record's field/value pairs
# Everything is checked before the first write: a script that fails half-way would keep its first writes.
_SETTLE = """
local cost, index, max_cost = tonumber(ARGV[2]), tonumber(ARGV[8]), tonumber(ARGV[10])
local fix = ARGV[7] == '' and 0 or tonumber(ARGV[7])
if not cost or cost ~= math.floor(cost) or cost < 0 or cost > max_cost or not fix or fix ~= math.floor(fix) or not index then
  return redis.error_reply('ERR oneapi settlement out of bounds')
end
if redis.call('SETBIT', KEYS[6], index, 1) == 1 then return 0 end
redis.call('EXPIRE', KEYS[6], ARGV[9])
if cost > 0 then
  for i = 3, 5 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[2]) end
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if ARGV[7] ~= '' and redis.call('HEXISTS', KEYS[4], ARGV[6]) == 1 then redis.call('HINCRBY', KEYS[4], ARGV[6], ARGV[7]) end
if #ARGV > 10 then redis.call('XADD', KEYS[5], '*', unpack(ARGV, 11)) end
return 1
"""

# KEYS: spend hash, redeemed codes hash, credits stream. ARGV: code sha256 ('' for none), amount, 3 spend fields, then
# the movement's field/value pairs. The code is claimed and the credit written in one step: once, whoever asks.
_CREDIT = """
if ARGV[1] ~= '' then
  local claimed = redis.call('HGET', KEYS[2], ARGV[1])
  if claimed then return claimed end
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[7])
end
for i = 3, 5 do redis.call('HINCRBY', KEYS[1], 'c:' .. ARGV[i], ARGV[2]) end
redis.call('XADD', KEYS[3], '*', unpack(ARGV, 6))
return ''
"""

# KEYS: the channel's slot zset. ARGV: now, slot id, deadline, limit
_ACQUIRE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
return 1
"""


CREDITS_STREAM = PREFIX + "credits"
REDEEMED = PREFIX + "redeemed"


def _keys(token: str) -> list[str]:
    return [f"{PREFIX}spend:{token}", f"{PREFIX}held:{token}", f"{PREFIX}heldamt:{token}",
            f"{PREFIX}rpm:{token}", f"{PREFIX}tpm:{token}"]


def _limit_headers(token: TokenConfig, requests_left: int, tokens_left: int, budget_left: int, now: float) -> dict[str, str]:
    headers: dict[str, str] = {}
    reset = reset_text(RATE_WINDOW_SECONDS)  # this request leaves the sliding window a minute from now
    if token.rpm is not None:
        headers.update({"x-ratelimit-limit-requests": str(token.rpm), "x-ratelimit-remaining-requests": str(max(0, requests_left)),
                        "x-ratelimit-reset-requests": reset})
    if token.tpm is not None:
        headers.update({"x-ratelimit-limit-tokens": str(token.tpm), "x-ratelimit-remaining-tokens": str(max(0, tokens_left)),
                        "x-ratelimit-reset-tokens": reset})
    if token.budget is not None:
        headers.update(budget_headers(token, max(0, budget_left), now))
    return headers



class Settlement:
    """One queued settlement, and once it was first sent, its place in a batch: the mark that makes it run once."""

    __slots__ = ("admission", "record", "batch", "index")

    def __init__(self, admission: Admission | None, record: UsageRecord | None):
        self.admission = admission
        self.record = record
        self.batch = ""
        self.index = 0


class RedisAccounting(Accounting):
    def __init__(self, url: str):
        self.url = url
        self.redis: aioredis.Redis = aioredis.Redis.from_url(url, decode_responses=True, health_check_interval=30)
        self._admit = self.redis.register_script(_ADMIT)
        self._settle = self.redis.register_script(_SETTLE)
        self._acquire = self.redis.register_script(_ACQUIRE_SLOT)
        self._credit = self.redis.register_script(_CREDIT)
        self._pending: list[Settlement] = []
        self._batch_prefix = f"{PREFIX}applied:{os.urandom(8).hex()}:"
        self._batches = 0
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._releases: set[asyncio.Task[Any]] = set()
        self._learn: Callable[[str, str, float], None] | None = None
        self._follower: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.redis.ping()
        self._flusher = asyncio.create_task(self._flush_loop())
        if self._learn is not None:
            # before the first request: a process that starts now knows every key set aside already
            self._follower = asyncio.create_task(self._follow_set_aside(await self._subscribe_set_aside()))

    # --- keys set aside, shared -------------------------------------------------------------------

    async def remember(self, name: str, value: str, ttl: float) -> None:
        await self.redis.set(AFFINITY + name, value, ex=max(1, int(ttl)))

    async def recall(self, name: str) -> str | None:
        return await self.redis.get(AFFINITY + name)

    def share_set_aside_keys(self, learn: Callable[[str, str, float], None]) -> Callable[[str, str, float], None] | None:
        self._learn = learn
        return self._publish_set_aside

    def _publish_set_aside(self, fingerprint: str, reason: str, seconds: float) -> None:
        task = asyncio.get_running_loop().create_task(self._set_aside(fingerprint, reason, seconds))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _set_aside(self, fingerprint: str, reason: str, seconds: float) -> None:
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(KEY_ASIDE + fingerprint, reason, px=max(1, int(seconds * 1000)))
                pipe.publish(KEY_ASIDE_NEWS, f"{fingerprint} {seconds:.3f} {reason}")
                await pipe.execute()
        except RedisError as exc:  # the other processes find the key out themselves
            log.warning("sharing a key set aside through redis failed: %s", type(exc).__name__)

    async def _subscribe_set_aside(self) -> Any:
        """Subscribed first, then the keys already set aside read: none set aside in between is missed."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(KEY_ASIDE_NEWS)
        async for name in self.redis.scan_iter(match=KEY_ASIDE + "*", count=500):
            async with self.redis.pipeline(transaction=False) as pipe:
                reason, left_ms = await pipe.get(name).pttl(name).execute()
            if reason is not None and left_ms > 0:
                self._learned(name[len(KEY_ASIDE):], reason, left_ms / 1000)
        return pubsub

    async def _follow_set_aside(self, pubsub: Any) -> None:
        while True:
            try:
                if pubsub is None:
                    pubsub = await self._subscribe_set_aside()
                async for message in pubsub.listen():
                    fingerprint, seconds, reason = (str(message["data"]).split(" ", 2) + ["", ""])[:3]
                    try:
                        self._learned(fingerprint, reason, float(seconds))
                    except ValueError:
                        log.warning("a malformed message on %s was ignored", KEY_ASIDE_NEWS)
            except RedisError as exc:
                log.warning("following keys set aside through redis failed: %s; trying again", type(exc).__name__)
            finally:
                if pubsub is not None:
                    await pubsub.aclose()
                    pubsub = None
            await asyncio.sleep(1.0)

    def _learned(self, fingerprint: str, reason: str, seconds: float) -> None:
        if self._learn is not None and seconds > 0:
            self._learn(fingerprint[:64], reason[:64], seconds)

    async def close(self) -> None:
        await stopped(self._follower)
        await stopped(self._flusher)
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)
        try:
            await self.flush()
        except RedisError:
            pass  # logged by flush
        await self.redis.aclose()

    async def admit(self, token: TokenConfig, demand: Demand, request_id: str) -> Admission:
        now = self.clock()
        bucket = rate_bucket(now)
        cap = budget_cap(token) if token.budget is not None else -1
        args: list[Any] = [now, request_id, now + HOLD_SECONDS, cap, budget_window(token.budget_period, now), demand.cost_nano,
                token.rpm if token.rpm is not None else -1, token.tpm if token.tpm is not None else -1, demand.tokens,
                bucket, first_counted_bucket(now), RATE_WINDOW_SECONDS, WINDOW_TTL, "1" if carry_cap(token) is not None else "0"]
        try:
            result = await self._admit(keys=_keys(token.name), args=args)
            if int(result[0]) == 3 and self._pending:  # this process's settlements are not in redis yet: write them, for an exact verdict
                await self.flush()
                result = await self._admit(keys=_keys(token.name), args=args)
        except RedisError as exc:
            log.error("redis admission failed: %s", type(exc).__name__)
            raise store_unavailable() from None
        verdict = int(result[0])
        if verdict in (1, 2):
            at = int(result[2])
            wait = rate_retry_after(at - now if at > 0 else RATE_WINDOW_SECONDS + 1)
            if verdict == 2 and demand.tokens > (token.tpm or 0):
                wait = None  # never fits: waiting cannot help
            refused = refusal("rpm" if verdict == 1 else "tpm", token, wait)
        elif verdict == 3:
            spent, held = int(result[1]), int(result[2])
            refused = budget_refusal(token, demand, max(0, cap - spent - held), held, now)
        else:
            return Admission(token, demand, request_id, window=bucket,
                             headers=_limit_headers(token, int(result[1]), int(result[2]), int(result[3]), now))
        refused.headers.update(await self._headers_now(token, now))  # a refusal says where every limit stands, too
        raise refused

    async def _headers_now(self, token: TokenConfig, now: float) -> dict[str, str]:
        """The limit headers of a refused request, read after the verdict (for information: not part of it)."""
        spend, _, held, rpm, tpm = _keys(token.name)
        window = budget_window(token.budget_period, now)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(rpm).hgetall(tpm).hget(spend, window).hvals(held)
                rpm_window, tpm_window, spent, holds = await pipe.execute()
            credited = await self.credit_counted(token, window) if token.budget is not None else 0
        except RedisError:
            return {}
        first = first_counted_bucket(now)
        rpm_used = sum(int(n) for bucket, n in rpm_window.items() if int(bucket) >= first)
        tpm_used = sum(int(n) for bucket, n in tpm_window.items() if int(bucket) >= first)
        budget_left = budget_cap(token) + int(credited or 0) - int(spent or 0) - sum(int(v) for v in holds) if token.budget is not None else 0
        return _limit_headers(token, (token.rpm or 0) - rpm_used, (token.tpm or 0) - tpm_used, budget_left, now)

    def settle(self, admission: Admission | None, record: UsageRecord | None) -> None:
        if admission is not None:
            if admission.settled:
                admission = None
            else:
                admission.settled = True
        if admission is None and record is None:
            return
        self._pending.append(Settlement(admission, record))
        if len(self._pending) >= FLUSH_BATCH:
            self._wake.set()

    def _settle_call(self, settlement: Settlement) -> tuple[list[str], list[Any]]:
        admission, record = settlement.admission, settlement.record
        if record is not None:
            record = storable(record)
        token = record.token if record else admission.token.name  # type: ignore[union-attr]
        keys = _keys(token)
        keys = [keys[0], keys[1], keys[2], keys[4], USAGE_STREAM, settlement.batch]
        cost = record.cost_nano if record else 0
        windows = spend_windows(record.ts if record else time.time())
        tpm_bucket = tpm_fix = ""
        if admission is not None and admission.token.tpm is not None:
            used = record.prompt_tokens + record.completion_tokens if record else 0
            tpm_bucket, tpm_fix = str(admission.window), str(used - admission.demand.tokens)
        args: list[Any] = [admission.request_id if admission else "", cost, *windows, tpm_bucket, tpm_fix, settlement.index,
                           APPLIED_TTL, MAX_RECORD_COST_NANO]
        if record is not None:
            for name, value in zip(RECORD_FIELDS, record.row()):
                args.extend((name, value))
        return keys, args

    def _mark(self, pending: list[Settlement]) -> None:
        """Give the settlements sent for the first time their place in a new batch; a retry keeps the old one."""
        batch = ""
        for index, settlement in enumerate(pending):
            if settlement.batch:
                continue
            if not batch:
                self._batches += 1
                batch = f"{self._batch_prefix}{self._batches}"
            settlement.batch, settlement.index = batch, index

    async def flush(self) -> None:
        async with self._write_lock:
            pending, self._pending = self._pending, []
            if not pending:
                return
            self._mark(pending)
            pipe = self.redis.pipeline(transaction=False)
            for settlement in pending:
                keys, args = self._settle_call(settlement)
                await self._settle(keys=keys, args=args, client=pipe)
            try:
                results = await pipe.execute(raise_on_error=False)
            except RedisError:
                # the answer is lost, not necessarily the writes: the next try skips what ran, by its mark
                log.exception("writing %d settlements to redis failed; they are kept for the next try", len(pending))
                self._pending[:0] = pending
                raise
            for settlement, result in zip(pending, results):
                if isinstance(result, Exception):  # refused by the script before any write: trying again cannot help
                    request_id = settlement.record.request_id if settlement.record else settlement.admission.request_id  # type: ignore[union-attr]
                    log.error("settlement of %s refused by redis (%s) and left out", str(request_id)[:64], str(result)[:120])

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
            raise store_unavailable() from None
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


    async def add_credit(self, credit: Credit, code_sha256: str | None = None) -> float | None:
        fields = ["ts", repr(credit.ts), "token", credit.token, "amount_nano", credit.amount_nano, "source", credit.source, "note", credit.note]
        try:
            claimed = await self._credit(keys=[f"{PREFIX}spend:{credit.token}", REDEEMED, CREDITS_STREAM],
                                         args=[code_sha256 or "", credit.amount_nano, *spend_windows(credit.ts), *fields])
        except RedisError as exc:
            log.error("redis refused a credit: %s", type(exc).__name__)
            raise store_unavailable() from None
        return float(claimed) if claimed else None

    async def credited(self, token: str, windows: Iterable[str]) -> int:
        values = await self.redis.hmget(f"{PREFIX}spend:{token}", ["c:" + w for w in windows])
        return sum(int(v) for v in values if v)

    async def credit_counted(self, token: TokenConfig, window: str) -> int:
        cap = carry_cap(token)
        if cap is None or window == "all":
            return await self.credited(token.name, (window,))
        total = await self.credited(token.name, ("all",))
        if not total:
            return 0
        await self.flush()
        return carried_credit(total, await self.redis.hgetall(f"{PREFIX}spend:{token.name}"), window, cap)  # type: ignore[misc]

    async def credit_totals(self, token: str | None) -> dict[str, int]:
        names = [f"{PREFIX}spend:{token}"] if token else [name async for name in self.redis.scan_iter(match=f"{PREFIX}spend:*", count=500)]
        totals = {}
        for name in names:
            value = await self.redis.hget(name, "c:all")
            if value is not None:
                totals[name[len(PREFIX) + len("spend:"):]] = int(value)
        return totals

    async def credit_history(self, token: str | None, limit: int = 100) -> list[Credit]:
        found: list[Credit] = []
        start = "+"
        while len(found) < limit:
            page: list[tuple[str, dict[str, str]]] = await self.redis.xrevrange(CREDITS_STREAM, start, "-", count=LOG_SCAN)  # type: ignore[assignment]
            found.extend(Credit(float(f["ts"]), f["token"], int(f["amount_nano"]), f["source"], f["note"])
                         for _, f in page if token is None or f.get("token") == token)
            if len(page) < LOG_SCAN:
                break
            start = "(" + page[-1][0]
        return found[:limit]


LOG_SCAN = 2000
LOG_SCAN_PAGES = 50  # at most 100,000 stream entries looked at per page of the log

_INT_FIELDS = {"stream", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "estimated", "cost_nano", "duration_ms",
               "status", "ttft_ms"}


def _record(fields: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = dict(fields)
    for name in _INT_FIELDS:
        out[name] = _stored_int(fields.get(name, "0"))
    out["ts"] = float(fields.get("ts", 0))
    if "status" not in fields:  # written before records had a status: a success
        out["status"] = 200
    out.setdefault("error_type", "")
    return out


def _stored_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # written before counts were bounded
        return 0
