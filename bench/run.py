"""Benchmark the gateway against direct-to-mock, a minimal relay (the floor) and LiteLLM, in one run.

    python bench/run.py [--quick] [--duration S] [--scenarios a,b] [--subjects a,b] [--workers 1,2] [--profile]

See bench/README.md for what each scenario measures and how the CPUs are shared.
"""

import argparse
import asyncio
import datetime
import importlib.metadata
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import aiohttp

import configs
from loadgen import StreamProbeResult, percentile, probe_streams, run_wrk, sample_peak_rss, send_one
from mock_upstream import MockUpstream, start_mock_upstream, stop_mock_upstream
from procs import cpu_snapshot, others_cpu_pct, taskset_prefix, tree_rss_mib, worker_rss_mib
from report import Measurement, Skip, number, summarize_stacks, write_results
from scenarios import ALL_KINDS, SCENARIOS, SCENARIOS_BY_NAME, Scenario, setup_key
from subjects import (
    LITELLM_BIN,
    RunningSubject,
    Subject,
    SubjectUnavailable,
    start_subject,
    stop_subject,
    wait_until_idle,
)

BENCH_DIR = Path(__file__).resolve().parent
HARNESS_CPU = 1
PINNING = (
    "Pinning: wrk, the nginx mock and the harness's probes on core 1; one-worker subjects on core 0;"
    " two-worker subjects on cores 0–1, sharing core 1 with the load tools."
)
AUTHORIZATION = f"Bearer {configs.CLIENT_KEY}"
REQUEST_HEADERS = {"Authorization": AUTHORIZATION, "Content-Type": "application/json"}
IDLE_PROBE_INTERVAL_S = 0.02
LOAD_PROBE_INTERVAL_S = 0.05
HEALTH_POLL_INTERVAL_S = 0.02
DRAIN_TIMEOUT_S = 30


@dataclass(frozen=True)
class Settings:
    duration_s: int
    warmup_s: int
    idle_probe_s: float
    scenarios: tuple[Scenario, ...]
    subjects: tuple[Subject, ...]
    profile: bool
    output_dir: Path


@dataclass(frozen=True)
class RunContext:
    settings: Settings
    session: aiohttp.ClientSession
    mock_pid: int
    run_dir: Path
    log_dir: Path


def parse_args() -> Settings:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s per scenario, 1 s warm-up")
    parser.add_argument("--duration", type=int, help="seconds of measured load per scenario (default 6)")
    parser.add_argument("--scenarios", help=f"comma list of: {', '.join(SCENARIOS_BY_NAME)} (default: all)")
    parser.add_argument("--subjects", help=f"comma list of: {', '.join(ALL_KINDS)} (default: all)")
    parser.add_argument("--workers", default="1,2", help="worker counts for floor, oneapi and litellm (default 1,2)")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy of each subject under load: collapsed stacks in profiles/, top functions in the report")
    parser.add_argument("--output-dir", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args()

    scenario_names = args.scenarios.split(",") if args.scenarios else list(SCENARIOS_BY_NAME)
    unknown = [name for name in scenario_names if name not in SCENARIOS_BY_NAME]
    kinds = args.subjects.split(",") if args.subjects else list(ALL_KINDS)
    unknown += [kind for kind in kinds if kind not in ALL_KINDS]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    if args.profile and shutil.which("py-spy") is None:
        parser.error("--profile needs py-spy: pip install py-spy")
    worker_counts = [int(count) for count in args.workers.split(",")]
    subjects = [Subject("direct", 1)] if "direct" in kinds else []
    subjects += [Subject(kind, n) for kind in ALL_KINDS if kind != "direct" and kind in kinds for n in worker_counts]
    return Settings(
        duration_s=args.duration or (2 if args.quick else 6),
        warmup_s=1,
        idle_probe_s=1.0 if args.quick else 2.0,
        scenarios=tuple(scenario for scenario in SCENARIOS if scenario.name in scenario_names),
        subjects=tuple(subjects),
        profile=args.profile,
        output_dir=args.output_dir,
    )


def versions() -> dict[str, str]:
    def command_version(command: list[str]) -> str:
        result = subprocess.run(command, capture_output=True, text=True)
        return (result.stdout + result.stderr).split("\n")[0].split("/")[-1].split()[0]

    def installed(name: str, path: list[str] | None = None) -> str:
        try:
            if path is None:
                return importlib.metadata.version(name)
            found = list(importlib.metadata.distributions(name=name, path=path))
            return str(found[0].version) if found else "not installed"
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", str(configs.REPO_DIR), *args], capture_output=True, text=True)
        return result.stdout.strip()

    def repo_commit() -> str:
        edited = git("status", "--porcelain", "--", "oneapi", "providers.d")
        return (git("rev-parse", "--short", "HEAD") or "unknown") + ("+uncommitted" if edited else "")

    litellm_site = [str(p) for p in (BENCH_DIR / ".venv-litellm" / "lib").glob("python*/site-packages")]
    return {
        "nginx": command_version(["nginx", "-v"]),
        "wrk": command_version(["wrk", "-v"]).removeprefix("debian/"),
        "granian": installed("granian"),
        "starlette": installed("starlette"),
        "aiohttp": installed("aiohttp"),
        "uvloop": installed("uvloop"),
        "oneapi": f"{installed('oneapi')} at {repo_commit()}",
        "litellm": installed("litellm", litellm_site) if LITELLM_BIN.exists() else "not installed",
    }


def machine() -> str:
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "unknown CPU",
    )
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    system = f"Linux {platform.release()}, Python {platform.python_version()}"
    return f"{os.cpu_count()} cores ({cpu_model}), {memory_gib:.0f} GiB, {system}"


