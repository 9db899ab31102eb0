"""The `oneapi` command: serve, check, key, usage, codes, credit, diff, import."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import hashlib
import logging
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .config import load_config
from .documents import SHIPPED_PROVIDERS, ConfigError
from .metrics import METRICS_DIR_ENV
from .dialects.selftest import run_dialect_selftests
from .selftest import run_selftests
from .snapshot import RELOAD_SIGNAL_ENV, build_snapshot, signal_reload

if TYPE_CHECKING:
    from .credits import Credit
    from .ledger import UsageQuery, UsageReport
    from .snapshot import Snapshot

DEFAULT_CONFIG = "config.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oneapi", description="One OpenAI-compatible endpoint in front of every LLM vendor.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the gateway with Granian")
    serve.add_argument("--config", default=DEFAULT_CONFIG, help="path to config.yaml (default: ./config.yaml)")
    serve.add_argument("--host", help="bind address (default: from listen: in the config, else 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port (default: from listen: in the config, else 3000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    check = commands.add_parser("check", help="validate config.yaml and every provider file without serving")
    check.add_argument("--config", default=DEFAULT_CONFIG, help="path to config.yaml (default: ./config.yaml)")
    check.add_argument("--probe", action="store_true", help="then send the smallest real request through each enabled channel")
    check.add_argument("--channel", help="with --probe: only this channel")
    check.add_argument("--model", help="with --probe: this model (default: each channel's first)")
    check.add_argument("--json", action="store_true", help="with --probe: print the results as JSON")

    commands.add_parser("key", help="print a new client key and its sha256 for tokens[].key_sha256")

    usage = commands.add_parser("usage", help="print usage and cost from the ledger (the store in config.yaml)")
    usage.add_argument("--config", default=DEFAULT_CONFIG, help="path to config.yaml (default: ./config.yaml)")
    usage.add_argument("--token", help="only this token")
    usage.add_argument("--channel", help="only this channel")
    usage.add_argument("--model", help="only this model (the name clients asked for)")
    usage.add_argument("--since", help="from this time on: unix seconds or ISO 8601 (UTC unless an offset is given)")
    usage.add_argument("--until", help="before this time")
    usage.add_argument("--group-by", default="token,channel,model", help="comma list of token, channel, model, day")
    usage.add_argument("--csv", action="store_true", help="CSV of the breakdown instead of a table")

    codes = commands.add_parser("codes", help="redemption codes: `codes new` prints new codes once and declares their sha256")
    codes_commands = codes.add_subparsers(dest="codes_command", required=True)
    codes_new = codes_commands.add_parser("new", help="print new codes once; write their sha256 and value under redemptions:")
    codes_new.add_argument("--config", default=DEFAULT_CONFIG, help="path to config.yaml (default: ./config.yaml)")
    codes_new.add_argument("--value", type=float, required=True, help="USD each code credits")
    codes_new.add_argument("--count", type=int, default=1, help="how many codes (default: 1)")
    codes_new.add_argument("--expires", help="ISO 8601 date or date-time after which the codes are refused (UTC unless an offset is given)")
    codes_new.add_argument("--group", action="append", help="only tokens of this group may redeem them (repeatable)")
    codes_new.add_argument("--prefix", default="", help="text every code starts with")
    codes_new.add_argument("--out", help="write the codes to this file (mode 0600) instead of stdout")

    credit = commands.add_parser("credit", help="credit (or, negative, debit) a token's budget, straight in the store")
    credit.add_argument("token", help="the token's name")
    credit.add_argument("usd", type=float, help="US dollars; negative for a refund or a correction")
    credit.add_argument("--note", required=True, help="why: kept with the credit in the ledger")
    credit.add_argument("--config", default=DEFAULT_CONFIG, help="path to config.yaml (default: ./config.yaml)")

    diff = commands.add_parser("diff", help="what a config change does: tokens, channels, routing per group and model, prices")
    diff.add_argument("files", nargs="*", metavar="FILE", help="OLD NEW; with --git, the file to compare (default: config.yaml)")
    diff.add_argument("--git", metavar="REF", help="compare FILE as commit REF has it against the working tree's")
    diff.add_argument("--format", choices=["text", "markdown"], default="text", help="markdown: for a pull request comment")

    importer = commands.add_parser("import", help="write config.yaml + secrets.env from a running One API's (or new-api's) database")
    importer.add_argument("--from", dest="source", required=True,
                          help="sqlite:///one-api.db (four slashes: absolute), mysql://user:pass@host:3306/db, One API's SQL_DSN, or postgres://...")
    importer.add_argument("--out", required=True, help="folder for config.yaml, secrets.env and import-report.md")
    importer.add_argument("--providers-dir", help="providers_dir: to write into the new config.yaml")
    importer.add_argument("--force", action="store_true", help="overwrite files an earlier import wrote there")

    args = parser.parse_args(argv)
    if args.command == "import":
        return import_command(args)
    if args.command == "serve":
        return serve_command(args)
    if args.command == "check":
        return probe_command(args) if args.probe else check_command(Path(args.config))
    if args.command == "usage":
        return usage_command(args)
    if args.command == "codes":
        from .codes import new_codes_command

        return new_codes_command(args)
    if args.command == "credit":
        return credit_command(args)
    if args.command == "diff":
        from .configdiff import diff_command

        return diff_command(args.files, args.git, args.format)
    return key_command()


def check_command(config_path: Path, list_providers: bool = True) -> int:
    try:
        snapshot = build_snapshot(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s); config is not valid", file=sys.stderr)
        return 1
    for warning in snapshot.warnings:
        print(f"{warning} (warning)", file=sys.stderr)
    cases, failures = run_selftests(snapshot.providers.values())
    dialect_cases, dialect_failures = run_dialect_selftests(snapshot.dialects.values())
    for problem in failures + dialect_failures:
        print(problem, file=sys.stderr)
    if failures:
        print(f"{len(failures)} of {cases} provider self-test(s) failed", file=sys.stderr)
    if dialect_failures:
        print(f"{len(dialect_failures)} of {dialect_cases} dialect self-test(s) failed", file=sys.stderr)
    if failures or dialect_failures:
        return 1
    print(
        f"ok: {config_path} is valid (config {snapshot.version}: {len(snapshot.providers)} providers, "
        f"{len(snapshot.channels)} routed channels, {len(snapshot.tokens)} tokens, {len(snapshot.dialects)} client dialects; "
        f"{cases} provider and {dialect_cases} dialect self-tests passed)"
    )
    if list_providers:
        print_provider_files(snapshot)
    return 0


def print_provider_files(snapshot: Snapshot) -> None:
    """Which file each provider was read from: the shipped folder, or providers_dir adding or replacing one."""
    shipped = {path.stem for path in SHIPPED_PROVIDERS.glob("*.yaml")}
    for name, provider in sorted(snapshot.providers.items()):
        if Path(provider.file).parent.resolve() == SHIPPED_PROVIDERS.resolve():
            origin = "shipped"
        else:
            origin = "replaces the shipped file" if name in shipped else "added"
        print(f"  provider {name}: {provider.file} ({origin})")


def import_command(args: argparse.Namespace) -> int:
    from .importer import DatabaseError, existing_outputs, import_database

    out_dir = Path(args.out)
    if (existing := existing_outputs(out_dir)) and not args.force:
        print(f"{', '.join(map(str, existing))} already there: pass --force to overwrite", file=sys.stderr)
        return 1
    try:
        imported, paths = import_database(args.source, out_dir, args.providers_dir)
    except DatabaseError as exc:
        print(exc, file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot write to {out_dir}: {exc.strerror}", file=sys.stderr)
        return 1
    counts = imported.counts
    print(f"imported {counts['channels']} channel(s), {counts['tokens']} token(s), {counts['prices']} price(s) from {imported.flavor}")
    print(f"  {paths['config']}\n  {paths['secrets']} ({counts['secrets']} key(s); keep it secret)\n  {paths['report']} "
          f"({sum(map(len, imported.report.values()))} note(s) on what did not map)")
    return 0


def probe_command(args: argparse.Namespace) -> int:
    """`check --probe`: the config must pass the check first; exit 1 if any probe failed."""
    import json

    from .errors import GatewayError
    from .probe import probe_all, probe_table

    config_path = Path(args.config)
    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):  # --json: stdout is the JSON alone
        checked = check_command(config_path, list_providers=False)  # the probe table follows the verdict
    if checked:
        return checked
    try:
        results = asyncio.run(probe_all(build_snapshot(config_path), args.channel, args.model))
    except GatewayError as exc:
        print(exc.message, file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        print(probe_table(results))
    return 0 if results and all(r.ok for r in results) else 1


def key_command() -> int:
    key = "sk-" + secrets.token_urlsafe(32)
    print(f"key:        {key}")
    print(f"key_sha256: {hashlib.sha256(key.encode()).hexdigest()}")
    return 0


USAGE_COLUMNS = ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "estimated_requests", "cost_usd")


def usage_command(args: argparse.Namespace) -> int:
    from .app import usage_query
    from .errors import GatewayError
    import sqlite3

    from .credits import credit_totals
    from .ledger import connect, query_usage, sqlite_path

    try:
        config, _ = load_config(Path(args.config))
        query = usage_query({"token": args.token, "channel": args.channel, "model": args.model, "since": args.since,
                             "until": args.until, "group_by": args.group_by})
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except GatewayError as exc:
        print(exc.message, file=sys.stderr)
        return 2
    if config.store.startswith(("redis://", "rediss://")):
        report, credited = asyncio.run(_redis_usage(config.store, query))
    else:
        path = sqlite_path(config.store, config.path.parent)
        if path is None or not path.exists():
            print(f"no ledger at {path or config.store}: nothing has been recorded yet", file=sys.stderr)
            return 1
        db = connect(path, readonly=True)
        try:
            report = query_usage(db, query)
            try:
                credited = credit_totals(db, query.token)
            except sqlite3.OperationalError:  # a ledger written before credits existed
                credited = {}
        finally:
            db.close()
    data = report.as_dict()
    header = [*data["group_by"], *USAGE_COLUMNS]
    rows = [[str(row[c]) for c in header] for row in data["breakdown"]]
    if args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return 0
    total = ["TOTAL", *[""] * (len(data["group_by"]) - 1)] if data["group_by"] else []
    rows.append([*total, *(str(data["totals"][c]) for c in USAGE_COLUMNS)])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    numeric = len(data["group_by"])
    for line in [header, ["-" * w for w in widths], *rows[:-1], ["-" * w for w in widths], rows[-1]]:
        print("  ".join(cell.rjust(w) if i >= numeric else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths))).rstrip())
    for name, nano in sorted(credited.items()):
        print(f"credits  {name}: ${nano / 1e9:.6f} (redeemed codes and operator credits, all time)")
    return 0


def credit_command(args: argparse.Namespace) -> int:
    """`oneapi credit`: written to the store directly, so it works while the gateway is down."""
    import time

    from .credits import Credit, credit_nano
    from .errors import GatewayError

    try:
        config, _ = load_config(Path(args.config))
        amount = credit_nano(args.usd)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except GatewayError as exc:
        print(exc.message.replace("'usd'", "USD"), file=sys.stderr)
        return 2
    token = next((t for t in config.tokens if t.name == args.token), None)
    if token is None:
        print(f"no token named {args.token!r} in {args.config}", file=sys.stderr)
        return 2
    if not args.note.strip():
        print("--note must say why", file=sys.stderr)
        return 2
    credit = Credit(time.time(), token.name, amount, "admin", args.note.strip())
    asyncio.run(_add_credit(config.store, config.path.parent, credit))
    budget = f" (budget ${token.budget:.2f}{' ' + token.budget_period if token.budget_period else ''})" if token.budget is not None else \
        " (the token has no budget: the credit counts once it has one)"
    print(f"credited ${amount / 1e9:.6f} to {token.name}{budget}")
    return 0


async def _add_credit(store: str, base: Path, credit: "Credit") -> None:
    from .ledger import SqliteLedger, sqlite_path
    from .limits import SqliteAccounting

    if store.startswith(("redis://", "rediss://")):
        from .redisstore import RedisAccounting

        redis = RedisAccounting(store)
        try:
            await redis.add_credit(credit)
        finally:
            await redis.redis.aclose()
        return
    ledger = SqliteLedger(sqlite_path(store, base))
    await ledger.open()
    try:
        await SqliteAccounting(ledger).add_credit(credit)
    finally:
        await ledger.close()


async def _redis_usage(url: str, query: "UsageQuery") -> "tuple[UsageReport, dict[str, int]]":
    from .redisstore import RedisAccounting

    accounting = RedisAccounting(url)
    try:
        return await accounting.query(query), await accounting.credit_totals(query.token)
    finally:
        await accounting.redis.aclose()


def serve_command(args: argparse.Namespace) -> int:
    from granian.constants import Interfaces, Loops
    from granian.server import Server

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config_path = Path(args.config).absolute()
    try:
        snapshot = build_snapshot(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    for warning in snapshot.warnings:
        logging.getLogger("oneapi").warning("%s", warning)

    os.environ["ONEAPI_CONFIG"] = str(config_path)
    signal_dir = tempfile.mkdtemp(prefix="oneapi-")
    signal_file = Path(signal_dir) / "reload"
    signal_file.write_text("0\n")
    os.environ[RELOAD_SIGNAL_ENV] = str(signal_file)
    metrics_dir = Path(signal_dir) / "metrics"
    metrics_dir.mkdir()
    os.environ[METRICS_DIR_ENV] = str(metrics_dir)

    class GatewayServer(Server):  # type: ignore[misc, valid-type]
        def signal_handler_reload(self, *args: object, **kwargs: object) -> None:
            # SIGHUP reloads the config in place; Granian's default (respawn every worker) would drop
            # the old snapshot even when the new file is broken
            signal_reload()

    server = GatewayServer(
        "oneapi.app:create_app",
        address=args.host or snapshot.config.host,
        port=args.port or snapshot.config.port,
        interface=Interfaces.ASGI,
        workers=max(1, args.workers),
        loop=Loops.uvloop if _has_uvloop() else Loops.asyncio,
        factory=True,
        log_level=args.log_level,
        log_access=False,
        respawn_failed_workers=True,
        # SIGTERM: stop accepting, let requests and streams in flight finish, then stop anyway
        workers_kill_timeout=max(1, round(snapshot.config.drain_timeout)),
    )
    try:
        server.serve()
    finally:
        shutil.rmtree(signal_dir, ignore_errors=True)
    return 0


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
