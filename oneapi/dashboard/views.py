"""What each view of the window shows, as JSON: overview, tokens, channels; narrowed to one token for a client key."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

from ..config import TokenConfig
from ..health import HealthRegistry, describe_health
from ..ledger import budget_window
from ..limits import Accounting, seconds_to_period_end
from ..probe import ProbeResult
from ..requestlog import LogQuery
from ..snapshot import Snapshot
from ..usage import NANO_USD, nano_to_usd
from . import charts

# range name -> (seconds, time bucket)
RANGES = {"24h": (86400, "hour"), "7d": (7 * 86400, "day"), "30d": (30 * 86400, "day")}
TOP = 10  # rows in each ranked chart
RECENT_SECONDS = 3600.0  # a channel's latency and error rate are over the last hour's requests...
RECENT_REQUESTS = 500  # ...at most this many of them
LAST_ERROR_SECONDS = 86400.0  # how far back a channel's last error is looked for (the log is scanned newest first)


def _buckets(step: int, seconds: int, now: float) -> tuple[int, list[int]]:
    """Where the range starts (the first whole bucket inside it) and every bucket's start up to now's (UTC)."""
    start = int((now - seconds) // step) * step + step
    return start, list(range(start, int(now) + 1, step))


async def overview(accounting: Accounting, token: str | None, span: str, now: float) -> dict[str, Any]:
    """Requests, tokens, spend and errors over time, and the top models (and, for the admin, tokens and channels)."""
    seconds, bucket = RANGES[span]
    step = 3600 if bucket == "hour" else 86400
    since, starts = _buckets(step, seconds, now)
    fmt = "%Y-%m-%dT%H:00" if bucket == "hour" else "%Y-%m-%d"
    labels = [time.strftime(fmt, time.gmtime(t)) for t in starts]
    by_start = await accounting.series(token, since, step)
    series = [{"t": label, **_counts(by_start.get(start))} for label, start in zip(labels, starts)]
    breakdowns: dict[str, list[dict[str, Any]]] = {}
    for field in ("model",) if token else ("model", "token", "channel"):
        breakdowns[field] = [{field: name, **_counts(counts)} for name, counts in await accounting.ranking(field, token, since)]
    chart_set = {
        "requests": charts.columns("Requests", labels, [("answered", [s["requests"] for s in series]),
                                                        ("errors", [s["errors"] for s in series])]),
        "tokens": charts.columns("Tokens", labels, [("prompt", [s["prompt_tokens"] for s in series]),
                                                    ("completion", [s["completion_tokens"] for s in series])]),
        "cost": charts.columns("Spend", labels, [("USD", [s["cost_usd"] for s in series])], unit="$"),
    }
    for field, rows_of in breakdowns.items():
        chart_set[f"by_{field}"] = charts.ranked(f"Requests by {field}", [(r[field], r["requests"]) for r in rows_of[:TOP]])
    totals = {name: sum(s[name] for s in series) for name in ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens")}
    return {
        "range": span, "bucket": bucket, "since": since, "token": token,
        "totals": {**totals, "cost_usd": round(sum(s["cost_usd"] for s in series), 9)},
        "series": series,
        **{f"by_{field}": rows_of[:100] for field, rows_of in breakdowns.items()},
        "charts": chart_set,
    }


def _counts(counts: Mapping[str, int] | None) -> dict[str, Any]:
    counts = counts or {}
    prompt, completion = counts.get("prompt_tokens", 0), counts.get("completion_tokens", 0)
    return {"requests": counts.get("requests", 0), "errors": counts.get("errors", 0), "prompt_tokens": prompt,
            "completion_tokens": completion, "total_tokens": prompt + completion, "cost_usd": nano_to_usd(counts.get("cost_nano", 0))}


async def tokens(accounting: Accounting, every: Sequence[TokenConfig], own: TokenConfig | None, search: str, offset: int, limit: int,
                 now: float) -> dict[str, Any]:
    """A page of tokens (the admin's, searchable by name), or the one token a client key holds."""
    if own is not None:
        chosen: Sequence[TokenConfig] = [own]
        total = 1
    else:
        matching = [t for t in every if search.lower() in t.name.lower()] if search else every
        total = len(matching)
        chosen = matching[offset:offset + limit]
    data = [await _token_view(accounting, token, now) for token in chosen]
    return {"object": "list", "data": data, "total": total, "offset": offset if own is None else 0}


async def _token_view(accounting: Accounting, token: TokenConfig, now: float) -> dict[str, Any]:
    window = budget_window(token.budget_period, now)
    spent = await accounting.spent(token.name, [window]) / NANO_USD
    credits = await accounting.credit_counted(token, window) / NANO_USD if token.budget is not None else 0.0
    reset = None
    if token.budget_period is not None:
        reset = datetime.fromtimestamp(now + seconds_to_period_end(token.budget_period, now), timezone.utc).isoformat()
    return {
        "name": token.name,
        "group": token.group,
        "enabled": token.enabled,
        "budget_usd": token.budget,
        "period": token.budget_period or "all time",
        "credits_usd": round(credits, 6),  # redeemed codes and operator credits counted in this period
        "spent_usd": round(spent, 6),
        "remaining_usd": None if token.budget is None else round(max(0.0, token.budget + credits - spent), 6),
        "resets_at": reset,
        "rpm": token.rpm,
        "tpm": token.tpm,
        "expires": token.expires.isoformat() if token.expires else None,
        "expired": token.expires is not None and token.expires.timestamp() <= now,
        "models": sorted(token.models) if token.models is not None else None,
    }


async def channels(snapshot: Snapshot, health: HealthRegistry, accounting: Accounting, probes: Mapping[str, ProbeResult],
                   now: float) -> dict[str, Any]:
    """Every configured channel: routing settings, this worker's breaker view, recent latency and errors, last probe."""
    data = []
    for config in snapshot.config.channels:
        channel = snapshot.channels.get(config.name)
        recent = await accounting.logs(LogQuery(channel=config.name, since=now - RECENT_SECONDS, limit=RECENT_REQUESTS))
        last_error = await accounting.logs(LogQuery(channel=config.name, status="error", since=now - LAST_ERROR_SECONDS, limit=1))
        probe = probes.get(config.name)
        data.append({
            "name": config.name,
            "provider": config.provider,
            "enabled": config.enabled,
            "routed": channel is not None,
            "priority": config.priority,
            "weight": config.weight,
            "models": list(config.serves()),
            "groups": list(config.groups),
            "keys": [k.masked for k in channel.keys] if channel else [],
            **describe_health(health, channel, time.monotonic()),
            **_latency(recent.entries),
            "last_error": _error_of(last_error.entries[0]) if last_error.entries else None,
            "last_probe": probe.as_dict() if probe else None,
        })
    return {"config_version": snapshot.version, "channels": data}


def _latency(entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    entries = list(entries)
    durations = sorted(e["duration_ms"] for e in entries if e["status"] < 400)
    errors = sum(1 for e in entries if e["status"] >= 400)
    return {
        "recent_requests": len(entries),
        "p50_ms": _percentile(durations, 0.50),
        "p95_ms": _percentile(durations, 0.95),
        "error_rate": round(errors / len(entries), 4) if entries else None,
    }


def _percentile(ordered: Sequence[int], q: float) -> int | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _error_of(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {"ts": entry["ts"], "status": entry["status"], "error_type": entry["error_type"], "request_id": entry["request_id"]}
