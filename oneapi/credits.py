"""Top-ups: redemption codes and operator credits, kept in the ledger as money movements beside the spend.

A credit raises what a token may spend: available = budget + credits - spend, counted per budget period (a credit
counts in the day or month it was given; a budget without a period counts every credit ever given). Each credit is
one movement (when, which token, how much, who: a code's sha256 or the operator, why) and adds to per-window sums
kept like the spend's, so admission reads one more counter in the same atomic step. A code is redeemed once: its
sha256 is claimed in the same transaction (SQLite) or script (redis) that writes the credit.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import sqlite3
import time
from dataclasses import dataclass
from typing import Iterable

from .config import Redemption
from .errors import GatewayError
from .usage import NANO_USD

MAX_CREDIT_USD = 1_000_000.0  # one movement; keeps the sums inside 64-bit integers
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: codes are typed from a screen or a receipt
CODE_LENGTH = 24

SCHEMA = """
CREATE TABLE IF NOT EXISTS credits (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    token TEXT NOT NULL,
    amount_nano INTEGER NOT NULL,
    source TEXT NOT NULL,
    note TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS credits_token_ts ON credits (token, ts);
CREATE TABLE IF NOT EXISTS credit (
    token TEXT NOT NULL,
    window TEXT NOT NULL,
    amount_nano INTEGER NOT NULL,
    PRIMARY KEY (token, window)
);
CREATE TABLE IF NOT EXISTS redeemed (
    sha256 TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    ts REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Credit:
    """One money movement into (or, negative, out of) a token's budget."""

    ts: float
    token: str
    amount_nano: int
    source: str  # "code:<sha256>" or "admin"
    note: str

    def as_dict(self) -> dict[str, object]:
        return {"ts": self.ts, "token": self.token, "usd": self.amount_nano / NANO_USD, "source": self.source, "note": self.note}


def code_digest(code: str) -> str:
    """A code as it is declared and claimed: the sha256 of its text, spaces and case ignored (it is typed by hand)."""
    return hashlib.sha256("".join(code.split()).upper().encode()).hexdigest()


def new_code(prefix: str = "") -> str:
    return prefix + "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def credit_nano(usd: object) -> int:
    """USD from a request or the command line as nano-USD, or a 400 saying what is wrong with it."""
    if isinstance(usd, bool) or not isinstance(usd, (int, float)) or not math.isfinite(usd):
        raise GatewayError(400, "'usd' must be a number of US dollars.", param="usd")
    if usd == 0 or abs(usd) > MAX_CREDIT_USD:
        raise GatewayError(400, f"'usd' must be non-zero and at most {MAX_CREDIT_USD:,.0f} either way.", param="usd")
    return round(usd * NANO_USD)


def check_redemption(redemption: Redemption | None, group: str, now: float) -> None:
    """The 4xx of a code that cannot be redeemed by a token of `group` (already redeemed is the store's answer)."""
    if redemption is None:
        raise GatewayError(404, "This redemption code is unknown.", type="invalid_request_error", code="code_unknown", param="code")
    if redemption.expires is not None and redemption.expires.timestamp() <= now:
        raise GatewayError(410, "This redemption code has expired.", type="invalid_request_error", code="code_expired", param="code")
    if redemption.groups is not None and group not in redemption.groups:
        raise GatewayError(403, f"This redemption code is not valid for tokens of group {group!r}.", type="invalid_request_error",
                           code="code_wrong_group", param="code")


def already_redeemed(when: float) -> GatewayError:
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    return GatewayError(409, f"This redemption code was already redeemed (at {at}).", type="invalid_request_error",
                        code="code_already_redeemed", param="code")


# --- the SQLite store ----------------------------------------------------------------------------


def add_credit(db: sqlite3.Connection, credit: Credit, windows: Iterable[str], code_sha256: str | None = None) -> float | None:
    """Write the movement and its window sums in one transaction; with a code, claim it first. None: written;
    else the time the code was already claimed at, and nothing is written."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if code_sha256 is not None:
            row = db.execute("SELECT ts FROM redeemed WHERE sha256 = ?", (code_sha256,)).fetchone()
            if row is not None:
                db.execute("ROLLBACK")
                return float(row[0])
            db.execute("INSERT INTO redeemed (sha256, token, ts) VALUES (?, ?, ?)", (code_sha256, credit.token, credit.ts))
        db.execute("INSERT INTO credits (ts, token, amount_nano, source, note) VALUES (?, ?, ?, ?, ?)",
                   (credit.ts, credit.token, credit.amount_nano, credit.source, credit.note))
        db.executemany("INSERT INTO credit (token, window, amount_nano) VALUES (?, ?, ?) "
                       "ON CONFLICT (token, window) DO UPDATE SET amount_nano = amount_nano + excluded.amount_nano",
                       [(credit.token, window, credit.amount_nano) for window in windows])
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return None


def credit_of(db: sqlite3.Connection, token: str, windows: Iterable[str]) -> int:
    """Nano-USD credited to a token in the given spend windows."""
    windows = list(windows)
    row = db.execute(f"SELECT COALESCE(SUM(amount_nano), 0) FROM credit WHERE token = ? AND window IN ({', '.join('?' * len(windows))})",
                     (token, *windows)).fetchone()
    return int(row[0])


def credit_counted(db: sqlite3.Connection, token: str, window: str, carry_cap: int | None) -> int:
    """Nano-USD of credit that widens the budget of `window`: what was given in it; or, when credits carry over
    (`carry_cap` is then the budget), every credit ever given less what earlier periods spent past the budget."""
    if carry_cap is None or window == "all":
        return credit_of(db, token, (window,))
    total = credit_of(db, token, ("all",))
    if not total:
        return 0
    row = db.execute("SELECT COALESCE(SUM(MAX(0, cost_nano - ?)), 0) FROM spend WHERE token = ? AND window >= ? AND window < ?",
                     (carry_cap, token, window[:2], window)).fetchone()
    return total - int(row[0])


def carried_credit(total: int, spend: dict[str, str], window: str, carry_cap: int) -> int:
    """credit_counted's carry-over rule, over a store's spend windows read whole (redis)."""
    prefix = window[:2]
    return total - sum(max(0, int(v) - carry_cap) for w, v in spend.items() if w.startswith(prefix) and w < window)


def credits_of(db: sqlite3.Connection, token: str | None, limit: int = 100) -> list[Credit]:
    """The newest movements, of one token or of all."""
    where, args = ("WHERE token = ?", (token, limit)) if token else ("", (limit,))
    rows = db.execute(f"SELECT ts, token, amount_nano, source, note FROM credits {where} ORDER BY ts DESC, id DESC LIMIT ?", args)
    return [Credit(float(ts), t, int(amount), source, note) for ts, t, amount, source, note in rows]


def credit_totals(db: sqlite3.Connection, token: str | None) -> dict[str, int]:
    """All-time nano-USD credited per token."""
    where, args = ("WHERE token = ? AND", (token,)) if token else ("WHERE", ())
    return {t: int(n) for t, n in db.execute(f"SELECT token, amount_nano FROM credit {where} window = 'all'", args)}
