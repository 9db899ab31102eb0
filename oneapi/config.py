"""config.yaml: the operator's interface, read into plain immutable objects."""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from operator import attrgetter, is_, is_not
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from .documents import SHIPPED_DIALECTS, SHIPPED_PROVIDERS, ConfigError, Document, Problem, load_document, schema_check
from .incremental import PieceCache, unchanged_ends

DEFAULT_LISTEN = "0.0.0.0:3000"
DEFAULT_MAX_BODY = 32 * 1024 * 1024
DEFAULT_TIMEOUT = 300.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 90.0
DEFAULT_MAX_RESPONSE = 64 * 1024 * 1024  # an upstream body read whole, after decompression (b64 images fit)
DEFAULT_MAX_EVENT = 16 * 1024 * 1024  # one stream event or frame (a partial image fits)
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


def price_of(prices: Mapping[str, Price], model: str, upstream_model: str) -> Price | None:
    """The one pricing rule, for admission, settlement and `oneapi check` alike: the name the client asked for,
    else the name the channel sends upstream (a model_map alias is priced as its target); None: it is free."""
    price = prices.get(model)
    return prices.get(upstream_model) if price is None else price


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
    max_response_bytes: int = DEFAULT_MAX_RESPONSE
    max_event_bytes: int = DEFAULT_MAX_EVENT
    max_output_tokens: int | None = None  # the most output tokens its models take: a translated dialect request is lowered to it

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
    credits_carry_over: bool = False  # a credit outlives the budget period it was given in, until spent


@dataclass(frozen=True, slots=True)
class Redemption:
    """One code declared under `redemptions:`: only its digest is known."""

    sha256: str
    value: float  # USD
    expires: datetime | None
    groups: frozenset[str] | None  # None: any token's group may redeem it


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
    dialects_dir: Path  # client dialect files (dialects.d)
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
    retention_days: float | None = None  # ledger.retention_days: request records older than this are trimmed
    log_format: str = "text"  # "json": one access-log line per request
    redemptions: Mapping[str, Redemption] = field(default_factory=dict)  # by the code's sha256


