"""Channel choice: group + model + operation -> priority tiers -> weighted draw -> key rotation."""

from __future__ import annotations

import itertools
import random
from bisect import bisect_right
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterator, Mapping
from urllib.parse import urlencode

from .auth import credentials
from .config import ChannelConfig
from .providers import Operation, Provider
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
    def json_headers(self) -> tuple[Mapping[str, str], Mapping[str, str]]:
        """The headers of a JSON request with this key: (for a whole answer, for a stream). Shared, never changed."""
        return ({**self.headers, "Content-Type": "application/json", "Accept": "application/json"},
                {**self.headers, "Content-Type": "application/json", "Accept": "text/event-stream"})


def mask(secret: str) -> str:
    """Enough of a key to tell two apart in /admin output, never enough to use it."""
    if len(secret) <= 8:
        return "***"
    return f"{secret[:3]}...{secret[-4:]}"


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

    def add(self, channel: Channel) -> None:
        self.channels.append(channel)
        total = self.cumulative[-1] if self.cumulative else 0.0
        self.cumulative.append(total + channel.config.weight)

    def draw(self) -> Channel:
        total = self.cumulative[-1]
        if total <= 0:
            return random.choice(self.channels)
        return self.channels[bisect_right(self.cumulative, random.random() * total)]


class Routes:
    """Precomputed (group, model, operation) -> tiers, highest priority first: a lookup, not a scan."""

    def __init__(self, channels: list[Channel]):
        tiers: dict[tuple[str, str, str], dict[int, Tier]] = {}
        self.models_by_group: dict[str, dict[str, Channel]] = {}
        for channel in channels:
            priority = channel.config.priority
            serves = channel.config.serves()
            for group in channel.config.groups:
                models = self.models_by_group.setdefault(group, {})
                for model in serves:
                    models.setdefault(model, channel)
                    for op in channel.provider.operations:
                        by_priority = tiers.setdefault((group, model, op), {})
                        tier = by_priority.get(priority)
                        if tier is None:
                            tier = by_priority[priority] = Tier(priority)
                        tier.add(channel)
        self._tiers = {
            route: [by_priority[p] for p in sorted(by_priority, reverse=True)] for route, by_priority in tiers.items()
        }

    def knows(self, group: str, model: str) -> bool:
        return model in self.models_by_group.get(group, {})

    def offers(self, group: str, model: str, operation: str) -> bool:
        """Whether some channel serving `model` to `group` has `operation` at all (healthy or not)."""
        return (group, model, operation) in self._tiers

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
