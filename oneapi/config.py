"""config.yaml: the operator's interface, read into plain immutable objects."""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from .documents import ConfigError, Document, Problem
from .incremental import PieceCache

DEFAULT_LISTEN = "0.0.0.0:3000"
DEFAULT_MAX_BODY = 32 * 1024 * 1024
DEFAULT_TIMEOUT = 300.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 90.0
DEFAULT_ATTEMPTS = 3
DEFAULT_DEADLINE = 600.0
DEFAULT_DRAIN = 30.0
DEFAULT_GROUP = "default"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens, as vendors publish them."""

    input: float = 0.0
    output: float = 0.0
    cached_input: float | None = None  # None: cached input costs the full input price


@dataclass(frozen=True)
class ChannelConfig:
    name: str
    provider: str
    base_url: str | None
    keys: tuple[str, ...]
    models: tuple[str, ...]
    model_map: Mapping[str, str]
    groups: tuple[str, ...]
    priority: int
    weight: float
    timeout: float
    ttft_timeout: float | None
    headers: Mapping[str, str]
    options: Mapping[str, Any]
    enabled: bool
    connect_timeout: float
    idle_timeout: float
    line: int = field(default=0, compare=False, repr=False)
    max_concurrency: int | None = None  # upstream capacity shared by every worker and replica

    def serves(self) -> tuple[str, ...]:
        """Every model name a client may ask this channel for."""
        return tuple(dict.fromkeys((*self.models, *self.model_map)))

    def upstream_model(self, requested: str) -> str:
        return self.model_map.get(requested, requested)


@dataclass(frozen=True)
class TokenConfig:
    name: str
    key_sha256: str | None  # None: declared with an empty key, so nothing can present it
    group: str
    models: frozenset[str] | None
    budget: float | None
    budget_period: str | None
    expires: datetime | None
    subnets: tuple[IPNetwork, ...]
    rpm: int | None
    tpm: int | None
    enabled: bool


@dataclass(frozen=True)
class BreakerSettings:
    failures: int = 5  # consecutive failures that open the breaker
    failure_rate: float = 0.5  # ...or this share of failures inside the window
    min_requests: int = 20  # the rate rule needs at least this many outcomes in the window
    window: float = 60.0
    cooldown: float = 30.0  # open -> half-open after this long
    key_cooldown: float = 600.0  # a key that failed auth or ran out of quota rests this long


@dataclass(frozen=True)
class RetrySettings:
    attempts: int = DEFAULT_ATTEMPTS  # upstream calls per client request, the first included
    deadline: float = DEFAULT_DEADLINE  # seconds for all of them together


@dataclass(frozen=True)
class Config:
    path: Path
    host: str
    port: int
    providers_dir: Path
    store: str
    admin_key: str | None
    max_body_bytes: int
    watch_interval: float
    groups: Mapping[str, float]
    pricing: Mapping[str, Mapping[str, float]]
    prices: Mapping[str, Price]
    channels: tuple[ChannelConfig, ...]
    tokens: tuple[TokenConfig, ...]
    referenced_files: frozenset[str]
    retry: RetrySettings
    breaker: BreakerSettings
    drain_timeout: float
    warnings: tuple[Problem, ...] = field(default=())


def sha256_hex(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ItemMemo:
    """Objects built from parsed items, kept while the very same item object comes back from the piece cache
    (which hands out the same object as long as the item's text and what its `${...}` read are unchanged)."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[Any, Any]] = {}
        self._next: dict[int, tuple[Any, Any]] = {}

    def get(self, raw: Any) -> Any:
        hit = self._last.get(id(raw))
        if hit is None or hit[0] is not raw:  # holding `raw` keeps its id from being reused
            return None
        self._next[id(raw)] = hit
        return hit[1]

    def put(self, raw: Any, built: Any) -> None:
        self._next[id(raw)] = (raw, built)

    def settle(self, loaded: bool) -> None:
        """After a load: keep what it used, or after a refused one, everything known so far."""
        if loaded:
            self._last = self._next
        else:
            self._last.update(self._next)
        self._next = {}


@dataclass
class ConfigCache:
    """What the next load of the same config.yaml can reuse: its parsed pieces and what was built from them."""

    pieces: PieceCache = field(default_factory=PieceCache)
    channels: ItemMemo = field(default_factory=ItemMemo)
    tokens: ItemMemo = field(default_factory=ItemMemo)


def load_config(path: str | Path, environ: Mapping[str, str] | None = None,
                cache: ConfigCache | None = None) -> tuple[Config, Document]:
    """Read, interpolate and validate config.yaml; raise ConfigError listing every problem."""
    cache = cache or ConfigCache()
    loaded = False
    try:
        result = _load_config(Path(path), os.environ if environ is None else environ, cache)
        loaded = True
        return result
    finally:
        cache.channels.settle(loaded)
        cache.tokens.settle(loaded)


def _load_config(path: Path, environ: Mapping[str, str], cache: ConfigCache) -> tuple[Config, Document]:
    doc, problems = cache.pieces.load(str(path), "config.schema.json", environ)
    if problems:
        raise ConfigError(problems)
    data: dict[str, Any] = doc.data
    warnings: list[Problem] = []

    groups = {name: float(spec.get("ratio", 1.0)) for name, spec in (data.get("groups") or {}).items()}
    groups.setdefault(DEFAULT_GROUP, 1.0)

    channels: list[ChannelConfig] = []
    for i, raw in enumerate(data.get("channels") or []):
        for j, group in enumerate(raw.get("groups", [DEFAULT_GROUP])):
            if group not in groups:
                problems.append(doc.problem(("channels", i, "groups", j), f"channel {raw['name']!r} names group {group!r}, which is not under groups:"))
        line = doc.line(("channels", i))
        channel = cache.channels.get(raw)
        if channel is None:
            channel = _channel(raw, line)
            cache.channels.put(raw, channel)
        elif channel.line != line:
            channel = replace(channel, line=line)
        channels.append(channel)
    tokens = _tokens(doc, data.get("tokens") or [], groups, cache.tokens, problems, warnings)
    _check_unique(doc, "channels", [c.name for c in channels], problems)
    _check_unique(doc, "tokens", [t.name for t in tokens], problems)
    _check_unique_keys(doc, tokens, problems)
    if problems:
        raise ConfigError(problems)
    pricing = dict((data.get("pricing") or {}).get("models") or {})
    prices = {model: Price(float(p.get("input", 0.0)), float(p.get("output", 0.0)),
                           None if p.get("cached_input") is None else float(p["cached_input"])) for model, p in pricing.items()}
    _warn_unpriced(doc, tuple(channels), prices, warnings)

    host, _, port = str(data.get("listen", DEFAULT_LISTEN)).rpartition(":")
    admin_key = data.get("admin_key") or None
    config = Config(
        path=path,
        host=host.strip("[]") or "0.0.0.0",
        port=int(port),
        providers_dir=(path.parent / data.get("providers_dir", "providers.d")).resolve(),
        store=data.get("store", "sqlite:///data/oneapi.db"),
        admin_key=admin_key,
        max_body_bytes=int(data.get("max_body_bytes", DEFAULT_MAX_BODY)),
        watch_interval=float(data.get("watch_interval", 1.0)),
        groups=MappingProxyType(groups),
        pricing=MappingProxyType(pricing),
        prices=MappingProxyType(prices),
        channels=tuple(channels),
        tokens=tuple(tokens),
        referenced_files=frozenset(doc.referenced_files),
        retry=RetrySettings(**(data.get("retry") or {})),
        breaker=BreakerSettings(**(data.get("breaker") or {})),
        drain_timeout=float(data.get("drain_timeout", DEFAULT_DRAIN)),
        warnings=tuple(warnings),
    )
    return config, doc


def _tokens(doc: Document, items: list[dict[str, Any]], groups: Mapping[str, float], memo: ItemMemo,
            problems: list[Problem], warnings: list[Problem]) -> list[TokenConfig]:
    """Tokens in order, each built once while its item is unchanged. In comprehensions: ten thousand of them."""
    tokens: list[TokenConfig | None] = [memo.get(raw) for raw in items]
    every_group_known = {raw.get("group", DEFAULT_GROUP) for raw in items}.issubset(groups)
    for i in [i for i, token in enumerate(tokens) if token is None] if every_group_known else range(len(items)):
        raw = items[i]
        group = raw.get("group", DEFAULT_GROUP)
        if group not in groups:
            problems.append(doc.problem(("tokens", i, "group"), f"token {raw['name']!r} names group {group!r}, which is not under groups:"))
        if tokens[i] is None:
            found = len(problems), len(warnings)
            tokens[i] = token = _token(doc, i, raw, problems, warnings)
            if (len(problems), len(warnings)) == found:  # what it reports depends on the item alone: reported again next time
                memo.put(raw, token)
    return tokens  # type: ignore[return-value]  # every None was built above


def _channel(raw: dict[str, Any], line: int) -> ChannelConfig:
    timeout = float(raw.get("timeout", DEFAULT_TIMEOUT))
    return ChannelConfig(
        name=raw["name"],
        provider=raw["provider"],
        base_url=(raw.get("base_url") or None),
        keys=tuple(k for k in raw.get("keys", []) if k),
        models=tuple(raw.get("models", [])),
        model_map=MappingProxyType(dict(raw.get("model_map", {}))),
        groups=tuple(raw.get("groups", [DEFAULT_GROUP])),
        priority=int(raw.get("priority", 0)),
        weight=float(raw.get("weight", 1)),
        timeout=timeout,
        ttft_timeout=float(raw["ttft_timeout"]) if "ttft_timeout" in raw else None,
        headers=MappingProxyType(dict(raw.get("headers", {}))),
        options=MappingProxyType(dict(raw.get("options", {}))),
        enabled=bool(raw.get("enabled", True)),
        connect_timeout=float(raw.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT)),
        idle_timeout=float(raw.get("idle_timeout", DEFAULT_IDLE_TIMEOUT)),
        line=line,
        max_concurrency=raw.get("max_concurrency"),
    )