async def observed_config_version(session: aiohttp.ClientSession, health_url: str) -> tuple[str | None, float | None]:
    """The live config_version on /health, and how long building it took (the gateway's reload_ms)."""
    try:
        async with session.get(health_url) as response:
            if response.status == 200 and response.content_type == "application/json":
                health = await response.json()
                version = health.get("config_version")
                return (None if version is None else str(version)), health.get("reload_ms")
    except (TimeoutError, aiohttp.ClientError, ValueError, AttributeError):
        pass
    return None, None


async def rewrite_config_every_second(
    session: aiohttp.ClientSession, config_path: Path, health_url: str, duration_s: float
) -> dict[str, Any]:
    """Rewrite the config once a second (one channel renamed) while polling /health for new versions.

    A reload is timed from the first write after the last new version seen to the next new version
    seen: writes that land while a reload runs are coalesced by the gateway, so they cannot be timed alone.
    That includes the wait for the gateway's next look at the file (`watch_interval`, 1 s by default); the
    build itself is what /health reports as reload_ms for each new version.
    """
    base_text = config_path.read_text()
    first_version, _ = await observed_config_version(session, health_url)
    if first_version is None:
        return {"written": 0, "observed": 0, "p50_ms": None, "max_ms": None, "note": "/health has no config_version"}
    seen_versions = {first_version}  # with two workers, /health alternates between old and new for a while
    write_times: list[float] = []
    reload_ms: list[float] = []
    build_ms: list[float] = []
    deadline = time.perf_counter() + duration_s

    async def write_every_second() -> None:
        next_write = time.perf_counter()
        while next_write < deadline:
            await asyncio.sleep(max(0.0, next_write - time.perf_counter()))
            text = base_text.replace(configs.RELOAD_MARKER, f"reload-marker-{len(write_times) + 1}", 1)
            configs.write_atomically(config_path, text)
            write_times.append(time.perf_counter())
            next_write += 1.0

    writer = asyncio.create_task(write_every_second())
    timed_from = 0  # index of the first write not yet seen live
    while time.perf_counter() < deadline:
        await asyncio.sleep(HEALTH_POLL_INTERVAL_S)
        version, built_in = await observed_config_version(session, health_url)
        if version is None or version in seen_versions:
            continue
        seen_at = time.perf_counter()
        seen_versions.add(version)
        if built_in is not None:
            build_ms.append(float(built_in))
        if timed_from < len(write_times):
            reload_ms.append((seen_at - write_times[timed_from]) * 1000)
        timed_from = len(write_times)
    await writer
    return {
        "written": len(write_times),
        "observed": len(reload_ms),
        "p50_ms": percentile(reload_ms, 50),
        "max_ms": max(reload_ms, default=None),
        "build_p50_ms": percentile(build_ms, 50),
        "build_max_ms": max(build_ms, default=None),
    }


