"""``cloud-trainer device ...`` and ``cloud-trainer broker ...``: broker identities."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path, PurePosixPath
from typing import Any

from cloud_trainer.errors import UserError
from cloud_trainer.provision.atomic_files import FileWriteError
from cloud_trainer.provision.broker_config import BrokerLayout, render_mosquitto_conf
from cloud_trainer.provision.bundle import BrokerAddress
from cloud_trainer.provision.fleet_registration import FleetRegistrar, FleetRegistrationError
from cloud_trainer.provision.mosquitto_passwd import PasswordFileError
from cloud_trainer.provision.provisioner import (
    BundleTarget,
    DeviceRequest,
    Provisioner,
    ProvisionError,
)
from cloud_trainer.provision.registry import AuthMethod, DeviceKind, RegistryError
from cloud_trainer.provision.tls import CertificateError

STATE_ENV = "EDGE_MLOPS_PROVISION_DIR"
FLEET_URL_ENV = "EDGE_MLOPS_FLEET_URL"
FLEET_TOKEN_ENV = "EDGE_MLOPS_FLEET_TOKEN"  # noqa: S105 - the variable's name, not a secret


def register(subparsers: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get(STATE_ENV, "var/provision")),
        help=f"provisioning state: registry, CA, broker files (default ${STATE_ENV} "
        "or ./var/provision)",
    )
    common.add_argument("--topic-root", default="mlops", help="MQTT topic root (default mlops)")

    device = subparsers.add_parser("device", help="provision, rotate, revoke and list devices")
    verbs = device.add_subparsers(dest="verb", required=True, metavar="VERB")

    bundle = argparse.ArgumentParser(add_help=False)
    bundle.add_argument("--out", type=Path, required=True, help="folder for the device bundle")
    bundle.add_argument("--broker-host", default="localhost", help="broker name devices use")
    bundle.add_argument("--broker-port", type=int, default=8883, help="TLS port (passwords)")
    bundle.add_argument("--mtls-port", type=int, default=8884, help="TLS port (certificates)")
    bundle.add_argument(
        "--fleet-public-key",
        type=Path,
        help="PEM of the fleet's release key (default STATE_DIR/fleet-public.pem)",
    )
    bundle.add_argument(
        "--device-root",
        default="/data/edge-agent",
        help="where the bundle lives on the device; paths in the config point there",
    )
    bundle.add_argument(
        "--base-config",
        type=Path,
        help="device-configs YAML for source, model, limits (default: a minimal one by kind)",
    )
    fleet = argparse.ArgumentParser(add_help=False)
    fleet.add_argument(
        "--fleet-url",
        default=os.environ.get(FLEET_URL_ENV),
        help=f"fleet service to register with (default ${FLEET_URL_ENV}; token in "
        f"${FLEET_TOKEN_ENV})",
    )
    ident = argparse.ArgumentParser(add_help=False)
    ident.add_argument("--site", required=True, help="site id, e.g. lisbon-01")
    ident.add_argument("--device", required=True, help="device id, unique within the site")

    p = verbs.add_parser("provision", parents=[common, ident, bundle, fleet], help="new device")
    p.add_argument("--kind", required=True, choices=[k.value for k in DeviceKind])
    p.add_argument("--groups", nargs="*", default=[], help="rollout groups, e.g. canary")
    p.add_argument(
        "--auth",
        choices=[a.value for a in AuthMethod],
        default=AuthMethod.PASSWORD.value,
        help="username + password over TLS, or a client certificate (mTLS)",
    )
    p.set_defaults(func=run_provision)

    p = verbs.add_parser("rotate", parents=[common, ident, bundle], help="new credentials")
    p.set_defaults(func=run_rotate)

    p = verbs.add_parser("revoke", parents=[common, ident, fleet], help="remove credentials")
    p.set_defaults(func=run_revoke)

    p = verbs.add_parser("list", parents=[common], help="provisioned identities")
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    p.set_defaults(func=run_list)

    broker = subparsers.add_parser("broker", help="the secured broker's CA, certificates, config")
    bverbs = broker.add_subparsers(dest="verb", required=True, metavar="VERB")
    p = bverbs.add_parser("init", parents=[common], help="CA, server cert, service identities")
    p.add_argument(
        "--hostname",
        action="append",
        default=[],
        help="name or IP devices use for the broker (repeatable; localhost is always added)",
    )
    p.add_argument("--reissue-server-cert", action="store_true", help="replace the server cert")
    p.set_defaults(func=run_broker_init)
    p = bverbs.add_parser("conf", help="print mosquitto.conf for a secrets folder")
    p.add_argument("--secrets-dir", default="/mosquitto/secrets")
    p.add_argument("--data-dir", default="/mosquitto/data")
    p.add_argument("--tls-port", type=int, default=8883)
    p.add_argument("--mtls-port", type=int, default=8884)
    p.set_defaults(func=run_broker_conf)


def _provisioner(args: argparse.Namespace) -> Provisioner:
    try:
        return Provisioner(args.state_dir, args.topic_root)
    except ValueError as e:
        raise UserError(str(e), exit_code=2) from e


def _target(args: argparse.Namespace) -> BundleTarget:
    key = args.fleet_public_key or args.state_dir / "fleet-public.pem"
    return BundleTarget(
        out_dir=args.out,
        broker=BrokerAddress(args.broker_host, args.broker_port, args.mtls_port, args.topic_root),
        fleet_public_key=key,
        device_root=PurePosixPath(args.device_root),
        base_config=args.base_config,
    )


def _registrar(args: argparse.Namespace) -> FleetRegistrar | None:
    if not args.fleet_url:
        return None
    try:
        return FleetRegistrar(args.fleet_url, os.environ.get(FLEET_TOKEN_ENV))
    except FleetRegistrationError as e:
        raise UserError(str(e), exit_code=2) from e


def _guarded(action: Any) -> Any:
    """Run ``action`` turning every expected failure into one user-facing line."""
    try:
        return action()
    except ProvisionError as e:
        raise UserError(str(e), e.exit_code) from e
    except (RegistryError, PasswordFileError, CertificateError) as e:
        raise UserError(str(e), exit_code=2) from e
    except (FleetRegistrationError, FileWriteError) as e:
        raise UserError(str(e), exit_code=1) from e


def run_provision(args: argparse.Namespace) -> int:
    request = DeviceRequest(
        site=args.site,
        device=args.device,
        kind=DeviceKind(args.kind),
        groups=tuple(args.groups),
        auth=AuthMethod(args.auth),
    )
    prov = _provisioner(args)
    record = _guarded(lambda: prov.provision(request, _target(args), _registrar(args)))
    print(f"provisioned {record.username} ({record.auth.value}); bundle in {args.out}")  # noqa: T201
    return 0


def run_rotate(args: argparse.Namespace) -> int:
    prov = _provisioner(args)
    record = _guarded(lambda: prov.rotate(args.site, args.device, _target(args)))
    print(f"rotated {record.username} to generation {record.generation}; bundle in {args.out}")  # noqa: T201
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    prov = _provisioner(args)
    record = _guarded(lambda: prov.revoke(args.site, args.device, _registrar(args)))
    print(f"revoked {record.username}; reload the broker (SIGHUP) to apply")  # noqa: T201
    return 0


def run_list(args: argparse.Namespace) -> int:
    records = _guarded(lambda: _provisioner(args).records())
    if args.json:
        for record in records:
            print(record.model_dump_json())  # noqa: T201
        return 0
    out = sys.stdout
    out.write(f"{'username':<40} {'role':<7} {'auth':<12} {'kind':<8} {'gen':>3}  status\n")
    for r in records:
        status = f"revoked {r.revoked:%Y-%m-%d}" if r.revoked else "active"
        kind = r.kind.value if r.kind else "-"
        line = f"{r.username:<40} {r.role.value:<7} {r.auth.value:<12} {kind:<8} "
        out.write(f"{line}{r.generation:>3}  {status}\n")
    return 0


def run_broker_init(args: argparse.Namespace) -> int:
    prov = _provisioner(args)
    created = _guarded(lambda: prov.init_broker(args.hostname, args.reissue_server_cert))
    made = ", ".join(created) if created else "none (all present)"
    print(f"broker files in {prov.state.broker}; new service identities: {made}")  # noqa: T201
    return 0


def run_broker_conf(args: argparse.Namespace) -> int:
    layout = BrokerLayout(args.secrets_dir, args.data_dir, args.tls_port, args.mtls_port)
    sys.stdout.write(render_mosquitto_conf(layout))
    return 0
