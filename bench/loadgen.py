"""Load and probes: wrk for throughput and latency, an aiohttp client for stream TTFB."""

import asyncio
import contextlib
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from procs import taskset_prefix, tree_rss_mib, worker_rss_mib

BENCH_DIR = Path(__file__).resolve().parent
WRK_SCRIPT = BENCH_DIR / "wrk_post.lua"
WRK_CPUS = "1"
WRK_JSON_MARKER = "WRK_JSON "


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    requests_per_s: float
    latency_ms: dict[str, float]
    errors: dict[str, int]

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass
class StreamProbeResult:
    ttfb_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    failures: int = 0

    def summary(self) -> dict[str, float | int | None]:
        return {
            "samples": len(self.ttfb_ms),
            "failures": self.failures,
            "ttfb_p50_ms": percentile(self.ttfb_ms, 50),
            "ttfb_p99_ms": percentile(self.ttfb_ms, 99),
            "total_p50_ms": percentile(self.total_ms, 50),
        }


def percentile(samples: list[float], pct: float) -> float | None:
    if not samples:
        return None
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[int(pct) - 1]


def parse_wrk_output(output: str) -> WrkResult:
    line = next(line for line in output.splitlines() if line.startswith(WRK_JSON_MARKER))
    data = json.loads(line[len(WRK_JSON_MARKER) :])
    duration_s = data["duration_us"] / 1e6
    return WrkResult(
        requests=data["requests"],
        duration_s=duration_s,
        requests_per_s=data["requests"] / duration_s,
        latency_ms={name: value / 1000 for name, value in data["latency_us"].items()},
        errors=data["errors"],
    )


async def run_wrk(
    url: str, body_path: Path, authorization: str, connections: int, duration_s: int, log_path: Path
) -> WrkResult:
    options = f"-t1 -c{connections} -d{duration_s}s --timeout 10s --latency".split()
    script = ["-s", str(WRK_SCRIPT), url, "--", str(body_path), authorization]
    command = [*taskset_prefix(WRK_CPUS), "wrk", *options, *script]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=duration_s + 30)
    text = output.decode(errors="replace")
    log_path.write_text(" ".join(command) + "\n" + text)
    if process.returncode != 0 or WRK_JSON_MARKER not in text:
        raise RuntimeError(f"wrk failed (exit {process.returncode}); see {log_path}")
    return parse_wrk_output(text)


async def send_one(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], stream_end: bytes | None
) -> str | None:
    """None when the subject answers this request correctly, else why not."""
    try:
        async with session.post(url, data=body, headers=headers) as response:
            payload = await response.read()
    except (TimeoutError, aiohttp.ClientError) as error:
        return f"request failed: {error!r}"
    if not 200 <= response.status < 300:
        return f"answered {response.status}: {payload[:300].decode(errors='replace')}"
    if stream_end is not None and stream_end not in payload[-200:]:
        return f"stream did not end with {stream_end.decode()}: {payload[-200:].decode(errors='replace')}"
    return None


async def probe_streams(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    stream_end: bytes,
    duration_s: float,
    interval_s: float,
) -> StreamProbeResult:
    """One stream at a time, spaced by `interval_s` so the probe stays light beside wrk."""
    result = StreamProbeResult()
    deadline = time.perf_counter() + duration_s
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers) as response:
                first = await response.content.readany()
                first_byte_at = time.perf_counter()
                tail = bytearray(first)
                async for chunk in response.content.iter_any():
                    tail = (tail + chunk)[-200:]  # only the end matters: it must hold stream_end
                finished_at = time.perf_counter()
            if response.status == 200 and stream_end in tail:
                result.ttfb_ms.append((first_byte_at - started) * 1000)
                result.total_ms.append((finished_at - started) * 1000)
            else:
                result.failures += 1
        except (TimeoutError, aiohttp.ClientError):
            result.failures += 1
        await asyncio.sleep(max(0.0, interval_s - (time.perf_counter() - started)))
    return result


async def sample_peak_rss(root_pid: int, stop: asyncio.Event, interval_s: float = 0.5) -> tuple[float, float]:
    """Peak RSS while `stop` is unset: (whole process tree, largest worker)."""
    peak = worker_peak = 0.0
    while True:
        peak = max(peak, tree_rss_mib(root_pid))
        worker_peak = max(worker_peak, worker_rss_mib(root_pid))
        if stop.is_set():
            return peak, worker_peak
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
