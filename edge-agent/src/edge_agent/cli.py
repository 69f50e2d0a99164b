"""``edge-agent``: one sub-command per job; exit codes 0 ok, 1 error, 2 bad config or usage."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from edge_agent import __version__

log = logging.getLogger(__name__)

# Each module exposes ``register(subparsers)``, adding its verbs with ``func`` set to a
# callable ``(args) -> int``.
COMMAND_MODULES: list[str] = ["edge_agent.config.cli", "edge_agent.runtime.cli"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs and tracebacks")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