def _token(doc: Document, i: int, raw: dict[str, Any], problems: list[Problem], warnings: list[Problem]) -> TokenConfig:
    where = ("tokens", i)
    group = raw.get("group", DEFAULT_GROUP)
    if "key_sha256" in raw:
        digest: str | None = raw["key_sha256"].lower()
    elif raw["key"]:
        digest = sha256_hex(raw["key"])
    else:
        digest = None
        warnings.append(doc.problem(where + ("key",), f"token {raw['name']!r} has an empty key: nobody can use it"))
    expires = None
    if "expires" in raw:
        try:
            expires = datetime.fromisoformat(raw["expires"].replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            problems.append(doc.problem(where + ("expires",), f"expires: {raw['expires']!r} is not an ISO 8601 date-time"))
        else:
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=timezone.utc)
    subnets = []
    for j, text in enumerate(raw.get("subnets", [])):
        try:
            subnets.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            problems.append(doc.problem(where + ("subnets", j), f"subnets: {text!r} is not an IP network"))
    return TokenConfig(
        name=raw["name"],
        key_sha256=digest,
        group=group,
        models=frozenset(raw["models"]) if "models" in raw else None,
        budget=raw.get("budget"),
        budget_period=raw.get("budget_period"),
        expires=expires,
        subnets=tuple(subnets),
        rpm=raw.get("rpm"),
        tpm=raw.get("tpm"),
        enabled=bool(raw.get("enabled", True)),
    )


