"""``edge-agent validate-config [--check-files] FILE...``: 0 valid, 2 invalid, 1 cannot run here."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edge_agent.config.extras import missing_extras
from edge_agent.config.loader import ConfigError, load_config
from edge_agent.config.reference import config_reference


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate-config", help="check device YAML files against the config models"
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument(
        "--check-files",
        action="store_true",
        help="also check that the files the config names exist (model, CSV, video, keys, "
        "CA); run it on the device, where the paths are real",
    )
    parser.set_defaults(func=validate_config)
    reference = subparsers.add_parser(
        "config-reference", help="print the device config reference (Markdown)"
    )
    reference.set_defaults(func=print_reference)


def print_reference(args: argparse.Namespace) -> int:
    print(config_reference())  # noqa: T201 - CLI output
    return 0


def validate_config(args: argparse.Namespace) -> int:
    """2 when a file is invalid; 1 when, with --check-files, this install cannot run one."""
    bad = unrunnable = 0
    files = (
        "files checked"
        if args.check_files
        else "files not checked; run with --check-files or `edge-agent doctor`"
    )
    for path in args.files:
        try:
            config = load_config(path, check_files=args.check_files)
        except ConfigError as e:
            bad += 1
            for issue in e.issues:
                print(issue)  # noqa: T201 - CLI output
            continue
        who = f"{config.kind.value} {config.site}/{config.device_id}"
        print(f"{path}: ok ({who}); {files}")  # noqa: T201 - CLI output
        # On the device (--check-files) a missing extra fails; elsewhere it is only said.
        missing = missing_extras(config)
        if missing and args.check_files:
            unrunnable += 1
        for line in missing:
            print(f"{path}: {'' if args.check_files else 'note: '}{line}")  # noqa: T201
    return 2 if bad else 1 if unrunnable else 0
