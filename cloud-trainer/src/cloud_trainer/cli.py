"""``cloud-trainer``: one sub-command per job; exit codes 0 ok, 1 error, 2 bad input."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from cloud_trainer import __version__
from cloud_trainer.errors import UserError

log = logging.getLogger(__name__)

# Each module exposes ``register(subparsers)``, adding its verbs with ``func`` set to a
# callable ``(args) -> int``. Imported lazily so ``--help`` stays fast without TensorFlow.
COMMAND_MODULES = [
    "cloud_trainer.demo",
    "cloud_trainer.fleet.cli",
    "cloud_trainer.provision.cli",
    "cloud_trainer.balena.cli",
    "cloud_trainer.release.cli",
    "cloud_trainer.weather.cli",
    "cloud_trainer.catdog.cli",
    "cloud_trainer.governance.cli",
]


def host_port(value: str) -> tuple[str, int]:
    """An argparse type for ``HOST:PORT`` options (brokers, servers)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloud-trainer", description=__doc__)
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
    except UserError as e:
        if args.verbose:
            log.exception("failed")
        print(f"error: {e}", file=sys.stderr)  # noqa: T201 - the CLI's user-facing line
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
