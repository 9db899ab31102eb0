"""One API's and new-api's GORM models, written down as data, and the DDL GORM emits for them per dialect.

Each column is (name, Go type, explicit gorm `type:` or None, gorm `default:` or None, index kind or None), as
declared in songquanpeng/one-api model/{channel,token,user,option,redemption,log}.go and QuantumNous/new-api
model/{channel,token,user}.go. Go types map to SQL types the way GORM's sqlite, mysql and postgres dialects map them:
int and int64 are 64-bit (bigint; integer on SQLite), bool is boolean (numeric on SQLite), float64 double
(real; decimal on PostgreSQL), string longtext/text, or varchar(191) on MySQL when it is indexed or a key.
"""

from __future__ import annotations

from typing import Any

Column = tuple[str, str, "str | None", "str | None", "str | None"]

ONE_API_CHANNEL: list[Column] = [
    ("id", "int", None, None, "pk"), ("type", "int", None, "0", None), ("key", "string", "text", None, None),
    ("status", "int", None, "1", None), ("name", "string", None, None, "index"), ("weight", "uint", None, "0", None),
    ("created_time", "int64", None, None, None), ("test_time", "int64", None, None, None), ("response_time", "int", None, None, None),
    ("base_url", "string", None, "''", None), ("other", "string", None, None, None), ("balance", "float64", None, None, None),
    ("balance_updated_time", "int64", None, None, None), ("models", "string", None, None, None),
    ("group", "string", "varchar(32)", "'default'", None), ("used_quota", "int64", None, "0", None),
    ("model_mapping", "string", "varchar(1024)", "''", None), ("priority", "int64", None, "0", None),
    ("config", "string", None, None, None), ("system_prompt", "string", "text", None, None),
]
ONE_API_TOKEN: list[Column] = [
    ("id", "int", None, None, "pk"), ("user_id", "int", None, None, None), ("key", "string", "char(48)", None, "unique"),
    ("status", "int", None, "1", None), ("name", "string", None, None, "index"), ("created_time", "int64", None, None, None),
    ("accessed_time", "int64", None, None, None), ("expired_time", "int64", None, "-1", None), ("remain_quota", "int64", None, "0", None),
    ("unlimited_quota", "bool", None, "false", None), ("used_quota", "int64", None, "0", None), ("models", "string", "text", None, None),
    ("subnet", "string", None, "''", None),
]
ONE_API_USER: list[Column] = [
    ("id", "int", None, None, "pk"), ("username", "string", None, None, "unique"), ("password", "string", None, None, "notnull"),
    ("display_name", "string", None, None, "index"), ("role", "int", "int", "1", None), ("status", "int", "int", "1", None),
    ("email", "string", None, None, "index"), ("github_id", "string", None, None, "index"), ("wechat_id", "string", None, None, "index"),
    ("lark_id", "string", None, None, "index"), ("oidc_id", "string", None, None, "index"),
    ("access_token", "string", "char(32)", None, "unique"), ("quota", "int64", None, "0", None), ("used_quota", "int64", None, "0", None),
    ("request_count", "int", "int", "0", None), ("group", "string", "varchar(32)", "'default'", None),
    ("aff_code", "string", "varchar(32)", None, "unique"), ("inviter_id", "int", "int", None, "index"),
]
ONE_API_OPTION: list[Column] = [("key", "string", None, None, "pk"), ("value", "string", None, None, None)]
ONE_API_REDEMPTION: list[Column] = [
    ("id", "int", None, None, "pk"), ("user_id", "int", None, None, None), ("key", "string", "char(32)", None, "unique"),
    ("status", "int", None, "1", None), ("name", "string", None, None, "index"), ("quota", "int64", None, "100", None),
    ("created_time", "int64", None, None, None), ("redeemed_time", "int64", None, None, None),
]
ONE_API_LOG: list[Column] = [
    ("id", "int", None, None, "pk"), ("user_id", "int", None, None, "index"), ("created_at", "int64", None, None, "index"),
    ("type", "int", None, None, "index"), ("content", "string", None, None, None), ("username", "string", None, "''", "index"),
    ("token_name", "string", None, "''", "index"), ("model_name", "string", None, "''", "index"), ("quota", "int", None, "0", None),
    ("prompt_tokens", "int", None, "0", None), ("completion_tokens", "int", None, "0", None), ("channel_id", "int", None, None, "index"),
    ("request_id", "string", None, "''", None), ("elapsed_time", "int64", None, "0", None), ("is_stream", "bool", None, "false", None),
    ("system_prompt_reset", "bool", None, "false", None),
]
NEW_API_CHANNEL: list[Column] = [
    ("id", "int", None, None, "pk"), ("type", "int", None, "0", None), ("key", "string", None, None, "notnull"),
    ("openai_organization", "string", None, None, None), ("test_model", "string", None, None, None), ("status", "int", None, "1", None),
    ("name", "string", None, None, "index"), ("weight", "uint", None, "0", None), ("created_time", "int64", None, None, None),
    ("test_time", "int64", None, None, None), ("response_time", "int", None, None, None), ("base_url", "string", None, "''", None),
    ("other", "string", None, None, None), ("balance", "float64", None, None, None), ("balance_updated_time", "int64", None, None, None),
    ("models", "string", None, None, None), ("group", "string", "varchar(64)", "'default'", None), ("used_quota", "int64", None, "0", None),
    ("model_mapping", "string", "text", None, None), ("status_code_mapping", "string", "varchar(1024)", "''", None),
    ("priority", "int64", None, "0", None), ("auto_ban", "int", None, "1", None), ("other_info", "string", None, None, None),
    ("tag", "string", None, None, "index"), ("setting", "string", "text", None, None), ("param_override", "string", "text", None, None),
    ("header_override", "string", "text", None, None), ("remark", "string", "varchar(255)", None, None),
    ("channel_info", "string", "json", None, None), ("settings", "string", None, None, None),
]
NEW_API_TOKEN: list[Column] = [
    ("id", "int", None, None, "pk"), ("user_id", "int", None, None, "index"), ("key", "string", "varchar(128)", None, "unique"),
    ("status", "int", None, "1", None), ("name", "string", None, None, "index"), ("created_time", "int64", None, None, None),
    ("accessed_time", "int64", None, None, None), ("expired_time", "int64", None, "-1", None), ("remain_quota", "int", None, "0", None),
    ("unlimited_quota", "bool", None, None, None), ("model_limits_enabled", "bool", None, None, None),
    ("model_limits", "string", "text", None, None), ("allow_ips", "string", None, "''", None), ("used_quota", "int", None, "0", None),
    ("group", "string", None, "''", None), ("cross_group_retry", "bool", None, None, None), ("billing_type", "int", None, "0", None),
    ("deleted_at", "time", None, None, "index"),
]
NEW_API_USER: list[Column] = [
    ("id", "int", None, None, "pk"), ("username", "string", None, None, "unique"), ("password", "string", None, None, "notnull"),
    ("display_name", "string", None, None, "index"), ("role", "int", "int", "1", None), ("status", "int", "int", "1", None),
    ("email", "string", None, None, "index"), ("github_id", "string", None, None, "index"), ("discord_id", "string", None, None, "index"),
    ("oidc_id", "string", None, None, "index"), ("wechat_id", "string", None, None, "index"), ("telegram_id", "string", None, None, "index"),
    ("access_token", "string", "char(32)", None, "unique"), ("quota", "int", "int", "0", None), ("used_quota", "int", "int", "0", None),
    ("request_count", "int", "int", "0", None), ("group", "string", "varchar(64)", "'default'", None),
    ("aff_code", "string", "varchar(32)", None, "unique"), ("aff_count", "int", "int", "0", None), ("aff_quota", "int", "int", "0", None),
    ("aff_history", "int", "int", "0", None), ("inviter_id", "int", "int", None, "index"),
    ("invite_rebate_eligible", "bool", None, "false", None), ("deleted_at", "time", None, None, "index"),
    ("linux_do_id", "string", None, None, "index"), ("setting", "string", "text", None, None), ("remark", "string", "varchar(255)", None, None),
    ("stripe_customer", "string", "varchar(64)", None, "index"), ("created_at", "int64", None, None, None),
    ("last_login_at", "int64", None, "0", None), ("auth_version", "int64", "bigint", "1", "notnull"),
]

