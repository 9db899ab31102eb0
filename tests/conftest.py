"""Shared fixtures: fake vendors on loopback and the gateway itself, served by Granian in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
import yaml

from fakevendor import FakeVendor, free_port

ROOT = Path(__file__).resolve().parent.parent
PROVIDERS_DIR = ROOT / "providers.d"
CLIENT_KEY = "sk-test-client-0123456789abcdef"
UPSTREAM_KEY = "sk-upstream-secret-abcdef0123456789"


def write_config(path: Path, config: dict[str, Any] | str) -> None:
    """Write atomically, as an editor or a ConfigMap update would, so the watcher never sees half a file."""
    text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def base_config(vendor: FakeVendor, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "listen": "127.0.0.1:3000",
        "providers_dir": str(PROVIDERS_DIR),
        "admin_key": "admin-secret-key-for-tests",
        "watch_interval": 0.2,
        "channels": [
            {"name": "main", "provider": "openai", "base_url": vendor.base_url, "keys": [UPSTREAM_KEY],
             "models": ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "gpt-3.5-turbo-instruct"]},
        ],
        "tokens": [{"name": "tester", "key": CLIENT_KEY}],
    }
    config.update(overrides)
    return config


class GatewayProcess:
    """`oneapi serve` on a free loopback port, as a user would run it."""

    def __init__(self, config_path: Path, workers: int = 1, env: dict[str, str] | None = None):
        self.config_path = config_path
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.log_path = config_path.parent / f"gateway-{self.port}.log"
        # the checkout under test, even where another checkout is pip-installed in editable mode
        pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        self._env = {**os.environ, "PYTHONPATH": pythonpath, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> "GatewayProcess":
        cmd = [sys.executable, "-m", "oneapi.cli", "serve", "--config", str(self.config_path),
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self._env, cwd=self.config_path.parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url("/health"), timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gateway did not become healthy:\n{self.log()}")

    def url(self, path: str) -> str:
        return self.base_url + path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def health(self) -> dict[str, Any]:
        return httpx.get(self.url("/health"), timeout=5).json()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        health: dict[str, Any] = {}
        while time.monotonic() < deadline:
            health = self.health()
            if predicate(health):
                return health
            time.sleep(0.05)
        raise AssertionError(f"condition not met within {timeout}s; last /health: {json.dumps(health)}")

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)


def serve_for_module(tmp_path_factory: pytest.TempPathFactory, name: str, config: dict[str, Any]) -> Iterator[GatewayProcess]:
    """Body of a module-scoped gateway fixture: one gateway for a whole test file, stopped at its end."""
    path = tmp_path_factory.mktemp(name) / "config.yaml"
    write_config(path, config)
    process = GatewayProcess(path).start()
    yield process
    process.stop()


@pytest.fixture
def vendor() -> Iterator[FakeVendor]:
    with FakeVendor() as fake:
        yield fake


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Write a config and serve it: start_gateway(config_dict_or_text, workers=1, env=None)."""
    started: list[GatewayProcess] = []

    def start(config: dict[str, Any] | str, workers: int = 1, env: dict[str, str] | None = None) -> GatewayProcess:
        path = tmp_path / "config.yaml"
        write_config(path, config)
        gateway = GatewayProcess(path, workers=workers, env=env)
        started.append(gateway)
        return gateway.start()

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def gateway(vendor: FakeVendor, start_gateway: Callable[..., GatewayProcess]) -> GatewayProcess:
    """The gateway with one OpenAI channel pointing at the fake vendor."""
    return start_gateway(base_config(vendor))


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real redis-server of this test's own, on a free loopback port, persisting to the test's folder."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed (.ci/run installs Debian's redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    folder = tmp_path / "redis"
    folder.mkdir()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "",
                                "--appendonly", "yes", "--protected-mode", "yes"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(10)
