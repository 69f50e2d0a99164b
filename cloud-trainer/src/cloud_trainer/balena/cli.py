"""``cloud-trainer balena ...``: balena-cli flows for the device fleet, each with ``--dry-run``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from cloud_trainer.balena import commands as cmd
from cloud_trainer.balena.commands import BalenaArgumentError, BalenaCommand
from cloud_trainer.balena.runner import run_commands
from cloud_trainer.errors import UserError

WIFI_KEY_ENV = "BALENA_WIFI_KEY"
DEFAULT_SOURCE = Path("docker/balena")


def register(subparsers: Any) -> None:
    balena = subparsers.add_parser("balena", help="balena-cli flows for the device fleet")
    verbs = balena.add_subparsers(dest="verb", required=True, metavar="VERB")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dry-run", action="store_true", help="print the balena-cli command")

    p = verbs.add_parser("fleet-create", parents=[common], help="create the fleet")
    p.add_argument("name")
    p.add_argument("--type", required=True, dest="device_type", help="e.g. raspberrypi4-64")
    p.add_argument("--organization")
    p.set_defaults(func=_wrap(lambda a: [cmd.fleet_create(a.name, a.device_type, a.organization)]))

    p = verbs.add_parser("env-set", parents=[common], help="set a variable, or a device bundle")
    p.add_argument("name", nargs="?")
    p.add_argument("value", nargs="?")
    p.add_argument("--fleet")
    p.add_argument("--device", help="device UUID")
    p.add_argument("--service", help="limit the variable to one service")
    p.add_argument("--bundle", type=Path, help="set a provisioned bundle's files as variables")
    p.set_defaults(func=_wrap(_env_commands))

    p = verbs.add_parser("os-configure", parents=[common], help="configure a balenaOS image")
    p.add_argument("image", type=Path)
    p.add_argument("--fleet", required=True)
    p.add_argument("--version", required=True, help="balenaOS version, e.g. 6.0.13")
    p.add_argument("--bundle", type=Path, help="name the device after a provisioned bundle")
    p.add_argument("--device-type")
    p.add_argument("--network", choices=["ethernet", "wifi"], default="ethernet")
    p.add_argument("--wifi-ssid")
    p.set_defaults(func=_wrap(_os_configure))

    p = verbs.add_parser("local-flash", parents=[common], help="write an image to a drive")
    p.add_argument("image", type=Path)
    p.add_argument("--drive", required=True, help="e.g. /dev/sdb")
    p.add_argument("--yes", action="store_true", help="no confirmation prompt")
    p.set_defaults(func=_wrap(lambda a: [cmd.local_flash(a.image, a.drive, a.yes)]))

    p = verbs.add_parser("push", parents=[common], help="build and release the fleet's services")
    p.add_argument("fleet")
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    p.add_argument("--release-tag", nargs=2, action="append", metavar=("KEY", "VALUE"))
    p.add_argument("--note")
    p.add_argument("--draft", action="store_true")
    p.set_defaults(func=_wrap(_push))

    p = verbs.add_parser("tag", parents=[common], help="set a tag on the fleet or a device")
    p.add_argument("key")
    p.add_argument("value")
    p.add_argument("--fleet")
    p.add_argument("--device", help="device UUID")
    p.set_defaults(func=_wrap(lambda a: [cmd.tag_set(a.key, a.value, a.fleet, a.device)]))


def _wrap(build: Callable[[argparse.Namespace], list[BalenaCommand]]) -> Callable[..., int]:
    def run(args: argparse.Namespace) -> int:
        try:
            commands = build(args)
        except BalenaArgumentError as e:
            raise UserError(str(e), exit_code=2) from e
        return run_commands(commands, args.dry_run, sys.stdout)

    return run


def _env_commands(args: argparse.Namespace) -> list[BalenaCommand]:
    if args.bundle is not None:
        if args.name is not None or args.device is None:
            raise BalenaArgumentError("--bundle takes no NAME VALUE and needs --device UUID")
        return cmd.env_from_bundle(args.bundle, args.device, args.service or "edge-agent")
    if args.name is None or args.value is None:
        raise BalenaArgumentError("give NAME VALUE, or --bundle DIR --device UUID")
    return [cmd.env_set(args.name, args.value, args.fleet, args.device, args.service)]


def _os_configure(args: argparse.Namespace) -> list[BalenaCommand]:
    name = None
    if args.bundle is not None:
        env = cmd.bundle_environment(args.bundle)
        config = env["EDGE_CONFIG_YAML"]
        site, device = _site_device(config)
        name = f"{site}-{device}"
    return [
        cmd.os_configure(
            args.image,
            args.fleet,
            args.version,
            device_name=name,
            device_type=args.device_type,
            network=args.network,
            wifi_ssid=args.wifi_ssid,
            wifi_key=os.environ.get(WIFI_KEY_ENV),
        )
    ]


def _site_device(config_text: str) -> tuple[str, str]:
    config = yaml.safe_load(config_text)
    return str(config["site"]), str(config["device_id"])


def _push(args: argparse.Namespace) -> list[BalenaCommand]:
    if not (args.source / "docker-compose.yml").is_file():
        raise BalenaArgumentError(f"{args.source} has no docker-compose.yml")
    tags = dict(args.release_tag or [])
    return [cmd.push(args.fleet, args.source, tags, args.note, args.draft)]
