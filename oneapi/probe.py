"""Channel probes, One API's channel test: the smallest real request through one channel, timed and judged.

`oneapi check --probe` runs one per enabled channel from the command line; `POST /admin/channels/{name}/probe`
runs one inside the server, where its outcome also counts toward the channel's breaker as a real request would.
A probe goes through the relay's own attempt (mapping, auth style, error classification), bills no token and
writes no request record.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import orjson

from .asgi import Answer, StreamAnswer
from .config import DEFAULT_GROUP, TokenConfig
from .errors import GatewayError
from .failures import Failure
from .health import HealthRegistry
from .ledger import UsageQuery, UsageRecord, UsageReport
from .limits import Accounting, Admission, Demand
from .metering import Meter
from .metrics import Metrics
from .relay import ENDPOINTS, Call, Services, attempt_once
from .routing import Channel
from .snapshot import Snapshot
from .upstream import Upstream

PROBE_SECONDS = 60.0  # a probe waits no longer than this, whatever the channel's own timeout
PROBE_TOKEN = TokenConfig(name="(probe)", key_sha256=None, group=DEFAULT_GROUP, models=None, budget=None, budget_period=None,
                          expires=None, subnets=(), rpm=None, tpm=None, enabled=True)
# the operations a probe can use, cheapest first, with the smallest body each takes
PROBE_BODIES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("chat", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}),
    ("embeddings", {"input": "hi"}),
    ("completions", {"prompt": "hi", "max_tokens": 1}),
    ("moderations", {"input": "hi"}),
    ("rerank", {"query": "hi", "documents": ["hi"]}),
)


@dataclass(frozen=True)
class ProbeResult:
    channel: str
    model: str
    ok: bool
    status: int
    latency_ms: int
    error: str | None
    at: float  # unix seconds

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Unmetered(Accounting):
    """A probe's accounting: no limits to admit, nothing to record."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def admit(self, token: TokenConfig, demand: Demand, request_id: str) -> Admission:
        return Admission(token, demand, request_id)

    def settle(self, admission: Admission | None, record: UsageRecord | None) -> None: ...

    async def acquire_slot(self, channel: str, limit: int, hold_seconds: float) -> str | None:
        return ""

    def release_slot(self, channel: str, handle: str) -> None: ...

    async def flush(self) -> None: ...

    async def query(self, query: UsageQuery) -> UsageReport:
        return UsageReport(query)


def probe_plan(snapshot: Snapshot, channel_name: str | None = None, model: str | None = None) -> list[tuple[Channel, str]]:
    """Which channels to probe, each with its model: every enabled channel (or the one named), its first model unless told."""
    channels = list(snapshot.channels.values())
    if channel_name is not None:
        channels = [c for c in channels if c.name == channel_name]
        if not channels:
            known = ", ".join(sorted(snapshot.channels)) or "none"
            raise GatewayError(404, f"No enabled channel is named {channel_name!r} (enabled channels: {known}).", code="channel_not_found")
    plan = []
    for channel in channels:
        served = channel.config.serves()
        plan.append((channel, model or (served[0] if served else "")))
    return plan


async def probe_channel(channel: Channel, model: str, upstream: Upstream, health: HealthRegistry, metrics: Metrics) -> ProbeResult:
    """One smallest request through `channel` for `model`: ok, or the status and error the client would have seen."""
    started = time.monotonic()
    at = time.time()
    operations = channel.provider.operations
    chosen = next(((name, body) for name, body in PROBE_BODIES if name in operations), None)
    if chosen is None or not model:
        why = "the channel serves no model" if not model else "its provider has no operation a probe can use"
        return ProbeResult(channel.name, model, False, 0, 0, why, at)
    operation, shape = chosen
    body = {"model": model, **shape}
    raw = orjson.dumps(body)
    meter = Meter(_Unmetered(), PROBE_TOKEN, operation, model, body, False, "probe", {}, 1.0)
    call = Call(ENDPOINTS[operation], model, raw, body, False, time.perf_counter(), meter)
    try:
        outcome = await attempt_once(channel, call, Services(upstream, health, metrics, meter.accounting),
                                     min(channel.config.timeout, PROBE_SECONDS))
    except GatewayError as exc:
        outcome = Failure(exc, retryable=False)
    latency = int((time.monotonic() - started) * 1000)
    if isinstance(outcome, Failure):
        return ProbeResult(channel.name, model, False, outcome.error.status, latency, _message(outcome), at)
    if isinstance(outcome, StreamAnswer):
        for close in outcome.closers:
            close()
    status = outcome.status_code if isinstance(outcome, (Answer, StreamAnswer)) else 0
    return ProbeResult(channel.name, model, status < 400, status, latency, None, at)


def _message(failure: Failure) -> str:
    """What went wrong: the vendor's own message when it sent one (with the channel's keys already masked)."""
    if failure.body is not None:
        try:
            return str(orjson.loads(failure.body)["error"]["message"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            pass
    return failure.error.message


async def probe_all(snapshot: Snapshot, channel_name: str | None = None, model: str | None = None) -> list[ProbeResult]:
    """`oneapi check --probe`: every planned channel in turn, with a client and health of its own."""
    plan = probe_plan(snapshot, channel_name, model)
    upstream = Upstream()
    await upstream.start()
    try:
        health, metrics = HealthRegistry(snapshot.config.breaker), Metrics(None)
        return [await probe_channel(channel, m, upstream, health, metrics) for channel, m in plan]
    finally:
        await upstream.close()


def probe_table(results: Iterable[ProbeResult]) -> str:
    rows = [["channel", "model", "status", "latency", "error"]]
    for r in results:
        rows.append([r.channel, r.model, "ok" if r.ok else (str(r.status) if r.status else "failed"), f"{r.latency_ms} ms", r.error or ""])
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row[:4], widths)), row[4]]).rstrip() for row in rows)
