"""Configs the harness generates at run time: the gateway's config.yaml variants and LiteLLM's."""

import hashlib
import os
from pathlib import Path
from typing import Any

import yaml

REPO_DIR = Path(__file__).resolve().parent.parent
PROVIDERS_DIR = REPO_DIR / "providers.d"

CLIENT_KEY = "sk-bench-client-key"
UPSTREAM_KEY = "sk-upstream-bench"
OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-4-5"
BIG_CHANNEL_COUNT = 1_000
BIG_TOKEN_COUNT = 10_000
# The reload scenario bumps this channel's name on every rewrite, so each write is a real config change.
RELOAD_MARKER = "reload-marker-0"


def mock_channel(upstream_url: str) -> dict[str, Any]:
    return {
        "name": "mock",
        "provider": "openai",
        "base_url": upstream_url,
        "keys": [UPSTREAM_KEY],
        "models": [OPENAI_MODEL],
    }


def client_token(**limits: Any) -> dict[str, Any]:
    return {"name": "bench", "key": CLIENT_KEY, **limits}


def gateway_config(port: int, channels: list[dict[str, Any]], tokens: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "listen": f"127.0.0.1:{port}",
        "providers_dir": str(PROVIDERS_DIR),
        "channels": channels,
        "tokens": tokens,
    }


def small_config(port: int, upstream_url: str) -> dict[str, Any]:
    return gateway_config(port, [mock_channel(upstream_url)], [client_token()])


def anthropic_config(port: int, upstream_url: str) -> dict[str, Any]:
    channel = {
        "name": "mock-anthropic",
        "provider": "anthropic",
        "base_url": upstream_url,
        "keys": ["sk-ant-upstream-bench"],
        "models": [ANTHROPIC_MODEL],
    }
    return gateway_config(port, [channel], [client_token()])


def big_config(port: int, upstream_url: str) -> dict[str, Any]:
    """1,000 channels and 10,000 tokens; the bench's channel and token come last, where a linear scan is slowest."""
    filler_channels = [
        {
            "name": RELOAD_MARKER if index == 0 else f"filler-{index:04d}",
            "provider": "openai",
            "base_url": upstream_url,
            "keys": [f"sk-upstream-filler-{index:04d}"],
            "models": [f"filler-model-{index:04d}"],
        }
        for index in range(BIG_CHANNEL_COUNT - 1)
    ]
    filler_tokens = [
        {"name": f"filler-{index:05d}", "key_sha256": hashlib.sha256(f"sk-filler-{index:05d}".encode()).hexdigest()}
        for index in range(BIG_TOKEN_COUNT - 1)
    ]
    return gateway_config(port, [*filler_channels, mock_channel(upstream_url)], [*filler_tokens, client_token()])


def budget_config(port: int, upstream_url: str) -> dict[str, Any]:
    return {
        **small_config(port, upstream_url),
        "pricing": {"models": {OPENAI_MODEL: {"input": 0.15, "output": 0.60, "cached_input": 0.075}}},
        "tokens": [client_token(budget=1000, rpm=1_000_000)],
    }


def litellm_config(upstream_url: str) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": OPENAI_MODEL,
                "litellm_params": {
                    "model": f"openai/{OPENAI_MODEL}",
                    "api_base": f"{upstream_url}/v1",
                    "api_key": UPSTREAM_KEY,
                },
            }
        ],
        # The master key makes LiteLLM check the client's bearer, as the gateway does; no database needed.
        "general_settings": {"master_key": CLIENT_KEY},
        "litellm_settings": {"telemetry": False, "drop_params": True},
    }


def render_yaml(data: dict[str, Any]) -> str:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml: the big config renders in 0.3 s, not 3 s
    return yaml.dump(data, Dumper=dumper, sort_keys=False, width=1000)


def write_atomically(path: Path, text: str) -> None:
    """Write then rename, so a watcher never reads a half-written file."""
    scratch = path.with_name(f".{path.name}.writing")
    scratch.write_text(text)
    os.replace(scratch, path)
