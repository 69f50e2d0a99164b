"""``cloud-trainer fleet serve``: run one fleet service instance."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cloud_trainer.errors import UserError
from cloud_trainer.fleet.policy import PolicyConfigError
from cloud_trainer.fleet.settings import FleetSettings, new_token, parse_tokens
from cloud_trainer.fleet.store import StoreError
from edge_agent.comms.mqtt import LinkError
from edge_agent.protocol import ProtocolError


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def register(subparsers: Any) -> None:
    fleet = subparsers.add_parser("fleet", help="the fleet service (store, MQTT, HTTP API)")
    verbs = fleet.add_subparsers(dest="fleet_command", required=True, metavar="VERB")
    serve = verbs.add_parser("serve", help="consume device messages and serve the HTTP API")
    serve.add_argument("--db", default="sqlite:///fleet.db", help="sqlite:///… or postgresql://…")
    serve.add_argument("--broker", type=_host_port, default=("127.0.0.1", 1883), metavar="H:P")
    serve.add_argument("--host", default="127.0.0.1", help="HTTP bind address")
    serve.add_argument("--port", type=int, default=8080, help="HTTP port")
    serve.add_argument("--root", default="mlops", help="MQTT topic root")
    serve.add_argument(
        "--instances-group",
        default="fleet",
        help="shared-subscription group; instances in one group split the load",
    )
    serve.add_argument("--samples-dir", type=Path, default=Path("fleet-samples"))
    serve.add_argument("--policy", type=Path, help="policy rules (YAML)")
    serve.add_argument(
        "--release-key", type=Path, action="append", default=[], help="trusted public key (PEM)"
    )
    serve.add_argument(
        "--release-signing-key", type=Path, help="private key (PEM) for promote/rollback"
    )
    serve.add_argument(
        "--tokens-file",
        type=Path,
        help="name=token lines for the API (else $FLEET_API_TOKENS, else one is generated)",
    )
    serve.set_defaults(func=serve_command)


def _tokens(args: argparse.Namespace) -> tuple[dict[str, Any], str | None]:
    try:
        if args.tokens_file is not None:
            return parse_tokens(args.tokens_file.read_text(encoding="utf-8")), None
        if os.environ.get("FLEET_API_TOKENS"):
            return parse_tokens(os.environ["FLEET_API_TOKENS"]), None
    except OSError as e:
        raise UserError(f"cannot read tokens file: {e}", exit_code=2) from e
    except ValueError as e:
        raise UserError(str(e), exit_code=2) from e
    generated = new_token()
    return parse_tokens(f"operator={generated}"), generated


def serve_command(args: argparse.Namespace) -> int:
    from cloud_trainer.fleet.service import FleetService

    tokens, generated = _tokens(args)
    try:
        settings = FleetSettings(
            database_url=args.db,
            broker_host=args.broker[0],
            broker_port=args.broker[1],
            root=args.root,
            group=args.instances_group,
            http_host=args.host,
            http_port=args.port,
            api_tokens=tokens,
            samples_dir=args.samples_dir,
            policy_file=args.policy,
            release_public_keys=args.release_key,
            release_signing_key=args.release_signing_key,
        )
        service = FleetService(settings)
    except (ValidationError, ProtocolError, PolicyConfigError) as e:
        raise UserError(f"invalid fleet settings: {e}", exit_code=2) from e
    except StoreError as e:
        raise UserError(str(e)) from e
    try:
        service.start()
    except LinkError as e:
        service.stop()
        raise UserError(f"{e} (start Mosquitto or pass --broker HOST:PORT)") from e
    print(f"fleet service at {service.base_url} (database: {service.store.backend})")  # noqa: T201
    if generated is not None:
        print(f"API token for 'operator' (this run only): {generated}")  # noqa: T201
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.is_set() and service.serving:
            stop.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()
    sys.stdout.flush()
    return 0