TABLES: dict[str, dict[str, list[Column]]] = {
    "one-api": {"channels": ONE_API_CHANNEL, "tokens": ONE_API_TOKEN, "users": ONE_API_USER, "options": ONE_API_OPTION,
                "redemptions": ONE_API_REDEMPTION, "logs": ONE_API_LOG},
    "new-api": {"channels": NEW_API_CHANNEL, "tokens": NEW_API_TOKEN, "users": NEW_API_USER, "options": ONE_API_OPTION,
                "redemptions": ONE_API_REDEMPTION, "logs": ONE_API_LOG},
}

_TYPES = {
    "sqlite": {"int": "integer", "uint": "integer", "int64": "integer", "bool": "numeric", "float64": "real", "string": "text", "time": "datetime"},
    "mysql": {"int": "bigint", "uint": "bigint unsigned", "int64": "bigint", "bool": "boolean", "float64": "double", "string": "longtext",
              "time": "datetime(3)"},
    "postgres": {"int": "bigint", "uint": "bigint", "int64": "bigint", "bool": "boolean", "float64": "decimal", "string": "text",
                 "time": "timestamptz"},
}


def quote(dialect: str, name: str) -> str:
    return f"`{name}`" if dialect == "mysql" else f'"{name}"'


def ddl(flavor: str, dialect: str) -> list[str]:
    """CREATE TABLE (and CREATE INDEX) statements, as GORM's AutoMigrate would issue them."""
    statements = []
    for table, columns in TABLES[flavor].items():
        parts, indexes, keys = [], [], []
        for name, go_type, sql_type, default, index in columns:
            if index == "pk" and go_type == "int":
                parts.append(f"{quote(dialect, name)} " + {"sqlite": "integer PRIMARY KEY AUTOINCREMENT", "mysql": "bigint AUTO_INCREMENT",
                                                           "postgres": "bigserial"}[dialect])
                if dialect != "sqlite":
                    keys.append(name)
                continue
            kind = sql_type or _TYPES[dialect][go_type]
            if dialect == "mysql" and kind == "longtext" and index in ("pk", "unique", "index"):
                kind = "varchar(191)"  # an indexed or key string gets GORM's default size on MySQL
            if dialect == "postgres" and kind == "json":
                kind = "json"
            column = f"{quote(dialect, name)} {kind}"
            if default is not None:
                column += f" DEFAULT {default}"
            if index == "notnull":
                column += " NOT NULL"
            parts.append(column)
            if index == "pk":
                keys.append(name)
            elif index in ("unique", "index"):
                indexes.append((name, index))
        if keys:
            parts.append("PRIMARY KEY (" + ",".join(quote(dialect, k) for k in keys) + ")")
        statements.append(f"CREATE TABLE {quote(dialect, table)} (" + ",".join(parts) + ")")
        for name, index in indexes:
            unique = "UNIQUE " if index == "unique" else ""
            prefix = "uni" if index == "unique" else "idx"
            statements.append(f"CREATE {unique}INDEX {quote(dialect, f'{prefix}_{table}_{name}')} ON {quote(dialect, table)} ({quote(dialect, name)})")
    return statements


def insert_rows(cursor: Any, dialect: str, table: str, rows: list[dict[str, Any]]) -> None:
    mark = "?" if dialect == "sqlite" else "%s"
    for row in rows:
        names = ",".join(quote(dialect, n) for n in row)
        cursor.execute(f"INSERT INTO {quote(dialect, table)} ({names}) VALUES ({','.join([mark] * len(row))})", list(row.values()))


def build(connection: Any, dialect: str, flavor: str, rows: dict[str, list[dict[str, Any]]]) -> None:
    """Create every table of `flavor` and fill them with `rows`; commits."""
    cursor = connection.cursor()
    for statement in ddl(flavor, dialect):
        cursor.execute(statement)
    for table, items in rows.items():
        insert_rows(cursor, dialect, table, items)
    connection.commit()
