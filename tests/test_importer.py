"""`oneapi import`: One API and new-api databases (built from their own GORM models) on SQLite, MariaDB and
PostgreSQL, turned into a config.yaml that `oneapi check` passes and a gateway that serves the old keys."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import openai
import pytest
import yaml

import dbservers
import oneapi_tables
from conftest import PROVIDERS_DIR, ROOT, GatewayProcess
from fakevendor import FakeVendor, fixture_json
from oneapi.importer import channel_types, parse_url

VENDOR_URL = "http://127.0.0.1:9"  # replaced by the fake vendor's address where a test calls upstream
# One API keeps token keys without the sk- that clients send (48 characters, model/token.go)
KEY_ROOT = "Root0000000000000000000000000000000000000000000001"[:48]
KEY_ALICE = "Alice000000000000000000000000000000000000000000001"[:48]
KEY_BOB, KEY_CAROL, KEY_OLD, KEY_BROKE, KEY_CJK = (f"{n}".ljust(48, "0") for n in ("Bob", "Carol", "Old", "Broke", "Cjk"))
SERVICE_ACCOUNT = '{\n  "type": "service_account",\n  "project_id": "proj-1",\n  "client_email": "a@proj-1.iam.gserviceaccount.com"\n}'


def one_api_rows(vendor_url: str = VENDOR_URL) -> dict[str, list[dict[str, Any]]]:
    """A small One API install: the cases an operator's database holds."""
    return {
        "users": [
            {"id": 1, "username": "root", "password": "$2a$10$hash", "role": 100, "status": 1, "quota": 0, "group": "default",
             "access_token": "a" * 32, "aff_code": "r001"},
            {"id": 2, "username": "alice", "password": "$2a$10$hash", "role": 1, "status": 1, "quota": 1_000_000, "group": "vip",
             "access_token": "b" * 32, "aff_code": "a002"},
            {"id": 3, "username": "bob", "password": "$2a$10$hash", "role": 1, "status": 2, "quota": 0, "group": "default",
             "access_token": "c" * 32, "aff_code": "b003"},
            {"id": 4, "username": "carol", "password": "$2a$10$hash", "role": 1, "status": 3, "quota": 0, "group": "default",
             "access_token": "d" * 32, "aff_code": "c004"},
        ],
        "options": [
            {"key": "QuotaPerUnit", "value": "500000"},
            {"key": "ModelRatio", "value": json.dumps({"gpt-4o-mini": 0.075, "gpt-4o": 1.25, "deepseek-chat": 0.135, "glm-4(16)": 0.05})},
            {"key": "CompletionRatio", "value": json.dumps({"gpt-4o-mini": 4, "gpt-4o": 4})},
            {"key": "GroupRatio", "value": json.dumps({"default": 1, "vip": 0.8})},
            {"key": "RetryTimes", "value": "2"},
            {"key": "QuotaForNewUser", "value": "100"},
            {"key": "SMTPToken", "value": "smtp-secret-never-exported"},
        ],
        "channels": [
            {"id": 1, "type": 1, "key": "sk-up-first\nsk-up-second\n", "status": 1, "name": "OpenAI 主力", "base_url": vendor_url,
             "models": "gpt-4o-mini,gpt-4o", "group": "default,vip", "priority": 10, "model_mapping": '{"gpt-4": "gpt-4o"}',
             "weight": 0, "config": "{}"},
            {"id": 2, "type": 1, "key": "sk-up-backup", "status": 2, "name": "backup", "base_url": "", "models": "gpt-4o-mini",
             "group": "default", "priority": 0},
            {"id": 3, "type": 3, "key": "azure-key", "status": 3, "name": "azure-east", "base_url": "https://east.openai.azure.com",
             "models": "gpt-4o", "group": "default", "config": '{"api_version": "2024-06-01", "region": ""}'},
            {"id": 4, "type": 33, "key": "", "status": 1, "name": "aws", "models": "claude-3-5-sonnet-20240620", "group": "default",
             "config": json.dumps({"ak": "AKIAEXAMPLE", "sk": "aws/secret'key", "region": "eu-west-1"})},
            {"id": 5, "type": 11, "key": "palm-key", "status": 1, "name": "old palm", "models": "chat-bison-001", "group": "default"},
            {"id": 6, "type": 23, "key": "1250000000|AKIDexample|tencent-secret", "status": 1, "name": "hunyuan",
             "models": "hunyuan-lite", "group": "default"},
            {"id": 7, "type": 36, "key": "sk-deepseek", "status": 1, "name": "OpenAI 备用", "models": "deepseek-chat", "group": "default",
             "base_url": "https://api.deepseek.com"},
            {"id": 8, "type": 42, "key": "", "status": 1, "name": "vertex", "models": "gemini-1.5-pro", "group": "default",
             "config": json.dumps({"region": "us-east5", "vertex_ai_project_id": "proj-1", "vertex_ai_adc": SERVICE_ACCOUNT})},
            {"id": 9, "type": 29, "key": "gsk_groq", "status": 1, "name": "groq", "base_url": "https://api.groq.com/openai",
             "models": "llama3-8b-8192", "group": "default", "config": '{"library_id": "lib-1"}'},
            {"id": 10, "type": 8, "key": "sk-custom", "status": 1, "name": "custom", "base_url": "", "models": "m1", "group": "default"},
            {"id": 11, "type": 2, "key": "fk-api2d", "status": 1, "name": "api2d", "base_url": "", "models": "gpt-4o", "group": "default"},
            {"id": 13, "type": 18, "key": "appid|apisecret|apikey", "status": 1, "name": "spark", "models": "SparkDesk-v3.5",
             "group": "default"},
            {"id": 12, "type": 25, "key": "sk-moon", "status": 1, "name": "moon", "base_url": "api.moonshot.cn", "models": "moonshot-v1-8k",
             "group": "default"},
        ],
        "tokens": [
            {"id": 1, "user_id": 2, "key": KEY_ALICE, "status": 1, "name": "default", "expired_time": -1, "remain_quota": 1_000_000,
             "unlimited_quota": False, "models": "gpt-4o-mini,gpt-4o", "subnet": "10.0.0.0/8,192.168.1.1"},
            {"id": 2, "user_id": 1, "key": KEY_ROOT, "status": 1, "name": "default", "expired_time": -1, "remain_quota": 0,
             "unlimited_quota": True, "models": "", "subnet": ""},
            {"id": 3, "user_id": 3, "key": KEY_BOB, "status": 1, "name": "bob's key", "expired_time": -1, "remain_quota": 0,
             "unlimited_quota": True},
            {"id": 4, "user_id": 4, "key": KEY_CAROL, "status": 1, "name": "carol", "expired_time": -1, "unlimited_quota": True},
            {"id": 5, "user_id": 1, "key": KEY_OLD, "status": 3, "name": "expired", "expired_time": 1700000000, "remain_quota": 10,
             "unlimited_quota": False},
            {"id": 6, "user_id": 2, "key": KEY_BROKE, "status": 4, "name": "broke", "expired_time": -1, "remain_quota": -20,
             "unlimited_quota": False},
            {"id": 7, "user_id": 1, "key": KEY_CJK, "status": 1, "name": "用户令牌", "expired_time": -1, "remain_quota": 250_000,
             "unlimited_quota": False},
            {"id": 8, "user_id": 1, "key": KEY_CAROL[::-1], "status": 1, "name": "zero-expiry", "expired_time": 0, "unlimited_quota": True},
        ],
        "redemptions": [{"id": 1, "user_id": 1, "key": "e" * 32, "status": 1, "name": "gift", "quota": 500000},
                        {"id": 2, "user_id": 1, "key": "f" * 32, "status": 1, "name": "gift", "quota": 500000}],
        "logs": [{"id": i, "user_id": 2, "created_at": 1700000000 + i, "type": 2, "content": "", "quota": 100} for i in range(1, 4)],
    }


