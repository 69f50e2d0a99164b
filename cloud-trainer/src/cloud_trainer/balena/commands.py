"""Builds balena-cli command lines as data, so they can be printed, tested and then run."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cloud_trainer.provision import bundle as device_bundle

# balena fleet slugs are "org/name"; names and env keys are restricted to keep argv sane.
_FLEET = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TAG_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|PRIVATE|_KEY_PEM$|WIFI_KEY", re.IGNORECASE)
MASK = "********"

# Device environment that the device image's entrypoint turns back into the bundle's files.
BUNDLE_ENV = {
    "EDGE_CONFIG_YAML": device_bundle.CONFIG_NAME,
    "EDGE_CA_PEM": device_bundle.CA_NAME,
    "EDGE_FLEET_PUBLIC_KEY_PEM": device_bundle.FLEET_KEY_NAME,
    "EDGE_MQTT_PASSWORD": device_bundle.PASSWORD_NAME,
    "EDGE_CLIENT_CERT_PEM": device_bundle.CLIENT_CERT_NAME,
    "EDGE_CLIENT_PRIVATE_KEY_PEM": device_bundle.CLIENT_KEY_NAME,
}


class BalenaArgumentError(ValueError):
    """An argument balena-cli would reject or misread."""


@dataclass(frozen=True)
class BalenaCommand:
    """One balena-cli invocation; ``secrets`` are argv items masked whenever it is shown."""

    argv: tuple[str, ...]
    secrets: frozenset[str] = field(default_factory=frozenset)

    def display(self) -> str:
        return shlex.join(MASK if arg in self.secrets else arg for arg in self.argv)


def check_fleet(fleet: str) -> str:
    if not _FLEET.fullmatch(fleet):
        raise BalenaArgumentError(f"invalid fleet {fleet!r}: use NAME or ORG/NAME (a slug)")
    return fleet


def _target(fleet: str | None, device: str | None) -> list[str]:
    if (fleet is None) == (device is None):
        raise BalenaArgumentError("give exactly one of --fleet or --device")
    if fleet is not None:
        return ["--fleet", check_fleet(fleet)]
    assert device is not None
    if not re.fullmatch(r"[0-9a-f]{7,62}", device):
        raise BalenaArgumentError(f"invalid device UUID {device!r}")
    return ["--device", device]


def fleet_create(name: str, device_type: str, organization: str | None = None) -> BalenaCommand:
    argv = ["balena", "fleet", "create", check_fleet(name), "--type", device_type]
    if organization:
        argv += ["--organization", organization]
    return BalenaCommand(tuple(argv))


def env_set(
    name: str,
    value: str,
    fleet: str | None = None,
    device: str | None = None,
    service: str | None = None,
) -> BalenaCommand:
    """``balena env add`` (it creates or, for an existing name, fails: rename by id)."""
    if not _ENV_NAME.fullmatch(name):
        raise BalenaArgumentError(f"invalid variable name {name!r}")
    if name.upper().startswith(("BALENA_", "RESIN_")) and service:
        raise BalenaArgumentError(f"{name} is a config variable: it cannot be per service")
    argv = ["balena", "env", "add", name, value, *_target(fleet, device)]
    if service:
        argv += ["--service", service]
    secret = frozenset({value}) if _SECRET_NAME.search(name) and value else frozenset()
    return BalenaCommand(tuple(argv), secret)


def bundle_environment(bundle_dir: Path) -> dict[str, str]:
    """The bundle as device variables: balena keeps secrets per device, the image writes files."""
    config_path = bundle_dir / device_bundle.CONFIG_NAME
    try:
        config = yaml.safe_load(config_path.read_text("utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise BalenaArgumentError(f"cannot read device bundle {config_path}: {e}") from e
    if not isinstance(config, dict) or "device_id" not in config:
        raise BalenaArgumentError(f"{config_path} is not a device config from `device provision`")
    env: dict[str, str] = {}
    for name, file_name in BUNDLE_ENV.items():
        path = bundle_dir / file_name
        if path.exists():
            env[name] = path.read_text("utf-8")
    return env


def env_from_bundle(
    bundle_dir: Path, device: str, service: str = "edge-agent"
) -> list[BalenaCommand]:
    return [
        env_set(name, value, device=device, service=service)
        for name, value in bundle_environment(bundle_dir).items()
    ]


def os_configure(
    image: Path,
    fleet: str,
    version: str,
    device_name: str | None = None,
    device_type: str | None = None,
    network: str = "ethernet",
    wifi_ssid: str | None = None,
    wifi_key: str | None = None,
) -> BalenaCommand:
    """Non-interactive ``balena os configure`` for a downloaded balenaOS image."""
    if network not in ("ethernet", "wifi"):
        raise BalenaArgumentError(f"invalid network {network!r}: ethernet or wifi")
    if network == "wifi" and not wifi_ssid:
        raise BalenaArgumentError("--network wifi needs --wifi-ssid (key from $BALENA_WIFI_KEY)")
    argv = ["balena", "os", "configure", str(image), "--fleet", check_fleet(fleet)]
    argv += ["--version", version, "--config-network", network]
    secrets: set[str] = set()
    if device_type:
        argv += ["--device-type", device_type]
    if device_name:
        argv += ["--initial-device-name", device_name]
    if network == "wifi":
        assert wifi_ssid is not None
        argv += ["--config-wifi-ssid", wifi_ssid]
        if wifi_key:
            argv += ["--config-wifi-key", wifi_key]
            secrets.add(wifi_key)
    return BalenaCommand(tuple(argv), frozenset(secrets))


def local_flash(image: Path, drive: str, yes: bool = False) -> BalenaCommand:
    if not drive.startswith("/dev/"):
        raise BalenaArgumentError(f"invalid drive {drive!r}: a /dev path such as /dev/sdb")
    argv = ["balena", "local", "flash", str(image), "--drive", drive]
    if yes:
        argv.append("--yes")
    return BalenaCommand(tuple(argv))


def push(
    fleet: str,
    source: Path,
    release_tags: dict[str, str] | None = None,
    note: str | None = None,
    draft: bool = False,
) -> BalenaCommand:
    """Build and release ``source`` (the folder holding the fleet's docker-compose.yml)."""
    argv = ["balena", "push", check_fleet(fleet), "--source", str(source)]
    if release_tags:
        argv.append("--release-tag")
        for key, value in release_tags.items():
            argv += [_tag_key(key), value]
    if note:
        argv += ["--note", note]
    if draft:
        argv.append("--draft")
    return BalenaCommand(tuple(argv))


def tag_set(
    key: str, value: str, fleet: str | None = None, device: str | None = None
) -> BalenaCommand:
    return BalenaCommand(("balena", "tag", "set", _tag_key(key), value, *_target(fleet, device)))


def _tag_key(key: str) -> str:
    if not _TAG_KEY.fullmatch(key):
        raise BalenaArgumentError(f"invalid tag key {key!r}")
    return key
