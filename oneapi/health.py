"""What the gateway has learned about its upstreams: keys set aside and per-channel circuit breakers.

This state belongs to one worker process and outlives config reloads: it is keyed by the
channel's name and configuration, so a channel that did not change keeps its history and a
changed one starts fresh. A key set aside is also shared through a store that can (redis), named by
a hash of the key, so every replica and worker skips it instead of finding it out again. It only ever
takes channels and keys *out* of rotation; whatever config.yaml disables stays disabled.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from typing import Any, Callable, Iterable, Iterator

from .config import BreakerSettings
from .routing import Channel, ChannelKey

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"

# (key fingerprint, reason, seconds) of a key set aside: told to the other processes, or learned from them
SetAside = Callable[[str, str, float], None]


def key_fingerprint(secret: str) -> str:
    """How a key is named outside this process: a hash, never the key."""
    return hashlib.sha256(secret.encode()).hexdigest()[:32]


class Breaker:
    def __init__(self, settings: BreakerSettings):
        self.settings = settings
        self.state = CLOSED
        self.consecutive_failures = 0
        self.opened_at = 0.0
        self.probing = False
        self._outcomes: deque[tuple[float, bool]] = deque()

    def allows(self, now: float) -> bool:
        """May a request go to this channel now? In half-open, exactly one probe at a time."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN and now - self.opened_at >= self.settings.cooldown:
            self.state = HALF_OPEN
            self.probing = False
        if self.state == HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def record(self, ok: bool, now: float) -> None:
        outcomes = self._outcomes
        outcomes.append((now, ok))
        horizon = now - self.settings.window
        while outcomes and outcomes[0][0] < horizon:
            outcomes.popleft()
        if ok:
            self.consecutive_failures = 0
            self.state = CLOSED
            self.probing = False
            return
        self.consecutive_failures += 1
        if self.state == HALF_OPEN or self.consecutive_failures >= self.settings.failures or self._rate_exceeded():
            self.state = OPEN
            self.opened_at = now
            self.probing = False

    def _rate_exceeded(self) -> bool:
        total = len(self._outcomes)
        if total < self.settings.min_requests:
            return False
        failed = sum(1 for _, ok in self._outcomes if not ok)
        return failed / total >= self.settings.failure_rate


class ChannelHealth:
    def __init__(self, channel: Channel, settings: BreakerSettings, share: Callable[[ChannelKey, str], None] | None = None):
        self.breaker = Breaker(settings)
        self.settings = settings
        self.share = share
        self.set_aside: dict[str, tuple[float, str]] = {}  # key secret -> (until, reason)
        self.failures = 0
        self.successes = 0

    def usable(self, key: ChannelKey, now: float) -> bool:
        entry = self.set_aside.get(key.secret)
        if entry is None:
            return True
        if now >= entry[0]:
            del self.set_aside[key.secret]
            return True
        return False

    def set_key_aside(self, key: ChannelKey, reason: str, now: float) -> None:
        self.set_aside[key.secret] = (now + self.settings.key_cooldown, reason)
        if self.share is not None:
            self.share(key, reason)

    def record(self, ok: bool, now: float) -> None:
        if ok:
            self.successes += 1
        else:
            self.failures += 1
        self.breaker.record(ok, now)


class HealthRegistry:
    """Health of every channel this worker has used, surviving reloads of unchanged channels."""

    def __init__(self, settings: BreakerSettings | None = None):
        self.settings = settings or BreakerSettings()
        self._by_channel: dict[tuple[str, str], ChannelHealth] = {}
        self._channels: dict[tuple[str, str], Channel] = {}  # the live config's, to find a key learned by its hash
        self.publish: SetAside | None = None  # tells the other processes of a key set aside here (a shared store)

    def of(self, channel: Channel) -> ChannelHealth:
        ident = channel.identity
        health = self._by_channel.get(ident)
        if health is None:
            health = self._by_channel[ident] = ChannelHealth(channel, self.settings, self._share)
        return health

    def _share(self, key: ChannelKey, reason: str) -> None:
        if self.publish is not None:
            self.publish(key_fingerprint(key.secret), reason, self.settings.key_cooldown)

    def learn(self, fingerprint: str, reason: str, seconds: float) -> None:
        """A key set aside by another process (or this one, echoed by the store): set aside here too, in every
        channel that uses it, for the time it has left."""
        until = time.monotonic() + seconds
        for channel in self._channels.values():
            for key in channel.keys:
                if key.secret and key_fingerprint(key.secret) == fingerprint:
                    self.of(channel).set_aside[key.secret] = (until, reason)

    def update(self, settings: BreakerSettings, channels: Iterable[Channel]) -> None:
        """After a reload: new settings for everyone, and no history for channels that were removed or changed."""
        self.settings = settings
        channels = list(channels)
        self._channels = {c.identity: c for c in channels}
        keep = {c.identity for c in channels}
        for ident, health in list(self._by_channel.items()):
            if ident not in keep:
                del self._by_channel[ident]
            else:
                health.settings = health.breaker.settings = settings

    def gauges(self) -> Iterator[tuple[str, tuple[str, ...], float]]:
        for (name, _), health in self._by_channel.items():
            yield "oneapi_channel_breaker_open", (name,), 1.0 if health.breaker.state == OPEN else 0.0
            yield "oneapi_channel_keys_set_aside", (name,), float(len(health.set_aside))

    def get(self, channel: Channel) -> ChannelHealth | None:
        return self._by_channel.get(channel.identity)

    def next_key(self, channel: Channel, health: ChannelHealth, exclude: set[str], now: float) -> ChannelKey | None:
        """The channel's next key in rotation that is neither set aside nor already failed in this request."""
        for _ in range(len(channel.keys)):
            key = channel.next_key()
            if key.secret not in exclude and health.usable(key, now):
                return key
        return None


def describe_health(registry: HealthRegistry, channel: Channel | None, now: float) -> dict[str, Any]:
    """This worker's view of a channel: breaker state and keys set aside (masked), as of `now` (monotonic)."""
    state = registry.get(channel) if channel else None
    if state is None or channel is None:
        return {"breaker": "closed", "keys_set_aside": [], "failures": 0, "successes": 0}
    aside = [{"key": k.masked, "reason": state.set_aside[k.secret][1], "seconds_left": round(state.set_aside[k.secret][0] - now, 1)}
             for k in channel.keys if k.secret in state.set_aside and state.set_aside[k.secret][0] > now]
    return {"breaker": state.breaker.state, "keys_set_aside": aside, "failures": state.failures, "successes": state.successes}