def sqlite_database(folder: Path, flavor: str, rows: dict[str, list[dict[str, Any]]]) -> Path:
    path = folder / f"{flavor}.db"
    connection = sqlite3.connect(path)
    oneapi_tables.build(connection, "sqlite", flavor, rows)
    connection.close()
    return path


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oneapi.cli", *args], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)


def run_import(source: str, out: Path, *extra: str) -> dict[str, Any]:
    result = run_cli("import", "--from", source, "--out", str(out), "--providers-dir", str(PROVIDERS_DIR), *extra)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load((out / "config.yaml").read_text())


def secrets_of(out: Path) -> dict[str, str]:
    """secrets.env read the way a POSIX shell reads it (`set -a; . ./secrets.env`)."""
    values = {}
    for line in (out / "secrets.env").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, rest = line.partition("=")
            (values[name],) = shlex.split(rest)
    return values


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in items}


def digest(key: str) -> str:
    return hashlib.sha256(f"sk-{key}".encode()).hexdigest()


def test_the_type_table_names_every_one_api_and_new_api_type() -> None:
    table = channel_types()
    assert sorted(table["one-api"]) == list(range(52))  # relay/channeltype/define.go: Unknown .. GeminiOpenAICompatible
    assert {0, 1, 3, 4, 14, 24, 33, 41, 45, 56, 57} <= set(table["new-api"])
    for flavor, types in table.items():
        for type_id, kind in types.items():
            assert ("provider" in kind) != ("gone" in kind), f"{flavor} type {type_id}: a provider or why it is gone, not both"
    docs = (ROOT / "docs" / "import.md").read_text()
    for flavor, types in table.items():
        for type_id, kind in types.items():
            target = f"`{kind['provider']}`" if "provider" in kind else "gone"
            assert re.search(rf"^\| {flavor} \| {type_id} \| {re.escape(kind['name'])} \| {re.escape(target)} \|", docs, re.M), \
                f"docs/import.md has no row for {flavor} type {type_id}"


