"""The snapshot: everything a request reads from config, built whole and swapped as one reference."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from operator import is_
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import orjson

from .config import ChannelConfig, Config, ConfigCache, load_config
from .documents import SHIPPED_DIALECTS, SHIPPED_PROVIDERS, ConfigError, Document, Problem
from .incremental import value_digest
from .dialects import Dialect, Route, load_dialects
from .providers import Provider, ProviderCache, load_providers
from .routing import Channel, Routes
from .tokens import TokenIndex

log = logging.getLogger("oneapi.reload")

# Set by `oneapi serve` for its workers: a file whose change means "every worker reload now".
RELOAD_SIGNAL_ENV = "ONEAPI_RELOAD_SIGNAL_FILE"


@dataclass
class ReloadCache:
    """What a worker's next build can take from its last one when the files did not change (or changed a little)."""

    config: ConfigCache = field(default_factory=ConfigCache)
    providers: ProviderCache = field(default_factory=ProviderCache)
    channels: Mapping[str, Channel] = field(default_factory=dict)  # of the last snapshot built
    # the last channels built: from which configs and providers, and the warnings that came with them
    bound: tuple[tuple[ChannelConfig, ...], Mapping[str, Provider], dict[str, Channel], list[Problem]] | None = None
    provider_digest: tuple[list[Document], bytes] | None = None  # the provider files' part of the version
    routes: Routes | None = None  # the last routes
    tokens: TokenIndex | None = None  # the last token index


@dataclass(frozen=True)
class Snapshot:
    config: Config
    providers: Mapping[str, Provider]
    channels: Mapping[str, Channel]
    routes: Routes
    tokens: TokenIndex
    version: str
    loaded_at: float
    warnings: tuple[Problem, ...]
    build_ms: float = 0.0  # how long reading, validating and compiling it took (GET /health: reload_ms)
    dialects: Mapping[str, Dialect] = field(default_factory=dict)  # client dialects (dialects.d), by name
    dialect_routes: tuple[tuple[Route, Dialect], ...] = ()  # every dialect route, in file order
    cache: ReloadCache = field(default_factory=ReloadCache, repr=False, compare=False)  # for the build that replaces it


def build_snapshot(config_path: str | Path, environ: Mapping[str, str] | None = None, previous: Snapshot | None = None) -> Snapshot:
    """Read config.yaml and every provider file into a new Snapshot; raise ConfigError on any problem.
    Given the `previous` snapshot, whatever did not change since it was built is reused rather than built again."""
    started = time.perf_counter()
    with _collector_paused():
        snapshot = _build_snapshot(config_path, environ, previous.cache if previous is not None else ReloadCache())
    return replace(snapshot, build_ms=round((time.perf_counter() - started) * 1000, 1))


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Nearly all a build allocates lives on in the snapshot, so the cyclic collector would walk the growing heap
    again and again for nothing: ~30% of a cold build, ~20% of a reload. Paused (process-wide) while it builds."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _build_snapshot(config_path: str | Path, environ: Mapping[str, str] | None, cache: ReloadCache) -> Snapshot:
    config, doc = load_config(config_path, environ, cache.config)
    providers, provider_docs = load_providers(SHIPPED_PROVIDERS, config.providers_dir, cache=cache.providers)
    dialects, dialect_docs = load_dialects(SHIPPED_DIALECTS, config.dialects_dir)
    _check_native_dialects(providers, dialects)
    warnings = list(config.warnings)
    channels = _channels(config, doc, providers, cache, warnings)

    digest = hashlib.sha256()
    digest.update(_config_digest(doc))
    digest.update(_provider_digest(provider_docs, cache))
    digest.update(_provider_digest(dialect_docs, ReloadCache()))
    last_tokens = cache.tokens
    cache.tokens = tokens = last_tokens.replaced(config.tokens) if last_tokens is not None else TokenIndex(config.tokens)
    return Snapshot(
        config=config,
        providers=providers,
        channels=channels,
        routes=_routes(tuple(channels.values()), cache),
        tokens=tokens,
        version=digest.hexdigest()[:16],
        loaded_at=time.time(),
        warnings=tuple(warnings),
        cache=cache,
        dialects=dialects,
        dialect_routes=tuple((route, dialect) for dialect in dialects.values() for route in dialect.routes),
    )


