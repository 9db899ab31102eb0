"""Channel choice: group + model + operation -> priority tiers -> weighted draw -> key rotation."""

from __future__ import annotations

import itertools
import random
from bisect import bisect_right
from dataclasses import dataclass, field
from functools import cached_property
from itertools import accumulate
from operator import is_not
from typing import Iterator, Mapping, Sequence
from urllib.parse import urlencode

from .auth import credentials
from .config import ChannelConfig
from .incremental import unchanged_ends
from .providers import Operation, Provider
from .redaction import Redaction, key_pieces, mask
from .upstream import Timeouts


@dataclass(frozen=True)
class ChannelKey:
    secret: str
    headers: Mapping[str, str]
    query: tuple[tuple[str, str], ...]

    @property
    def masked(self) -> str:
        return mask(self.secret)

    @cached_property
    def redaction(self) -> Redaction:
        """What of this key must never reach a client."""
        return Redaction(key_pieces(self.secret)) if self.secret else Redaction()

    @cached_property
    def json_headers(self) -> tuple[Mapping[str, str], Mapping[str, str]]:
        """The headers of a JSON request with this key: (for a whole answer, for a stream). Shared, never changed."""
        return ({**self.headers, "Content-Type": "application/json", "Accept": "application/json"},
                {**self.headers, "Content-Type": "application/json", "Accept": "text/event-stream"})


class Channel:
    """A configured upstream account bound to its compiled provider."""

    def __init__(self, config: ChannelConfig, provider: Provider, endpoint: str):
        self.config = config
        self.name = config.name
        # what health history is keyed by: the same settings after a reload mean the same channel
        self.identity = (config.name, repr(config))
        self.provider = provider
        self.endpoint = endpoint
        self.options = {**provider.options, **config.options}
        secrets = config.keys or ("",)
        self.keys = tuple(ChannelKey(s, *self._credentials(s)) for s in secrets)
        self._turn = itertools.count()
        self.timeouts = Timeouts(config.timeout, config.connect_timeout)  # unless the retry deadline is nearer
        self._urls: dict[tuple[str, str, str], str] = {}

    def _credentials(self, secret: str) -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
        auth_headers, query = credentials(self.provider.auth, secret)
        headers = {**self.provider.headers, **self.config.headers, **auth_headers}
        return headers, query

    def next_key(self) -> ChannelKey:
        """Keys take turns, so load spreads across the account's keys."""
        keys = self.keys
        return keys[next(self._turn) % len(keys)] if len(keys) > 1 else keys[0]

    def url(self, operation: Operation, model: str, key: ChannelKey) -> str:
        """The request URL; remembered, since it depends only on the operation, the model and the key (the models
        are the few the config routes here, so the memo stays small)."""
        memo = (operation.name, model, key.secret)
        url = self._urls.get(memo)
        if url is None:
            url = self._urls[memo] = self._url(operation, model, key)
        return url

    def _url(self, operation: Operation, model: str, key: ChannelKey) -> str:
        path = operation.path.source if operation.path.is_literal else operation.path.render(model, key.secret, self.options)
        url = self.endpoint + path
        query = [(name, t.render(model, key.secret, self.options, escape=False)) for name, t in operation.query]
        query.extend(key.query)
        if query:
            url += ("&" if "?" in url else "?") + urlencode(query)
        return url


@dataclass
class Tier:
    priority: int
    channels: list[Channel] = field(default_factory=list)
    cumulative: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, priority: int, channels: list[Channel]) -> Tier:
        return cls(priority, channels, list(accumulate(c.config.weight for c in channels)))

    def draw(self) -> Channel:
        total = self.cumulative[-1]
        if total <= 0:
            return random.choice(self.channels)
        return self.channels[bisect_right(self.cumulative, random.random() * total)]


