"""Hot reload: file changes, ConfigMap symlink swaps, SIGHUP, POST /admin/reload; atomic, and bad files kept out."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import openai

from conftest import CLIENT_KEY, GatewayProcess, base_config, write_config
from fakevendor import FakeVendor

ADMIN = {"Authorization": "Bearer admin-secret-key-for-tests"}


def chat(gateway: GatewayProcess, key: str = CLIENT_KEY, model: str = "gpt-4o-mini") -> httpx.Response:
    return httpx.post(gateway.url("/v1/chat/completions"), json={"model": model, "messages": [{"role": "user", "content": "x"}]},
                      headers={"Authorization": f"Bearer {key}"}, timeout=20)


def test_editing_config_yaml_reloads_it(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    before = gateway.health()
    assert before["last_reload_failed"] is False
    assert chat(gateway, key="sk-new-token-xyz").status_code == 401

    config = base_config(vendor)
    config["tokens"].append({"name": "newcomer", "key": "sk-new-token-xyz"})
    write_config(gateway.config_path, config)

    after = gateway.wait_for(lambda h: h["config_version"] != before["config_version"])
    assert after["tokens"] == 2
    assert 0 < after["reload_ms"] < 10_000 and after["loaded_at"] > before["loaded_at"]  # the build that made it live
    assert chat(gateway, key="sk-new-token-xyz").status_code == 200


def test_broken_config_is_refused_whole_and_the_old_one_keeps_serving(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    version = gateway.health()["config_version"]
    config = base_config(vendor)
    config["tokens"] = [{"name": "tester", "key": "sk-other"}]  # would lock the old key out...
    config["channels"][0]["provider"] = "no-such-provider"     # ...but this makes the file invalid
    write_config(gateway.config_path, config)

    health = gateway.wait_for(lambda h: h["last_reload_failed"])
    assert health["config_version"] == version
    details = admin_health(gateway)["last_reload_error"]
    assert "no-such-provider" in details and f"{gateway.config_path}:" in details
    assert chat(gateway).status_code == 200

    write_config(gateway.config_path, base_config(vendor))
    healed = gateway.wait_for(lambda h: not h["last_reload_failed"])
    assert healed["config_version"] == version  # same content, same version
    assert admin_health(gateway)["last_reload_error"] is None


def admin_health(gateway: GatewayProcess) -> dict[str, object]:
    return httpx.get(gateway.url("/health"), headers=ADMIN, timeout=5).json()


def test_health_tells_anyone_that_a_reload_failed_and_only_the_admin_why(vendor: FakeVendor, start_gateway) -> None:
    config = base_config(vendor)
    config["channels"][0]["name"] = "hidden-channel-zq"
    config["tokens"].append({"name": "hidden-token-yq", "key": "sk-hidden-token"})
    gateway = start_gateway(config)
    fresh = gateway.health()
    assert fresh["last_reload_failed"] is False and "last_reload_error" not in fresh
    secrets = ["hidden-channel-zq", "hidden-token-yq", "HIDDEN_VARIABLE_QQ", str(gateway.config_path.parent), "config.yaml", "no-such-provider"]

    # each broken edit names in its error what an anonymous caller must not learn: a path, a variable, a channel, a token
    missing_variable = base_config(vendor, channels=[{**config["channels"][0], "keys": ["${HIDDEN_VARIABLE_QQ}"]}])
    unknown_provider = base_config(vendor, channels=[{**config["channels"][0], "provider": "no-such-provider"}])
    twice = base_config(vendor, channels=config["channels"], tokens=[*config["tokens"], config["tokens"][-1]])
    for broken, named in ((missing_variable, "HIDDEN_VARIABLE_QQ"), (unknown_provider, "hidden-channel-zq"), (twice, "hidden-token-yq")):
        write_config(gateway.config_path, config)
        gateway.wait_for(lambda h: not h["last_reload_failed"])
        write_config(gateway.config_path, broken)
        anonymous = gateway.wait_for(lambda h: h["last_reload_failed"])
        assert anonymous["config_version"] == fresh["config_version"] and anonymous["status"] == "ok"
        text = httpx.get(gateway.url("/health"), timeout=5).text
        assert not [s for s in secrets if s in text], text
        for wrong in ("Bearer sk-hidden-token", "Bearer admin-secret-key-for-test", "Bearer x"):  # a client key is no admin key
            assert not [s for s in secrets if s in httpx.get(gateway.url("/health"), headers={"Authorization": wrong}, timeout=5).text]
        admin = admin_health(gateway)
        assert admin["last_reload_failed"] is True
        assert named in admin["last_reload_error"] and f"{gateway.config_path}:" in admin["last_reload_error"]


def test_kubernetes_configmap_symlink_swap_is_seen(vendor: FakeVendor, tmp_path: Path) -> None:
    # the kubelet's layout: config.yaml -> ..data/config.yaml, ..data -> ..<timestamp>/, swapped by rename
    first, second = tmp_path / "..2026_01", tmp_path / "..2026_02"
    first.mkdir()
    second.mkdir()
    write_config(first / "config.yaml", base_config(vendor))
    changed = base_config(vendor)
    changed["tokens"].append({"name": "from-configmap", "key": "sk-configmap-token"})
    write_config(second / "config.yaml", changed)
    (tmp_path / "..data").symlink_to(first.name)
    (tmp_path / "config.yaml").symlink_to("..data/config.yaml")
    gateway = GatewayProcess(tmp_path / "config.yaml").start()
    try:
        version = gateway.health()["config_version"]
        (tmp_path / "..data_tmp").symlink_to(second.name)
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")

        health = gateway.wait_for(lambda h: h["config_version"] != version)
        assert health["tokens"] == 2
    finally:
        gateway.stop()


def test_provider_file_change_reloads(vendor: FakeVendor, start_gateway, tmp_path: Path) -> None:
    providers = tmp_path / "providers"
    providers.mkdir()
    from conftest import PROVIDERS_DIR

    (providers / "openai.yaml").write_text((PROVIDERS_DIR / "openai.yaml").read_text())
    gateway = start_gateway(base_config(vendor, providers_dir=str(providers)))
    vendor.reply_fixture("/v2/chat/completions", "openai/chat_completion_text.json")
    version = gateway.health()["config_version"]

    (providers / "openai.yaml").write_text((PROVIDERS_DIR / "openai.yaml").read_text().replace("api_prefix: /v1", "api_prefix: /v2"))
    gateway.wait_for(lambda h: h["config_version"] != version)

    assert chat(gateway).status_code == 200
    assert vendor.received[-1].path == "/v2/chat/completions"


def test_sighup_and_admin_reload(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    # write the file in a way the watcher cannot see (same size and mtime), so only the signal can load it
    path = gateway.config_path
    text = path.read_text()
    replaced = text.replace("tester", "tested")
    assert len(replaced) == len(text)
    stat = path.stat()
    path.write_text(replaced)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    time.sleep(0.6)
    version = gateway.health()["config_version"]

    gateway.signal(signal.SIGHUP)
    after_hup = gateway.wait_for(lambda h: h["config_version"] != version)
    assert gateway.process.poll() is None  # SIGHUP reloads; it does not stop the server

    assert httpx.post(gateway.url("/admin/reload")).status_code == 401
    response = httpx.post(gateway.url("/admin/reload"), headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == {"reloaded": True, "config_version": after_hup["config_version"]}

    write_config(path, "channels: [oops\n")
    refused = httpx.post(gateway.url("/admin/reload"), headers=ADMIN)
    assert refused.status_code == 422
    assert refused.json()["config_version"] == after_hup["config_version"]
    assert refused.json()["error"]["problems"][0].startswith(f"{path}:")


def test_reload_under_concurrent_requests_fails_none(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    stop = threading.Event()
    statuses: list[int] = []
    errors: list[str] = []

    def load() -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=20) as http:
            while not stop.is_set():
                try:
                    statuses.append(http.post(gateway.url("/v1/chat/completions"),
                                              json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}).status_code)
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        versions = set()
        for i in range(8):
            config = base_config(vendor)
            config["channels"][0]["weight"] = i + 1  # a real change every time
            write_config(gateway.config_path, config)
            versions.add(gateway.wait_for(lambda h: h["config_version"] not in versions)["config_version"])
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert len(versions) == 8
    assert not errors
    assert len(statuses) > 50 and set(statuses) == {200}


def test_every_worker_converges_on_the_new_snapshot(vendor: FakeVendor, start_gateway) -> None:
    gateway = start_gateway(base_config(vendor), workers=2)
    config = base_config(vendor)
    config["tokens"].append({"name": "second", "key": "sk-second-token"})
    version = gateway.health()["config_version"]
    write_config(gateway.config_path, config)

    seen: dict[int, dict] = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (len(seen) < 2 or len({h["config_version"] for h in seen.values()} - {version}) != 1
                                           or any(h["config_version"] == version for h in seen.values())):
        with httpx.Client() as fresh:  # a new connection each time lands on either worker
            health = fresh.get(gateway.url("/health")).json()
        seen[health["pid"]] = health
    assert len(seen) == 2, seen
    versions = {h["config_version"] for h in seen.values()}
    assert len(versions) == 1 and version not in versions, (version, seen, gateway.log())
    assert all(h["tokens"] == 2 for h in seen.values())


def test_admin_reload_reaches_every_worker(vendor: FakeVendor, start_gateway) -> None:
    gateway = start_gateway(base_config(vendor), workers=2)
    path = gateway.config_path
    text = path.read_text()
    stat = path.stat()
    path.write_text(text.replace("tester", "tested"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    time.sleep(0.6)

    new_version = httpx.post(gateway.url("/admin/reload"), headers=ADMIN).json()["config_version"]

    seen: dict[int, str] = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (len(seen) < 2 or set(seen.values()) != {new_version}):
        with httpx.Client() as fresh:
            health = fresh.get(gateway.url("/health")).json()
        seen[health["pid"]] = health["config_version"]
    assert len(seen) == 2 and set(seen.values()) == {new_version}, seen


def test_admin_is_off_without_admin_key(vendor: FakeVendor, start_gateway) -> None:
    config = base_config(vendor)
    del config["admin_key"]
    gateway = start_gateway(config)
    response = httpx.post(gateway.url("/admin/reload"), headers=ADMIN)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_admin_channels_masks_keys(gateway: GatewayProcess) -> None:
    from conftest import UPSTREAM_KEY

    response = httpx.get(gateway.url("/admin/channels"), headers=ADMIN)
    assert response.status_code == 200
    channel = response.json()["channels"][0]
    assert channel["name"] == "main" and channel["routed"] is True
    assert UPSTREAM_KEY not in response.text and channel["keys"] == ["..." + UPSTREAM_KEY[-4:]]


def test_sdk_sees_the_new_model_list_after_reload(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    config = base_config(vendor)
    config["channels"][0]["models"] = ["only-this-model"]
    version = gateway.health()["config_version"]
    write_config(gateway.config_path, config)
    gateway.wait_for(lambda h: h["config_version"] != version)

    models = openai.OpenAI(base_url=gateway.url("/v1"), api_key=CLIENT_KEY, max_retries=0).models.list()
    assert [m.id for m in models] == ["only-this-model"]


def test_a_file_changed_while_it_was_read_is_read_again(tmp_path: Path, monkeypatch) -> None:
    import asyncio

    import oneapi.snapshot as snapshot_module
    from conftest import PROVIDERS_DIR

    path = tmp_path / "config.yaml"
    first = {"providers_dir": str(PROVIDERS_DIR), "watch_interval": 0.05, "tokens": [{"name": "a", "key": "sk-a"}]}
    second = {**first, "tokens": [{"name": "a", "key": "sk-a"}, {"name": "b", "key": "sk-b"}]}
    write_config(path, first)
    real_build = snapshot_module.build_snapshot

    def build_then_edit(config_path, environ=None):  # the edit lands after the read, before the watcher's stat
        built = real_build(config_path, environ)
        write_config(path, second)
        return built

    monkeypatch.setattr(snapshot_module, "build_snapshot", build_then_edit)
    holder = snapshot_module.SnapshotHolder(path)
    monkeypatch.setattr(snapshot_module, "build_snapshot", real_build)
    assert len(holder.current.tokens) == 1

    async def watch_briefly() -> None:
        watcher = asyncio.create_task(holder.watch())
        for _ in range(40):
            await asyncio.sleep(0.05)
            if len(holder.current.tokens) == 2:
                break
        watcher.cancel()

    asyncio.run(watch_briefly())
    assert len(holder.current.tokens) == 2