def _check_native_dialects(providers: Mapping[str, Provider], dialects: Mapping[str, Dialect]) -> None:
    """A provider may only claim a dialect that dialects.d declares."""
    problems = [provider.document.problem(("dialects", name), f"dialect {name!r} is not in dialects.d (known: {', '.join(sorted(dialects)) or 'none'})")
                for provider in providers.values() if provider.document is not None
                for name in provider.dialects if name not in dialects]
    if problems:
        raise ConfigError(problems)


def _channels(config: Config, doc: Document, providers: Mapping[str, Provider], cache: ReloadCache,
              warnings: list[Problem]) -> dict[str, Channel]:
    """Every routed channel bound to its provider; the last build's when neither the channels nor the providers
    changed (a token edit), else the last build's Channel wherever its settings and provider are the same."""
    last = cache.bound
    if (last is not None and last[1] is providers and len(last[0]) == len(config.channels)
            and all(map(is_, last[0], config.channels))):  # ChannelConfig compares without its line: by identity
        warnings.extend(last[3])
        return last[2]
    problems: list[Problem] = []
    found: list[Problem] = []
    channels: dict[str, Channel] = {}
    for i, cc in enumerate(config.channels):
        provider = providers.get(cc.provider)
        kept = cache.channels.get(cc.name)
        if kept is not None and kept.config is cc and kept.provider is provider:
            channels[cc.name] = kept  # its key rotation goes on where it was
            if not cc.serves():
                found.append(doc.problem(("channels", i), f"channel {cc.name!r} lists no models, so it serves nothing"))
            continue
        if provider is None:
            known = ", ".join(sorted(providers)) or "none"
            problems.append(doc.problem(("channels", i, "provider"), f"channel {cc.name!r}: no provider {cc.provider!r} in {config.providers_dir} (known: {known})"))
            continue
        endpoint = provider.endpoint(cc.base_url)
        if endpoint is None:
            problems.append(doc.problem(("channels", i), f"channel {cc.name!r}: provider {cc.provider!r} has no default base_url, so the channel must set base_url"))
            continue
        missing = sorted(provider.required_options - cc.options.keys())
        if missing:
            problems.append(doc.problem(("channels", i), f"channel {cc.name!r}: provider {cc.provider!r} needs "
                                        f"{', '.join(missing)} in the channel's options"))
            continue
        if not cc.enabled:
            continue
        if not cc.keys and provider.auth.style != "none":
            found.append(doc.problem(("channels", i, "keys"), f"channel {cc.name!r} has no key set, so it is left out of routing"))
            continue
        if not cc.serves():
            found.append(doc.problem(("channels", i), f"channel {cc.name!r} lists no models, so it serves nothing"))
        channels[cc.name] = Channel(cc, provider, endpoint)
    if problems:
        raise ConfigError(problems)
    cache.channels = channels
    cache.bound = (config.channels, providers, channels, found)
    warnings.extend(found)
    return channels


def _config_digest(doc: Document) -> bytes:
    """config.yaml's part of the version: its data, each top-level array item by item, so that a reload hashes
    only the items that changed (a PieceDocument has the digests of the others already)."""
    known: Mapping[str, list[bytes]] = getattr(doc, "item_digests", {})
    digest = hashlib.sha256()
    for key in sorted(doc.data):
        value = doc.data[key]
        digest.update(orjson.dumps(key))
        if isinstance(value, list):
            items = known.get(key)
            if items is None:
                items = [value_digest(item) for item in value]
            digest.update(b"[%d]" % len(items))
            digest.update(b"".join(items))
        else:
            digest.update(orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str))
    return digest.digest()


def _routes(channels: tuple[Channel, ...], cache: ReloadCache) -> Routes:
    """The last routes when they route the very same channels (a token edit, say): they are read-only.
    Otherwise made from them, routing again only what the channels that changed serve."""
    last = cache.routes
    if last is None:
        cache.routes = Routes(channels)
    elif last.channels != channels:  # Channel compares by identity
        cache.routes = last.replaced(channels)
    return cache.routes