async def record_profile(root_pid: int, duration_s: int, stacks_path: Path) -> dict[str, Any] | None:
    """py-spy over the subject's processes while wrk runs: collapsed stacks (flamegraph.pl or speedscope read
    them), sampled only while a thread holds the GIL, so the shares are of Python CPU time, not of waiting."""
    options = f"--pid {root_pid} --subprocesses --nonblocking --gil --rate 250 --format raw --duration {duration_s}".split()
    command = [*taskset_prefix(str(HARNESS_CPU)), "py-spy", "record", *options, "--output", str(stacks_path)]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    await process.wait()
    return summarize_stacks(stacks_path) if stacks_path.exists() else None


async def delayed_probe(
    ctx: RunContext, url: str, body: bytes, stream_end: bytes, delay_s: float, duration_s: float
) -> StreamProbeResult:
    await asyncio.sleep(delay_s)
    return await probe_streams(ctx.session, url, body, REQUEST_HEADERS, stream_end, duration_s, LOAD_PROBE_INTERVAL_S)


async def measure(
    ctx: RunContext, subject: Subject, scenario: Scenario, running: RunningSubject, rss_idle_mib: tuple[float, float]
) -> Measurement:
    settings = ctx.settings
    url = running.base_url + scenario.path_for(subject.kind)
    body = scenario.request_body()
    body_path = ctx.run_dir / f"body-{scenario.name}.json"
    body_path.write_bytes(body)
    stream_end = scenario.stream_end_for(subject.kind)
    duration_s = max(settings.duration_s, scenario.min_duration_s)
    log_stem = f"wrk-{subject.kind}-{subject.workers}-{scenario.name}"

    problem = await send_one(ctx.session, url, body, REQUEST_HEADERS, stream_end)
    if problem is not None:
        raise SubjectUnavailable(problem)
    # A slow subject still works through the last load's in-flight requests after wrk exits.
    await wait_until_idle(running.root_pid, DRAIN_TIMEOUT_S)
    await run_wrk(
        url, body_path, AUTHORIZATION, scenario.connections, settings.warmup_s, ctx.log_dir / f"{log_stem}-warmup.txt"
    )
    await wait_until_idle(running.root_pid, DRAIN_TIMEOUT_S)

    stream_idle = None
    if stream_end is not None:
        idle = await probe_streams(
            ctx.session, url, body, REQUEST_HEADERS, stream_end, settings.idle_probe_s, IDLE_PROBE_INTERVAL_S
        )
        stream_idle = idle.summary()

    stop_sampling = asyncio.Event()
    side_tasks: dict[str, asyncio.Task[Any]] = {
        "rss": asyncio.create_task(sample_peak_rss(running.root_pid, stop_sampling))
    }
    if stream_end is not None:
        side_tasks["probe"] = asyncio.create_task(
            delayed_probe(ctx, url, body, stream_end, delay_s=0.3, duration_s=duration_s - 0.6)
        )
    if scenario.reloads and running.config_path is not None:
        side_tasks["reload"] = asyncio.create_task(
            rewrite_config_every_second(
                ctx.session, running.config_path, running.base_url + "/health", duration_s - 0.5
            )
        )
    if settings.profile and running.process is not None:
        stacks_path = settings.output_dir / "profiles" / f"{subject.kind}-{subject.workers}-{scenario.name}.txt"
        stacks_path.parent.mkdir(parents=True, exist_ok=True)
        side_tasks["profile"] = asyncio.create_task(record_profile(running.root_pid, duration_s, stacks_path))

    cpu_before = cpu_snapshot({running.root_pid, ctx.mock_pid})
    wrk = await run_wrk(
        url, body_path, AUTHORIZATION, scenario.connections, duration_s, ctx.log_dir / f"{log_stem}.txt"
    )
    stop_sampling.set()
    side_results = {name: await task for name, task in side_tasks.items()}
    cpu_after = cpu_snapshot({running.root_pid, ctx.mock_pid})
    return Measurement(
        subject=subject.label,
        kind=subject.kind,
        workers=subject.workers,
        scenario=scenario.name,
        connections=scenario.connections,
        duration_s=duration_s,
        requests_per_s=wrk.requests_per_s,
        latency_ms=wrk.latency_ms,
        errors=wrk.errors,
        rss_idle_mib=rss_idle_mib[0],
        rss_load_mib=side_results["rss"][0],
        worker_rss_idle_mib=rss_idle_mib[1],
        worker_rss_load_mib=side_results["rss"][1],
        stream_idle=stream_idle,
        stream_load=side_results["probe"].summary() if "probe" in side_results else None,
        reload=side_results.get("reload"),
        others_cpu_pct=others_cpu_pct(cpu_before, cpu_after),
        profile=side_results.get("profile"),
    )


