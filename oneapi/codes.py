"""`oneapi codes new`: redemption codes made here, printed once, and declared in git by their sha256 alone.

The entries go to the file `redemptions_file:` names, else under `redemptions:` in config.yaml (added at its end
when absent); the text around them is left as it was, comments included. The result is checked like any config
and put back as it was if it does not load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import yaml

from .config import load_config
from .credits import code_digest, new_code
from .documents import ConfigError
from .ledger import parse_time

MAX_CODES = 100_000
_TOP_KEY = re.compile(r"^redemptions:[ \t]*(\[\s*\])?[ \t]*(#.*)?$", re.MULTILINE)


def entry_lines(codes: list[str], value: float, expires: str | None, groups: list[str] | None, indent: str = "") -> str:
    """One YAML flow mapping per code (JSON is YAML): only the digest, never the code."""
    lines = []
    for code in codes:
        entry: dict[str, object] = {"sha256": code_digest(code), "value": value}
        if expires:
            entry["expires"] = expires
        if groups:
            entry["groups"] = groups
        lines.append(f"{indent}- {json.dumps(entry)}\n")
    return "".join(lines)


def with_entries(text: str, entries: str) -> str:
    """config.yaml's text with the entries at the end of its `redemptions:` block (or a new block at its end)."""
    found = _TOP_KEY.search(text)
    if found is None:
        return text + ("" if text.endswith("\n") or not text else "\n") + "redemptions:\n" + entries
    start = found.end() + 1
    if found.group(1):  # `redemptions: []`: the block form from now on
        text = text[:found.start()] + "redemptions:" + text[found.end():]
        start = found.start() + len("redemptions:") + 1
    end, indent = start, "  "
    for line in text[start:].splitlines(keepends=True):  # the block: indented, list or comment lines
        if line.strip() and not line[0].isspace() and not line.startswith(("-", "#")):
            break
        end += len(line)
    items = re.findall(r"^([ \t]*)- ", text[start:end], re.MULTILINE)
    if items:  # the items already there set the indentation: YAML wants one for the whole list
        indent = items[0]
    if not text[:end].endswith("\n"):
        text, end = text[:end] + "\n" + text[end:], end + 1
    return text[:end] + "".join(indent + line for line in entries.splitlines(keepends=True)) + text[end:]


def new_codes_command(args: argparse.Namespace) -> int:
    if not 0 < args.value <= 1_000_000 or not 1 <= args.count <= MAX_CODES:
        print(f"--value takes 0 < USD <= 1,000,000 and --count 1 to {MAX_CODES:,}", file=sys.stderr)
        return 2
    expires = None
    if args.expires:
        try:
            expires = _iso(parse_time(args.expires))
        except ValueError:
            print("--expires takes an ISO 8601 date or date-time", file=sys.stderr)
            return 2
    config_path = Path(args.config)
    try:
        raw = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        print(f"cannot read {config_path}: {exc}", file=sys.stderr)
        return 1
    codes = [new_code(args.prefix) for _ in range(args.count)]
    if isinstance(raw, dict) and raw.get("redemptions_file"):
        target = config_path.parent / str(raw["redemptions_file"])
        before = target.read_text(encoding="utf-8") if target.exists() else ""
        after = before + ("" if before.endswith("\n") or not before else "\n") + entry_lines(codes, args.value, expires, args.group, "")
    else:
        target, before = config_path, config_path.read_text(encoding="utf-8")
        after = with_entries(before, entry_lines(codes, args.value, expires, args.group, ""))
    if args.out:  # the codes first: entries without their codes would be worth nothing to anyone
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("".join(code + "\n" for code in codes))
    target.write_text(after, encoding="utf-8")
    try:
        load_config(config_path)
    except ConfigError as exc:
        target.write_text(before, encoding="utf-8")
        if args.out:
            os.unlink(args.out)  # codes that were never declared must not be sold
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{target} put back as it was: the config would not load with the new codes", file=sys.stderr)
        return 1
    if not args.out:
        sys.stdout.write("".join(code + "\n" for code in codes))
    where = f" (codes in {args.out})" if args.out else ""
    print(f"{len(codes)} code(s) worth ${args.value:.2f} each declared in {target}{where}; they are shown only now", file=sys.stderr)
    return 0


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
