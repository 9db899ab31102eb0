"""What a config change does, for a pull request's review: tokens, channels, routing per (group, model), prices
and settings of OLD against NEW, read the way the gateway reads them, and never a secret.

Both sides are built into snapshots with the gateway's own loader and routing (`build_snapshot`, `Routes`), so the
routing section is what the gateway would do, not a guess from the YAML. Secrets are never read and never printed:
a `${VAR}` that is not set where the diff runs, and every `${file:...}`, stands for a value the deployment provides
(a placeholder that is the same on both sides), keys are reported as replaced, never shown, and neither are key
hashes: a PR comment reaches more people than the config repository, a weak key's sha256 can be searched, and a
reviewer needs to know only that a key changed. Header and option values, which may carry credentials, are named,
not shown; credentials and query values inside a URL are cut out.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import re
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import urlsplit, urlunsplit

import yaml

from .config import ChannelConfig, TokenConfig
from .documents import ConfigError, Problem
from .snapshot import Snapshot, build_snapshot

_VAR = re.compile(r"\$\$\{|\$\{([^}]*)\}")  # as documents.py reads them
_PLACEHOLDER_FILE_VAR = "ONEAPI_DIFF_FILE_"
SECTIONS = ("settings", "providers", "tokens", "channels", "routing", "pricing", "groups")


@dataclass(frozen=True)
class Change:
    section: str
    kind: str  # "+" added, "-" removed, "~" changed
    subject: str
    details: tuple[str, ...] = ()


@dataclass
class Side:
    label: str
    snapshot: Snapshot
    provider_digests: dict[str, str] = field(default_factory=dict)


class DiffError(Exception):
    """A side could not be read: its problems, each already pointing at the label the user knows."""

    def __init__(self, problems: Sequence[str]):
        super().__init__("\n".join(problems))
        self.problems = list(problems)


# --- reading both sides -------------------------------------------------------------------------------------------

def sides_from_files(old: Path, new: Path, environ: dict[str, str]) -> tuple[Side, Side]:
    return (_side_from_file(old, str(old), environ), _side_from_file(new, str(new), environ))


def sides_from_git(ref: str, path: Path, environ: dict[str, str]) -> tuple[Side, Side]:
    """OLD: `path` (and the provider folder it names) as commit `ref` has them; NEW: the working tree's."""
    folder = path.resolve().parent
    top = Path(_git(folder, "rev-parse", "--show-toplevel").decode().strip())
    relative = path.resolve().relative_to(top)
    with tempfile.TemporaryDirectory(prefix="oneapi-diff-") as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        if not _git(top, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", allow_failure=True):
            raise DiffError([f"--git {ref}: no such commit in {top}"])
        # absent at ref: the file is new, and every token and channel in it is added
        text = _git(top, "show", f"{ref}:{relative.as_posix()}", allow_failure=True).decode()
        providers_dir = _raw_providers_dir(text)
        if providers_dir and not Path(providers_dir).is_absolute():
            wanted = Path(os.path.normpath(relative.parent / providers_dir)).as_posix()
            archive = _git(top, "archive", "--format=tar", ref, "--", wanted, allow_failure=True)
            if archive:
                with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                    tar.extractall(tree, filter="data")
        old = _side_from_text(text, tree / relative, f"{ref}:{relative.as_posix()}", environ)
    return old, _side_from_file(path, str(path), environ)


def _git(cwd: Path, *args: str, allow_failure: bool = False) -> bytes:
    done = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True)
    if done.returncode != 0:
        if allow_failure:
            return b""
        raise DiffError([f"git {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}"])
    return done.stdout


def _side_from_file(path: Path, label: str, environ: dict[str, str]) -> Side:
    try:
        text = path.read_text()
    except OSError as exc:
        raise DiffError([f"{label}: {exc.strerror}"]) from None
    return _side_from_text(text, path.resolve(), label, environ)