def _provider_digest(provider_docs: list[Document], cache: ReloadCache) -> bytes:
    if cache.provider_digest is None or cache.provider_digest[0] is not provider_docs:
        part = b"".join(Path(pdoc.file).name.encode() + orjson.dumps(pdoc.data, option=orjson.OPT_SORT_KEYS, default=str)
                        for pdoc in provider_docs)
        cache.provider_digest = (provider_docs, part)
    return cache.provider_digest[1]


def fingerprint(config_path: Path, snapshot: Snapshot | None) -> tuple[Any, ...]:
    """What the watcher compares: stat of config.yaml (following a ConfigMap's symlinks), the provider files,
    files named by ${file:...}, and the workers' shared reload signal file."""
    paths = [config_path]
    if snapshot is not None:
        paths.extend(Path(p) for p in sorted(snapshot.config.referenced_files))
        for providers_dir in dict.fromkeys((SHIPPED_PROVIDERS, snapshot.config.providers_dir)):
            try:
                paths.extend(sorted(providers_dir.glob("*.yaml")))
            except OSError:
                pass
            paths.append(providers_dir)
        for dialects_dir in dict.fromkeys((SHIPPED_DIALECTS, snapshot.config.dialects_dir)):
            try:
                paths.extend(sorted(dialects_dir.glob("*.yaml")))
            except OSError:
                pass
    signal_file = os.environ.get(RELOAD_SIGNAL_ENV)
    if signal_file:
        paths.append(Path(signal_file))
    out: list[tuple[Any, ...]] = []
    for path in paths:
        try:
            st = path.stat()
            out.append((str(path), st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((str(path), None))
    return tuple(out)


def signal_reload() -> None:
    """Tell every worker of this server to reload (used after SIGHUP or POST /admin/reload)."""
    signal_file = os.environ.get(RELOAD_SIGNAL_ENV)
    if signal_file:
        Path(signal_file).write_text(f"{time.time_ns()} {os.getpid()}\n")


def _settled(before: tuple[Any, ...], after: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The fingerprint to remember after a build, or None when a file changed while it was being read,
    so that the watcher reads it again instead of keeping a snapshot of the older content."""
    earlier = dict((entry[0], entry) for entry in before)
    if any(earlier.get(entry[0], entry) != entry for entry in after):
        return None
    return after


class SnapshotHolder:
    """The live snapshot of one worker, and the watcher that replaces it."""

    def __init__(self, config_path: str | Path):
        self.config_path = Path(config_path).absolute()
        before = fingerprint(self.config_path, None)
        self.current = build_snapshot(self.config_path)
        self.last_reload_error: str | None = None
        self.last_reload_at: float | None = None
        self._seen = _settled(before, fingerprint(self.config_path, self.current))
        self._lock = asyncio.Lock()
        self.listeners: list[Callable[[Snapshot], None]] = []  # told of every new live snapshot
        self.on_result: Callable[[bool], None] = lambda ok: None  # told of every reload, refused ones too

    async def reload(self, broadcast: bool = False) -> Snapshot:
        """Build a new snapshot off the event loop and swap it in; on failure keep the old one and raise.
        With `broadcast`, the other workers of this server are told to reload too."""
        async with self._lock:
            if broadcast:
                signal_reload()
            seen = fingerprint(self.config_path, self.current)
            try:
                snapshot = await asyncio.to_thread(build_snapshot, self.config_path, None, self.current)
            except ConfigError as exc:
                self._seen = seen
                self.last_reload_error = str(exc)
                self.on_result(False)
                log.error("reload refused, still serving config %s:\n%s", self.current.version, exc)
                raise
            self._seen = _settled(seen, fingerprint(self.config_path, snapshot))
            previous, self.current = self.current, snapshot
            for listener in self.listeners:
                listener(snapshot)
            self.last_reload_error = None
            self.last_reload_at = time.time()
            self.on_result(True)
            if previous.version != snapshot.version:
                log.info("config %s is live (was %s)", snapshot.version, previous.version)
            return snapshot

    async def watch(self) -> None:
        """Poll for changes; cheap stat calls, so a ConfigMap symlink swap or an editor's rename is seen too."""
        while True:
            await asyncio.sleep(self.current.config.watch_interval)
            if fingerprint(self.config_path, self.current) != self._seen:
                try:
                    await self.reload()
                except ConfigError:
                    pass
                except Exception:  # a watcher that dies silently would freeze the config forever
                    log.exception("unexpected error while reloading")
