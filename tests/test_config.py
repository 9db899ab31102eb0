"""config.yaml and provider files: loading, interpolation, validation with FILE:LINE, and `oneapi check`."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import PROVIDERS_DIR, ROOT
from oneapi.config import load_config
from oneapi.documents import ConfigError
from oneapi.snapshot import build_snapshot


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        build_snapshot(path, environ)
    return [str(p) for p in caught.value.problems]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oneapi.cli", *args], capture_output=True, text=True, timeout=60, env=env)


GOOD = f"""\
providers_dir: {PROVIDERS_DIR}
channels:
  - name: a
    provider: openai
    keys: ["${{UPSTREAM_KEY}}"]
    models: [gpt-4o-mini]
tokens:
  - name: t
    key: ${{CLIENT_KEY:-sk-default-client}}
    expires: 2099-01-01T00:00:00Z
"""


def test_shipped_config_is_valid_without_any_vendor_key() -> None:
    result = run_cli("check", "--config", str(ROOT / "config.yaml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok:")


def test_interpolation_from_environment_defaults_and_files(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("sk-from-file\n")
    path = write(tmp_path, GOOD + f"admin_key: ${{file:{secret}}}\nlisten: 127.0.0.1:${{PORT:-4000}}\n")

    config, _ = load_config(path, {"UPSTREAM_KEY": "sk-up"})

    assert config.channels[0].keys == ("sk-up",)
    assert config.tokens[0].key_sha256 == hashlib.sha256(b"sk-default-client").hexdigest()
    assert config.admin_key == "sk-from-file"
    assert config.port == 4000
    assert config.tokens[0].expires is not None and config.tokens[0].expires.year == 2099


def test_undefined_variable_without_default_is_reported_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    assert problems_of(path, {}) == [f"{path}:5: environment variable UPSTREAM_KEY is not set (and ${{UPSTREAM_KEY}} has no :-default)"]


def test_unknown_keys_and_wrong_types_point_at_their_lines(tmp_path: Path) -> None:
    path = write(tmp_path, f"""\
providers_dir: {PROVIDERS_DIR}
channels:
  - name: a
    provider: openai
    keys: [k]
    modles: [gpt-4o-mini]
    priority: high
tokens:
  - name: t
    key_sha256: nothex
""")
    found = problems_of(path, {})
    assert any(p.startswith(f"{path}:6: unknown key 'modles'") and "did you mean 'models'" in p for p in found), found
    assert any(p.startswith(f"{path}:7: channels.0.priority: should be an integer") for p in found), found
    assert any(p.startswith(f"{path}:10: tokens.0.key_sha256") for p in found), found


def test_schema_errors_do_not_echo_values(tmp_path: Path) -> None:
    path = write(tmp_path, f"providers_dir: {PROVIDERS_DIR}\nchannels:\n  - name: a\n    provider: openai\n    keys: sk-live-secret-value\n")
    found = problems_of(path, {})
    assert found and not any("sk-live-secret-value" in p for p in found)


def test_missing_provider_and_duplicates(tmp_path: Path) -> None:
    key = "sk-same"
    path = write(tmp_path, f"""\
providers_dir: {PROVIDERS_DIR}
channels:
  - name: a
    provider: openai
    keys: [k]
    models: [m]
  - name: a
    provider: nosuchvendor
    keys: [k]
    models: [m]
tokens:
  - name: t1
    key: {key}
  - name: t2
    key_sha256: {hashlib.sha256(key.encode()).hexdigest()}
