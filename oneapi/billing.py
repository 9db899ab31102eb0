"""OpenAI's retired billing endpoints as One API answers them, so clients such as NextChat show used and total.

`GET /dashboard/billing/subscription` gives the token's budget as `hard_limit_usd`; `GET /dashboard/billing/usage`
gives what it spent, in cents, from the spend totals the ledger keeps per day (they survive the request log's
retention). Both are also served under `/v1`, take the client key, and answer browsers' CORS preflights: NextChat
calls them straight from the page.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone
from typing import Any, Mapping

from .config import TokenConfig
from .errors import bad_request
from .ledger import budget_window
from .limits import Accounting
from .usage import NANO_USD

NO_BUDGET_USD = 100_000_000.0  # what One API answers for a token without a limit: a number no client runs into
MAX_USAGE_DAYS = 1000  # a usage range longer than this is refused rather than summed day by day
CORS_HEADERS = {"Access-Control-Allow-Origin": "*"}
PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Max-Age": "86400",
}


async def subscription(accounting: Accounting, token: TokenConfig) -> dict[str, Any]:
    """The budget of the current period, credits included, as the hard limit."""
    limit = NO_BUDGET_USD
    if token.budget is not None:
        window = budget_window(token.budget_period, time.time())
        limit = float(token.budget) + await accounting.credit_counted(token, window) / NANO_USD
    return {
        "object": "billing_subscription",
        "has_payment_method": True,
        "soft_limit_usd": limit,
        "hard_limit_usd": limit,
        "system_hard_limit_usd": limit,
        "access_until": int(token.expires.timestamp()) if token.expires is not None else 0,
    }


def usage_windows(token: TokenConfig, params: Mapping[str, str], now: float | None = None) -> list[str]:
    """The spend windows to add up: each day from start_date up to (not including) end_date, else the token's
    current budget period (all time when its budget does not reset)."""
    start_text, end_text = params.get("start_date"), params.get("end_date")
    if not start_text and not end_text:
        return [budget_window(token.budget_period, time.time() if now is None else now)]
    try:
        start = date.fromisoformat(start_text) if start_text else None
        end = date.fromisoformat(end_text) if end_text else datetime.now(timezone.utc).date() + timedelta(days=1)
    except ValueError:
        raise bad_request("'start_date' and 'end_date' take a date as YYYY-MM-DD.", param="start_date") from None
    if start is None:
        raise bad_request("'start_date' is required with 'end_date'.", param="start_date")
    days = (end - start).days
    if days <= 0:
        raise bad_request("'end_date' must be after 'start_date'.", param="end_date")
    if days > MAX_USAGE_DAYS:
        raise bad_request(f"A usage range spans at most {MAX_USAGE_DAYS} days.", param="start_date")
    return ["d:" + (start + timedelta(days=i)).isoformat() for i in range(days)]


async def usage(accounting: Accounting, token: TokenConfig, params: Mapping[str, str]) -> dict[str, Any]:
    spent_nano = await accounting.spent(token.name, usage_windows(token, params))
    return {"object": "list", "total_usage": round(spent_nano * 100 / NANO_USD, 4)}
