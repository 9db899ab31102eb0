"""CI runs every provider file's own self-tests, the same ones `oneapi check` runs."""

from __future__ import annotations

import pytest

from conftest import PROVIDERS_DIR
from oneapi.providers import load_providers
from oneapi.selftest import run_case, run_selftests

PROVIDERS, _ = load_providers(PROVIDERS_DIR)
CASES = [(name, i) for name, provider in sorted(PROVIDERS.items()) for i in range(len(provider.tests))]


@pytest.mark.parametrize(("provider", "index"), CASES, ids=[f"{p}[{i}]" for p, i in CASES])
def test_provider_selftest(provider: str, index: int) -> None:
    assert run_case(PROVIDERS[provider], PROVIDERS[provider].tests[index]) is None


def test_every_translated_provider_carries_selftests() -> None:
    translated = [name for name, p in PROVIDERS.items() if any(op.translated for op in p.operations.values())]
    assert translated
    assert [name for name in translated if not PROVIDERS[name].tests] == []


def test_a_failing_case_is_reported_at_its_line(tmp_path) -> None:
    (tmp_path / "demo.yaml").write_text(
        "auth: {style: none}\n"
        "operations:\n"
        "  chat: {path: /chat, format: mapped, request: '{m: model}', response: '{choices: [{message: {content: text}}]}'}\n"
        "tests:\n"
        "  - operation: chat\n"
        "    request: {model: x}\n"
        "    upstream: {m: x}\n"
        "  - operation: chat\n"
        "    response: {text: hi}\n"
        "    expect: {choices: [{message: {content: bye}}]}\n")
    providers, _ = load_providers(tmp_path)
    count, problems = run_selftests(providers.values())
    assert count == 2
    assert [(p.line, "content: expected 'bye', got 'hi'" in p.message) for p in problems] == [(8, True)]
    assert str(problems[0]).startswith(f"{tmp_path / 'demo.yaml'}:8: self-test")


def test_oneapi_check_prints_file_and_line_of_a_failing_case(tmp_path, capsys) -> None:
    from oneapi.cli import main

    providers = tmp_path / "providers.d"
    providers.mkdir()
    (providers / "demo.yaml").write_text(
        "auth: {style: none}\n"
        "operations:\n"
        "  chat: {path: /chat, format: mapped, request: '{m: model}', response: '{choices: `[]`}'}\n"
        "tests:\n"
        "  - operation: chat\n"
        "    request: {model: x}\n"
        "    upstream: {m: y}\n")
    (tmp_path / "config.yaml").write_text(f"providers_dir: {providers}\nchannels: []\ntokens: []\n")

    assert main(["check", "--config", str(tmp_path / "config.yaml")]) == 1
    err = capsys.readouterr().err
    assert f"{providers / 'demo.yaml'}:5: self-test 'tests[0]' failed: upstream request differs" in err
    shipped = sum(len(provider.tests) for provider in PROVIDERS.values())  # providers_dir adds to the shipped files
    assert f"1 of {shipped + 1} provider self-test(s) failed" in err