""")
    found = problems_of(path, {})
    assert f"{path}:7: duplicate channel name 'a' (first at line 3)" in found
    assert any(p.startswith(f"{path}:14: token 't2' has the same key as token 't1'") for p in found), found
    # the provider is checked once the config itself is sound
    path.write_text(path.read_text().replace("  - name: a\n    provider: nosuchvendor", "  - name: b\n    provider: nosuchvendor").replace("key_sha256: " + hashlib.sha256(key.encode()).hexdigest(), "key: other"))
    found = problems_of(path, {})
    assert len(found) == 1 and found[0].startswith(f"{path}:8: channel 'b': no provider 'nosuchvendor'")


def test_token_needs_exactly_one_of_key_and_key_sha256(tmp_path: Path) -> None:
    path = write(tmp_path, f"providers_dir: {PROVIDERS_DIR}\ntokens:\n  - name: t\n    group: default\n")
    assert problems_of(path, {}) == [f"{path}:3: tokens.0: give exactly one of key, key_sha256"]


def test_invalid_yaml_is_reported_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "listen: 0.0.0.0:3000\nchannels:\n  - name: a\n   provider: x\n")
    found = problems_of(path, {})
    assert len(found) == 1 and re.match(rf"{re.escape(str(path))}:4: invalid YAML", found[0]), found


def with_provider_file(tmp_path: Path, name: str, text: str) -> tuple[Path, Path]:
    """A config whose providers.d holds the shipped openai.yaml and one more file: (config path, that file's path)."""
    providers = tmp_path / "providers.d"
    providers.mkdir()
    (providers / "openai.yaml").write_text((PROVIDERS_DIR / "openai.yaml").read_text())
    (providers / name).write_text(text)
    return write(tmp_path, "providers_dir: providers.d\n"), providers / name


def test_bad_provider_file_is_reported_with_its_file_and_line(tmp_path: Path) -> None:
    path, broken = with_provider_file(tmp_path, "broken.yaml", "extends: openai\nbase_url: https://x.example\nauth: {style: header}\n")

    found = problems_of(path, {})

    assert found == [f"{broken}:3: auth: 'header' is a required property"]


def test_check_cli_prints_file_line_and_exits_1(tmp_path: Path) -> None:
    path = write(tmp_path, f"providers_dir: {PROVIDERS_DIR}\nlisten: 0.0.0.0:3000\ntokenz: []\n")
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 1
    assert f"{path}:3: unknown key 'tokenz'" in result.stderr


def test_key_cli_prints_a_key_and_its_sha256() -> None:
    result = run_cli("key")
    assert result.returncode == 0
    key = re.search(r"^key:\s+(\S+)$", result.stdout, re.M).group(1)
    digest = re.search(r"^key_sha256:\s+([0-9a-f]{64})$", result.stdout, re.M).group(1)
    assert hashlib.sha256(key.encode()).hexdigest() == digest
    assert len(key) >= 40 and run_cli("key").stdout != result.stdout


@pytest.mark.parametrize(
    ("provider", "base_url", "expected"),
    [
        ("openai", None, "https://api.openai.com/v1/chat/completions"),
        ("openai", "https://proxy.example/openai", "https://proxy.example/openai/v1/chat/completions"),
        ("openai", "https://proxy.example/v1", "https://proxy.example/v1/chat/completions"),
        ("custom", "http://10.0.0.5:8000/api/v1/", "http://10.0.0.5:8000/api/v1/chat/completions"),
        ("groq", None, "https://api.groq.com/openai/v1/chat/completions"),
        ("groq", "https://api.groq.com/openai/v1", "https://api.groq.com/openai/v1/chat/completions"),
        ("openrouter", None, "https://openrouter.ai/api/v1/chat/completions"),
        ("zhipu", None, "https://open.bigmodel.cn/api/paas/v4/chat/completions"),
        ("zhipu", "https://open.bigmodel.cn/api/paas/v4", "https://open.bigmodel.cn/api/paas/v4/chat/completions"),
        ("dashscope", None, "https://dashscope.aliyuncs.com/compatible-mode/v1/chat/completions"),
        ("qianfan", None, "https://qianfan.baidubce.com/v2/chat/completions"),
        ("deepseek", None, "https://api.deepseek.com/v1/chat/completions"),
        ("ollama", None, "http://localhost:11434/v1/chat/completions"),
        ("azure", "https://res.openai.azure.com", "https://res.openai.azure.com/openai/deployments/gpt-4o%2Bmini/chat/completions?api-version=2024-10-21"),
    ],
)
def test_channel_urls_follow_one_api_base_url_rules(tmp_path: Path, provider: str, base_url: str | None, expected: str) -> None:
    line = f"    base_url: {base_url}\n" if base_url else ""
    path = write(tmp_path, f"providers_dir: {PROVIDERS_DIR}\nchannels:\n  - name: c\n    provider: {provider}\n{line}    keys: [k]\n    models: [gpt-4o+mini]\n")
    snapshot = build_snapshot(path, {})
    channel = snapshot.channels["c"]
    assert channel.url(channel.provider.operations["chat"], "gpt-4o+mini", channel.keys[0]) == expected


def test_azure_uses_the_api_key_header_and_channel_api_version(tmp_path: Path) -> None:
    path = write(tmp_path, f"""\
providers_dir: {PROVIDERS_DIR}
channels:
  - name: az
    provider: azure
    base_url: https://res.openai.azure.com
    keys: [azkey]
    models: [gpt-4o]
    options: {{api_version: 2025-01-01-preview}}
""")
    channel = build_snapshot(path, {}).channels["az"]
    key = channel.keys[0]
    assert dict(key.headers) == {"api-key": "azkey"}
    assert channel.url(channel.provider.operations["embeddings"], "gpt-4o", key).endswith("/openai/deployments/gpt-4o/embeddings?api-version=2025-01-01-preview")


def test_every_shipped_provider_compiles() -> None:
    from oneapi.providers import load_providers

    providers, _ = load_providers(PROVIDERS_DIR)
    expected = {"openai", "azure", "deepseek", "moonshot", "mistral", "groq", "openrouter", "xai", "together", "siliconflow",
                "zhipu", "dashscope", "qianfan", "hunyuan", "xunfei", "ai360", "ollama", "custom"}
    assert expected <= set(providers)
    for name in expected:
        assert "chat" in providers[name].operations, name


@pytest.mark.parametrize("body", [
    "extends: openai\nauth: {style: jwt_hs256}\n",  # a signer: every operation goes through the JSON translator
    "extends: openai\noperations:\n  audio_speech:\n    path: /tts\n    format: mapped\n    request: '@'\n    response: '@'\n",
])
def test_audio_operations_that_would_be_translated_are_refused_at_their_line(tmp_path: Path, body: str) -> None:
    providers = tmp_path / "providers.d"
    providers.mkdir()
    (providers / "openai.yaml").write_text((PROVIDERS_DIR / "openai.yaml").read_text())
    (providers / "voice.yaml").write_text(body)
    path = write(tmp_path, "providers_dir: providers.d\n")

    found = problems_of(path, {})

    assert any(p.startswith(f"{providers / 'voice.yaml'}:") and "audio_" in p and "relayed as it is" in p for p in found), found


def test_an_extending_file_removes_an_inherited_header(tmp_path: Path) -> None:
    from oneapi.providers import load_providers

    providers, _ = load_providers(PROVIDERS_DIR)
    assert providers["anthropic"].headers == {"anthropic-version": "2023-06-01"}
    assert "anthropic-version" not in {k.lower() for k in providers["vertex-anthropic"].headers}


def _number_paths(schema: dict, node: object, at: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Where config.yaml holds a number, as a path into a config: each map's entries named "x", each array's first item."""
    if not isinstance(node, dict):
        return []
    if "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    kinds = node.get("type") if isinstance(node.get("type"), list) else [node.get("type")]
    found = [at] if {"number", "integer"} & set(kinds) else []
    for name, sub in (node.get("properties") or {}).items():
        found += _number_paths(schema, sub, at + (name,))
    if isinstance(node.get("additionalProperties"), dict):
        found += _number_paths(schema, node["additionalProperties"], at + ("x",))
    if isinstance(node.get("items"), dict):
        found += _number_paths(schema, node["items"], at + ("0",))
    return found


CONFIG_NUMBERS = _number_paths(json.loads((ROOT / "schemas" / "config.schema.json").read_text()),
                               json.loads((ROOT / "schemas" / "config.schema.json").read_text()), ())


def test_every_number_of_the_config_schema_is_found() -> None:
    names = {".".join(p) for p in CONFIG_NUMBERS}
    assert {"pricing.models.x.input", "groups.x.ratio", "channels.0.weight", "channels.0.timeout", "tokens.0.budget",
            "retry.deadline", "breaker.cooldown", "watch_interval"} <= names


@pytest.mark.parametrize("where", CONFIG_NUMBERS, ids=lambda p: ".".join(p))
@pytest.mark.parametrize("written", [".nan", ".inf", "-.Inf", "1.0e+400"])
def test_non_finite_numbers_are_refused_at_their_line(tmp_path: Path, where: tuple[str, ...], written: str) -> None:
    config: dict = {"providers_dir": str(PROVIDERS_DIR),
                    "channels": [{"name": "a", "provider": "openai", "keys": ["k"], "models": ["m"]}],
                    "tokens": [{"name": "t", "key": "sk-t"}]}
    node: Any = config
    for name, following in zip(where, where[1:]):
        key: Any = int(name) if name.isdigit() else name
        if isinstance(node, dict) and key not in node:
            node[key] = [{}] if following.isdigit() else {}
        node = node[key]
    node[where[-1]] = "NONFINITE"
    text = yaml.safe_dump(config, sort_keys=False).replace("NONFINITE", written)
    path = write(tmp_path, text)
    line = text.splitlines().index(next(s for s in text.splitlines() if written in s)) + 1

    assert problems_of(path, {}) == [f"{path}:{line}: {'.'.join(where)}: {written} is not a finite number "
                                     "(leave the key out where no limit is meant)"]


def test_non_finite_number_from_a_variable_is_refused_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("    models: [gpt-4o-mini]\n", "    models: [gpt-4o-mini]\n    timeout: ${TIMEOUT}\n"))
    assert problems_of(path, {"UPSTREAM_KEY": "k", "TIMEOUT": ".inf"}) == [
        f"{path}:7: channels.0.timeout: ${{TIMEOUT}} (= .inf) is not a finite number (leave the key out where no limit is meant)"]
    config, _ = load_config(path, {"UPSTREAM_KEY": "k", "TIMEOUT": "30"})  # a finite one is the number, on every load path
    assert config.channels[0].timeout == 30


def test_non_finite_number_in_a_provider_file_is_refused_by_check(tmp_path: Path) -> None:
    path, odd = with_provider_file(tmp_path, "odd.yaml", "extends: openai\nbase_url: https://x.example\noptions:\n  temperature_cap: .nan\n")

    result = run_cli("check", "--config", str(path))

    assert result.returncode == 1
    assert f"{odd}:4: options.temperature_cap: .nan is not a finite number" in result.stderr
