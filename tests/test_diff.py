"""`oneapi diff`: what a config change does, for review — and never a secret, in either format."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import PROVIDERS_DIR
from oneapi.cli import main

SECRETS = {
    "channel key": "sk-live-channel-0123456789abcdef",
    "second key": "sk-live-second-fedcba9876543210",
    "header": "Bearer hdr-secret-5f4dcc3b5aa765d61d8327deb882cf99",
    "option": "ak-secret-option-value-42",
    "token key": "sk-client-token-secret-abcdef",
    "admin key": "admin-secret-9a8b7c6d",
    "redis password": "redis-pass-s3cr3t",
    "env secret": "sk-from-environment-777777",
    "url key": "AIzaSy-url-query-secret-31337",
}


def base() -> dict[str, Any]:
    return {
        "providers_dir": str(PROVIDERS_DIR),
        "groups": {"default": {"ratio": 1.0}, "vip": {"ratio": 0.8}},
        "pricing": {"models": {"gpt-4o-mini": {"input": 0.15, "output": 0.6}, "gpt-4o": {"input": 2.5, "output": 10}}},
        "channels": [
            {"name": "openai", "provider": "openai", "keys": ["k-openai"], "models": ["gpt-4o-mini", "gpt-4o"], "groups": ["default", "vip"]},
            {"name": "azure", "provider": "azure", "base_url": "https://corp.openai.azure.com", "keys": ["k-azure"],
             "models": ["gpt-4o-mini"], "priority": -1},
            {"name": "deepseek", "provider": "deepseek", "keys": ["k-ds"], "models": ["deepseek-chat"]},
        ],
        "tokens": [
            {"name": "web", "key_sha256": "a" * 64, "budget": 5.0, "rpm": 60},
            {"name": "batch", "key_sha256": "b" * 64, "group": "vip"},
            {"name": "old-app", "key_sha256": "c" * 64},
        ],
    }


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def diff(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["diff", *args]) == 0
    return capsys.readouterr().out


def line_of(report: str, start: str) -> str:
    found = [line.strip() for line in report.splitlines() if line.strip().startswith(start)]
    assert len(found) == 1, (start, report)
    return found[0]


def test_tokens_added_removed_and_each_changed_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = base()
    new["tokens"][0].update(budget=20.0, budget_period="monthly", rpm=120, tpm=50000, models=["gpt-4o-mini"],
                            expires="2027-01-01T00:00:00Z")
    new["tokens"][1].update(enabled=False, key_sha256="d" * 64)
    new["tokens"][2:] = [{"name": "ci", "key_sha256": "e" * 64, "budget": 1.5, "subnets": ["10.0.0.0/8"]}]

    report = diff(capsys, str(write(tmp_path / "old.yaml", base())), str(write(tmp_path / "new.yaml", new)))

    assert line_of(report, "~ web:") == ("~ web: models any -> [gpt-4o-mini]; budget $5.00 -> $20.00 monthly; rpm 60 -> 120; "
                                         "tpm none -> 50000; expires never -> 2027-01-01T00:00:00+00:00")
    assert line_of(report, "~ batch:") == "~ batch: enabled yes -> no; key replaced"
    assert line_of(report, "+ ci:") == "+ ci: group default; budget $1.50; subnets [10.0.0.0/8]"
    assert line_of(report, "- old-app") == "- old-app"
    assert "tokens (1 added, 1 removed, 2 changed)" in report


def test_channels_and_who_serves_each_group_and_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = base()
    new["channels"][0]["weight"] = 3
    new["channels"][1].update(priority=0)  # azure joins openai's tier for gpt-4o-mini
    new["channels"][2]["enabled"] = False
    new["channels"].append({"name": "groq", "provider": "groq", "keys": ["k-groq"], "models": ["llama-3.3-70b"], "groups": ["vip"]})

    report = diff(capsys, str(write(tmp_path / "old.yaml", base())), str(write(tmp_path / "new.yaml", new)))

    assert line_of(report, "~ openai:") == "~ openai: re-weighted 1 -> 3"
    assert line_of(report, "~ azure:") == "~ azure: priority -1 -> 0"
    assert line_of(report, "~ deepseek:") == "~ deepseek: disabled"
    assert line_of(report, "+ groq:") == "+ groq: provider groq; models [llama-3.3-70b]; groups [vip]; priority 0; weight 1"
    # the routing section is the gateway's own: tiers by priority, shares inside a tier by weight
    assert line_of(report, "~ default / gpt-4o-mini:") == (
        "~ default / gpt-4o-mini: priority 0: openai; then priority -1: azure -> priority 0: openai 75%, azure 25%")
    assert line_of(report, "- default / deepseek-chat:") == "- default / deepseek-chat: priority 0: deepseek -> nobody: requests for it get 404"
    assert line_of(report, "+ vip / llama-3.3-70b:") == "+ vip / llama-3.3-70b: priority 0: groq"
    assert "vip / gpt-4o-mini" not in report  # azure serves only the default group: vip's route did not change


def test_prices_groups_and_models_of_a_channel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = base()
    new["pricing"]["models"]["gpt-4o"] = {"input": 2.0, "output": 8.0, "cached_input": 0.5}
    new["pricing"]["models"]["o3"] = {"input": 2.0, "output": 8.0}
    new["groups"]["vip"] = {"ratio": 0.5}
    new["channels"][0]["models"] = ["gpt-4o-mini", "o3"]

    report = diff(capsys, str(write(tmp_path / "old.yaml", base())), str(write(tmp_path / "new.yaml", new)))

    assert line_of(report, "~ gpt-4o:") == "~ gpt-4o: in 2.5 / out 10 USD per 1M -> in 2 / out 8 / cached 0.5 USD per 1M"
    assert line_of(report, "+ o3:") == "+ o3: in 2 / out 8 USD per 1M"
    assert line_of(report, "~ vip:") == "~ vip: ratio 0.8 -> 0.5"
    assert line_of(report, "~ openai:") == "~ openai: models +o3 -gpt-4o"
    assert line_of(report, "- vip / gpt-4o:") == "- vip / gpt-4o: priority 0: openai -> nobody: requests for it get 404"


def test_no_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = diff(capsys, str(write(tmp_path / "a.yaml", base())), str(write(tmp_path / "b.yaml", base())))
    assert report.splitlines()[1] == "no change to tokens, channels, routing, prices or settings"


def test_never_a_secret_in_either_format(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_KEY", SECRETS["env secret"])
    old = base()
    old["store"] = f"redis://:{SECRETS['redis password']}@cache:6379/0"
    old["admin_key"] = SECRETS["admin key"]
    old["channels"][0].update(keys=[SECRETS["channel key"]], headers={"Authorization": SECRETS["header"]},
                              options={"ak": SECRETS["option"]}, base_url=f"https://user:{SECRETS['redis password']}@proxy.corp/v1")
    old["channels"][1]["base_url"] = f"https://corp.openai.azure.com/?key={SECRETS['url key']}&tier=1"
    old["tokens"][0] = {"name": "web", "key": SECRETS["token key"]}
    new = yaml.safe_load(yaml.safe_dump(old))
    new["store"] = "redis://:other-pass-for-redis@cache:6379/0"
    new["admin_key"] = "${ONEAPI_ADMIN_KEY}"  # unset here: stands for what the deployment sets
    new["channels"][0].update(keys=["${OPENAI_KEY}", SECRETS["second key"], "${file:/run/secrets/absent-in-ci}"],
                              headers={"Authorization": "Bearer other-header-secret"}, options={"ak": "another-option-secret"})
    new["tokens"][0] = {"name": "web", "key": "${file:/run/secrets/web-token}"}
    new["channels"][1]["base_url"] = "https://corp2.openai.azure.com/?key=another-url-secret&tier=1"
    old_path, new_path = write(tmp_path / "old.yaml", old), write(tmp_path / "new.yaml", new)

    text = diff(capsys, str(old_path), str(new_path))
    markdown = diff(capsys, str(old_path), str(new_path), "--format", "markdown")

    assert "keys replaced (1 -> 3)" in text and "headers changed: Authorization" in text and "options changed: ak" in text
    assert "~ store: its credentials are replaced" in text
    assert "the admin key is replaced" in text and "~ web: key replaced" in text
    assert "base_url https://corp.openai.azure.com/?key=***&tier=*** -> https://corp2.openai.azure.com/?key=***&tier=***" in text
    everything = [*SECRETS.values(), "other-pass-for-redis", "other-header-secret", "another-option-secret", "another-url-secret"]
    for report in (text, markdown):
        for secret in everything:
            assert secret not in report
            assert hashlib.sha256(secret.encode()).hexdigest()[:12] not in report
        assert "placeholder" not in report


def test_markdown_is_a_table_per_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = base()
    new["channels"][0]["weight"] = 2
    new["channels"][0]["model_map"] = {"gpt-4|turbo": "gpt-4o"}

    report = diff(capsys, str(write(tmp_path / "old.yaml", base())), str(write(tmp_path / "new.yaml", new)), "--format", "markdown")

    assert report.startswith("### oneapi diff `")
    assert "#### Channels (1 changed)\n\n| | name | what |\n|---|---|---|\n| changed | `openai` | model_map none -> [gpt-4\\|turbo->gpt-4o]; re-weighted 1 -> 2 |" in report
    assert "#### Routing (2 added)" in report and "| added | `default / gpt-4\\|turbo` | priority 0: openai |" in report


def test_a_side_that_is_not_valid_is_reported_at_its_own_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = write(tmp_path / "old.yaml", base())
    new = tmp_path / "new.yaml"
    new.write_text(old.read_text().replace("provider: deepseek", "provider: nowhere"))

    assert main(["diff", str(old), str(new)]) == 2
    err = capsys.readouterr().err
    assert f"{new}:" in err and "no provider 'nowhere'" in err


def git(repo: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


def test_git_ref_against_the_working_tree_with_its_own_provider_files(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "ops"
    (repo / "gateway" / "providers.d").mkdir(parents=True)
    config = base()
    config["providers_dir"] = "providers.d"  # relative: the old side must read the old provider files
    (repo / "gateway" / "providers.d" / "corp.yaml").write_text("extends: openai\nbase_url: https://llm.corp.example\n")
    config["channels"].append({"name": "corp", "provider": "corp", "keys": ["k"], "models": ["corp-1"]})
    write(repo / "gateway" / "config.yaml", config)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "initial")

    (repo / "gateway" / "providers.d" / "corp.yaml").write_text("extends: openai\nbase_url: https://llm2.corp.example\n")
    (repo / "gateway" / "providers.d" / "corp2.yaml").write_text("extends: openai\nbase_url: https://llm3.corp.example\n")
    config["channels"].append({"name": "corp2", "provider": "corp2", "keys": ["k2"], "models": ["corp-1"]})
    write(repo / "gateway" / "config.yaml", config)
    monkeypatch.chdir(repo / "gateway")

    report = diff(capsys, "--git", "HEAD")

    assert report.startswith("oneapi diff HEAD:gateway/config.yaml -> config.yaml")
    assert line_of(report, "~ corp:") == "~ corp: the file changed"
    assert "  + corp2\n" in report  # the provider file
    assert line_of(report, "+ corp2:") == "+ corp2: provider corp2; models [corp-1]; groups [default]; priority 0; weight 1"
    assert line_of(report, "~ default / corp-1:") == "~ default / corp-1: priority 0: corp -> priority 0: corp 50%, corp2 50%"
    assert "openai" not in report  # the shipped files are the same package on both sides


def test_git_ref_without_the_file_shows_everything_added(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "ops"
    repo.mkdir()
    (repo / "README").write_text("ops\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "initial")
    write(repo / "config.yaml", base())

    report = diff(capsys, "--git", "HEAD", str(repo / "config.yaml"))

    assert "tokens (3 added)" in report and "channels (3 added)" in report
    assert line_of(report, "+ default / gpt-4o:") == "+ default / gpt-4o: priority 0: openai"


def test_a_providers_dir_outside_the_config_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "vendors" / "providers.d").mkdir(parents=True)
    (tmp_path / "vendors" / "providers.d" / "corp.yaml").write_text("extends: openai\nbase_url: https://llm.corp.example\n")
    (tmp_path / "gw").mkdir()
    old = base()
    old["providers_dir"] = "../vendors/providers.d"
    new = yaml.safe_load(yaml.safe_dump(old))
    new["channels"].append({"name": "corp", "provider": "corp", "keys": ["k"], "models": ["corp-1"]})

    report = diff(capsys, str(write(tmp_path / "gw" / "old.yaml", old)), str(write(tmp_path / "gw" / "new.yaml", new)))

    assert line_of(report, "+ default / corp-1:") == "+ default / corp-1: priority 0: corp"


def test_a_ref_that_names_nothing_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "ops"
    repo.mkdir()
    write(repo / "config.yaml", base())
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "initial")

    assert main(["diff", "--git", "no-such-branch", str(repo / "config.yaml")]) == 2
    assert capsys.readouterr().err == f"--git no-such-branch: no such commit in {repo.resolve()}\n"
