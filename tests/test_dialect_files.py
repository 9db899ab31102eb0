"""Dialect files (dialects.d): their own self-tests in CI, as `oneapi check` runs them, and problems at FILE:LINE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import PROVIDERS_DIR
from oneapi.documents import ConfigError
from oneapi.dialects import load_dialects, match_route
from oneapi.dialects.selftest import run_case, run_dialect_selftests

DIALECTS_DIR = PROVIDERS_DIR.parent / "dialects.d"
DIALECTS, _ = load_dialects(DIALECTS_DIR)
CASES = [(name, i) for name, dialect in sorted(DIALECTS.items()) for i in range(len(dialect.tests))]

MINIMAL = """\
routes: [{path: /v1/demo, operation: chat}]
keys: [{header: x-demo-key}]
model: model
request: "{model: model, messages: [{role: 'user', content: prompt}]}"
response: "{text: choices[0].message.content}"
errors: {body: "{problem: message}"}
"""


@pytest.mark.parametrize(("dialect", "index"), CASES, ids=[f"{d}[{i}]" for d, i in CASES])
def test_dialect_selftest(dialect: str, index: int) -> None:
    assert run_case(DIALECTS[dialect], DIALECTS[dialect].tests[index]) is None


def test_every_dialect_carries_selftests() -> None:
    assert DIALECTS and [name for name, d in DIALECTS.items() if not d.tests] == []


def test_a_failing_case_is_reported_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "demo.yaml").write_text(MINIMAL + "tests:\n  - request: {model: m, prompt: hi}\n    canonical: {model: m}\n")
    dialects, _ = load_dialects(tmp_path)
    count, problems = run_dialect_selftests(dialects.values())
    assert count == 1 and problems[0].line == 8 and "canonical request differs" in problems[0].message


def test_a_bad_file_is_refused_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "demo.yaml").write_text(MINIMAL + "surprise: 1\n")
    (tmp_path / "other.yaml").write_text(MINIMAL.replace("model: model", "model: 'model['"))
    with pytest.raises(ConfigError) as caught:
        load_dialects(tmp_path)
    messages = [str(p) for p in caught.value.problems]
    assert any(m.startswith(f"{tmp_path / 'demo.yaml'}:7:") and "surprise" in m for m in messages)
    assert any(m.startswith(f"{tmp_path / 'other.yaml'}:3:") and "JMESPath" in m for m in messages)


def test_routes_with_holes_read_path_parameters(tmp_path: Path) -> None:
    (tmp_path / "demo.yaml").write_text(MINIMAL.replace("/v1/demo", "'/v1beta/models/{model}:generate'").replace("model: model", "model: _path.model"))
    dialects, _ = load_dialects(tmp_path)
    routes = tuple((route, d) for d in dialects.values() for route in d.routes)
    found = match_route(routes, "POST", "/v1beta/models/gemini-2.5-flash:generate", {"key": "k"})
    assert found is not None and found.path == {"model": "gemini-2.5-flash"} and found.query == {"key": "k"}
    assert match_route(routes, "POST", "/v1beta/models/a/b:generate", {}) is None


def test_a_provider_may_only_claim_a_declared_dialect(tmp_path: Path) -> None:
    from oneapi.snapshot import build_snapshot

    providers = tmp_path / "providers.d"
    providers.mkdir()
    (providers / "demo.yaml").write_text("base_url: http://x\noperations:\n  chat: {path: /chat}\ndialects:\n  klingon: {operations: {chat: {path: /k}}}\n")
    (tmp_path / "dialects.d").mkdir()
    (tmp_path / "config.yaml").write_text("providers_dir: providers.d\n")
    with pytest.raises(ConfigError) as caught:
        build_snapshot(tmp_path / "config.yaml")
    assert "dialect 'klingon' is not in dialects.d" in str(caught.value.problems[0])
    assert caught.value.problems[0].line == 5


def test_a_changed_dialect_file_is_reloaded_and_a_broken_one_refused(tmp_path: Path, start_gateway: Any, vendor: Any) -> None:
    import shutil

    import httpx

    from conftest import CLIENT_KEY, base_config

    dialects = tmp_path / "my-dialects"
    dialects.mkdir()
    shutil.copy(DIALECTS_DIR / "anthropic-messages.yaml", dialects)
    gateway = start_gateway(base_config(vendor, dialects_dir=str(dialects)))  # replaces the shipped file of its name
    headers = {"x-api-key": CLIENT_KEY}
    body = {"model": "no-such-model", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(gateway.url("/v1/messages"), json=body, headers=headers).json()["error"]["type"] == "not_found_error"
    # the shipped dialects it does not replace still serve
    google = httpx.post(gateway.url("/v1beta/models/no-such-model:generateContent"), headers={"x-goog-api-key": CLIENT_KEY},
                        json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    assert google.status_code == 404 and google.json()["error"]["status"] == "NOT_FOUND"

    version = gateway.health()["config_version"]
    path = dialects / "anthropic-messages.yaml"
    path.write_text(path.read_text().replace('"404": not_found_error', '"404": no_such_model_error'))
    gateway.wait_for(lambda h: h["config_version"] != version)
    assert httpx.post(gateway.url("/v1/messages"), json=body, headers=headers).json()["error"]["type"] == "no_such_model_error"

    version = gateway.health()["config_version"]
    path.write_text(path.read_text() + "surprise: 1\n")
    health = gateway.wait_for(lambda h: h["last_reload_failed"])
    details = httpx.get(gateway.url("/health"), headers={"Authorization": "Bearer admin-secret-key-for-tests"}).json()["last_reload_error"]
    assert "anthropic-messages.yaml" in details and health["config_version"] == version
    assert httpx.post(gateway.url("/v1/messages"), json=body, headers=headers).json()["error"]["type"] == "no_such_model_error"
