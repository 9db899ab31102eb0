"""The request log: ledger records read back newest first, filtered and paged, and trimmed when they age out.

Pages are cut by a cursor (the last row's place), not an offset, so the thousandth page of a million records
costs what the first does. Trimming removes request records only: the spend totals per token and day, month
and all time (what budgets and the billing endpoints read) are kept.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import bad_request
from .ledger import RECORD_FIELDS, parse_time
from .usage import nano_to_usd

MAX_PAGE = 500
DEFAULT_PAGE = 50
TRIM_CHUNK = 5000  # rows per transaction, so a large trim never holds the file lock for long


@dataclass(frozen=True)
class LogQuery:
    token: str | None = None
    channel: str | None = None
    model: str | None = None  # the name the client asked for, or the upstream's
    status: str | None = None  # "ok" (< 400), "error" (>= 400) or one status code
    since: float | None = None
    until: float | None = None
    limit: int = DEFAULT_PAGE
    cursor: str | None = None  # where the previous page ended

    def matches(self, record: Mapping[str, Any]) -> bool:
        ts, status = record["ts"], record["status"]
        return ((self.token is None or record["token"] == self.token)
                and (self.channel is None or record["channel"] == self.channel)
                and (self.model is None or self.model in (record["model"], record["upstream_model"]))
                and (self.status is None or (status >= 400 if self.status == "error" else status < 400 if self.status == "ok"
                                             else status == int(self.status)))
                and (self.since is None or ts >= self.since)
                and (self.until is None or ts < self.until))


def log_query(params: Mapping[str, Any], token: str | None = None) -> LogQuery:
    """The filters of GET /admin/logs (`token` fixed for a client key's own log); 400 for a malformed one."""
    try:
        since = parse_time(params["since"]) if params.get("since") else None
        until = parse_time(params["until"]) if params.get("until") else None
    except ValueError:
        raise bad_request("'since' and 'until' take unix seconds or an ISO 8601 date-time.", param="since") from None
    status = params.get("status") or None
    if status is not None and status not in ("ok", "error") and not (status.isdigit() and 100 <= int(status) <= 599):
        raise bad_request("'status' takes ok, error or a status code.", param="status")
    limit_text = params.get("limit") or str(DEFAULT_PAGE)
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
        raise bad_request(f"'limit' takes 1 to {MAX_PAGE}.", param="limit")
    cursor = params.get("cursor") or None
    if cursor is not None and not _valid_cursor(cursor):
        raise bad_request("'cursor' is not one this gateway handed out: pass next_cursor from the previous page.", param="cursor")
    return LogQuery(token=token if token is not None else (params.get("token") or None), channel=params.get("channel") or None,
                    model=params.get("model") or None, status=status, since=since, until=until, limit=int(limit_text), cursor=cursor)


def _valid_cursor(cursor: str) -> bool:
    left, sep, right = cursor.partition("-")  # sqlite "<ts>-<row id>", redis "<ms>-<seq>" (a stream id)
    try:
        float(left)
    except ValueError:
        return False
    return bool(sep) and right.isdigit()


def log_entry(record: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the log as the API answers it."""
    return {
        "ts": record["ts"],
        "request_id": record["request_id"],
        "token": record["token"],
        "channel": record["channel"],
        "model": record["model"],
        "upstream_model": record["upstream_model"],
        "operation": record["operation"],
        "stream": bool(record["stream"]),
        "status": record["status"],
        "prompt_tokens": record["prompt_tokens"],
        "completion_tokens": record["completion_tokens"],
        "cached_tokens": record["cached_tokens"],
        "reasoning_tokens": record["reasoning_tokens"],
        "estimated": bool(record["estimated"]),
        "cost_usd": nano_to_usd(record["cost_nano"]),
        "duration_ms": record["duration_ms"],
        "ttft_ms": record["ttft_ms"],
        "error_type": record["error_type"] or None,
    }


@dataclass
class LogPage:
    entries: list[dict[str, Any]]
    next_cursor: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"object": "list", "data": self.entries, "next_cursor": self.next_cursor, "has_more": self.next_cursor is not None}


# --- SQLite --------------------------------------------------------------------------------------


def query_logs(db: sqlite3.Connection, query: LogQuery) -> LogPage:
    """Newest first by (ts, row id): the ts indexes serve both the order and the time filter."""
    filters = (("token = ?", query.token), ("channel = ?", query.channel), ("(model = ? OR upstream_model = ?)", query.model),
               ("ts >= ?", query.since), ("ts < ?", query.until))
    where = [clause for clause, value in filters if value is not None]
    args: list[Any] = [value for clause, value in filters if value is not None for _ in range(clause.count("?"))]
    if query.status is not None:
        where.append({"error": "status >= 400", "ok": "status < 400"}.get(query.status, "status = ?"))
        if query.status.isdigit():
            args.append(int(query.status))
    if query.cursor is not None:
        ts, _, row_id = query.cursor.partition("-")
        where.append("(ts, id) < (?, ?)")
        args.extend((float(ts), int(row_id)))
    sql = (f"SELECT id, {', '.join(RECORD_FIELDS)} FROM usage" + (f" WHERE {' AND '.join(where)}" if where else "")
           + " ORDER BY ts DESC, id DESC LIMIT ?")
    rows = db.execute(sql, [*args, query.limit + 1]).fetchall()
    more = len(rows) > query.limit
    rows = rows[:query.limit]
    entries = [log_entry(dict(zip(RECORD_FIELDS, row[1:]))) for row in rows]
    return LogPage(entries, f"{rows[-1][1]!r}-{rows[-1][0]}" if more else None)


def trim_records(db: sqlite3.Connection, before: float) -> int:
    """Delete request records older than `before`, a chunk per transaction; the spend totals stay."""
    removed = 0
    while True:
        db.execute("BEGIN IMMEDIATE")
        try:
            count = db.execute("DELETE FROM usage WHERE id IN (SELECT id FROM usage WHERE ts < ? ORDER BY ts LIMIT ?)",
                               (before, TRIM_CHUNK)).rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        removed += count
        if count < TRIM_CHUNK:
            return removed
