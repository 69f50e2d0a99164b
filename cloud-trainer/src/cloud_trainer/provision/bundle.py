"""The files a device receives at provisioning: config YAML, fleet key, CA, its own secret."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from cloud_trainer.provision.atomic_files import atomic_write, atomic_write_text
from cloud_trainer.provision.registry import AuthMethod, IdentityRecord

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


def render_device_config(
    record: IdentityRecord, broker: BrokerAddress, device_root: PurePosixPath
) -> dict[str, Any]:
    """The device's config document; secrets appear only as paths to files beside it."""
    assert record.site is not None and record.device is not None and record.kind is not None
    mqtt: dict[str, Any] = {
        "host": broker.host,
        "topic_root": broker.topic_root,
        "ca_file": str(device_root / CA_NAME),
    }
    if record.auth is AuthMethod.PASSWORD:
        mqtt["port"] = broker.tls_port
        mqtt["username"] = record.username
        mqtt["password_file"] = str(device_root / PASSWORD_NAME)
    else:
        mqtt["port"] = broker.mtls_port
        mqtt["cert_file"] = str(device_root / CLIENT_CERT_NAME)
        mqtt["key_file"] = str(device_root / CLIENT_KEY_NAME)
    return {
        "site": record.site,
        "device": record.device,
        "kind": record.kind.value,
        "groups": list(record.groups),
        "broker": mqtt,
        "updates": {
            "fleet_public_key": str(device_root / FLEET_KEY_NAME),
            "models_dir": str(device_root / "models"),
        },
    }


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