def test_every_provider_the_type_table_names_exists() -> None:
    """Passes once the provider files for the remaining One API types (branch `ship`) are in providers.d."""
    named = {kind["provider"] for types in channel_types().values() for kind in types.values() if "provider" in kind}
    missing = sorted(name for name in named if not (PROVIDERS_DIR / f"{name}.yaml").is_file())
    assert not missing, f"the type table maps to providers with no file in providers.d: {missing}"


def test_database_urls() -> None:
    base = Path("/srv")
    assert parse_url("sqlite:///one-api.db", base).database == "/srv/one-api.db"  # three slashes: relative, as store: reads it
    assert parse_url("sqlite:////data/one-api.db", base).database == "/data/one-api.db"
    assert parse_url(f"sqlite://{ROOT / 'pyproject.toml'}", Path("/nowhere")).database == str(ROOT / "pyproject.toml")  # only absolute exists
    assert parse_url("/data/one-api.db", base).database == "/data/one-api.db"
    mysql = parse_url("mysql://u:p%40ss@db.local:3307/oneapi")
    assert (mysql.dialect, mysql.host, mysql.port, mysql.user, mysql.password, mysql.database) == ("mysql", "db.local", 3307, "u", "p@ss", "oneapi")
    dsn = parse_url("oneapi:secret@tcp(10.0.0.5:3306)/one-api?charset=utf8mb4&parseTime=True")  # One API's own SQL_DSN
    assert (dsn.dialect, dsn.host, dsn.port, dsn.user, dsn.password, dsn.database) == ("mysql", "10.0.0.5", 3306, "oneapi", "secret", "one-api")
    pg = parse_url("postgresql://u@pg:5432/oneapi")
    assert (pg.dialect, pg.port, pg.database) == ("postgres", 5432, "oneapi")
    assert "secret" not in dsn.redacted()


