"""The import written out: DIR/config.yaml (commented), DIR/secrets.env (mode 600) and DIR/import-report.md."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from .conversion import Imported

CONFIG_FILE, SECRETS_FILE, REPORT_FILE = "config.yaml", "secrets.env", "import-report.md"
REPORT_ORDER = ("channels not imported", "channels to check", "tokens", "groups", "pricing", "options", "left in the database", "unreadable")


def existing_outputs(out_dir: Path) -> list[Path]:
    return [p for p in (out_dir / f for f in (CONFIG_FILE, SECRETS_FILE, REPORT_FILE)) if p.exists()]


def write_import(imported: Imported, out_dir: Path, source: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"config": out_dir / CONFIG_FILE, "secrets": out_dir / SECRETS_FILE, "report": out_dir / REPORT_FILE}
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    _write_private(paths["secrets"], secrets_text(imported, source, when))
    paths["config"].write_text(config_text(imported, source, when))
    paths["report"].write_text(report_text(imported, source, when))
    return paths


def config_text(imported: Imported, source: str, when: str) -> str:
    lines = [f"# Imported from {imported.flavor} ({source}) by `oneapi import` on {when}.",
             f"# What did not map, and why: {REPORT_FILE}. Upstream keys are ${{VARIABLES}} set in {SECRETS_FILE}:",
             f"#   set -a; . ./{SECRETS_FILE}; set +a; oneapi check --config {CONFIG_FILE}",
             "# Tokens keep their keys: clients go on sending the sk-... key they have."]
    config = imported.config
    head = {k: v for k, v in config.items() if k not in ("channels", "tokens")}
    if head:
        lines.append(_dump(head).rstrip())
    for section in ("channels", "tokens"):
        lines.append("")
        items = config.get(section) or []
        if not items:
            lines.append(f"{section}: []")
            continue
        lines.append(f"{section}:")
        for i, item in enumerate(items):
            lines.extend(f"  # {c}" for c in imported.comments.get((section, i), []))
            dumped = _dump([item]).rstrip().splitlines()
            lines.extend("  " + line for line in dumped)
    return "\n".join(lines) + "\n"


def secrets_text(imported: Imported, source: str, when: str) -> str:
    """POSIX-shell quoting (single quotes), which `docker compose --env-file` and systemd's EnvironmentFile read too."""
    lines = [f"# Upstream keys imported from {imported.flavor} ({source}) on {when}: the values config.yaml's ${{...}} read.",
             "# Secrets: keep this file out of git and readable by the gateway's user only."]
    for name, value in imported.secrets.items():
        lines.append(f"{name}='" + value.replace("'", "'\\''") + "'")
    return "\n".join(lines) + "\n"


def report_text(imported: Imported, source: str, when: str) -> str:
    counts = imported.counts
    lines = [f"# Import report: {imported.flavor} ({source}), {when}", "",
             f"Imported {counts.get('channels', 0)} channel(s) with {counts.get('secrets', 0)} key(s) in {SECRETS_FILE}, "
             f"{counts.get('tokens', 0)} token(s) and {counts.get('prices', 0)} model price(s) into {CONFIG_FILE}.", ""]
    sections = sorted(imported.report, key=lambda s: REPORT_ORDER.index(s) if s in REPORT_ORDER else len(REPORT_ORDER))
    if not sections:
        lines.append("Everything mapped.")
    for section in sections:
        lines.extend([f"## {section[0].upper()}{section[1:]}", ""])
        lines.extend(f"- {line}" for line in imported.report[section])
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# libyaml's emitter: ten thousand tokens are written in a second rather than in twenty
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_DUMPER, sort_keys=False, allow_unicode=True, default_flow_style=False, width=120)


def _write_private(path: Path, text: str) -> None:
    """Created 0600 before a byte is written: the keys are never readable by others, even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