def sha256_hex(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class BuiltItems:
    """Objects built from an array's items, by position. The piece cache hands back the very same item object
    while the item's text and what its `${...}` read are unchanged, so a reload keeps what it built for every item
    at either end that is still the same object (compared from both ends in C), looks up the few in between (they
    may have moved), and builds only the rest."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.built: list[Any] = []  # None where it must be built again: it reported a problem or a warning
        self.rebuild: list[int] = []  # where those are
        self.groups: Mapping[str, float] | None = None  # the groups the last build checked every item against

    def reuse(self, items: list[Any]) -> tuple[list[Any], list[int], range, range]:
        """What was built for `items` (None where it must be built), the positions to look at (the middle, and
        those to build again), and the ends kept as they were."""
        head, tail = unchanged_ends(self.items, items, is_not)
        old_stop, stop = len(self.items) - tail, len(items) - tail
        built = self.built[:head] + [None] * (stop - head) + self.built[old_stop:]
        if head < stop and head < old_stop:
            known = {id(raw): (raw, b) for raw, b in zip(self.items[head:old_stop], self.built[head:old_stop])}
            for i in range(head, stop):
                hit = known.get(id(items[i]))
                if hit is not None and hit[0] is items[i]:  # holding the item keeps its id from being reused
                    built[i] = hit[1]
        shift = stop - old_stop
        todo = list(range(head, stop))
        todo.extend(p if p < head else p + shift for p in self.rebuild if p < head or p >= old_stop)
        todo.sort()
        return built, todo, range(0, head), range(stop, len(items))

    def remember(self, items: list[Any], built: list[Any], rebuild: list[int], groups: Mapping[str, float] | None) -> None:
        if rebuild:
            built = list(built)
            for i in rebuild:
                built[i] = None
        self.items, self.built, self.rebuild, self.groups = items, built, rebuild, groups


@dataclass
class ConfigCache:
    """What the next load of the same config.yaml can reuse: its parsed pieces and what was built from them."""

    pieces: PieceCache = field(default_factory=PieceCache)
    channels: BuiltItems = field(default_factory=BuiltItems)
    tokens: BuiltItems = field(default_factory=BuiltItems)
    unpriced: tuple[tuple[ChannelConfig, ...], Mapping[str, Price], list[Problem]] | None = None


def load_config(path: str | Path, environ: Mapping[str, str] | None = None,
                cache: ConfigCache | None = None) -> tuple[Config, Document]:
    """Read, interpolate and validate config.yaml; raise ConfigError listing every problem."""
    return _load_config(Path(path), os.environ if environ is None else environ, cache or ConfigCache())


def _load_config(path: Path, environ: Mapping[str, str], cache: ConfigCache) -> tuple[Config, Document]:
    doc, problems = cache.pieces.load(str(path), "config.schema.json", environ)
    if problems:
        raise ConfigError(problems)
    data: dict[str, Any] = doc.data
    warnings: list[Problem] = []

    groups = {name: float(spec.get("ratio", 1.0)) for name, spec in (data.get("groups") or {}).items()}
    groups.setdefault(DEFAULT_GROUP, 1.0)

    channels = _channels(doc, data.get("channels") or [], groups, cache.channels, problems)
    tokens = _tokens(doc, data.get("tokens") or [], groups, cache.tokens, problems, warnings)
    _check_unique(doc, "channels", list(map(_name, channels)), problems)
    _check_unique(doc, "tokens", list(map(_name, tokens)), problems)
    _check_unique_keys(doc, tokens, problems)
    redemptions, codes_file = _redemptions(doc, path, data, environ, groups, problems)
    if problems:
        raise ConfigError(problems)
    pricing = dict((data.get("pricing") or {}).get("models") or {})
    prices = {model: Price(float(p.get("input", 0.0)), float(p.get("output", 0.0)),
                           None if p.get("cached_input") is None else float(p["cached_input"])) for model, p in pricing.items()}
    warnings.extend(_unpriced(doc, tuple(channels), prices, cache))
    for name in (name for name, ratio in groups.items() if ratio == 0):
        warnings.append(doc.problem(("groups", name, "ratio"), f"group {name!r} has ratio 0: its tokens' requests are recorded as "
                                                               "free and never count against a budget"))

    host, _, port = str(data.get("listen", DEFAULT_LISTEN)).rpartition(":")
    admin_key = data.get("admin_key") or None
    config = Config(
        path=path,
        host=host.strip("[]") or "0.0.0.0",
        port=int(port),
        # absent: the shipped vendors only; given: its files are added to them, and replace them by name
        providers_dir=(path.parent / data["providers_dir"]).resolve() if data.get("providers_dir") else SHIPPED_PROVIDERS,
        dialects_dir=(path.parent / data["dialects_dir"]).resolve() if data.get("dialects_dir") else SHIPPED_DIALECTS,
        store=data.get("store", "sqlite:///data/oneapi.db"),
        admin_key=admin_key,
        max_body_bytes=int(data.get("max_body_bytes", DEFAULT_MAX_BODY)),
        watch_interval=float(data.get("watch_interval", 1.0)),
        groups=MappingProxyType(groups),
        pricing=MappingProxyType(pricing),
        prices=MappingProxyType(prices),
        channels=tuple(channels),
        tokens=tuple(tokens),
        referenced_files=frozenset(doc.referenced_files | codes_file),
        retry=RetrySettings(**(data.get("retry") or {})),
        breaker=BreakerSettings(**(data.get("breaker") or {})),
        drain_timeout=float(data.get("drain_timeout", DEFAULT_DRAIN)),
        warnings=tuple(warnings),
        retention_days=(data.get("ledger") or {}).get("retention_days"),
        log_format=data.get("log_format", "text"),
        redemptions=MappingProxyType(redemptions),
    )
    return config, doc


_name = attrgetter("name")


def _redemptions(doc: Document, path: Path, data: Mapping[str, Any], environ: Mapping[str, str], groups: Mapping[str, float],
                 problems: list[Problem]) -> tuple[dict[str, Redemption], set[str]]:
    """The codes under `redemptions:` and in `redemptions_file:` (a YAML list of the same entries), by sha256;
    and that file, so that a reload follows it."""
    found: dict[str, Redemption] = {}
    sources: list[tuple[Document, Any, tuple[Any, ...]]] = [(doc, data.get("redemptions") or [], ("redemptions",))]
    files: set[str] = set()
    if data.get("redemptions_file"):
        file = str((path.parent / data["redemptions_file"]).resolve())
        files.add(file)
        codes = load_document(file, environ)
        if not isinstance(codes.data, list) and codes.data is not None:
            problems.append(codes.problem((), "a redemptions_file holds a YAML list of {sha256, value, expires, groups} entries"))
        else:
            check = schema_check("config.schema.json", "redemptions")
            for i, item in enumerate(codes.data or []):
                problems.extend(check.problems(codes, item, (i,)))
            sources.append((codes, codes.data or [], ()))
    for source, items, at in sources:
        for i, raw in enumerate(items):
            if not isinstance(raw, dict) or "sha256" not in raw:
                continue  # reported by the schema
            expires = None
            if "expires" in raw:
                try:
                    expires = datetime.fromisoformat(str(raw["expires"]).replace("Z", "+00:00").replace("z", "+00:00"))
                except ValueError:
                    problems.append(source.problem(at + (i, "expires"), f"expires: {raw['expires']!r} is not an ISO 8601 date-time"))
                    continue
                expires = expires if expires.tzinfo else expires.replace(tzinfo=timezone.utc)
            digest = str(raw["sha256"]).lower()
            for j, group in enumerate(raw.get("groups", [])):
                if group not in groups:
                    problems.append(source.problem(at + (i, "groups", j), f"a redemption code names group {group!r}, which is not under groups:"))
            if digest in found:
                problems.append(source.problem(at + (i, "sha256"), "this redemption code is declared twice"))
            found[digest] = Redemption(digest, float(raw.get("value", 0)), expires,
                                       frozenset(raw["groups"]) if "groups" in raw else None)
    return found, files


def _channels(doc: Document, items: list[dict[str, Any]], groups: Mapping[str, float], memo: BuiltItems,
              problems: list[Problem]) -> list[ChannelConfig]:
    """Channels in order, each built once while its item is unchanged; kept ones follow their item's line."""
    channels, todo, head, tail = memo.reuse(items)
    checked = todo if groups == memo.groups else range(len(items))  # the groups every kept item was checked against
    found = len(problems)
    for i in checked:
        raw = items[i]
        for j, group in enumerate(raw.get("groups", [DEFAULT_GROUP])):
            if group not in groups:
                problems.append(doc.problem(("channels", i, "groups", j), f"channel {raw['name']!r} names group {group!r}, which is not under groups:"))
    for i in todo:
        line = doc.line(("channels", i))
        channel = channels[i]
        if channel is None:
            channels[i] = _channel(items[i], line)
        elif channel.line != line:  # a kept item found further up or down
            channels[i] = replace(channel, line=line)
    for kept in (head, tail):  # every item of a kept end moved by as many lines as its first one
        if kept and (moved := doc.line(("channels", kept.start)) - channels[kept.start].line):
            for i in kept:
                channels[i] = replace(channels[i], line=channels[i].line + moved)
    memo.remember(items, channels, [], groups if len(problems) == found else None)
    return channels


def _tokens(doc: Document, items: list[dict[str, Any]], groups: Mapping[str, float], memo: BuiltItems,
            problems: list[Problem], warnings: list[Problem]) -> list[TokenConfig]:
    """Tokens in order, each built once while its item is unchanged. Ten thousand of them: kept in slices."""
    tokens, todo, _, _ = memo.reuse(items)
    if groups == memo.groups:  # every kept item was checked against these groups
        every_group_known = all(items[i].get("group", DEFAULT_GROUP) in groups for i in todo)
    else:
        every_group_known = {raw.get("group", DEFAULT_GROUP) for raw in items}.issubset(groups)
    rebuild = []
    for i in todo if every_group_known else range(len(items)):
        raw = items[i]
        group = raw.get("group", DEFAULT_GROUP)
        if group not in groups:
            problems.append(doc.problem(("tokens", i, "group"), f"token {raw['name']!r} names group {group!r}, which is not under groups:"))
        if tokens[i] is None:
            found = len(problems), len(warnings)
            tokens[i] = _token(doc, i, raw, problems, warnings)
            if (len(problems), len(warnings)) != found:  # what it reports depends on the item alone: reported again next time
                rebuild.append(i)
    memo.remember(items, tokens, rebuild, groups if every_group_known else None)
    return tokens


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
        max_output_tokens=int(raw["max_output_tokens"]) if raw.get("max_output_tokens") else None,
        line=line,
        max_concurrency=raw.get("max_concurrency"),
        max_response_bytes=int(raw.get("max_response_bytes", DEFAULT_MAX_RESPONSE)),
        max_event_bytes=int(raw.get("max_event_bytes", DEFAULT_MAX_EVENT)),
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
        credits_carry_over=bool(raw.get("credits_carry_over", False)),
    )


