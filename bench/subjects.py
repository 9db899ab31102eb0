"""The servers under test: how each starts, where it is pinned, and when it is ready."""

import asyncio
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

import configs
from mock_upstream import MockUpstream
from procs import free_port, log_tail, start_process, stop_process_group, taskset_prefix, tree_cpu_seconds
from scenarios import Scenario, SubjectKind

BENCH_DIR = Path(__file__).resolve().parent
LITELLM_BIN = BENCH_DIR / ".venv-litellm" / "bin" / "litellm"
HEALTH_PATHS: dict[SubjectKind, str] = {"floor": "/health", "oneapi": "/health", "litellm": "/health/liveliness"}
START_TIMEOUT_S: dict[SubjectKind, float] = {"floor": 30, "oneapi": 90, "litellm": 180}


class SubjectUnavailable(Exception):
    """The subject cannot run here (not installed, refused its config, died at start)."""


@dataclass(frozen=True)
class Subject:
    kind: SubjectKind
    workers: int

    @property
    def label(self) -> str:
        return "direct" if self.kind == "direct" else f"{self.kind} ×{self.workers}"

    @property
    def cpus(self) -> str:
        """One worker gets core 0 to itself; two workers spread over both cores, sharing core 1 with the harness."""
        return "0" if self.workers == 1 else "0,1"


@dataclass(frozen=True)
class RunningSubject:
    base_url: str
    root_pid: int
    process: subprocess.Popen[bytes] | None  # None for `direct`: the mock's nginx lives for the whole run
    config_path: Path | None
    log_path: Path | None


def gateway_config_for(scenario: Scenario, port: int, upstream_url: str) -> dict[str, object]:
    builders = {
        "small": configs.small_config,
        "anthropic": configs.anthropic_config,
        "big": configs.big_config,
        "budget": configs.budget_config,
    }
    return builders[scenario.gateway_config](port, upstream_url)


def server_command(subject: Subject, port: int, config_path: Path) -> list[str]:
    host_port = ["--host", "127.0.0.1", "--port", str(port)]
    if subject.kind == "floor":
        options = f"--interface asgi --loop uvloop --no-ws --log-level warning --workers {subject.workers}".split()
        return [sys.executable, "-m", "granian", *options, *host_port, "--working-dir", str(BENCH_DIR), "floor_app:app"]
    if subject.kind == "oneapi":
        return ["oneapi", "serve", "--config", str(config_path), *host_port, "--workers", str(subject.workers)]
    # uvicorn kills a worker that misses a 5 s ping; a LiteLLM worker still importing on a busy CPU does, in a loop.
    supervision = ["--timeout_worker_healthcheck", "60"] if subject.workers > 1 else []
    return [
        str(LITELLM_BIN),
        "--config",
        str(config_path),
        *host_port,
        "--num_workers",
        str(subject.workers),
        *supervision,
    ]


def server_env(subject: Subject, upstream_url: str) -> dict[str, str]:
    env = dict(os.environ)
    if subject.kind == "floor":
        env["FLOOR_UPSTREAM"] = upstream_url
    if subject.kind == "litellm":
        env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # offline: no fetch of the price map at import
        env["LITELLM_LOG"] = "ERROR"
    return env


def check_installed(kind: SubjectKind) -> None:
    if kind == "oneapi" and shutil.which("oneapi") is None:
        raise SubjectUnavailable("`oneapi` is not on PATH: run bench/setup.sh once the package exists")
    if kind == "litellm" and not LITELLM_BIN.exists():
        raise SubjectUnavailable(f"{LITELLM_BIN} missing: run bench/setup.sh")


def write_subject_config(subject: Subject, scenario: Scenario, port: int, upstream_url: str, run_dir: Path) -> Path:
    config_dir = run_dir / f"{subject.kind}-{subject.workers}-{scenario.upstream}-{scenario.gateway_config}"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "data").mkdir(exist_ok=True)  # where the default sqlite store lands, relative to the config
    config_path = config_dir / "config.yaml"
    if subject.kind == "oneapi":
        data = gateway_config_for(scenario, port, upstream_url)
    else:
        data = configs.litellm_config(upstream_url)
    configs.write_atomically(config_path, configs.render_yaml(data))
    return config_path


async def start_subject(
    subject: Subject, scenario: Scenario, mock: MockUpstream, run_dir: Path, log_dir: Path
) -> RunningSubject:
    upstream_url = mock.url(scenario.upstream)
    if subject.kind == "direct":
        return RunningSubject(upstream_url, mock.process.pid, None, None, None)
    check_installed(subject.kind)
    port = free_port()
    config_path = write_subject_config(subject, scenario, port, upstream_url, run_dir)
    log_path = log_dir / f"{subject.kind}-{subject.workers}-{scenario.upstream}-{scenario.gateway_config}.log"
    command = [*taskset_prefix(subject.cpus), *server_command(subject, port, config_path)]
    process = start_process(command, server_env(subject, upstream_url), log_path)
    running = RunningSubject(f"http://127.0.0.1:{port}", process.pid, process, config_path, log_path)
    try:
        await wait_until_healthy(running, running.base_url + HEALTH_PATHS[subject.kind], START_TIMEOUT_S[subject.kind])
        await wait_until_idle(process.pid, START_TIMEOUT_S[subject.kind])
    except SubjectUnavailable:
        stop_process_group(process)
        raise
    return running


def stop_subject(running: RunningSubject) -> None:
    if running.process is not None:
        stop_process_group(running.process)


async def wait_until_healthy(running: RunningSubject, health_url: str, timeout_s: float) -> None:
    assert running.process is not None and running.log_path is not None
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if running.process.poll() is not None:
                exit_code = running.process.returncode
                raise SubjectUnavailable(
                    f"exited with {exit_code} at start; {running.log_path}:\n{log_tail(running.log_path)}"
                )
            try:
                async with session.get(health_url) as response:
                    if response.status == 200:
                        return
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(0.1)
    raise SubjectUnavailable(
        f"{health_url} not 200 within {timeout_s:.0f}s; {running.log_path}:\n{log_tail(running.log_path)}"
    )


async def wait_until_idle(root_pid: int, timeout_s: float, window_s: float = 0.5) -> None:
    """Health answers as soon as one worker is up; wait until the others finish booting too."""
    deadline = time.monotonic() + timeout_s
    previous = tree_cpu_seconds(root_pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(window_s)
        current = tree_cpu_seconds(root_pid)
        if current - previous < 0.05 * window_s:
            return
        previous = current
