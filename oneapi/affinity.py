"""Answer affinity: which channel and key produced a stored answer (a Responses id), kept in the store for a
while, so that a follow-up naming it (previous_response_id) reaches the account that holds it."""

from __future__ import annotations

import sqlite3
import time
from typing import NamedTuple

_TABLE = "CREATE TABLE IF NOT EXISTS affinity (name TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL NOT NULL)"
_INDEX = "CREATE INDEX IF NOT EXISTS affinity_expires ON affinity (expires)"  # expired names are dropped by range, not by scan


class Holder(NamedTuple):
    """The channel and key (by fingerprint: the store never holds a secret) that produced an answer, and the
    gateway token it was made for (only that token may continue it)."""

    channel: str
    key: str
    token: str

    def encode(self) -> str:
        return "\n".join(self)

    @classmethod
    def decode(cls, value: str | None) -> "Holder | None":
        parts = (value or "").split("\n")
        return cls(*parts) if len(parts) == 3 else None


def sqlite_remember(db: sqlite3.Connection, name: str, value: str, ttl: float) -> None:
    now = time.time()
    db.execute(_TABLE)
    db.execute(_INDEX)
    db.execute("DELETE FROM affinity WHERE expires < ?", (now,))  # expired names go as new ones come
    db.execute("INSERT OR REPLACE INTO affinity (name, value, expires) VALUES (?, ?, ?)", (name, value, now + ttl))


def sqlite_recall(db: sqlite3.Connection, name: str) -> str | None:
    try:
        row = db.execute("SELECT value FROM affinity WHERE name = ? AND expires >= ?", (name, time.time())).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # nothing was ever remembered
            return None
        raise
    return row[0] if row else None
