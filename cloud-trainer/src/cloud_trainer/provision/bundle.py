"""The files a device receives at provisioning: config YAML, fleet key, CA, its own secret."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from cloud_trainer.provision.atomic_files import atomic_write, atomic_write_text
from cloud_trainer.provision.registry import AuthMethod, IdentityRecord
from edge_agent.config.loader import ConfigError, load_document, validate_document

log = logging.getLogger(__name__)

CONFIG_NAME = "device.yaml"
FLEET_KEY_NAME = "fleet-public.pem"
CA_NAME = "ca.crt"
PASSWORD_NAME = "mqtt-password"  # noqa: S105 - a file name
CLIENT_CERT_NAME = "client.crt"
CLIENT_KEY_NAME = "client.key"


@dataclass(frozen=True)
class BrokerAddress:
    """Where devices reach the broker (the TLS listener for passwords, mTLS for certificates)."""

    host: str
    tls_port: int = 8883
    mtls_port: int = 8884
    topic_root: str = "mlops"


@dataclass(frozen=True)
class DeviceSecret:
    """What only this device holds: a password, or a client certificate and its key."""

    password: str | None = None
    cert_pem: bytes | None = None
    key_pem: bytes | None = None


# Used when no --base-config gives the device's source: the first camera, or the usual
# USB serial adapter of a weather station.
DEFAULT_SOURCES: dict[str, dict[str, Any]] = {
    "camera": {"type": "camera", "uri": 0},
    "weather": {"type": "serial", "device": "/dev/ttyUSB0", "baud": 9600},
}


class DeviceConfigError(ValueError):
    """The generated device config does not pass the agent's own config models."""


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_base_config(path: Path) -> dict[str, Any]:
    """A device-configs YAML (``extends`` resolved) whose source, model, limits... we keep."""
    try:
        document, _origins = load_document(path)
    except ConfigError as e:
        raise DeviceConfigError(f"base config {path}: {_first_issue(e)}") from e
    return document


def render_device_config(
    record: IdentityRecord,
    broker: BrokerAddress,
    device_root: PurePosixPath,
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The device's config document; secrets appear only as paths to files beside it.

    Identity, broker and key fields always come from provisioning, over anything in ``base``.
    """
    assert record.site is not None and record.device is not None and record.kind is not None
    tls: dict[str, Any] = {"ca_file": str(device_root / CA_NAME)}
    mqtt: dict[str, Any] = {"host": broker.host, "topic_root": broker.topic_root}
    if record.auth is AuthMethod.PASSWORD:
        mqtt["port"] = broker.tls_port
        mqtt["username"] = record.username
        mqtt["password_file"] = str(device_root / PASSWORD_NAME)
    else:
        mqtt["port"] = broker.mtls_port
        tls["cert_file"] = str(device_root / CLIENT_CERT_NAME)
        tls["key_file"] = str(device_root / CLIENT_KEY_NAME)
    mqtt["tls"] = tls
    document = dict(base or {})
    document.pop("extends", None)
    old_broker = document.get("broker")
    if isinstance(old_broker, dict):
        # Credentials of the base file would contradict the issued ones: drop them.
        document["broker"] = {
            k: v
            for k, v in old_broker.items()
            if k not in ("username", "password_env", "password_file", "tls")
        }
    document.setdefault("source", DEFAULT_SOURCES[record.kind.value])
    base_updates = document.get("updates")
    updates = (
        dict(base_updates)
        if isinstance(base_updates, dict)
        else {"models_dir": str(device_root / "models")}
    )
    updates["fleet_public_key"] = str(device_root / FLEET_KEY_NAME)
    provisioned = {
        "device_id": record.device,
        "site": record.site,
        "kind": record.kind.value,
        "groups": list(record.groups),
        "broker": mqtt,
        "updates": updates,
    }
    return _merge(document, provisioned)


def validate_device_config(document: dict[str, Any], where: str) -> None:
    """Run the agent's own DeviceConfig over the document, so a bad bundle is never written."""
    try:
        validate_document(document, {(): (where, 1)}, where)
    except ConfigError as e:
        raise DeviceConfigError(
            f"generated config for {where} is invalid: {_first_issue(e)}"
        ) from e


def _first_issue(error: ConfigError) -> str:
    more = len(error.issues) - 1
    return str(error.issues[0]) + (f" (and {more} more)" if more > 0 else "")


def write_bundle(
    out_dir: Path,
    config: dict[str, Any],
    secret: DeviceSecret,
    ca_pem: bytes,
    fleet_public_key_pem: bytes,
) -> list[Path]:
    """Write every bundle file atomically (secrets 0600) and remove a stale other-method secret.

    Returns the paths written, config last, so a device that sees the config sees its files.
    """
    written: list[Path] = []
    if secret.password is not None:
        path = out_dir / PASSWORD_NAME
        atomic_write_text(path, secret.password + "\n", mode=0o600)
        written.append(path)
        stale = [out_dir / CLIENT_CERT_NAME, out_dir / CLIENT_KEY_NAME]
    else:
        assert secret.cert_pem is not None and secret.key_pem is not None
        atomic_write(out_dir / CLIENT_KEY_NAME, secret.key_pem, mode=0o600)
        atomic_write(out_dir / CLIENT_CERT_NAME, secret.cert_pem, mode=0o644)
        written += [out_dir / CLIENT_KEY_NAME, out_dir / CLIENT_CERT_NAME]
        stale = [out_dir / PASSWORD_NAME]
    for path in stale:
        path.unlink(missing_ok=True)
    atomic_write(out_dir / CA_NAME, ca_pem, mode=0o644)
    atomic_write(out_dir / FLEET_KEY_NAME, fleet_public_key_pem, mode=0o644)
    written += [out_dir / CA_NAME, out_dir / FLEET_KEY_NAME]
    header = (
        "# Device config written by `cloud-trainer device provision`.\n"
        "# Secrets are files beside this one, referenced by path; never put them inline.\n"
    )
    text = header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
    atomic_write_text(out_dir / CONFIG_NAME, text, mode=0o644)
    written.append(out_dir / CONFIG_NAME)
    log.info("device bundle written to %s (%s files)", out_dir, len(written))
    return written
