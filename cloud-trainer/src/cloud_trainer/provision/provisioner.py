"""Provision, rotate and revoke broker identities, keeping passwd, ACL, CRL and registry in step."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cloud_trainer.provision import broker_config as files
from cloud_trainer.provision.acl import render_acl
from cloud_trainer.provision.atomic_files import atomic_write, atomic_write_text, exclusive_lock
from cloud_trainer.provision.bundle import (
    CONFIG_NAME,
    BrokerAddress,
    DeviceConfigError,
    DeviceSecret,
    load_base_config,
    render_device_config,
    validate_device_config,
    write_bundle,
)
from cloud_trainer.provision.fleet_registration import FleetRegistrar
from cloud_trainer.provision.mosquitto_passwd import MosquittoPasswordFile, generate_password
from cloud_trainer.provision.registry import (
    RESERVED_SITES,
    AuthMethod,
    DeviceKind,
    IdentityRecord,
    ProvisionRegistry,
    RegistryError,
    Role,
    device_username,
    utc_now,
)
from cloud_trainer.provision.tls import CertificateAuthority, CertificateError
from edge_agent.protocol import ProtocolError
from edge_agent.protocol.signing import load_public_key
from edge_agent.protocol.topics import TopicTree, check_ident

log = logging.getLogger(__name__)

SERVICE_ROLES = {"cloud": Role.CLOUD, "fleet": Role.FLEET, "health": Role.HEALTH}
DEFAULT_HOSTNAMES = ("localhost", "127.0.0.1", "mosquitto")
DEFAULT_DEVICE_ROOT = PurePosixPath("/data/edge-agent")  # balena's persistent volume


class ProvisionError(ValueError):
    """An operation the state does not allow, or bad input (``exit_code`` 2)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class DeviceRequest:
    site: str
    device: str
    kind: DeviceKind
    groups: tuple[str, ...] = ()
    auth: AuthMethod = AuthMethod.PASSWORD


@dataclass(frozen=True)
class BundleTarget:
    """Where to write a device's bundle, and what it needs to reach the broker and trust us."""

    out_dir: Path
    broker: BrokerAddress
    fleet_public_key: Path
    device_root: PurePosixPath = DEFAULT_DEVICE_ROOT
    base_config: Path | None = None  # a device-configs YAML giving source, model, limits