def _side_from_text(text: str, place: Path, label: str, environ: dict[str, str]) -> Side:
    """Build a side from config text meant to live at `place` (its relative paths resolve from there). A copy with
    secrets replaced by placeholders is written beside it, in a private folder that mirrors what the config names."""
    rewritten, env = _without_secrets(text, environ)
    providers_dir = _raw_providers_dir(text)
    relative = providers_dir is not None and not Path(providers_dir).is_absolute()
    with tempfile.TemporaryDirectory(prefix="oneapi-diff-") as tmp:
        # deep enough that a providers_dir of ../x still lands inside the private folder
        folder = Path(tmp).joinpath(*["nested"] * (Path(providers_dir).parts.count("..") if relative else 0))
        folder.mkdir(parents=True, exist_ok=True)
        copy = folder / "config.yaml"
        copy.write_text(rewritten)
        if relative:
            link = Path(os.path.normpath(folder / providers_dir))
            source = Path(os.path.normpath(place.parent / providers_dir))
            if source.exists() and link != folder:
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(source.resolve(), target_is_directory=True)
        try:
            snapshot = build_snapshot(copy, env)
        except ConfigError as exc:
            raise DiffError([_relabel(p, copy, label) for p in exc.problems]) from None
        digests = {name: hashlib.sha256(Path(p.file).read_bytes()).hexdigest() for name, p in snapshot.providers.items()}
    return Side(label, snapshot, digests)


_PROVIDERS_DIR_LINE = re.compile(r"^providers_dir[ \t]*:(.*)$", re.M)


def _raw_providers_dir(text: str) -> str | None:
    """The providers_dir a config names, read from its own line: parsing a 10,000-token file for it costs seconds."""
    line = _PROVIDERS_DIR_LINE.search(text)
    try:
        value = yaml.safe_load(line.group(1)) if line else None
    except yaml.YAMLError:
        return None  # the loader reports it, with its line
    return value if isinstance(value, str) and "${" not in value else None