def test_one_api_sqlite_import_maps_channels_tokens_groups_and_prices(tmp_path: Path) -> None:
    source = sqlite_database(tmp_path, "one-api", one_api_rows())
    out = tmp_path / "out"
    config = run_import(f"sqlite:///{source}", out)  # four slashes: an absolute path
    secrets = secrets_of(out)
    channels, tokens = by_name(config["channels"]), by_name(config["tokens"])

    assert config["groups"] == {"default": {"ratio": 1.0}, "vip": {"ratio": 0.8}}
    assert config["retry"] == {"attempts": 3}
    # ratio 1 = $2 per 1M input tokens; output = input x CompletionRatio
    assert config["pricing"]["models"]["gpt-4o-mini"] == {"input": 0.15, "output": 0.6}
    assert config["pricing"]["models"]["gpt-4o"] == {"input": 2.5, "output": 10.0}
    assert config["pricing"]["models"]["deepseek-chat"] == {"input": 0.27, "output": 0.27}
    assert config["pricing"]["models"]["glm-4"] == {"input": 0.1, "output": 0.1}  # "glm-4(16)": one type's ratio

    # palm: a type that is gone; custom: no base_url, which provider custom needs
    assert sorted(channels) == ["OpenAI", "OpenAI-7", "api2d", "aws", "azure-east", "backup", "groq", "hunyuan", "moon", "spark", "vertex"]
    assert channels["api2d"]["provider"] == "custom" and channels["api2d"]["base_url"] == "https://oa.api2d.net/v1"  # One API's default
    assert channels["spark"]["enabled"] is False  # Spark's WebSocket credentials do not fit its HTTP API
    assert channels["moon"]["enabled"] is False and "base_url" not in channels["moon"]  # not a URL: never the provider's default
    main = channels["OpenAI"]
    assert main["provider"] == "openai" and main["base_url"] == VENDOR_URL + "/v1"  # One API appended /v1/chat/completions
    assert [secrets[ref[2:-1]] for ref in main["keys"]] == ["sk-up-first", "sk-up-second"]
    assert all(re.fullmatch(r"\$\{[A-Z0-9_]+\}", ref) for c in channels.values() for ref in c.get("keys", []))
    assert main["models"] == ["gpt-4o-mini", "gpt-4o"] and main["model_map"] == {"gpt-4": "gpt-4o"}
    assert main["groups"] == ["default", "vip"] and main["priority"] == 10 and "enabled" not in main
    assert channels["backup"]["enabled"] is False and channels["azure-east"]["enabled"] is False
    assert channels["azure-east"]["options"] == {"api_version": "2024-06-01"}
    assert channels["azure-east"]["base_url"] == "https://east.openai.azure.com"
    aws = channels["aws"]
    assert aws["provider"] == "bedrock" and secrets[aws["keys"][0][2:-1]] == "AKIAEXAMPLE|aws/secret'key"
    assert aws["options"] == {"region": "eu-west-1"} and aws["base_url"] == "https://bedrock-runtime.eu-west-1.amazonaws.com"
    assert secrets[channels["hunyuan"]["keys"][0][2:-1]] == "AKIDexample|tencent-secret"  # One API's AppId| dropped
    vertex = channels["vertex"]
    assert vertex["options"] == {"location": "us-east5", "project": "proj-1"}
    assert json.loads(secrets[vertex["keys"][0][2:-1]])["client_email"] == "a@proj-1.iam.gserviceaccount.com"
    assert "base_url" not in channels["groq"] and "base_url" not in channels["OpenAI-7"]  # One API's defaults: the provider's own

    text = (out / "config.yaml").read_text()
    assert re.search(r"# disabled by hand in one-api \(status 2\)\n  - name: backup", text)
    assert re.search(r"# disabled automatically by one-api .*\n  - name: azure-east", text)
    assert re.search(r"# One API signed Spark's WebSocket API .*\n  - name: spark", text)

    assert sorted(tokens) == ["bob-s-key", "broke", "default", "default-root", "expired", "token-7", "zero-expiry"]  # carol's owner is deleted
    assert tokens["zero-expiry"]["expires"] == "1970-01-01T00:00:00Z"  # One API counts 0 as long past; only -1 is never
    alice = tokens["default"]
    assert alice["key_sha256"] == digest(KEY_ALICE) and alice["group"] == "vip" and alice["budget"] == 2.0
    assert alice["models"] == ["gpt-4o-mini", "gpt-4o"] and alice["subnets"] == ["10.0.0.0/8", "192.168.1.1"]
    assert "budget" not in tokens["default-root"] and "group" not in tokens["default-root"]
    assert tokens["token-7"]["budget"] == 0.5
    assert tokens["bob-s-key"]["enabled"] is False and tokens["broke"] == {**tokens["broke"], "budget": 0.0, "enabled": False}
    assert tokens["expired"]["expires"] == "2023-11-14T22:13:20Z" and tokens["expired"]["enabled"] is False

    report = (out / "import-report.md").read_text()
    for expected in ("channel #5 'old palm' (type 11 PaLM)", "channel #10 'custom' (type 8 Custom): it has no base_url",
                     "channel #12 'moon' -> moon: base_url 'api.moonshot.cn/v1' is not an http(s) URL", "library_id", "2 row(s) in redemptions", "3 row(s) in logs",
                     "per-user quotas: 1 user(s) hold $2.00", "admin tokens: default-root, expired, token-7, zero-expiry", "QuotaForNewUser", "1 token(s) owned by a deleted user"):
        assert expected in report, expected
    everything = text + report
    for secret in ("sk-up-first", "AKIAEXAMPLE", "tencent-secret", "smtp-secret", KEY_ROOT, "$2a$10$hash", "a" * 32):
        assert secret not in everything, f"{secret!r} leaked out of secrets.env"
    assert (out / "secrets.env").stat().st_mode & 0o077 == 0


