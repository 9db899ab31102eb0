"""Prometheus metrics, summed across worker processes.

Counting happens in plain dicts (a dict update per event, no locks, no syscalls on the hot
path). Each worker publishes its totals to a file in a folder shared by the server's workers
about once a second; GET /metrics in any worker adds up every file, so the numbers do not
depend on which worker answers the scrape. Labels never carry a secret: channel, endpoint,
status and outcome names only.
"""

from __future__ import annotations

import asyncio
import os
import time
from bisect import bisect_left
from pathlib import Path
from typing import Callable, Iterable

import orjson

METRICS_DIR_ENV = "ONEAPI_METRICS_DIR"

OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)

# name -> (type, help, label names)
DEFINITIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "oneapi_requests_total": ("counter", "Client requests answered, by endpoint and HTTP status.", ("endpoint", "status")),
    "oneapi_upstream_attempts_total": ("counter", "Upstream calls, by channel and outcome.", ("channel", "outcome")),
    "oneapi_overhead_seconds": ("histogram", "Gateway time per request, upstream wait excluded.", ("endpoint",)),
    "oneapi_config_reloads_total": ("counter", "Config reloads, by result.", ("result",)),
    "oneapi_channel_breaker_open": ("gauge", "1 while a worker's circuit breaker for the channel is open.", ("channel",)),
    "oneapi_channel_keys_set_aside": ("gauge", "Keys of the channel a worker has set aside.", ("channel",)),
    "oneapi_config_info": ("gauge", "The live config version.", ("version",)),
}

Labels = tuple[str, ...]
GaugeSource = Callable[[], Iterable[tuple[str, Labels, float]]]


class Metrics:
    def __init__(self, directory: str | Path | None = None, publish_interval: float = 1.0):
        self.directory = Path(directory) if directory else None
        self.publish_interval = publish_interval
        self.counters: dict[tuple[str, Labels], float] = {}
        self.histograms: dict[tuple[str, Labels], list[float]] = {}  # bucket counts..., +Inf count, sum
        self.gauge_sources: list[GaugeSource] = []
        self._file = self.directory / f"worker-{os.getpid()}.json" if self.directory else None

    def inc(self, name: str, labels: Labels, amount: float = 1.0) -> None:
        key = (name, labels)
        self.counters[key] = self.counters.get(key, 0.0) + amount

    def observe(self, name: str, labels: Labels, value: float) -> None:
        key = (name, labels)
        series = self.histograms.get(key)
        if series is None:
            series = self.histograms[key] = [0.0] * (len(OVERHEAD_BUCKETS) + 2)
        series[bisect_left(OVERHEAD_BUCKETS, value)] += 1
        series[-1] += value

    def _dump(self) -> dict[str, object]:
        gauges = [(name, list(labels), value) for source in self.gauge_sources for name, labels, value in source()]
        return {
            "at": time.time(),
            "counters": [(name, list(labels), value) for (name, labels), value in self.counters.items()],
            "histograms": [(name, list(labels), series) for (name, labels), series in self.histograms.items()],
            "gauges": gauges,
        }

    def publish(self) -> None:
        if self._file is None:
            return
        tmp = self._file.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(self._dump()))
        os.replace(tmp, self._file)

    async def publish_forever(self) -> None:
        while True:
            await asyncio.sleep(self.publish_interval)
            try:
                self.publish()
            except OSError:
                pass  # a full disk must not take the gateway down; the next round tries again

    def render(self) -> str:
        """The Prometheus text format, totals over every worker of this server."""
        dumps = [self._dump()]
        if self.directory is not None:
            for path in self.directory.glob("worker-*.json"):
                if path == self._file:
                    continue
                try:
                    dumps.append(orjson.loads(path.read_bytes()))
                except (OSError, orjson.JSONDecodeError):
                    continue
        counters: dict[tuple[str, Labels], float] = {}
        histograms: dict[tuple[str, Labels], list[float]] = {}
        gauges: dict[tuple[str, Labels], float] = {}
        live_after = time.time() - 5 * self.publish_interval
        for dump in dumps:
            for name, labels, value in dump["counters"]:  # type: ignore[union-attr]
                key = (name, tuple(labels))
                counters[key] = counters.get(key, 0.0) + value
            for name, labels, series in dump["histograms"]:  # type: ignore[union-attr]
                key = (name, tuple(labels))
                total = histograms.setdefault(key, [0.0] * len(series))
                for i, v in enumerate(series):
                    total[i] += v
            if dump["at"] >= live_after:  # gauges only from workers still alive  # type: ignore[operator]
                for name, labels, value in dump["gauges"]:  # type: ignore[union-attr]
                    key = (name, tuple(labels))
                    gauges[key] = max(gauges.get(key, value), value)
        lines: list[str] = []
        for name, (kind, help_text, label_names) in DEFINITIONS.items():
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            if kind == "histogram":
                for (n, labels), series in sorted(histograms.items()):
                    if n == name:
                        lines.extend(_histogram_lines(name, label_names, labels, series))
                continue
            source = counters if kind == "counter" else gauges
            for (n, labels), value in sorted(source.items()):
                if n == name:
                    lines.append(f"{name}{_labels(label_names, labels)} {_number(value)}")
        return "\n".join(lines) + "\n"


def _histogram_lines(name: str, label_names: tuple[str, ...], labels: Labels, series: list[float]) -> list[str]:
    out = []
    cumulative = 0.0
    for bound, count in zip(OVERHEAD_BUCKETS, series):
        cumulative += count
        out.append(f"{name}_bucket{_labels((*label_names, 'le'), (*labels, repr(bound)))} {_number(cumulative)}")
    cumulative += series[len(OVERHEAD_BUCKETS)]
    out.append(f"{name}_bucket{_labels((*label_names, 'le'), (*labels, '+Inf'))} {_number(cumulative)}")
    out.append(f"{name}_sum{_labels(label_names, labels)} {series[-1]!r}")
    out.append(f"{name}_count{_labels(label_names, labels)} {_number(cumulative)}")
    return out


def _labels(names: Iterable[str], values: Iterable[str]) -> str:
    pairs = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)