def _warn_unpriced(doc: Document, channels: tuple[ChannelConfig, ...], prices: Mapping[str, Price], warnings: list[Problem]) -> None:
    """A served model without a price costs nothing and counts nothing against budgets: say so once per model."""
    warned: set[str] = set()
    for i, channel in enumerate(channels):
        if not channel.enabled:
            continue
        for model in channel.serves():
            if model in warned or model in prices or channel.upstream_model(model) in prices:
                continue
            warned.add(model)
            warnings.append(doc.problem(("channels", i), f"model {model!r} (channel {channel.name!r}) has no price under pricing.models: "
                                                         "its requests are recorded as free and never count against a budget"))


def _check_unique_keys(doc: Document, tokens: list[TokenConfig], problems: list[Problem]) -> None:
    digests = [t.key_sha256 for t in tokens if t.key_sha256 is not None]
    if len(set(digests)) == len(digests):
        return  # the usual case, decided in C
    seen_keys: dict[str, str] = {}
    for i, token in enumerate(tokens):
        if token.key_sha256 is None:
            continue
        if token.key_sha256 in seen_keys:
            problems.append(doc.problem(("tokens", i), f"token {token.name!r} has the same key as token {seen_keys[token.key_sha256]!r}"))
        seen_keys.setdefault(token.key_sha256, token.name)


def _check_unique(doc: Document, section: str, names: list[str], problems: list[Problem]) -> None:
    if len(set(names)) == len(names):
        return  # the usual case, decided in C
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in first:
            problems.append(doc.problem((section, i, "name"), f"duplicate {section[:-1]} name {name!r} (first at line {doc.line((section, first[name]))})"))
        first.setdefault(name, i)
