"""One API's database read as plain rows: SQLite, MySQL/MariaDB or PostgreSQL, by URL, whatever columns it has."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

# the tables `oneapi import` reads whole (GORM's names for One API's models)
READ_TABLES = ("channels", "tokens", "users", "options")
# the tables it only counts, to say in the report what stayed behind
COUNTED_TABLES = ("redemptions", "logs", "abilities", "top_ups", "midjourneys", "tasks")
# new-api adds these columns to One API's tables; any of them means the type ids are new-api's
NEW_API_COLUMNS = {"channels": {"channel_info", "tag", "setting", "settings", "auto_ban"}, "tokens": {"model_limits", "allow_ips"}}


class DatabaseError(Exception):
    """The database cannot be reached or read; the message says which and why, without the password."""


@dataclass
class OneApiData:
    """Everything read from one One API database."""

    flavor: str  # "one-api" or "new-api": which numbering of channel types the rows use
    dialect: str  # sqlite, mysql, postgres
    channels: list[dict[str, Any]]
    tokens: list[dict[str, Any]]
    users: list[dict[str, Any]]
    options: dict[str, str]
    counts: dict[str, int] = field(default_factory=dict)  # rows left in tables that are not imported


@dataclass(frozen=True)
class DatabaseUrl:
    dialect: str
    database: str  # a file path for sqlite
    host: str = "127.0.0.1"
    port: int | None = None
    user: str = ""
    password: str = field(default="", repr=False)

    def redacted(self) -> str:
        if self.dialect == "sqlite":
            return f"sqlite file {self.database}"
        return f"{self.dialect}://{self.user}@{self.host}:{self.port}/{self.database}"


_GO_DSN = re.compile(r"^(?P<user>[^:@/]*)(?::(?P<password>[^@]*))?@tcp\((?P<host>[^:)]+)(?::(?P<port>\d+))?\)/(?P<db>[^?]+)")


def parse_url(url: str, base: Path | None = None) -> DatabaseUrl:
    """`sqlite:///relative.db` / `sqlite:////abs.db` (as `store:` reads them), a bare file path,
    `mysql://user:pass@host:port/db`, One API's own SQL_DSN `user:pass@tcp(host:port)/db`, `postgres://...`."""
    base = base or Path.cwd()
    if url.startswith("sqlite:///"):
        rest = url[len("sqlite:///"):]
        relative, absolute = base / rest, Path("/" + rest)
        # three slashes are relative (as `store:` reads them), but One API's docs write absolute paths so: take what exists
        return DatabaseUrl("sqlite", str(absolute if not relative.exists() and absolute.is_file() else relative))
    if match := _GO_DSN.match(url):
        return DatabaseUrl("mysql", match["db"], match["host"], int(match["port"] or 3306), match["user"], match["password"] or "")
    if "://" not in url:
        return DatabaseUrl("sqlite", str(base / url))
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    dialect = {"mysql": "mysql", "mariadb": "mysql", "postgres": "postgres", "postgresql": "postgres"}.get(scheme)
    if dialect is None:
        raise DatabaseError(f"--from: unknown database scheme {parts.scheme!r}: use sqlite:///, mysql:// or postgres://")
    database = parts.path.lstrip("/")
    if not database:
        raise DatabaseError(f"--from: {dialect} URL names no database (…/DBNAME at the end)")
    return DatabaseUrl(dialect, unquote(database), parts.hostname or "127.0.0.1",
                       parts.port or (3306 if dialect == "mysql" else 5432), unquote(parts.username or ""), unquote(parts.password or ""))


def read_database(url: str, base: Path | None = None) -> OneApiData:
    """Read One API's channels, tokens, users and options; tolerate missing tables and extra or missing columns."""
    where = parse_url(url, base)
    connection, quote = _connect(where)
    try:
        cursor = connection.cursor()
        tables = _tables(cursor, where)
        rows: dict[str, list[dict[str, Any]]] = {}
        columns: dict[str, set[str]] = {}
        for table in READ_TABLES:
            columns[table], rows[table] = _select_all(cursor, quote(table)) if table in tables else (set(), [])
        counts = {}
        for table in COUNTED_TABLES:
            if table in tables:
                cursor.execute(f"SELECT COUNT(*) FROM {quote(table)}")
                counts[table] = int(cursor.fetchone()[0])
    except DatabaseError:
        raise
    except Exception as exc:  # every driver has its own error classes; the message is what the operator needs
        raise DatabaseError(f"reading {where.redacted()}: {_without(exc, where.password)}") from None
    finally:
        connection.close()
    if "channels" not in tables and "tokens" not in tables:
        raise DatabaseError(f"{where.redacted()} has no channels or tokens table: is it One API's database?")
    flavor = "new-api" if any(columns[t] & NEW_API_COLUMNS[t] for t in NEW_API_COLUMNS) else "one-api"
    options = {str(r.get("key")): "" if r.get("value") is None else str(r["value"]) for r in rows["options"]}
    return OneApiData(flavor, where.dialect, rows["channels"], rows["tokens"], rows["users"], options, counts)


def _connect(where: DatabaseUrl) -> tuple[Any, Callable[[str], str]]:
    if where.dialect == "sqlite":
        path = Path(where.database)
        if not path.is_file():
            raise DatabaseError(f"--from: no SQLite database at {path} (sqlite:///NAME is relative to the current folder, "
                                "sqlite:////NAME absolute)")
        # read-only: the import never changes the database it reads
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True), lambda name: f'"{name}"'
    try:
        if where.dialect == "mysql":
            import pymysql

            return (pymysql.connect(host=where.host, port=where.port, user=where.user, password=where.password,
                                    database=where.database, charset="utf8mb4", connect_timeout=10),
                    lambda name: f"`{name}`")
        import pg8000.dbapi

        return (pg8000.dbapi.connect(host=where.host, port=where.port, user=where.user, password=where.password or None,
                                     database=where.database, timeout=10),
                lambda name: f'"{name}"')
    except ImportError as exc:
        raise DatabaseError(f"reading {where.dialect} needs the driver {exc.name}: install oneapi's `import` extra "
                            f"(pip install '.[import]' in the checkout) or {exc.name} itself") from None
    except Exception as exc:
        raise DatabaseError(f"cannot connect to {where.redacted()}: {_without(exc, where.password)}") from None


def _tables(cursor: Any, where: DatabaseUrl) -> set[str]:
    if where.dialect == "sqlite":
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    elif where.dialect == "mysql":
        cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()")
    else:
        cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
    return {str(row[0]).lower() for row in cursor.fetchall()}


def _select_all(cursor: Any, table: str) -> tuple[set[str], list[dict[str, Any]]]:
    cursor.execute(f"SELECT * FROM {table}")
    names = [str(d[0]).lower() for d in cursor.description]
    return set(names), [dict(zip(names, map(_text, row))) for row in cursor.fetchall()]


def _text(value: Any) -> Any:
    """MySQL hands some text columns back as bytes."""
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else value


def _without(exc: Exception, password: str) -> str:
    text = str(exc) or type(exc).__name__
    return text.replace(password, "***") if password else text
