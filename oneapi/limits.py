"""Budgets, rpm/tpm and channel concurrency: admit a request by reserving what it may cost, settle it with
what it did cost, and refuse with a 429 that says which limit and when to come back.

`Accounting` is the interface the relay talks to; this module holds its SQLite implementation
(redisstore.py holds the redis one). Over SQLite every process draws *allotments* from the shared file:
a grant of part of what is free under a limit, taken in one short transaction and then spent in memory,
so a limited request costs a dictionary lookup, not a file lock. The sum of all grants plus what was
already used never exceeds the limit, so two workers or two gateway processes sharing one file cannot
overspend it; unused allotments flow back after a second idle, and a dead process's after 30 seconds.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import os
import socket
import sqlite3
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from . import affinity, credits, rollup
from .config import TokenConfig
from .credits import Credit
from .errors import GatewayError
from .ledger import RATE_WINDOW_SECONDS, Batch, SqliteLedger, UsageQuery, UsageRecord, UsageReport, budget_window, rate_bucket
from .ledger import spend_of, spend_windows
from .requestlog import LogPage, LogQuery, query_logs, trim_records
from .usage import NANO_USD

log = logging.getLogger("oneapi.limits")

# seconds a record may wait before it is written (the environment override exists for tests of the SIGTERM flush)
FLUSH_INTERVAL = float(os.environ.get("ONEAPI_FLUSH_INTERVAL", "0.2"))
HEARTBEAT_INTERVAL = 5.0
IDLE_RETURN_SECONDS = 1.0  # an allotment unused this long goes back for other processes
GRANT_SHARE = 4  # a grant takes up to a quarter of what is free, so the next requests need no round trip
FLUSH_BATCH = 2000
HOLD_SECONDS = 3600.0  # a reservation of a process that died is dropped after this long (redis)


@dataclass(frozen=True, slots=True)
class Demand:
    """What a request may cost at most, as far as can be known before it is sent, and what that is made of
    (for a refusal that says what would fit)."""

    cost_nano: int
    tokens: int
    prompt_tokens: int = 0  # the prompt's upper bound
    output_tokens: int = 0  # the output reserved: the client's max_tokens (times n), or the default reserve
    prompt_nano: int = 0  # what the prompt's bound costs
    max_tokens_nano: float = 0.0  # what one more unit of max_tokens costs (n output tokens), group ratio included


@dataclass(slots=True)
class Admission:
    """A request let in: what it reserved, and the limit headers to answer with."""

    token: TokenConfig
    demand: Demand
    request_id: str
    headers: dict[str, str] = field(default_factory=dict)
    window: int = 0  # the rpm/tpm bucket (second) it was admitted in: tpm is corrected there when it settles
    settled: bool = False


def has_limits(token: TokenConfig) -> bool:
    return token.budget is not None or token.rpm is not None or token.tpm is not None


def store_unavailable() -> GatewayError:
    return GatewayError(503, "The gateway's limit store is unreachable; try again shortly.", type="server_error", code="store_unavailable",
                        headers={"Retry-After": "1"})


def rate_retry_after(seconds: float) -> int:
    """Retry-After for a sliding-window refusal: whole seconds, never 0."""
    return max(1, int(seconds + 0.999))


def seconds_to_period_end(period: str, now: float) -> int:
    if period == "daily":
        end = (int(now) // 86400 + 1) * 86400
    else:
        t = time.gmtime(now)
        year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
        end = calendar.timegm((year, month, 1, 0, 0, 0, 0, 0, 0))
    return max(1, int(end - now + 0.999))


def reset_text(seconds: float) -> str:
    """OpenAI's x-ratelimit-reset-* format: 1s, 6m0s."""
    seconds = max(0, int(seconds + 0.999))
    return f"{seconds}s" if seconds < 60 else f"{seconds // 60}m{seconds % 60}s"


def budget_cap(token: TokenConfig) -> int:
    return round((token.budget or 0.0) * NANO_USD)


def carry_cap(token: TokenConfig) -> int | None:
    """The budget that earlier periods' spend is measured against when the token's credits carry over; else None."""
    return budget_cap(token) if token.credits_carry_over and token.budget_period else None


