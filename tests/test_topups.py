"""Top-ups end to end: codes made by `oneapi codes new` and redeemed by a client key, operator credits over the admin
API and the command line, each written once to the ledger and widening the budget that admission enforces."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import CLIENT_KEY, ROOT, GatewayProcess, base_config, write_config
from fakevendor import FakeVendor, Reply, fixture_bytes, fixture_json
from oneapi.codes import with_entries
from oneapi.credits import code_digest

ADMIN = {"Authorization": "Bearer admin-secret-key-for-tests"}
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
OTHER_KEY = "sk-test-other-group-fedcba9876543210"
# chat_completion_text.json reports 24 prompt + 8 completion tokens: $0.025 at these (deliberately dear) prices
PRICING = {"models": {"gpt-4o-mini": {"input": 625.0, "output": 1250.0}}}
MESSAGES = fixture_json("openai/chat_completion_text.request.json")["body"]["messages"]


def topup_config(vendor: FakeVendor, store: str | None = None, budget: float = 0.1) -> dict[str, Any]:
    config = base_config(vendor, pricing=PRICING, groups={"default": {"ratio": 1.0}, "vip": {"ratio": 1.0}})
    config["tokens"][0]["budget"] = budget
    config["tokens"].append({"name": "other", "key": OTHER_KEY, "group": "vip", "budget": budget})
    if store:
        config["store"] = store
    return config


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oneapi.cli", *args], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, cwd=cwd)


def new_codes(config: Path, *args: str) -> list[str]:
    done = cli("codes", "new", "--config", str(config), *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def chat(gateway: GatewayProcess, key: str = CLIENT_KEY) -> httpx.Response:
    return httpx.post(gateway.url("/v1/chat/completions"), json={"model": "gpt-4o-mini", "max_tokens": 8, "messages": MESSAGES},
                      headers={"Authorization": f"Bearer {key}"}, timeout=20)


def redeem(gateway: GatewayProcess, code: str, key: str = CLIENT_KEY) -> httpx.Response:
    return httpx.post(gateway.url("/v1/dashboard/redeem"), json={"code": code}, headers={"Authorization": f"Bearer {key}"}, timeout=20)


def spend_until_refused(gateway: GatewayProcess, key: str = CLIENT_KEY) -> int:
    for served in range(20):
        answer = chat(gateway, key)
        if answer.status_code == 429:
            assert answer.json()["error"]["code"] == "budget_exceeded"
            return served
        assert answer.status_code == 200, answer.text
    raise AssertionError("the budget never refused")


def reload_to(gateway: GatewayProcess, before: str, workers: int = 1) -> None:
    """Until every worker serves a config other than `before` (each worker reloads on its own)."""
    fresh: dict[int, str] = {}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with httpx.Client() as client:  # a new connection each time lands on either worker
            health = client.get(gateway.url("/health"), timeout=5).json()
        fresh[health["pid"]] = health["config_version"]
        if len(fresh) == workers and before not in fresh.values():
            return
        time.sleep(0.05)
    raise AssertionError(f"not every worker reloaded within 15 s: {fresh}")


def test_a_token_refused_for_its_budget_redeems_a_code_and_is_served_again(vendor: FakeVendor, start_gateway) -> None:
    gateway = start_gateway(topup_config(vendor))
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    version = gateway.health()["config_version"]
    codes = new_codes(gateway.config_path, "--value", "0.1", "--count", "3")
    vip_code, = new_codes(gateway.config_path, "--value", "1", "--group", "vip")
    old_code, = new_codes(gateway.config_path, "--value", "1", "--expires", "2020-01-01")
    text = gateway.config_path.read_text()
    assert len(codes) == 3 and all(code not in text for code in codes)  # only digests reach git
    assert all(code_digest(code) in text for code in codes)
    reload_to(gateway, version)

    served = spend_until_refused(gateway)
    assert served >= 1
    answer = redeem(gateway, codes[0])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token"] == "tester" and body["credited_usd"] == pytest.approx(0.1)
    assert body["credits_usd"] == pytest.approx(0.1) and body["budget_usd"] == pytest.approx(0.1)
    assert body["remaining_usd"] == pytest.approx(0.1 + 0.1 - body["spent_usd"])
    assert chat(gateway).status_code == 200  # served again on the credit
    assert spend_until_refused(gateway) >= 0

    again = redeem(gateway, codes[0])
    assert again.status_code == 409 and again.json()["error"]["code"] == "code_already_redeemed"
    unknown = redeem(gateway, "NOT-A-REAL-CODE-123456")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "code_unknown"
    expired = redeem(gateway, old_code)
    assert expired.status_code == 410 and expired.json()["error"]["code"] == "code_expired"
    wrong_group = redeem(gateway, vip_code)
    assert wrong_group.status_code == 403 and wrong_group.json()["error"]["code"] == "code_wrong_group"
    assert redeem(gateway, vip_code, OTHER_KEY).status_code == 200  # the group it was made for
    assert redeem(gateway, codes[1], "sk-wrong-key-000000000000").status_code == 401
    assert redeem(gateway, "").json()["error"]["param"] == "code"
    # spaces and case do not matter: codes are typed by hand
    assert redeem(gateway, " " + codes[1].lower() + " ").status_code == 200

    credits = httpx.get(gateway.url("/admin/credits"), headers=ADMIN, timeout=10).json()["credits"]
    assert {(c["token"], c["source"]) for c in credits} == {("tester", f"code:{code_digest(codes[0])}"),
                                                            ("tester", f"code:{code_digest(codes[1])}"),
                                                            ("other", f"code:{code_digest(vip_code)}")}
    # no code and no key anywhere in what the gateway wrote or answered
    pages = gateway.log() + json.dumps(credits) + again.text + unknown.text + expired.text + wrong_group.text
    for secret in (*codes, vip_code, old_code, CLIENT_KEY, OTHER_KEY):
        assert secret not in pages and secret.lower() not in pages


def test_a_credit_survives_a_restart_and_kill_9(vendor: FakeVendor, start_gateway, tmp_path: Path) -> None:
    config = topup_config(vendor)
    gateway = start_gateway(config)
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    version = gateway.health()["config_version"]
    code, = new_codes(gateway.config_path, "--value", "0.1")
    reload_to(gateway, version)
    spend_until_refused(gateway)
    assert redeem(gateway, code).status_code == 200
    gateway.signal(signal.SIGKILL)  # no flush, no goodbye
    gateway.process.wait(10)  # type: ignore[union-attr]

    restarted = GatewayProcess(gateway.config_path).start()
    try:
        again = redeem(restarted, code)
        assert again.status_code == 409  # the claim was written before the answer
        assert chat(restarted).status_code == 200  # and so was the credit
        restarted.stop()
        restarted = GatewayProcess(gateway.config_path).start()
        credits = httpx.get(restarted.url("/admin/credits?token=tester"), headers=ADMIN, timeout=10).json()["credits"]
        assert [c["usd"] for c in credits] == [pytest.approx(0.1)]
    finally:
        restarted.stop()


def test_admin_credit_and_refund(vendor: FakeVendor, start_gateway) -> None:
    gateway = start_gateway(topup_config(vendor))
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    assert spend_until_refused(gateway) >= 1

    def credit(body: dict[str, Any], headers: dict[str, str] = ADMIN) -> httpx.Response:
        return httpx.post(gateway.url("/admin/credits"), json=body, headers=headers, timeout=10)

    assert credit({"token": "tester", "usd": 1, "note": "x"}, AUTH).status_code == 401  # a client key is not the admin's
    assert credit({"token": "tester", "usd": 1}).json()["error"]["param"] == "note"
    assert credit({"token": "tester", "usd": 1, "note": "  "}).status_code == 400
    assert credit({"token": "nobody", "usd": 1, "note": "x"}).status_code == 404
    assert credit({"token": "tester", "usd": "1", "note": "x"}).json()["error"]["param"] == "usd"
    assert credit({"token": "tester", "usd": 0, "note": "x"}).status_code == 400
    bad_json = httpx.post(gateway.url("/admin/credits"), content=b"{not json", headers=ADMIN, timeout=10)
    assert bad_json.status_code == 400

    given = credit({"token": "tester", "usd": 0.1, "note": "ticket 42: outage"})
    assert given.status_code == 200, given.text
    after_credit = given.json()["remaining_usd"]
    assert given.json()["credit"] == {"ts": pytest.approx(time.time(), abs=60), "token": "tester", "usd": pytest.approx(0.1),
                                      "source": "admin", "note": "ticket 42: outage"}
    assert chat(gateway).status_code == 200
    refund = credit({"token": "tester", "usd": -0.1, "note": "ticket 42: credited twice"})
    assert refund.status_code == 200
    assert refund.json()["remaining_usd"] == pytest.approx(max(0.0, after_credit - 0.025 - 0.1), abs=1e-6)
    assert refund.json()["credits_usd"] == pytest.approx(0.0)
    assert chat(gateway).status_code == 429  # the correction took the credit back
    notes = [c["note"] for c in httpx.get(gateway.url("/admin/credits"), headers=ADMIN, timeout=10).json()["credits"]]
    assert notes == ["ticket 42: credited twice", "ticket 42: outage"]  # newest first


def test_oneapi_credit_writes_to_the_store_while_the_gateway_is_down(vendor: FakeVendor, start_gateway) -> None:
    gateway = start_gateway(topup_config(vendor))
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    spend_until_refused(gateway)
    gateway.stop()
    path = str(gateway.config_path)
    missing = cli("credit", "tester", "1")
    assert missing.returncode != 0 and "--note" in missing.stderr
    assert cli("credit", "nobody", "1", "--note", "x", "--config", path).returncode == 2
    done = cli("credit", "tester", "0.5", "--note", "night shift top-up", "--config", path)
    assert done.returncode == 0, done.stderr
    assert "credited $0.500000 to tester" in done.stdout

    restarted = GatewayProcess(gateway.config_path).start()
    try:
        assert chat(restarted).status_code == 200
        credits = httpx.get(restarted.url("/admin/credits"), headers=ADMIN, timeout=10).json()["credits"]
        assert [(c["source"], c["note"], c["usd"]) for c in credits] == [("admin", "night shift top-up", pytest.approx(0.5))]
    finally:
        restarted.stop()


async def _redeem_at_once(urls: list[str], code: str, count: int) -> list[int]:
    async with httpx.AsyncClient(timeout=30) as client:
        answers = await asyncio.gather(*(client.post(urls[i % len(urls)] + "/v1/dashboard/redeem", json={"code": code}, headers=AUTH)
                                         for i in range(count)))
    return [a.status_code for a in answers]


def test_one_code_redeemed_at_once_on_two_gateways_sharing_redis_is_credited_once(vendor: FakeVendor, start_gateway,
                                                                                 redis_url: str) -> None:
    first = start_gateway(topup_config(vendor, redis_url))
    second = GatewayProcess(first.config_path).start()
    try:
        vendor.reply("POST", "/v1/chat/completions", Reply(body=fixture_bytes("openai/chat_completion_text.json")))
        versions = first.health()["config_version"], second.health()["config_version"]
        code, = new_codes(first.config_path, "--value", "0.1")
        reload_to(first, versions[0])
        reload_to(second, versions[1])
        spend_until_refused(first)
        assert chat(second).status_code == 429  # one ledger

        statuses = asyncio.run(_redeem_at_once([first.base_url, second.base_url], code, 20))
        assert sorted(statuses) == [200] + [409] * 19, statuses
        assert chat(second).status_code == 200
        credits = httpx.get(second.url("/admin/credits"), headers=ADMIN, timeout=10).json()["credits"]
        assert [c["usd"] for c in credits] == [pytest.approx(0.1)]
        assert code not in first.log() + second.log()
    finally:
        second.stop()


def test_one_code_redeemed_at_once_by_two_workers_on_sqlite_is_credited_once(vendor: FakeVendor, start_gateway) -> None:
    gateway = start_gateway(topup_config(vendor), workers=2)
    version = gateway.health()["config_version"]
    code, = new_codes(gateway.config_path, "--value", "0.1")
    reload_to(gateway, version, workers=2)
    statuses = asyncio.run(_redeem_at_once([gateway.base_url], code, 20))
    assert sorted(statuses) == [200] + [409] * 19, statuses
    credits = httpx.get(gateway.url("/admin/credits"), headers=ADMIN, timeout=10).json()["credits"]
    assert len(credits) == 1


def test_codes_go_to_the_redemptions_file_config_yaml_names(tmp_path: Path, vendor: FakeVendor) -> None:
    config = tmp_path / "config.yaml"
    write_config(config, {**base_config(vendor), "redemptions_file": "codes.yaml"})
    codes = new_codes(config, "--value", "2", "--count", "5", "--prefix", "SHOP-")
    assert len(set(codes)) == 5 and all(c.startswith("SHOP-") for c in codes)
    entries = yaml.safe_load((tmp_path / "codes.yaml").read_text())
    assert [e["sha256"] for e in entries] == [code_digest(c) for c in codes] and {e["value"] for e in entries} == {2.0}
    assert "redemptions:" not in config.read_text()
    out = tmp_path / "sold.txt"
    done = cli("codes", "new", "--config", str(config), "--value", "1", "--out", str(out))
    assert done.returncode == 0 and done.stdout == "" and len(out.read_text().split()) == 1
    assert oct(out.stat().st_mode & 0o777) == "0o600"

    (tmp_path / "codes.yaml").write_text("- {sha256: nothex, value: -1}\n- {sha256: %s, value: 1, groups: [nobody]}\n" % ("ab" * 32))
    checked = cli("check", "--config", str(config))
    assert checked.returncode == 1 and "codes.yaml:1" in checked.stderr
    assert "codes.yaml:2: a redemption code names group 'nobody'" in checked.stderr
    refused = cli("codes", "new", "--config", str(config), "--value", "1")
    assert refused.returncode == 1 and "put back as it was" in refused.stderr and refused.stdout == ""


def test_new_entries_keep_the_text_around_them() -> None:
    text = "tokens:\n- name: a  # first\nredemptions:\n- {sha256: aa, value: 1}\n# kept\nlog_format: text\n"
    assert with_entries(text, "- {x: 1}\n") == text.replace("# kept\n", "# kept\n- {x: 1}\n")
    assert with_entries("a: 1", "- {x: 1}\n") == "a: 1\nredemptions:\n- {x: 1}\n"
    assert with_entries("redemptions: []\nb: 2\n", "- {x: 1}\n") == "redemptions:\n  - {x: 1}\nb: 2\n"
    indented = "redemptions:\n  - {x: 0}\n"
    assert yaml.safe_load(with_entries(indented, "- {x: 1}\n")) == {"redemptions": [{"x": 0}, {"x": 1}]}


# --- credits and budget periods: counted in the period they were given, or carried over until spent -------------------

DAY = 1_800_000_000.0 - 1_800_000_000.0 % 86400  # a UTC midnight far from now: only the accountings' clock reaches it
NANO = 10**9


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return request.getfixturevalue("redis_url") if request.param == "redis" else "sqlite"


@pytest.mark.parametrize("carry_over", [False, True])
def test_a_credit_counts_in_its_period_or_carries_over_until_spent(store: str, carry_over: bool, tmp_path: Path) -> None:
    from oneapi.config import TokenConfig
    from oneapi.credits import Credit
    from oneapi.errors import GatewayError
    from oneapi.ledger import SqliteLedger, UsageRecord
    from oneapi.limits import Demand, SqliteAccounting

    token = TokenConfig(name="t", key_sha256=None, group="default", models=None, budget=1.0, budget_period="daily", expires=None,
                        subnets=(), rpm=None, tpm=None, enabled=True, credits_carry_over=carry_over)

    async def admitted(accounting: Any, cost: int) -> bool:
        try:
            admission = await accounting.admit(token, Demand(cost, 1), f"r{cost}")
        except GatewayError as exc:
            assert exc.status == 429 and exc.code == "budget_exceeded"
            return False
        accounting.settle(admission, UsageRecord(accounting.clock(), "r", "t", "c", "m", "m", "chat", False, 1, 0, 0, 0, False, cost, 1))
        await accounting.flush()
        return True

    async def run() -> list[Any]:
        if store == "sqlite":
            accounting: Any = SqliteAccounting(SqliteLedger(tmp_path / "ledger.db"))
        else:
            from oneapi.redisstore import RedisAccounting

            accounting = RedisAccounting(store)
        clock = [DAY + 3600]
        accounting.clock = lambda: clock[0]
        await accounting.start()
        try:
            await accounting.add_credit(Credit(clock[0], "t", 2 * NANO, "admin", "day one"))
            day_one = await admitted(accounting, 5 * NANO // 2)  # $2.50 of the $3.00 the budget and the credit make
            clock[0] += 86400  # the next day: $1.00 of budget, and $0.50 of the credit if it carries over
            state = await accounting.budget_state(token)
            return [day_one, state, await admitted(accounting, 14 * NANO // 10)]
        finally:
            await accounting.close()

    day_one, state, next_day = asyncio.run(run())
    assert day_one
    assert state["remaining_usd"] == pytest.approx(1.5 if carry_over else 1.0)
    assert state["credits_usd"] == pytest.approx(0.5 if carry_over else 0.0)
    assert next_day is carry_over  # $1.40 fits only with what is left of the credit


def test_credits_show_in_usage_billing_and_the_dashboard(vendor: FakeVendor, start_gateway, tmp_path: Path) -> None:
    gateway = start_gateway(topup_config(vendor))
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    assert chat(gateway).status_code == 200
    given = httpx.post(gateway.url("/admin/credits"), json={"token": "tester", "usd": 0.4, "note": "prepaid"}, headers=ADMIN, timeout=10)
    assert given.status_code == 200

    usage = httpx.get(gateway.url("/admin/usage"), headers=ADMIN, timeout=10).json()
    assert usage["credits_usd"] == {"tester": pytest.approx(0.4)}
    assert httpx.get(gateway.url("/admin/usage?token=other"), headers=ADMIN, timeout=10).json()["credits_usd"] == {}
    subscription = httpx.get(gateway.url("/v1/dashboard/billing/subscription"), headers=AUTH, timeout=10).json()
    assert subscription["hard_limit_usd"] == pytest.approx(0.5)  # the budget and the credit
    mine = httpx.get(gateway.url("/ui/api/tokens"), headers=AUTH, timeout=10).json()["data"]
    assert [(t["name"], t["credits_usd"]) for t in mine] == [("tester", pytest.approx(0.4))]
    assert mine[0]["remaining_usd"] == pytest.approx(0.1 + 0.4 - mine[0]["spent_usd"])
    assert 'id="redeem-form"' in httpx.get(gateway.url("/ui/"), timeout=10).text

    printed = cli("usage", "--config", str(gateway.config_path))
    assert printed.returncode == 0, printed.stderr
    assert "credits  tester: $0.400000" in printed.stdout


def test_codes_added_to_the_redemptions_file_are_redeemable_after_the_reload(vendor: FakeVendor, start_gateway, tmp_path: Path) -> None:
    (tmp_path / "codes.yaml").write_text("")  # an empty file: no codes yet
    gateway = start_gateway({**topup_config(vendor), "redemptions_file": "codes.yaml"})
    code, = new_codes(gateway.config_path, "--value", "0.1")
    deadline = time.monotonic() + 15
    while (answer := redeem(gateway, code)).status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.2)  # the watcher follows the file config.yaml names
    assert answer.status_code == 200, answer.text
