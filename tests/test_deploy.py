"""The deployment files agree with each other and with the gateway: docker-compose.yml, deploy/kubernetes/ and the
Dockerfile parse, name the kinds and paths they should, and `oneapi check` passes on the configs they ship."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT
from oneapi.cli import main

KUBERNETES = ROOT / "deploy" / "kubernetes"
COMPOSE = ROOT / "docker-compose.yml"
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


def manifests() -> list[dict[str, Any]]:
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict) and doc.get("kind"), f"{path.name}: a document without a kind"
            found.append({**doc, "_file": path.name})
    return found


def one(kind: str, name: str) -> dict[str, Any]:
    matches = [m for m in manifests() if m["kind"] == kind and m.get("metadata", {}).get("name") == name]
    assert len(matches) == 1, (kind, name)
    return matches[0]


def image_config_path() -> str:
    cmd = re.search(r"^CMD (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.M)
    assert cmd, "the Dockerfile has a CMD"
    args = yaml.safe_load(cmd.group(1))
    return args[args.index("--config") + 1]


def check(config_text: str, tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
          capsys: pytest.CaptureFixture[str]) -> str:
    """`oneapi check` on a config as the container sees it: alone in its folder, its variables from `env` only."""
    for name in {m.group(1) for m in VAR.finditer(config_text)}:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    folder = tmp_path / "config"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(config_text)
    code = main(["check", "--config", str(folder / "config.yaml")])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def test_every_kubernetes_manifest_parses_with_the_expected_kinds() -> None:
    kinds = sorted((m["kind"], m.get("metadata", {}).get("name", "")) for m in manifests())
    assert kinds == [
        ("ConfigMap", "oneapi-config"), ("Deployment", "oneapi"), ("Deployment", "oneapi-redis"), ("Kustomization", ""),
        ("PersistentVolumeClaim", "oneapi-redis"), ("Secret", "oneapi-secrets"), ("Service", "oneapi"), ("Service", "oneapi-redis"),
    ]
    listed = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")


def test_the_gateway_deployment_runs_two_replicas_probed_on_health_with_config_and_secret_mounted() -> None:
    deployment = one("Deployment", "oneapi")
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["selector"]["matchLabels"] == deployment["spec"]["template"]["metadata"]["labels"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
        assert container[probe]["httpGet"]["port"] in ("http", port)
    config_path = container["args"][container["args"].index("--config") + 1]
    assert config_path == image_config_path()  # the same place the image's own CMD reads
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts[str(Path(config_path).parent)]]["configMap"]["name"] == "oneapi-config"
    assert container["envFrom"] == [{"secretRef": {"name": "oneapi-secrets"}}]
    assert spec["terminationGracePeriodSeconds"] > 30  # drain_timeout's default
    service = one("Service", "oneapi")
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["ports"][0]["targetPort"] in ("http", port)


def test_the_configmap_config_passes_oneapi_check_with_the_secret_and_shares_redis(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    config_text = one("ConfigMap", "oneapi-config")["data"]["config.yaml"]
    secret = one("Secret", "oneapi-secrets")["stringData"]
    needed = {m.group(1) for m in VAR.finditer(config_text) if m.group(2) is None}
    assert needed <= secret.keys()  # every ${VAR} without a default is in the Secret

    out = check(config_text, tmp_path, secret, monkeypatch, capsys)

    assert "2 routed channels, 1 tokens" in out
    store = yaml.safe_load(config_text)["store"]
    redis_service = one("Service", "oneapi-redis")
    assert store.startswith(f"redis://{redis_service['metadata']['name']}:{redis_service['spec']['ports'][0]['port']}/")
    redis = one("Deployment", "oneapi-redis")["spec"]["template"]["spec"]
    assert "--appendonly" in redis["containers"][0]["args"]
    assert redis["volumes"][0]["persistentVolumeClaim"]["claimName"] == one("PersistentVolumeClaim", "oneapi-redis")["metadata"]["name"]


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_mounts_the_config_as_a_folder_and_keeps_redis_behind_a_profile() -> None:
    services = compose()["services"]
    assert sorted(services) == ["oneapi", "redis"]
    assert services["redis"]["profiles"] == ["replicas"]
    assert "profiles" not in services["oneapi"]
    mounts = [v.split(":") for v in services["oneapi"]["volumes"]]
    config_mount = [m for m in mounts if m[1] == str(Path(image_config_path()).parent)]
    assert len(config_mount) == 1 and config_mount[0][2:] == ["ro"]
    source = (ROOT / config_mount[0][0]).resolve()
    assert source.is_dir() and (source / "config.yaml").is_file()  # a folder, never the file itself
    env_file = services["oneapi"]["env_file"][0]["path"]
    assert (ROOT / env_file).with_name(Path(env_file).name + ".example").is_file()
    assert not (source / Path(env_file).name).exists()  # the secrets are not inside the mounted config folder


def test_the_compose_config_passes_oneapi_check_with_the_example_env_file_both_ways(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    services = compose()["services"]
    source = next(ROOT / v.split(":")[0] for v in services["oneapi"]["volumes"] if ":/app/config" in v)
    config_text = (source / "config.yaml").read_text()
    example = ROOT / (services["oneapi"]["env_file"][0]["path"] + ".example")
    env = dict(line.split("=", 1) for line in example.read_text().splitlines() if line and not line.startswith("#"))
    assert set(env) >= {m.group(1) for m in VAR.finditer(config_text)} - {"ONEAPI_STORE"}

    check(config_text, tmp_path / "single", env, monkeypatch, capsys)
    replicas = {**env, **{k: "sk-set" for k in env}, "ONEAPI_STORE": "redis://redis:6379/0"}
    out = check(config_text, tmp_path / "replicas", replicas, monkeypatch, capsys)
    assert "2 routed channels, 1 tokens" in out
    commented = re.search(r"^# ONEAPI_STORE=(redis://(\w+):\d+/\d+)$", example.read_text(), re.M)
    assert commented and commented.group(2) in services  # the store it suggests is the redis service's name


def test_readme_shows_both_and_the_image_path_it_documents() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docker compose --profile replicas" in readme and "kubectl apply -k deploy/kubernetes" in readme
    run = next(block for block in re.findall(r"```sh\n(.*?)```", readme, re.S) if "docker run" in block)
    mounts = [shlex.split(line.strip(" \\"))[1] for line in run.splitlines() if line.strip().startswith("-v ") and "/app/" in line]
    assert [m.split(":")[1] for m in mounts] == [str(Path(image_config_path()).parent)]


def test_kustomize_renders_every_resource_when_kubectl_is_at_hand() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the manifests were parsed above")
    done = subprocess.run([kubectl, "kustomize", str(KUBERNETES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rendered = sorted((d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(done.stdout))
    assert rendered == sorted((m["kind"], m["metadata"]["name"]) for m in manifests() if m["kind"] != "Kustomization")
    assert all(d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "oneapi" for d in yaml.safe_load_all(done.stdout))