class StateDir:
    """The provisioning state: registry, CA (``pki/``) and the broker's files (``broker/``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.registry_path = root / "registry.json"
        self.lock_path = root / ".lock"
        self.pki = root / "pki"
        self.broker = root / "broker"
        self.services = root / "services"

    @property
    def ca_cert(self) -> Path:
        return self.pki / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.pki / "ca.key"

    def broker_file(self, name: str) -> Path:
        return self.broker / name

    def service_password(self, name: str) -> Path:
        if name == "health":
            return self.broker / files.HEALTH_PASSWORD_NAME
        return self.services / f"{name}.password"


class Provisioner:
    """Every operation holds the state lock and rewrites the derived broker files from the
    registry, so the password file, ACL and CRL can never drift apart from it."""

    def __init__(self, state_dir: Path, topic_root: str = "mlops") -> None:
        self.state = StateDir(state_dir)
        self.topic_root = TopicTree(topic_root).root

    # -- broker ---------------------------------------------------------------------------

    def init_broker(self, hostnames: list[str], reissue_server_cert: bool = False) -> list[str]:
        """Create the CA, the broker's certificate and the service identities (idempotent).

        Returns the names of the service identities created by this call.
        """
        with exclusive_lock(self.state.lock_path):
            registry = self._load_registry()
            if self.state.ca_cert.exists():
                ca = CertificateAuthority.load(self.state.ca_cert, self.state.ca_key)
            else:
                ca = CertificateAuthority.create()
                ca.save(self.state.ca_cert, self.state.ca_key)
                log.info("fleet CA created in %s", self.state.pki)
            atomic_write(self.state.broker_file(files.CA_NAME), ca.cert_pem(), 0o644)
            server_cert = self.state.broker_file(files.SERVER_CERT_NAME)
            if reissue_server_cert or not server_cert.exists():
                names = list(dict.fromkeys([*hostnames, *DEFAULT_HOSTNAMES]))
                issued = ca.issue_server(names)
                issued.save(
                    server_cert, self.state.broker_file(files.SERVER_KEY_NAME), key_mode=0o640
                )
                log.info("broker certificate issued for %s", ", ".join(names))
            passwd = MosquittoPasswordFile.load(self.state.broker_file(files.PASSWD_NAME))
            created = []
            for name, role in SERVICE_ROLES.items():
                record = registry.get(name)
                if record is not None and record.active and name in passwd.entries:
                    continue
                password = generate_password()
                passwd.set_password(name, password)
                atomic_write_text(self.state.service_password(name), password + "\n", 0o600)
                registry.put(IdentityRecord(username=name, role=role, auth=AuthMethod.PASSWORD))
                created.append(name)
            self._commit(registry, passwd, ca)
            return created

    # -- devices --------------------------------------------------------------------------

    def provision(
        self,
        request: DeviceRequest,
        target: BundleTarget,
        registrar: FleetRegistrar | None = None,
    ) -> IdentityRecord:
        site, device = self._check_ids(request.site, request.device)
        fleet_key = self._read_fleet_key(target.fleet_public_key)
        with exclusive_lock(self.state.lock_path):
            registry = self._load_registry()
            ca = self._load_ca()
            username = device_username(site, device)
            existing = registry.get(username)
            if existing is not None and existing.active:
                raise ProvisionError(
                    f"device {site}/{device} is already provisioned (generation "
                    f"{existing.generation}); use `device rotate` for new credentials"
                )
            record = IdentityRecord(
                username=username,
                role=Role.DEVICE,
                auth=request.auth,
                site=site,
                device=device,
                kind=request.kind,
                groups=list(request.groups),
                generation=existing.generation + 1 if existing else 1,
                revoked_serials=existing.revoked_serials if existing else [],
            )
            self._device_config(record, target)  # bad input fails before anything is sent
            if registrar is not None:
                registrar.register(record)
            passwd = MosquittoPasswordFile.load(self.state.broker_file(files.PASSWD_NAME))
            record = self._issue(record, passwd, ca, target, fleet_key)
            registry.put(record)
            self._commit(registry, passwd, ca)
            log.info("provisioned %s (%s)", username, request.auth.value)
            return record

    def rotate(self, site: str, device: str, target: BundleTarget) -> IdentityRecord:
        """New credentials for an active device; the old password or certificate stops working."""
        site, device = self._check_ids(site, device)
        fleet_key = self._read_fleet_key(target.fleet_public_key)
        with exclusive_lock(self.state.lock_path):
            registry = self._load_registry()
            record = self._active_device(registry, site, device)
            ca = self._load_ca()
            rotated = record.retire_certificate(generation=record.generation + 1, rotated=utc_now())
            passwd = MosquittoPasswordFile.load(self.state.broker_file(files.PASSWD_NAME))
            rotated = self._issue(rotated, passwd, ca, target, fleet_key)
            registry.put(rotated)
            self._commit(registry, passwd, ca)
            log.info("rotated %s to generation %s", rotated.username, rotated.generation)
            return rotated

    def revoke(
        self, site: str, device: str, registrar: FleetRegistrar | None = None
    ) -> IdentityRecord:
        """Remove the device's password, ACL entries and certificate (into the CRL)."""
        site, device = self._check_ids(site, device)
        with exclusive_lock(self.state.lock_path):
            registry = self._load_registry()
            record = self._active_device(registry, site, device)
            ca = self._load_ca()
            updated = record.retire_certificate(revoked=utc_now())
            passwd = MosquittoPasswordFile.load(self.state.broker_file(files.PASSWD_NAME))
            passwd.remove(record.username)
            registry.put(updated)
            self._commit(registry, passwd, ca)
            if registrar is not None:
                registrar.deregister(updated)
            log.info("revoked %s", updated.username)
            return updated

    def records(self) -> list[IdentityRecord]:
        with exclusive_lock(self.state.lock_path):
            return self._load_registry().all()

    # -- internals ------------------------------------------------------------------------

    def _issue(
        self,
        record: IdentityRecord,
        passwd: MosquittoPasswordFile,
        ca: CertificateAuthority,
        target: BundleTarget,
        fleet_key: bytes,
    ) -> IdentityRecord:
        """Create the secret, write the bundle, and put the password in the broker's file."""
        if record.auth is AuthMethod.PASSWORD:
            password = generate_password()
            secret = DeviceSecret(password=password)
            passwd.set_password(record.username, password)
        else:
            issued = ca.issue_client(record.username)
            secret = DeviceSecret(cert_pem=issued.cert_pem(), key_pem=issued.key_pem())
            passwd.remove(record.username)
            record = record.model_copy(update={"cert_serial": issued.serial_hex})
        config = self._device_config(record, target)
        write_bundle(target.out_dir, config, secret, ca.cert_pem(), fleet_key)
        return record

    @staticmethod
    def _device_config(record: IdentityRecord, target: BundleTarget) -> dict[str, Any]:
        """Render the device's config and validate it with the agent's own models."""
        try:
            base = load_base_config(target.base_config) if target.base_config else None
            config = render_device_config(record, target.broker, target.device_root, base)
            validate_device_config(config, str(target.out_dir / CONFIG_NAME))
        except DeviceConfigError as e:
            raise ProvisionError(str(e), exit_code=2) from e
        return config

    def _commit(
        self, registry: ProvisionRegistry, passwd: MosquittoPasswordFile, ca: CertificateAuthority
    ) -> None:
        """Write broker files first and the registry last: a crash in between leaves the
        registry describing the old state, and the next operation re-renders from it."""
        passwd.save()
        acl = render_acl(registry.all(), registry.topic_root)
        atomic_write_text(self.state.broker_file(files.ACL_NAME), acl, 0o640)
        crl = ca.crl_pem(registry.revoked_serials())
        atomic_write(self.state.broker_file(files.CRL_NAME), crl, 0o644)
        registry.save()

    def _load_registry(self) -> ProvisionRegistry:
        registry = ProvisionRegistry.load(self.state.registry_path, self.topic_root)
        if registry.topic_root != self.topic_root:
            raise RegistryError(
                f"registry {self.state.registry_path} uses topic root "
                f"{registry.topic_root!r}, not {self.topic_root!r}"
            )
        return registry

    def _load_ca(self) -> CertificateAuthority:
        if not self.state.ca_cert.exists():
            raise ProvisionError(
                f"no fleet CA in {self.state.pki}: run `cloud-trainer broker init` first"
            )
        return CertificateAuthority.load(self.state.ca_cert, self.state.ca_key)

    @staticmethod
    def _check_ids(site: str, device: str) -> tuple[str, str]:
        try:
            check_ident(site, "site id")
            check_ident(device, "device id")
        except ProtocolError as e:
            raise ProvisionError(str(e), exit_code=2) from e
        if site in RESERVED_SITES:
            raise ProvisionError(
                f"site id {site!r} is reserved (it names the releases topic)", exit_code=2
            )
        return site, device

    @staticmethod
    def _active_device(registry: ProvisionRegistry, site: str, device: str) -> IdentityRecord:
        record = registry.get(device_username(site, device))
        if record is None or record.role is not Role.DEVICE:
            raise ProvisionError(f"device {site}/{device} is not provisioned")
        if not record.active:
            raise ProvisionError(f"device {site}/{device} was revoked on {record.revoked}")
        return record

    @staticmethod
    def _read_fleet_key(path: Path) -> bytes:
        try:
            pem = path.read_bytes()
        except OSError as e:
            raise ProvisionError(
                f"cannot read the fleet public key {path}: {e.strerror}", exit_code=2
            ) from e
        try:
            load_public_key(pem)
        except ProtocolError as e:
            raise ProvisionError(
                f"{path} is not the fleet's ed25519 public key: {e}", exit_code=2
            ) from e
        return pem


__all__ = [
    "BundleTarget",
    "CertificateError",
    "DeviceRequest",
    "ProvisionError",
    "Provisioner",
    "StateDir",
]
