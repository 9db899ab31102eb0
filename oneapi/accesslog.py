"""Structured access logs (`log_format: json`): one JSON line per request with the request log's fields.

Off by default. A line carries what the ledger records (token and channel names, models, status, tokens,
cost, latency), never a key, a header or a body.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

from .ledger import RECORD_FIELDS, UsageRecord
from .requestlog import log_entry

log = logging.getLogger("oneapi.access")
log.propagate = False  # its lines are JSON on their own stream, not mixed into the text log's format

_handler: logging.Handler | None = None


def configure(log_format: str) -> None:
    """Turn the JSON lines on (`json`) or off (`text`, the default); called on start and on every reload."""
    global _handler
    if log_format == "json" and _handler is None:
        _handler = logging.StreamHandler(sys.stderr)
        _handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(_handler)
        log.setLevel(logging.INFO)
    elif log_format != "json" and _handler is not None:
        log.removeHandler(_handler)
        _handler = None
        log.setLevel(logging.WARNING)


def enabled() -> bool:
    return _handler is not None


def write(record: UsageRecord) -> None:
    entry: dict[str, Any] = log_entry(dict(zip(RECORD_FIELDS, record.row())))
    log.info(orjson.dumps(entry).decode())