def test_imported_config_passes_check_and_the_gateway_serves_the_old_keys(tmp_path: Path) -> None:
    with FakeVendor() as vendor:
        source = sqlite_database(tmp_path, "one-api", one_api_rows(vendor.base_url))
        out = tmp_path / "out"
        run_import(str(source), out)  # a bare path works too
        env = {**os.environ, **secrets_of(out)}
        check = run_cli("check", "--config", str(out / "config.yaml"), env=env)
        assert check.returncode == 0, check.stderr
        assert "ok:" in check.stdout
        without_secrets = run_cli("check", "--config", str(out / "config.yaml"))
        assert without_secrets.returncode == 1 and "CHANNEL_OPENAI_KEY_1" in without_secrets.stderr

        vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
        request = fixture_json("openai/chat_completion_text.request.json")["body"]
        gateway = GatewayProcess(out / "config.yaml", env=secrets_of(out)).start()
        try:
            client = openai.OpenAI(base_url=gateway.url("/v1"), api_key=f"sk-{KEY_ROOT}", max_retries=0, timeout=20)
            answer = client.chat.completions.create(**{**request, "model": "gpt-4o-mini"})
            assert answer.choices[0].message.content
            upstream = vendor.requests_to("/v1/chat/completions")
            assert upstream[-1].headers["authorization"] in ("Bearer sk-up-first", "Bearer sk-up-second")
            budgeted = openai.OpenAI(base_url=gateway.url("/v1"), api_key=f"sk-{KEY_CJK}", max_retries=0, timeout=20)
            assert budgeted.chat.completions.create(**{**request, "model": "gpt-4o-mini"}).choices
            for key, status in ((KEY_BOB, 403), (KEY_ALICE, 403), ("not-a-one-api-key".ljust(48, "x"), 401)):
                refused = openai.OpenAI(base_url=gateway.url("/v1"), api_key=f"sk-{key}", max_retries=0, timeout=20)
                with pytest.raises(openai.APIStatusError) as caught:
                    refused.chat.completions.create(**{**request, "model": "gpt-4o-mini"})
                assert caught.value.status_code == status  # bob's owner is disabled; alice's token is for 10.0.0.0/8 only
        finally:
            gateway.stop()


@pytest.fixture(scope="module")
def mariadb() -> Iterator[dbservers.Server]:
    server = dbservers.start_mariadb()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def postgres() -> Iterator[dbservers.Server]:
    server = dbservers.start_postgres()
    yield server
    server.stop()


def _body(path: Path) -> str:
    return "".join(line for line in path.read_text().splitlines(keepends=True) if not line.startswith("#"))