def _without_secrets(text: str, environ: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The text with each `${file:...}` turned into a variable, and the environment with a placeholder for each
    variable that is unset here and has no default (or an empty one): the deployment provides those."""
    env = dict(environ)

    def replace(match: re.Match[str]) -> str:
        expr = match.group(1)
        if expr is None:
            return match.group(0)  # `$${`, a literal
        expr = expr.strip()
        if expr.startswith("file:"):
            name = _PLACEHOLDER_FILE_VAR + hashlib.sha256(expr[5:].strip().encode()).hexdigest()[:12]
            env[name] = f"placeholder-{name.lower()}"
            return "${" + name + "}"
        name, _, default = expr.partition(":-")
        if not env.get(name) and not default and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            env[name] = f"placeholder-{name.lower()}"
        return match.group(0)

    return _VAR.sub(replace, text), env


def _relabel(problem: Problem, copy: Path, label: str) -> str:
    return str(problem).replace(str(copy), label, 1) if problem.file == str(copy) else str(problem)


# --- comparing ----------------------------------------------------------------------------------------------------

def compare(old: Side, new: Side) -> list[Change]:
    a, b = old.snapshot, new.snapshot
    changes: list[Change] = []
    changes += _settings(a, b)
    changes += _by_name("providers", old.provider_digests, new.provider_digests,
                        lambda name, digest: (), lambda x, y: ("the file changed",) if x != y else ())
    changes += _by_name("tokens", {t.name: t for t in a.config.tokens}, {t.name: t for t in b.config.tokens},
                        _token_summary, _token_changes)
    changes += _by_name("channels", {c.name: c for c in a.config.channels}, {c.name: c for c in b.config.channels},
                        _channel_summary, _channel_changes)
    changes += _routing(a, b)
    changes += _by_name("pricing", dict(a.config.prices), dict(b.config.prices),
                        lambda model, price: (_price(price),), lambda x, y: (f"{_price(x)} -> {_price(y)}",) if x != y else ())
    changes += _by_name("groups", dict(a.config.groups), dict(b.config.groups),
                        lambda name, ratio: (f"ratio {ratio:g}",), lambda x, y: (f"ratio {x:g} -> {y:g}",) if x != y else ())
    return changes


def _by_name(section: str, before: dict[str, Any], after: dict[str, Any], summary: Any, differences: Any) -> list[Change]:
    out: list[Change] = []
    for name in sorted(before.keys() | after.keys()):
        if name not in before:
            out.append(Change(section, "+", name, tuple(summary(name, after[name]))))
        elif name not in after:
            out.append(Change(section, "-", name))
        else:
            details = tuple(differences(before[name], after[name]))
            if details:
                out.append(Change(section, "~", name, details))
    return out


def _settings(a: Snapshot, b: Snapshot) -> list[Change]:
    def shown(snapshot: Snapshot) -> dict[str, str]:
        config = snapshot.config
        return {
            "listen": f"{config.host}:{config.port}",
            "store": _without_credentials(config.store),
            "max_body_bytes": str(config.max_body_bytes),
            "watch_interval": f"{config.watch_interval:g}",
            "drain_timeout": f"{config.drain_timeout:g}",
            "retry": _fields(config.retry),
            "breaker": _fields(config.breaker),
        }

    out = [Change("settings", "~", name, (f"{x} -> {y}",)) for (name, x), y in zip(shown(a).items(), shown(b).values()) if x != y]
    if a.config.store != b.config.store and _without_credentials(a.config.store) == _without_credentials(b.config.store):
        out.append(Change("settings", "~", "store", ("its credentials are replaced",)))
    before, after = a.config.admin_key, b.config.admin_key
    if before != after:
        state = "the admin API is turned on" if not before else "the admin API is turned off" if not after else "the admin key is replaced"
        out.append(Change("settings", "~", "admin_key", (state,)))
    return out


def _token_summary(name: str, token: TokenConfig) -> list[str]:
    return [f"{field_name} {value}" for field_name, value in _token_fields(token).items() if value not in ("any", "none", "never", "yes")]


def _token_fields(token: TokenConfig) -> dict[str, str]:
    return {
        "group": token.group,
        "models": _names(token.models) if token.models is not None else "any",
        "budget": "none" if token.budget is None else f"${token.budget:,.2f}" + (f" {token.budget_period}" if token.budget_period else ""),
        "rpm": "none" if token.rpm is None else str(token.rpm),
        "tpm": "none" if token.tpm is None else str(token.tpm),
        "expires": token.expires.isoformat() if token.expires else "never",
        "subnets": _names(str(net) for net in token.subnets) if token.subnets else "any",
        "enabled": "yes" if token.enabled else "no",
    }


def _token_changes(x: TokenConfig, y: TokenConfig) -> list[str]:
    before, after = _token_fields(x), _token_fields(y)
    out = [_changed(name, before[name], after[name]) for name in before if before[name] != after[name]]
    if x.key_sha256 != y.key_sha256:
        out.append("key replaced" if y.key_sha256 else "key removed: nobody can use it")
    return out


def _channel_summary(name: str, channel: ChannelConfig) -> list[str]:
    shown = _channel_fields(channel)
    out = [f"provider {shown['provider']}", f"models {shown['models']}", f"groups {shown['groups']}",
           f"priority {shown['priority']}", f"weight {shown['weight']}"]
    if not channel.enabled:
        out.append("disabled")
    return out


def _channel_fields(channel: ChannelConfig) -> dict[str, str]:
    return {
        "provider": channel.provider,
        "base_url": _without_credentials(channel.base_url) if channel.base_url else "the provider's",
        "models": _names(channel.models),
        "model_map": _names(f"{k}->{v}" for k, v in channel.model_map.items()) if channel.model_map else "none",
        "groups": _names(channel.groups),
        "priority": str(channel.priority),
        "weight": f"{channel.weight:g}",
        "timeout": f"{channel.timeout:g}",
        "ttft_timeout": "none" if channel.ttft_timeout is None else f"{channel.ttft_timeout:g}",
        "connect_timeout": f"{channel.connect_timeout:g}",
        "idle_timeout": f"{channel.idle_timeout:g}",
        "max_concurrency": "none" if channel.max_concurrency is None else str(channel.max_concurrency),
    }


def _channel_changes(x: ChannelConfig, y: ChannelConfig) -> list[str]:
    out: list[str] = []
    if x.enabled != y.enabled:
        out.append("enabled" if y.enabled else "disabled")
    before, after = _channel_fields(x), _channel_fields(y)
    for name in before:
        if before[name] == after[name]:
            continue
        if name == "models":
            added, removed = sorted(set(y.models) - set(x.models)), sorted(set(x.models) - set(y.models))
            out.append("models " + " ".join([*(f"+{m}" for m in added), *(f"-{m}" for m in removed)]))
        elif name == "weight":
            out.append(f"re-weighted {before[name]} -> {after[name]}")
        else:
            out.append(_changed(name, before[name], after[name]))
    if x.keys != y.keys:
        out.append(f"keys replaced ({len(x.keys)} -> {len(y.keys)})" if len(x.keys) != len(y.keys) else "keys replaced")
    for name, before_map, after_map in (("headers", x.headers, y.headers), ("options", x.options, y.options)):
        touched = sorted(k for k in before_map.keys() | after_map.keys() if before_map.get(k) != after_map.get(k))
        if touched:
            out.append(f"{name} changed: {', '.join(touched)}")  # values may be credentials: names only
    return out


def _routing(a: Snapshot, b: Snapshot) -> list[Change]:
    out: list[Change] = []
    for group, model in sorted(set(a.routes.served()) | set(b.routes.served())):
        before, after = _route(a, group, model), _route(b, group, model)
        subject = f"{group} / {model}"
        if not before:
            out.append(Change("routing", "+", subject, (after,)))
        elif not after:
            out.append(Change("routing", "-", subject, (f"{before} -> nobody: requests for it get 404",)))
        elif before != after:
            out.append(Change("routing", "~", subject, (f"{before} -> {after}",)))
    return out


def _route(snapshot: Snapshot, group: str, model: str) -> str:
    """Who serves (group, model): each priority tier, its channels and their share of it."""
    tiers = snapshot.routes.tiers_serving(group, model)
    parts = []
    for tier in tiers:
        total = sum(c.config.weight for c in tier.channels)
        shares = ", ".join(f"{c.name} {100 * c.config.weight / total:.0f}%" if total > 0 and len(tier.channels) > 1 else c.name
                           for c in tier.channels)
        parts.append(f"priority {tier.priority}: {shares}")
    return "; then ".join(parts)


def _price(price: Any) -> str:
    text = f"in {price.input:g} / out {price.output:g}"
    return text + (f" / cached {price.cached_input:g}" if price.cached_input is not None else "") + " USD per 1M"


def _fields(settings: Any) -> str:
    return ", ".join(f"{f.name} {getattr(settings, f.name):g}" for f in fields(settings))


def _names(items: Iterable[str]) -> str:
    return "[" + ", ".join(sorted(items)) + "]"


def _changed(name: str, before: str, after: str) -> str:
    return f"{name} {before} -> {after}"


def _without_credentials(url: str) -> str:
    """A URL as it may be shown: user and password cut out (redis://:secret@host, https://user:pw@proxy), and query
    values too (?key=... is how some vendors take a key)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.username is not None or parts.password is not None:
        netloc = f"***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    query = "&".join(f"{pair.partition('=')[0]}=***" for pair in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def diff_command(files: Sequence[str], git_ref: str | None, form: str) -> int:
    """`oneapi diff OLD NEW` or `oneapi diff --git REF [FILE]`: the report on stdout; 2 when a side cannot be read."""
    environ = dict(os.environ)
    try:
        if git_ref is not None:
            if len(files) > 1:
                raise DiffError(["with --git give one file (default: config.yaml)"])
            old, new = sides_from_git(git_ref, Path(files[0] if files else "config.yaml"), environ)
        elif len(files) == 2:
            old, new = sides_from_files(Path(files[0]), Path(files[1]), environ)
        else:
            raise DiffError(["give two files (OLD NEW), or --git REF [FILE]"])
    except DiffError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    changes = compare(old, new)
    render = render_markdown if form == "markdown" else render_text
    sys.stdout.write(render(changes, old.label, new.label))
    return 0


# --- rendering ----------------------------------------------------------------------------------------------------

def render_text(changes: list[Change], old: str, new: str) -> str:
    lines = [f"oneapi diff {old} -> {new}"]
    if not changes:
        return "\n".join([*lines, "no change to tokens, channels, routing, prices or settings"]) + "\n"
    for section in SECTIONS:
        found = [c for c in changes if c.section == section]
        if not found:
            continue
        lines.append(f"\n{section} ({_count(found)})")
        for change in found:
            lines.append(f"  {change.kind} {change.subject}" + (f": {'; '.join(change.details)}" if change.details else ""))
    return "\n".join(lines) + "\n"


def render_markdown(changes: list[Change], old: str, new: str) -> str:
    lines = [f"### oneapi diff `{old}` → `{new}`", ""]
    if not changes:
        return "\n".join([*lines, "No change to tokens, channels, routing, prices or settings."]) + "\n"
    words = {"+": "added", "-": "removed", "~": "changed"}
    for section in SECTIONS:
        found = [c for c in changes if c.section == section]
        if not found:
            continue
        lines += [f"#### {section.capitalize()} ({_count(found)})", "", "| | name | what |", "|---|---|---|"]
        for change in found:
            lines.append(f"| {words[change.kind]} | `{_cell(change.subject)}` | {_cell('; '.join(change.details))} |")
        lines.append("")
    return "\n".join(lines)


def _count(changes: list[Change]) -> str:
    counts = {kind: sum(1 for c in changes if c.kind == kind) for kind in ("+", "-", "~")}
    return ", ".join(f"{n} {word}" for (kind, n), word in zip(counts.items(), ("added", "removed", "changed")) if n)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


__all__ = ["Change", "DiffError", "Side", "compare", "diff_command", "render_markdown", "render_text", "sides_from_files", "sides_from_git"]