def print_measurement(m: Measurement) -> None:
    extra = ""
    if m.stream_load:
        extra = f", TTFB p50 under load {number(m.stream_load['ttfb_p50_ms'])} ms"
    if m.reload:
        extra = f", reloads seen {m.reload['observed']}/{m.reload['written']}, p50 {number(m.reload['p50_ms'], 0)} ms"
    print(
        f"  {m.scenario:<18} {m.requests_per_s:>9,.0f}/s  p50 {m.latency_ms['p50']:.2f} ms"
        f"  p99 {m.latency_ms['p99']:.2f} ms  errors {m.error_total}  RSS {m.rss_load_mib:.0f} MiB{extra}",
        flush=True,
    )


async def run_subject(
    ctx: RunContext, subject: Subject, mock: MockUpstream, measurements: list[Measurement], skips: list[Skip]
) -> None:
    scenarios = [scenario for scenario in ctx.settings.scenarios if subject.kind in scenario.kinds]
    for _, group in groupby(scenarios, key=lambda scenario: setup_key(subject.kind, scenario)):
        batch = list(group)
        try:
            running = await start_subject(subject, batch[0], mock, ctx.run_dir, ctx.log_dir)
        except SubjectUnavailable as error:
            for scenario in batch:
                skips.append(Skip(subject.label, scenario.name, f"did not start: {error}"))
            print(f"  skipped {', '.join(s.name for s in batch)}: did not start: {error}", flush=True)
            continue
        try:
            rss_idle_mib = (tree_rss_mib(running.root_pid), worker_rss_mib(running.root_pid))
            for scenario in batch:
                try:
                    measurement = await measure(ctx, subject, scenario, running, rss_idle_mib)
                except (SubjectUnavailable, RuntimeError) as error:
                    skips.append(Skip(subject.label, scenario.name, str(error)))
                    print(f"  skipped {scenario.name}: {error}", flush=True)
                    continue
                measurements.append(measurement)
                print_measurement(measurement)
        finally:
            stop_subject(running)


async def run_benchmark(settings: Settings) -> str:
    measurements: list[Measurement] = []
    skips: list[Skip] = []
    log_dir = settings.output_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.UTC)
    run_cpu_before = cpu_snapshot(set())
    with tempfile.TemporaryDirectory(prefix="oneapi-bench-") as scratch:
        run_dir = Path(scratch)
        run_dir.chmod(0o755)  # nginx's unprivileged worker must reach the mock's bodies inside it
        mock = start_mock_upstream(run_dir / "mock", log_dir / "nginx.log")
        try:
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                ctx = RunContext(settings, session, mock.process.pid, run_dir, log_dir)
                for subject in settings.subjects:
                    print(
                        f"{subject.label} (cores {subject.cpus if subject.kind != 'direct' else HARNESS_CPU})",
                        flush=True,
                    )
                    await run_subject(ctx, subject, mock, measurements, skips)
        finally:
            stop_mock_upstream(mock)
    elapsed_s = (datetime.datetime.now(datetime.UTC) - started).total_seconds()
    run_cpu_after = cpu_snapshot(set())  # every process the harness started has been reaped by now
    meta = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", "bench/run.py", *sys.argv[1:]]),
        "machine": machine(),
        "versions": versions(),
        "duration_s": settings.duration_s,
        "warmup_s": settings.warmup_s,
        "elapsed_s": round(elapsed_s),
        "other_processes_cpu_pct": others_cpu_pct(run_cpu_before, run_cpu_after),
        "pinning": PINNING,
        "profiled": settings.profile,
    }
    return write_results(settings.output_dir, meta, measurements, skips)


def main() -> None:
    settings = parse_args()
    os.sched_setaffinity(0, {HARNESS_CPU})  # the harness's probes share core 1 with wrk and nginx
    markdown = asyncio.run(run_benchmark(settings))
    print()
    print(markdown)
    print(f"written: {settings.output_dir / 'latest.md'}, {settings.output_dir / 'latest.json'}")


if __name__ == "__main__":
    main()