@pytest.mark.parametrize("flavor", ["one-api", "new-api"])
@pytest.mark.parametrize("server_fixture", ["mariadb", "postgres"])
def test_mysql_and_postgres_import_the_same_as_sqlite(server_fixture: str, flavor: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    server: dbservers.Server = request.getfixturevalue(server_fixture)
    rows = one_api_rows() if flavor == "one-api" else new_api_rows()
    url, connect = server.create_database(f"oneapi_{flavor[:3]}_{server.dialect}")
    connection = connect()
    oneapi_tables.build(connection, server.dialect, flavor, rows)
    connection.close()
    run_import(url, tmp_path / "server")
    run_import(str(sqlite_database(tmp_path, flavor, rows)), tmp_path / "sqlite")
    assert _body(tmp_path / "server" / "config.yaml") == _body(tmp_path / "sqlite" / "config.yaml")
    assert secrets_of(tmp_path / "server") == secrets_of(tmp_path / "sqlite")
    assert dbservers.PASSWORD not in (tmp_path / "server" / "import-report.md").read_text()


def test_wrong_password_is_a_clear_error_without_the_password(mariadb: dbservers.Server, tmp_path: Path) -> None:
    result = run_cli("import", "--from", f"mysql://root:hunter2-wrong@127.0.0.1:{mariadb.port}/mysql", "--out", str(tmp_path))
    assert result.returncode == 1 and "cannot connect" in result.stderr and "Traceback" not in result.stderr
    assert "hunter2-wrong" not in result.stderr + result.stdout


def new_api_rows() -> dict[str, list[dict[str, Any]]]:
    return {
        "users": [{"id": 1, "username": "root", "password": "x", "status": 1, "group": "default", "access_token": "a" * 32, "aff_code": "r1"},
                  {"id": 2, "username": "gone", "password": "x", "status": 1, "group": "default", "access_token": "b" * 32,
                   "aff_code": "g2", "deleted_at": "2025-01-01 00:00:00"}],
        "options": [{"key": "ModelRatio", "value": '{"gpt-4o-mini": 0.075}'}, {"key": "CacheRatio", "value": '{"gpt-4o-mini": 0.5}'},
                    {"key": "CompletionRatio", "value": '{"gpt-4o-mini": 4}'}],
        "channels": [
            {"id": 1, "type": 4, "key": "", "status": 1, "name": "local", "base_url": "http://10.1.1.1:11434", "models": "llama3.2",
             "group": "default", "weight": 5, "tag": "lab", "channel_info": '{"is_multi_key": false}', "openai_organization": "org-1",
             "header_override": '{"X-Proxy-Auth": "proxy-secret"}'},
            {"id": 2, "type": 33, "key": "AKIANEW|new-secret|ap-northeast-1\nAKIAOLD|old-secret|ap-northeast-1", "status": 1,
             "name": "aws", "models": "claude-3-haiku", "group": "default",
             "channel_info": '{"is_multi_key": true, "multi_key_size": 2, "multi_key_status_list": {"1": 3}}'},
            {"id": 3, "type": 41, "key": "[" + SERVICE_ACCOUNT + "," + SERVICE_ACCOUNT.replace("proj-1", "proj-2") + "]", "status": 1,
             "name": "vertex", "models": "gemini-2.0-flash", "group": "default", "other": "europe-west4"},
            {"id": 5, "type": 41, "key": SERVICE_ACCOUNT, "status": 1, "name": "vertex-regions", "models": "gemini-2.0-flash,gemini-2.5-pro",
             "group": "default", "other": '{"default": "us-central1", "gemini-2.5-pro": "global"}'},
            {"id": 4, "type": 37, "key": "app-x", "status": 1, "name": "dify", "models": "dify", "group": "default"},
        ],
        "tokens": [
            {"id": 1, "user_id": 1, "key": KEY_ROOT, "status": 1, "name": "ci", "expired_time": -1, "remain_quota": 500_000,
             "unlimited_quota": False, "model_limits_enabled": True, "model_limits": "gpt-4o-mini,llama3.2",
             "allow_ips": "127.0.0.1\n10.0.0.0/8\nnot-an-ip", "group": "vip"},
            {"id": 2, "user_id": 1, "key": KEY_OLD, "status": 1, "name": "deleted", "expired_time": -1, "unlimited_quota": True,
             "deleted_at": "2025-01-01 00:00:00"},
            {"id": 3, "user_id": 2, "key": KEY_BOB, "status": 1, "name": "orphan", "expired_time": -1, "unlimited_quota": True},
            {"id": 4, "user_id": 1, "key": KEY_CJK, "status": 1, "name": "ignored-limits", "expired_time": -1, "unlimited_quota": True,
             "model_limits_enabled": False, "model_limits": "gpt-4o"},
        ],
    }


def test_new_api_sqlite_import_uses_new_api_type_ids_and_columns(tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = run_import(str(sqlite_database(tmp_path, "new-api", new_api_rows())), out)
    secrets = secrets_of(out)
    channels, tokens = by_name(config["channels"]), by_name(config["tokens"])
    assert sorted(channels) == ["aws", "local", "vertex", "vertex-regions"]  # Dify (37) is gone
    local = channels["local"]
    assert local["provider"] == "ollama" and local["base_url"] == "http://10.1.1.1:11434" and local["weight"] == 5
    assert local["headers"] == {"OpenAI-Organization": "org-1", "X-Proxy-Auth": "${CHANNEL_LOCAL_HEADER_1}"} and "keys" not in local
    assert secrets["CHANNEL_LOCAL_HEADER_1"] == "proxy-secret"
    assert channels["aws"]["provider"] == "bedrock"
    assert [secrets[k[2:-1]] for k in channels["aws"]["keys"]] == ["AKIANEW|new-secret", "AKIAOLD|old-secret"]
    assert channels["aws"]["base_url"] == "https://bedrock-runtime.ap-northeast-1.amazonaws.com"
    vertex = channels["vertex"]
    # new-api takes the project from the service account; a JSON `other` holds a region per model
    assert vertex["options"] == {"location": "europe-west4", "project": "proj-1"} and len(vertex["keys"]) == 2
    assert channels["vertex-regions"]["options"] == {"location": "us-central1", "project": "proj-1"}
    assert channels["vertex-regions"]["base_url"] == "https://us-central1-aiplatform.googleapis.com"
    assert [json.loads(secrets[k[2:-1]])["project_id"] for k in vertex["keys"]] == ["proj-1", "proj-2"]
    assert config["pricing"]["models"]["gpt-4o-mini"] == {"input": 0.15, "output": 0.6, "cached_input": 0.075}
    assert sorted(tokens) == ["ci", "ignored-limits"]
    ci = tokens["ci"]
    assert ci["group"] == "vip" and ci["models"] == ["gpt-4o-mini", "llama3.2"] and ci["budget"] == 1.0
    assert ci["subnets"] == ["127.0.0.1", "10.0.0.0/8"] and "models" not in tokens["ignored-limits"]
    assert config["groups"]["vip"] == {"ratio": 1.0}
    report = (out / "import-report.md").read_text()
    assert "not-an-ip" in report and "Dify" in report and "1 token(s) deleted" in report
    check = run_cli("check", "--config", str(out / "config.yaml"), env={**os.environ, **secrets})
    assert check.returncode == 0, check.stderr
    assert "1 of its keys were disabled in new-api" in report and "proxy-secret" not in (out / "config.yaml").read_text()
    assert "several project_ids (proj-1, proj-2)" in report and "per-model location (gemini-2.5-pro)" in report


def test_bad_sources_and_existing_output_are_refused_clearly(tmp_path: Path) -> None:
    missing = run_cli("import", "--from", f"sqlite:///{tmp_path}/nothing.db", "--out", str(tmp_path / "out"))
    assert missing.returncode == 1 and "no SQLite database" in missing.stderr and "Traceback" not in missing.stderr
    not_one_api = tmp_path / "other.db"
    sqlite3.connect(not_one_api).execute("CREATE TABLE t (x int)").connection.commit()
    wrong = run_cli("import", "--from", str(not_one_api), "--out", str(tmp_path / "out"))
    assert wrong.returncode == 1 and "no channels or tokens table" in wrong.stderr
    scheme = run_cli("import", "--from", "oracle://x@y/z", "--out", str(tmp_path / "out"))
    assert scheme.returncode == 1 and "unknown database scheme" in scheme.stderr
    source = str(sqlite_database(tmp_path, "one-api", one_api_rows()))
    (tmp_path / "a-file").write_text("")
    unwritable = run_cli("import", "--from", source, "--out", str(tmp_path / "a-file" / "out"))
    assert unwritable.returncode == 1 and "cannot write to" in unwritable.stderr and "Traceback" not in unwritable.stderr
    run_import(source, tmp_path / "out")
    again = run_cli("import", "--from", source, "--out", str(tmp_path / "out"))
    assert again.returncode == 1 and "--force" in again.stderr
    run_import(source, tmp_path / "out", "--force")