def refusal(limit: str, token: TokenConfig, retry_after: int | None, detail: str = "") -> GatewayError:
    """The 429 for a rate limit or a full channel, OpenAI-shaped, with the limit named in the code; Retry-After
    only when waiting helps (None: it never will, as for a request larger than the limit itself)."""
    if limit == "concurrency":
        message = "Every channel for this model is at its max_concurrency."
        kind, code = "rate_limit_error", "concurrency_limit_exceeded"
    else:
        cap = token.rpm if limit == "rpm" else token.tpm
        unit = "requests" if limit == "rpm" else "tokens"
        message = f"Rate limit reached for token {token.name!r} on {unit} per min ({limit.upper()}): limit {cap}."
        kind, code = "rate_limit_error", f"{limit}_limit_exceeded"
    message += detail
    if retry_after is None:
        return GatewayError(429, message, type=kind, code=code)
    message += f" Please try again in {reset_text(retry_after)}."
    return GatewayError(429, message, type=kind, code=code, headers={"Retry-After": str(retry_after)})


def usd(nano: float) -> str:
    return f"${nano / NANO_USD:.6f}"


def budget_refusal(token: TokenConfig, demand: Demand, remaining_nano: int, in_flight_nano: int, now: float) -> GatewayError:
    """The 429 of a budget that cannot cover the request's worst case: what it may cost, what remains, the
    max_tokens that would fit; Retry-After only when waiting frees enough (requests in flight settling, or
    the budget's period resetting), with the real time to it."""
    cap = budget_cap(token)
    period = f" {token.budget_period}" if token.budget_period else ""
    message = (f"Token {token.name!r} cannot afford this request: it may cost up to {usd(demand.cost_nano)} "
               f"({demand.prompt_tokens} prompt tokens at most and {demand.output_tokens} output tokens), "
               f"and {usd(remaining_nano)} of its{period} budget of ${token.budget:.2f} remains.")
    if in_flight_nano:
        message += f" Requests in flight hold {usd(in_flight_nano)} of it until they finish."
    if demand.max_tokens_nano > 0:
        fits = int((remaining_nano - demand.prompt_nano) // demand.max_tokens_nano)
        if fits >= 1:
            message += f" With max_tokens {fits} or less it would fit."
        elif demand.prompt_nano > remaining_nano:
            message += f" Its prompt alone may cost up to {usd(demand.prompt_nano)}."
    retry_after: int | None = None
    if demand.cost_nano > cap:
        message += " It is larger than the whole budget: waiting will not help."
    elif demand.cost_nano <= remaining_nano + in_flight_nano:
        retry_after = 1  # what the requests in flight do not use comes back as they finish
    elif token.budget_period:
        retry_after = seconds_to_period_end(token.budget_period, now)
        message += f" The budget resets in {reset_text(retry_after)}."
    else:
        message += " The budget has no period and does not reset."
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return GatewayError(429, message, type="insufficient_quota", code="budget_exceeded", headers=headers)


class Accounting(ABC):
    """Limits and ledger of one worker process, shared with its sibling workers and replicas through the store."""

    clock: Callable[[], float] = staticmethod(time.time)  # the time limits are counted in; tests move it

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None:
        """Write everything still pending and hand back every allotment (SIGTERM)."""

    @abstractmethod
    async def admit(self, token: TokenConfig, demand: Demand, request_id: str) -> Admission:
        """Reserve `demand` under the token's budget, rpm and tpm, or raise the 429 of the first limit that refuses."""

    @abstractmethod
    def settle(self, admission: Admission | None, record: UsageRecord | None) -> None:
        """Replace the reservation by the real cost and queue the record; never blocks, never raises."""

    @abstractmethod
    async def acquire_slot(self, channel: str, limit: int, hold_seconds: float) -> str | None:
        """One of the channel's `limit` concurrent slots: a handle to release it with, or None when all are taken."""

    @abstractmethod
    def release_slot(self, channel: str, handle: str) -> None: ...

    @abstractmethod
    async def flush(self) -> None: ...

    @abstractmethod
    async def query(self, query: UsageQuery) -> UsageReport: ...

    async def logs(self, query: LogQuery) -> LogPage:
        """A page of the request log, newest first."""
        raise NotImplementedError

    async def trim_records(self, before: float) -> int:
        """Remove request records older than `before` (unix seconds); spend totals stay."""
        raise NotImplementedError

    async def spent(self, token: str, windows: Iterable[str]) -> int:
        """Nano-USD the token spent in these spend windows (ledger.spend_windows names them)."""
        raise NotImplementedError

    async def add_credit(self, credit: Credit, code_sha256: str | None = None) -> float | None:
        """Write a credit (credits.py); with a code, only if it was never redeemed. None: written; else when the code was."""
        raise NotImplementedError

    async def credited(self, token: str, windows: Iterable[str]) -> int:
        """Nano-USD credited to the token in these spend windows."""
        raise NotImplementedError

    async def credit_counted(self, token: TokenConfig, window: str) -> int:
        """Nano-USD of credit that widens the token's budget in `window` (credits.credit_counted)."""
        raise NotImplementedError

    async def credit_history(self, token: str | None, limit: int = 100) -> list[Credit]:
        """The newest credits, of one token or of all."""
        raise NotImplementedError

    async def credit_totals(self, token: str | None) -> dict[str, int]:
        """Nano-USD credited per token over all time, of one token or of all."""
        raise NotImplementedError

    async def budget_state(self, token: TokenConfig, now: float | None = None) -> dict[str, float]:
        """The token's budget in its current period: configured, credited, spent, and what is left of it (USD)."""
        window = budget_window(token.budget_period, self.clock() if now is None else now)
        credited, spent = await self.credit_counted(token, window), await self.spent(token.name, (window,))
        left = budget_cap(token) + credited - spent
        return {"budget_usd": token.budget or 0.0, "credits_usd": credited / NANO_USD, "spent_usd": spent / NANO_USD,
                "remaining_usd": max(0, left) / NANO_USD}

    async def series(self, token: str | None, since: float, step: int) -> dict[int, dict[str, int]]:
        """Totals per `step` seconds from `since` on, of everyone or one token (the dashboard's charts)."""
        return rollup.series_of(await self.query(UsageQuery(token=token, since=since, group_by=("hour",))), step)

    async def ranking(self, dim: str, token: str | None, since: float) -> list[tuple[str, dict[str, int]]]:
        """Totals per model, token or channel from `since` on, most requests first."""
        return rollup.ranking_of(await self.query(UsageQuery(token=token, since=since, group_by=(dim,))))

    def share_set_aside_keys(self, learn: Callable[[str, str, float], None]) -> Callable[[str, str, float], None] | None:
        """Keys set aside for 401/quota, shared through the store: `learn(fingerprint, reason, seconds)` hears of each
        key any process sets aside; the callable returned tells the others of one set aside here. None: this store
        does not share them, and each process finds a bad key out for itself."""
        return None

    async def remember(self, name: str, value: str, ttl: float) -> None:
        """Keep `value` under `name` for `ttl` seconds, for every process (affinity.py)."""
        raise NotImplementedError

    async def recall(self, name: str) -> str | None:
        """What `remember` kept under `name`, None once it expired or if it never was."""
        raise NotImplementedError


async def stopped(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has stopped."""
    if task is not None:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Pool:
    """This process's allotment under one limit: `held` was granted by the store, `reserved` is in flight."""

    __slots__ = ("name", "cap", "held", "reserved", "last_used", "returned", "unflushed", "free_elsewhere", "lock", "retry_after", "used")

    def __init__(self, name: str, cap: int):
        self.name = name
        self.cap = cap
        self.held = 0
        self.reserved = 0
        self.last_used = 0.0
        self.returned = 0  # no longer held, not yet told to the store
        self.unflushed = 0  # consumed, not yet written
        self.free_elsewhere = cap  # neither used nor held by anyone, as of the last grant
        self.lock = asyncio.Lock()
        self.retry_after = 0.0  # of a sliding window, as of the last grant refused
        self.used = 0  # consumed by everyone, as of the last grant

    def take(self, need: int, now: float) -> bool:
        if self.held - self.reserved >= need:
            self.reserved += need
            self.last_used = now
            return True
        return False

    def settle(self, reserved: int, consumed: int) -> None:
        self.reserved -= reserved
        self.unflushed += consumed
        left = max(0, self.held - consumed)
        self.returned += self.held - left
        self.held = left

    def give_back_spare(self) -> None:
        spare = self.held - max(self.reserved, 0)
        if spare > 0:
            self.held -= spare
            self.returned += spare

    def remaining(self) -> int:
        return max(0, self.free_elsewhere + self.held - self.reserved)


class SqliteAccounting(Accounting):
    def __init__(self, ledger: SqliteLedger):
        self.ledger = ledger
        self.owner = owner_id()
        self._pools: dict[str, Pool] = {}
        self._records: list[UsageRecord] = []
        self._counter_deltas: dict[tuple[str, int], int] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._last_write = 0.0

    async def start(self) -> None:
        await self.ledger.open()
        self._flusher = asyncio.create_task(self._flush_loop())

    async def close(self) -> None:
        await stopped(self._flusher)
        try:
            await self._write(release_all=True)
        except Exception:
            pass  # logged by _write; the records stay lost only if the file itself is gone
        finally:
            await self.ledger.close()

    # --- admission ----------------------------------------------------------

    def _pool(self, name: str, cap: int) -> Pool:
        pool = self._pools.get(name)
        if pool is None:
            pool = self._pools[name] = Pool(name, cap)
        elif pool.cap != cap:  # the limit was changed by a reload: hand back what was drawn under the old one
            pool.cap = cap
            pool.give_back_spare()
            pool.free_elsewhere = min(pool.free_elsewhere, cap)
        return pool

    async def _draw(self, pool: Pool, need: int, share: int, used_from: tuple[Any, ...] | None, now: float) -> tuple[bool, bool]:
        """Reserve `need` from the pool, topping it up from the store; (admitted, refused only because it is held in flight)."""
        if pool.take(need, now):
            return True, False
        async with pool.lock:  # one grant at a time per pool; the others find it topped up
            if pool.take(need, now):
                return True, False
            used = await self._top_up(pool, need, share, used_from)
            if pool.take(need, now):
                return True, False
            if pool.unflushed:  # what this process spent is not in the file yet: write it, so the verdict is exact
                try:
                    await self._write()
                except Exception:  # logged by _write
                    raise store_unavailable() from None
                used = await self._top_up(pool, need, share, used_from)
                if pool.take(need, now):
                    return True, False
            return False, used + need <= pool.cap

    async def _top_up(self, pool: Pool, need: int, share: int, used_from: tuple[Any, ...] | None) -> int:
        short = need - max(0, pool.held - pool.reserved)
        try:
            grant = await self.ledger.grant(self.owner, pool.name, pool.cap, short, share, used_from)
        except sqlite3.Error as exc:  # locked past the busy timeout, full, gone: a clear 503, not a crash
            log.error("the ledger file refused an allotment: %s", type(exc).__name__)
            raise store_unavailable() from None
        pool.held += grant.granted
        pool.free_elsewhere = max(0, pool.cap - grant.used - grant.held)
        pool.used = grant.used
        pool.retry_after = grant.retry_after
        return grant.used

    async def admit(self, token: TokenConfig, demand: Demand, request_id: str) -> Admission:
        now = self.clock()
        bucket = rate_bucket(now)
        admission = Admission(token, demand, request_id, window=bucket)
        taken: list[tuple[Pool, int]] = []
        try:
            if token.rpm is not None:
                pool = self._pool(f"rpm:{token.name}", token.rpm)
                ok, elsewhere = await self._draw(pool, 1, GRANT_SHARE, ("window", pool.name, now), now)
                if not ok:
                    raise refusal("rpm", token, 1 if elsewhere else rate_retry_after(pool.retry_after))
                taken.append((pool, 1))
            if token.tpm is not None:
                pool = self._pool(f"tpm:{token.name}", token.tpm)
                ok, elsewhere = await self._draw(pool, demand.tokens, GRANT_SHARE, ("window", pool.name, now), now)
                if not ok:
                    wait = None if demand.tokens > token.tpm else 1 if elsewhere else rate_retry_after(pool.retry_after)  # None: never fits
                    raise refusal("tpm", token, wait)
                taken.append((pool, demand.tokens))
            if token.budget is not None:
                pool = self._pool(f"budget:{token.name}", budget_cap(token))
                used_from = ("spend", token.name, budget_window(token.budget_period, now), carry_cap(token))
                ok, _ = await self._draw(pool, demand.cost_nano, GRANT_SHARE, used_from, now)
                if not ok:
                    remaining = pool.remaining()
                    raise budget_refusal(token, demand, remaining, max(0, pool.cap - pool.used - remaining), now)
                taken.append((pool, demand.cost_nano))
        except BaseException as exc:
            for pool, amount in taken:
                pool.reserved -= amount
            if isinstance(exc, GatewayError):
                exc.headers.update(self._headers(token, now))  # a refusal says where every limit stands, too
            raise
        if token.rpm is not None:  # a request counts against rpm the moment it is let in
            rpm_pool = taken[0][0]
            rpm_pool.settle(1, 1)
            self._count(rpm_pool.name, 1, bucket)
        admission.headers = self._headers(token, now)
        return admission

    def _count(self, name: str, amount: int, bucket: int) -> None:
        key = (name, bucket)
        self._counter_deltas[key] = self._counter_deltas.get(key, 0) + amount

    def _headers(self, token: TokenConfig, now: float) -> dict[str, str]:
        headers: dict[str, str] = {}
        reset = reset_text(RATE_WINDOW_SECONDS)  # this request leaves the sliding window a minute from now
        pools = self._pools  # a limit not yet asked for (a refusal by an earlier one) has no pool: nothing known to report
        if token.rpm is not None and f"rpm:{token.name}" in pools:
            headers["x-ratelimit-limit-requests"] = str(token.rpm)
            headers["x-ratelimit-remaining-requests"] = str(pools[f"rpm:{token.name}"].remaining())
            headers["x-ratelimit-reset-requests"] = reset
        if token.tpm is not None and f"tpm:{token.name}" in pools:
            headers["x-ratelimit-limit-tokens"] = str(token.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(pools[f"tpm:{token.name}"].remaining())
            headers["x-ratelimit-reset-tokens"] = reset
        if token.budget is not None and f"budget:{token.name}" in pools:
            headers.update(budget_headers(token, pools[f"budget:{token.name}"].remaining(), now))
        return headers

    def settle(self, admission: Admission | None, record: UsageRecord | None) -> None:
        if record is not None:
            self._records.append(record)
            if len(self._records) >= FLUSH_BATCH:
                self._wake.set()
        if admission is None or admission.settled:
            return
        admission.settled = True
        token, demand = admission.token, admission.demand
        tokens = record.prompt_tokens + record.completion_tokens if record else 0
        if token.tpm is not None:
            pool = self._pools.get(f"tpm:{token.name}")
            if pool is not None:
                pool.settle(demand.tokens, tokens)
                self._count(pool.name, tokens, admission.window)
        if token.budget is not None:
            pool = self._pools.get(f"budget:{token.name}")
            if pool is not None:
                pool.settle(demand.cost_nano, record.cost_nano if record else 0)

    # --- channel concurrency ------------------------------------------------

    async def acquire_slot(self, channel: str, limit: int, hold_seconds: float) -> str | None:
        ok, _ = await self._draw(self._pool(f"slots:{channel}", limit), 1, 0, None, self.clock())
        return channel if ok else None

    def release_slot(self, channel: str, handle: str) -> None:
        pool = self._pools.get(f"slots:{channel}")
        if pool is not None:
            pool.settle(1, 0)

    # --- writing ------------------------------------------------------------

    def _take_batch(self, release_all: bool) -> Batch:
        """Everything to write, taken in one synchronous step so records and allotment changes stay consistent."""
        now = self.clock()
        batch = Batch(records=self._records, counter_deltas=self._counter_deltas, release_all=release_all)
        self._records, self._counter_deltas = [], {}
        for pool in self._pools.values():
            pool.unflushed = 0
            if release_all:
                pool.give_back_spare()
            elif pool.reserved == 0 and now - pool.last_used >= IDLE_RETURN_SECONDS:
                pool.give_back_spare()
            elif pool.name.startswith("slots:"):
                pool.give_back_spare()  # slots go back at once: a busy process must not starve the others
            if pool.returned:
                batch.grant_deltas[pool.name] = pool.returned
                pool.returned = 0
        return batch

    async def _write(self, release_all: bool = False) -> None:
        async with self._write_lock:
            batch = self._take_batch(release_all)
            held = any(p.held for p in self._pools.values())
            if not batch and not (held and time.monotonic() - self._last_write >= HEARTBEAT_INTERVAL):
                return
            try:
                await self.ledger.write(batch, self.owner)
            except Exception:
                log.exception("writing %d usage records failed; they are kept for the next try", len(batch.records))
                self._requeue(batch)
                raise
            self._last_write = time.monotonic()

    def _requeue(self, batch: Batch) -> None:
        self._records[:0] = batch.records
        for key, amount in batch.counter_deltas.items():
            self._counter_deltas[key] = self._counter_deltas.get(key, 0) + amount
        for name, amount in batch.grant_deltas.items():
            pool = self._pools.get(name)
            if pool is not None:
                pool.returned += amount

    async def flush(self) -> None:
        await self._write()

    async def _flush_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._write()
            except Exception:
                await asyncio.sleep(1.0)  # the file is locked or full: try again soon, keep serving

    async def query(self, query: UsageQuery) -> UsageReport:
        await self.flush()
        return await self.ledger.query(query)

    async def logs(self, query: LogQuery) -> LogPage:
        await self.flush()
        return await self.ledger.read(query_logs, query)

    async def trim_records(self, before: float) -> int:
        return await self.ledger.read(trim_records, before)

    async def spent(self, token: str, windows: Iterable[str]) -> int:
        await self.flush()
        return await self.ledger.read(spend_of, token, list(windows))

    async def series(self, token: str | None, since: float, step: int) -> dict[int, dict[str, int]]:
        await self.flush()
        return await self.ledger.read(rollup.series, token, since, step)

    async def add_credit(self, credit: Credit, code_sha256: str | None = None) -> float | None:
        try:
            return await self.ledger.read(credits.add_credit, credit, spend_windows(credit.ts), code_sha256)
        except sqlite3.Error as exc:
            log.error("the ledger file refused a credit: %s", type(exc).__name__)
            raise store_unavailable() from None

    async def credited(self, token: str, windows: Iterable[str]) -> int:
        return await self.ledger.read(credits.credit_of, token, list(windows))

    async def credit_counted(self, token: TokenConfig, window: str) -> int:
        await self.flush()
        return await self.ledger.read(credits.credit_counted, token.name, window, carry_cap(token))

    async def credit_history(self, token: str | None, limit: int = 100) -> list[Credit]:
        return await self.ledger.read(credits.credits_of, token, limit)

    async def credit_totals(self, token: str | None) -> dict[str, int]:
        return await self.ledger.read(credits.credit_totals, token)

    async def ranking(self, dim: str, token: str | None, since: float) -> list[tuple[str, dict[str, int]]]:
        await self.flush()
        if token is None:
            return await self.ledger.read(rollup.ranking, dim, since)
        if dim == "model":
            return await self.ledger.read(rollup.token_models, token, since)
        return await super().ranking(dim, token, since)

    async def remember(self, name: str, value: str, ttl: float) -> None:
        await self.ledger.read(affinity.sqlite_remember, name, value, ttl)

    async def recall(self, name: str) -> str | None:
        return await self.ledger.read(affinity.sqlite_recall, name)


def budget_headers(token: TokenConfig, remaining_nano: int, now: float) -> dict[str, str]:
    headers = {
        "x-budget-limit-usd": f"{token.budget:.6f}",
        "x-budget-remaining-usd": f"{remaining_nano / NANO_USD:.6f}",
    }
    if token.budget_period:
        headers["x-budget-reset"] = reset_text(seconds_to_period_end(token.budget_period, now))
    return headers