class Routes:
    """Precomputed (group, model, operation) -> tiers, highest priority first: a lookup, not a scan."""

    def __init__(self, channels: Sequence[Channel]):
        self.channels = tuple(channels)
        # (group, model) -> the channels that serve it, in config order; every route is made from one of these
        self._serving: dict[tuple[str, str], list[Channel]] = {}
        self.models_by_group: dict[str, dict[str, Channel]] = {}
        self._tiers: dict[tuple[str, str, str], list[Tier]] = {}
        for channel in self.channels:
            for group in channel.config.groups:
                self.models_by_group.setdefault(group, {})
                for model in channel.config.serves():
                    self._serving.setdefault((group, model), []).append(channel)
        self._route(self._serving, set())

    def replaced(self, channels: Sequence[Channel]) -> Routes:
        """The routes of `channels`, made from these: only the (group, model) pairs that a channel which is not
        the very same object serves (now or before) are routed again. A one-channel edit touches a few."""
        channels = tuple(channels)
        head, tail = unchanged_ends(self.channels, channels, is_not)
        gone, added = self.channels[head:len(self.channels) - tail], channels[head:len(channels) - tail]
        routes = Routes(())
        routes.channels = channels
        routes._serving, routes._tiers = dict(self._serving), dict(self._tiers)
        routes.models_by_group = {group: dict(models) for group, models in self.models_by_group.items()}
        pairs = {(group, model) for c in gone + added for group in c.config.groups for model in c.config.serves()}
        if pairs:
            order = {id(c): i for i, c in enumerate(channels)}
            kept = order.keys() - {id(c) for c in added}  # an added channel may have been there before (moved)
            for pair in pairs:
                serving = [c for c in self._serving.get(pair, ()) if id(c) in kept]
                serving.extend(c for c in added if pair[0] in c.config.groups and pair[1] in c.config.serves())
                serving.sort(key=lambda c: order[id(c)])
                routes._serving[pair] = serving
            for c in added:
                for group in c.config.groups:
                    routes.models_by_group.setdefault(group, {})
            emptied = {group for c in gone for group in c.config.groups} - {group for c in channels for group in c.config.groups}
            for group in emptied:
                del routes.models_by_group[group]
            routes._route({pair: routes._serving[pair] for pair in pairs}, {op for c in gone for op in c.provider.operations})
        return routes

    def _route(self, serving: Mapping[tuple[str, str], list[Channel]], dropped_operations: set[str]) -> None:
        """Route these (group, model) pairs again from the channels serving each (or not at all, when none does).
        Channels with the same operations share their tiers: they are never changed once made."""
        for (group, model), channels in serving.items():
            models = self.models_by_group.get(group)
            if channels:
                models[model] = channels[0]  # type: ignore[index]
            else:
                del self._serving[(group, model)]
                if models is not None:
                    models.pop(model, None)
            made: dict[tuple[Channel, ...], list[Tier]] = {}
            operations = {op for c in channels for op in c.provider.operations}
            for op in operations | dropped_operations:
                offering = tuple(c for c in channels if op in c.provider.operations)
                if not offering:
                    self._tiers.pop((group, model, op), None)
                    continue
                tiers = made.get(offering)
                if tiers is None:
                    by_priority: dict[int, list[Channel]] = {}
                    for c in offering:
                        by_priority.setdefault(c.config.priority, []).append(c)
                    tiers = made[offering] = [Tier.of(p, by_priority[p]) for p in sorted(by_priority, reverse=True)]
                self._tiers[(group, model, op)] = tiers

    def served(self) -> list[tuple[str, str]]:
        """Every (group, model) that some channel serves, sorted."""
        return sorted(self._serving)

    def tiers_serving(self, group: str, model: str) -> list[Tier]:
        """The channels serving (group, model), whatever the operation, in their priority tiers, highest first."""
        by_priority: dict[int, list[Channel]] = {}
        for channel in self._serving.get((group, model), ()):
            by_priority.setdefault(channel.config.priority, []).append(channel)
        return [Tier.of(p, by_priority[p]) for p in sorted(by_priority, reverse=True)]

    def knows(self, group: str, model: str) -> bool:
        return model in self.models_by_group.get(group, {})

    def offers(self, group: str, model: str, operation: str) -> bool:
        """Whether some channel serving `model` to `group` has `operation` at all (healthy or not)."""
        return (group, model, operation) in self._tiers

    def offering(self, group: str, model: str, operation: str) -> Iterator[Channel]:
        """Every channel that may serve the request, in no particular order (what admission prices against)."""
        for tier in self._tiers.get((group, model, operation), ()):
            yield from tier.channels

    def candidates(self, group: str, model: str, operation: str) -> Iterator[Channel]:
        """Channels in the order to try them: the top tier by weighted draw, then the rest of it, then lower tiers."""
        for tier in self._tiers.get((group, model, operation), ()):
            first = tier.draw()
            yield first
            rest = [c for c in tier.channels if c is not first]
            while rest:
                weights = [c.config.weight for c in rest]
                pick = random.choices(rest, weights=weights)[0] if sum(weights) > 0 else random.choice(rest)
                rest.remove(pick)
                yield pick