def _unpriced(doc: Document, channels: tuple[ChannelConfig, ...], prices: Mapping[str, Price], cache: ConfigCache) -> list[Problem]:
    """The last load's warnings when the channels (lines included) and prices are the same: a token edit, say."""
    last = cache.unpriced
    if last is None or last[1] != prices or len(last[0]) != len(channels) or not all(map(is_, last[0], channels)):
        warnings: list[Problem] = []
        _warn_unpriced(doc, channels, prices, warnings)
        cache.unpriced = last = (channels, prices, warnings)
    return last[2]


def _warn_unpriced(doc: Document, channels: tuple[ChannelConfig, ...], prices: Mapping[str, Price], warnings: list[Problem]) -> None:
    """What will really be free, by the rule requests are priced with (price_of): every channel and served name
    whose request has no price, once per name and upstream name."""
    warned: set[tuple[str, str]] = set()
    for i, channel in enumerate(channels):
        if not channel.enabled:
            continue
        for model in channel.serves():
            upstream = channel.upstream_model(model)
            if (model, upstream) in warned or price_of(prices, model, upstream) is not None:
                continue
            warned.add((model, upstream))
            where = "has no price under pricing.models" if upstream == model else \
                f"is sent as {upstream!r} and neither name has a price under pricing.models"
            warnings.append(doc.problem(("channels", i), f"model {model!r} (channel {channel.name!r}) {where}: its requests are "
                                                         "recorded as free and never count against a budget"))


_key_sha256 = attrgetter("key_sha256")


def _check_unique_keys(doc: Document, tokens: list[TokenConfig], problems: list[Problem]) -> None:
    digests = list(filter(None, map(_key_sha256, tokens)))
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
