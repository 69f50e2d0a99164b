"""``edge-agent validate-config FILE...``: 0 when every file is valid, 2 when any is not."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edge_agent.config.loader import ConfigError, load_config


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate-config", help="check device YAML files against the config models"
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.set_defaults(func=validate_config)


def validate_config(args: argparse.Namespace) -> int:
    bad = 0
    for path in args.files:
        try:
            config = load_config(path)
        except ConfigError as e:
            bad += 1
            for issue in e.issues:
                print(issue)  # noqa: T201 - CLI output
            continue
        print(f"{path}: ok ({config.kind.value} {config.site}/{config.device_id})")  # noqa: T201
    return 2 if bad else 0
