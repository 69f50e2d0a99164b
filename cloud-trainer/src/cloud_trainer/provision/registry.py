"""The record of every identity provisioned for the broker: the source the ACL is rendered from."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cloud_trainer.provision.atomic_files import atomic_write_text
from edge_agent.protocol import ProtocolError
from edge_agent.protocol.topics import check_ident

log = logging.getLogger(__name__)

REGISTRY_SCHEMA = 1
RESERVED_SITES = frozenset({"releases"})  # would collide with {root}/releases/{model}


class RegistryError(ValueError):
    """The registry file is unreadable or an operation contradicts what it holds."""


class Role(StrEnum):
    """What an identity may do on the broker (see ``acl.render_acl``)."""

    DEVICE = "device"
    CLOUD = "cloud"  # publishes releases and commands
    FLEET = "fleet"  # the fleet service: reads everything, publishes nothing
    HEALTH = "health"  # the broker's own health check


class AuthMethod(StrEnum):
    PASSWORD = "password"  # noqa: S105 - a method name
    CERTIFICATE = "certificate"


class DeviceKind(StrEnum):
    CAMERA = "camera"
    WEATHER = "weather"


def device_username(site: str, device: str) -> str:
    """Broker username of a device: ``site.device``; ids never hold '.', so it is unambiguous."""
    return f"{site}.{device}"


def utc_now() -> datetime:
    return datetime.now(UTC)


class IdentityRecord(BaseModel):
    """One broker identity. Secrets are never stored here, only what was issued and when."""

    model_config = ConfigDict(extra="forbid")

    username: str
    role: Role
    auth: AuthMethod
    site: str | None = None
    device: str | None = None
    kind: DeviceKind | None = None
    groups: list[str] = Field(default_factory=list)
    generation: int = Field(default=1, ge=1, description="bumped by every rotation")
    cert_serial: str | None = Field(default=None, description="hex serial of the client cert")
    revoked_serials: list[str] = Field(default_factory=list, description="for the CRL")
    created: datetime = Field(default_factory=utc_now)
    rotated: datetime | None = None
    revoked: datetime | None = None

    @field_validator("groups")
    @classmethod
    def _groups_are_idents(cls, groups: list[str]) -> list[str]:
        for group in groups:
            try:
                check_ident(group, "group")
            except ProtocolError as e:
                raise ValueError(str(e)) from e
        return sorted(set(groups))

    @property
    def active(self) -> bool:
        return self.revoked is None

    def retire_certificate(self, **update: object) -> IdentityRecord:
        """A copy (with ``update`` applied) whose current certificate is gone: its serial
        joins ``revoked_serials`` so the next CRL refuses it, whether rotated or revoked."""
        revoked = list(self.revoked_serials)
        if self.cert_serial:
            revoked.append(self.cert_serial)
        return self.model_copy(update={**update, "cert_serial": None, "revoked_serials": revoked})


class RegistryDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = REGISTRY_SCHEMA
    topic_root: str = "mlops"
    identities: dict[str, IdentityRecord] = Field(default_factory=dict)


class ProvisionRegistry:
    """Loads, queries and saves ``registry.json`` (callers hold the state lock)."""

    def __init__(self, path: Path, document: RegistryDocument) -> None:
        self.path = path
        self.document = document

    @classmethod
    def load(cls, path: Path, topic_root: str = "mlops") -> ProvisionRegistry:
        if not path.exists():
            return cls(path, RegistryDocument(topic_root=topic_root))
        try:
            raw = json.loads(path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RegistryError(f"cannot read registry {path}: {e}") from e
        if isinstance(raw, dict) and raw.get("schema_version") != REGISTRY_SCHEMA:
            raise RegistryError(
                f"registry {path} has schema_version {raw.get('schema_version')!r}; "
                f"this build reads {REGISTRY_SCHEMA}"
            )
        try:
            document = RegistryDocument.model_validate(raw)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise RegistryError(f"registry {path} is invalid: {where}: {first['msg']}") from e
        return cls(path, document)

    @property
    def topic_root(self) -> str:
        return self.document.topic_root

    def get(self, username: str) -> IdentityRecord | None:
        return self.document.identities.get(username)

    def put(self, record: IdentityRecord) -> None:
        self.document.identities[record.username] = record

    def active(self) -> list[IdentityRecord]:
        return [r for r in self.document.identities.values() if r.active]

    def all(self) -> list[IdentityRecord]:
        return list(self.document.identities.values())

    def revoked_serials(self) -> list[str]:
        serials: list[str] = []
        for record in self.document.identities.values():
            serials.extend(record.revoked_serials)
        return sorted(set(serials))

    def save(self) -> None:
        text = self.document.model_dump_json(indent=2) + "\n"
        atomic_write_text(self.path, text, mode=0o600)
        log.debug("registry saved: %s identities", len(self.document.identities))
