"""The installed package carries its providers and schemas: a config.yaml in a folder of its own, outside any
checkout, is checked and served after a plain (non-editable) `pip install`; providers_dir adds to the shipped
providers and replaces them by name."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import openai
import pytest
import yaml

from conftest import CLIENT_KEY, PROVIDERS_DIR, ROOT, UPSTREAM_KEY, GatewayProcess
from fakevendor import FakeVendor, fixture_json
from oneapi.snapshot import build_snapshot

# what `pip install .` builds from; every top-level *.d folder is data that must ship inside the package
DATA_FOLDERS = sorted(p.name for p in ROOT.glob("*.d") if p.is_dir())
SOURCES = ("pyproject.toml", "README.md", "oneapi", "schemas", *DATA_FOLDERS)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package installed the way a user installs it (a built wheel, not editable) into a folder of its own."""
    work = tmp_path_factory.mktemp("install")
    source = work / "source"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    target = work / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not (target / "oneapi" / "providers_d").is_symlink()
    return target


def installed_env(site: Path) -> dict[str, str]:
    """Only the installed copy on the path: the checkout (and its editable install) must not be what answers."""
    return {**os.environ, "PYTHONPATH": str(site)}


def oneapi_command(site: Path, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it from their config folder."""
    return subprocess.run([sys.executable, str(site / "bin" / "oneapi"), *args], cwd=cwd, env={**installed_env(site), **env},
                          capture_output=True, text=True, timeout=120)


def only_a_config(folder: Path, config: dict) -> Path:
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def test_the_wheel_holds_every_provider_file_and_schema(installed: Path) -> None:
    shipped = sorted(p.name for p in (installed / "oneapi" / "providers_d").glob("*.yaml"))
    assert shipped == sorted(p.name for p in PROVIDERS_DIR.glob("*.yaml"))
    for folder in DATA_FOLDERS:  # providers.d, and any other *.d folder the repo keeps at its top (as schemas/ is)
        inside = installed / "oneapi" / folder.replace(".", "_")
        assert sorted(p.name for p in inside.glob("*.yaml")) == sorted(p.name for p in (ROOT / folder).glob("*.yaml")), folder
    assert sorted(p.name for p in (installed / "oneapi" / "schemas").glob("*.json")) == sorted(
        p.name for p in (ROOT / "schemas").glob("*.json"))


def test_check_passes_in_a_folder_with_only_a_config(installed: Path, tmp_path: Path) -> None:
    ops = only_a_config(tmp_path / "ops", {
        "store": "sqlite:///oneapi.db",
        "channels": [{"name": "ds", "provider": "deepseek", "keys": ["${DEEPSEEK_API_KEY}"], "models": ["deepseek-chat"]}],
        "tokens": [{"name": "app", "key_sha256": "0" * 64}],
    })

    done = oneapi_command(installed, "check", cwd=ops, DEEPSEEK_API_KEY="sk-deepseek")

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: config.yaml is valid")
    assert f"provider deepseek: {installed / 'oneapi' / 'providers_d' / 'deepseek.yaml'} (shipped)" in done.stdout
    assert str(ROOT) not in done.stdout + done.stderr


def test_providers_dir_adds_files_and_replaces_shipped_ones_by_name(installed: Path, tmp_path: Path) -> None:
    ops = only_a_config(tmp_path / "ops", {
        "providers_dir": "providers.d",
        "channels": [{"name": "corp", "provider": "mycorp", "keys": ["k"], "models": ["corp-1"]}],
    })
    (ops / "providers.d").mkdir()
    (ops / "providers.d" / "openai.yaml").write_text((PROVIDERS_DIR / "openai.yaml").read_text().replace("api_prefix: /v1", "api_prefix: /v9"))
    (ops / "providers.d" / "mycorp.yaml").write_text("extends: openai\nbase_url: https://llm.corp.example\n")

    done = oneapi_command(installed, "check", "--config", "config.yaml", cwd=ops)

    assert done.returncode == 0, done.stderr
    assert f"provider openai: {ops / 'providers.d' / 'openai.yaml'} (replaces the shipped file)" in done.stdout
    assert f"provider mycorp: {ops / 'providers.d' / 'mycorp.yaml'} (added)" in done.stdout
    assert f"provider groq: {installed / 'oneapi' / 'providers_d' / 'groq.yaml'} (shipped)" in done.stdout


def test_a_replacing_file_is_the_one_that_serves_and_extends_sees_it(tmp_path: Path) -> None:
    (tmp_path / "providers.d").mkdir()
    (tmp_path / "providers.d" / "openai.yaml").write_text((PROVIDERS_DIR / "openai.yaml").read_text().replace("api_prefix: /v1", "api_prefix: /v9"))
    (tmp_path / "config.yaml").write_text("providers_dir: providers.d\nchannels: []\n")

    providers = build_snapshot(tmp_path / "config.yaml").providers

    assert providers["openai"].api_prefix == "/v9"
    assert providers["openai"].file == str(tmp_path / "providers.d" / "openai.yaml")
    assert providers["deepseek"].file == str(PROVIDERS_DIR / "deepseek.yaml")  # still shipped, extending the replaced openai
    assert providers["mistral"].endpoint(None) == "https://api.mistral.ai/v1"


def test_without_providers_dir_only_the_shipped_providers_load(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("channels: []\n")

    providers = build_snapshot(tmp_path / "config.yaml").providers

    assert sorted(providers) == sorted(p.stem for p in PROVIDERS_DIR.glob("*.yaml"))


def test_a_missing_providers_dir_is_still_an_error(tmp_path: Path) -> None:
    from oneapi.documents import ConfigError

    (tmp_path / "config.yaml").write_text("providers_dir: nowhere\n")
    with pytest.raises(ConfigError) as raised:
        build_snapshot(tmp_path / "config.yaml")
    assert [p.message for p in raised.value.problems] == ["providers_dir is not a folder"]


@pytest.fixture
def vendor() -> Iterator[FakeVendor]:
    with FakeVendor() as fake:
        yield fake


def test_serve_runs_in_a_folder_with_only_a_config(installed: Path, tmp_path: Path, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    ops = only_a_config(tmp_path / "ops", {
        "store": "sqlite:///oneapi.db",
        "channels": [{"name": "main", "provider": "openai", "base_url": vendor.base_url, "keys": [UPSTREAM_KEY],
                      "models": ["gpt-4o-mini"]}],
        "tokens": [{"name": "app", "key": CLIENT_KEY}],
    })
    gateway = GatewayProcess(ops / "config.yaml", env={"PYTHONPATH": str(installed)})
    try:
        gateway.start()
        answer = openai.OpenAI(base_url=gateway.url("/v1"), api_key=CLIENT_KEY, max_retries=0, timeout=20).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    finally:
        gateway.stop()

    recorded = fixture_json("openai/chat_completion_text.json")
    assert answer.choices[0].message.content == recorded["choices"][0]["message"]["content"]
    assert vendor.requests_to("/v1/chat/completions")[-1].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert (ops / "oneapi.db").exists()
