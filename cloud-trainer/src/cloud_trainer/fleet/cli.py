"""``cloud-trainer fleet serve``: run one fleet service instance."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cloud_trainer.cli import host_port
from cloud_trainer.errors import UserError
from cloud_trainer.fleet.consumer.jetstream import JetStreamError
from cloud_trainer.fleet.policy import PolicyConfigError
from cloud_trainer.fleet.settings import FleetSettings, new_token, parse_tokens
from cloud_trainer.fleet.store import StoreError
from edge_agent.comms.mqtt import LinkError
from edge_agent.protocol import ProtocolError


def register(subparsers: Any) -> None:
    fleet = subparsers.add_parser("fleet", help="the fleet service (store, MQTT, HTTP API)")
    verbs = fleet.add_subparsers(dest="fleet_command", required=True, metavar="VERB")
    serve = verbs.add_parser("serve", help="consume device messages and serve the HTTP API")
    serve.add_argument(
        "--config",
        type=Path,
        help="YAML file of fleet settings (keys as in docs/fleet-service.md); flags override it",
    )
    serve.add_argument("--db", help="sqlite:///… or postgresql://… (default sqlite:///fleet.db)")
    serve.add_argument(
        "--broker",
        type=host_ports,
        metavar="H:P[,H:P...]",
        help="default 127.0.0.1:1883; several: the nodes of one clustered broker, first first",
    )
    serve.add_argument("--host", help="HTTP bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default 8080)")
    serve.add_argument("--root", help="MQTT topic root (default mlops)")
    serve.add_argument(
        "--instances-group",
        help="shared-subscription group; instances in one group split the load (default fleet)",
    )
    serve.add_argument(
        "--instance",
        help="this instance's name: its broker session survives restarts (default a)",
    )
    serve.add_argument(
        "--subscription",
        choices=("plain", "shared"),
        help="plain: one instance, nothing lost across restarts (default); shared: $share group",
    )
    serve.add_argument(
        "--source",
        choices=("mqtt", "jetstream"),
        help="where device messages come from: mqtt (default) or a JetStream stream (--nats)",
    )
    serve.add_argument(
        "--nats",
        type=_nats_urls,
        metavar="URLS",
        help="comma-separated nats://host:port of the cluster's nodes (--source jetstream)",
    )
    serve.add_argument("--samples-dir", type=Path)
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
    serve.add_argument(
        "--viewer-tokens-file",
        type=Path,
        help="name=token lines for read-only API tokens (else $FLEET_VIEWER_TOKENS, else none)",
    )
    serve.set_defaults(func=serve_command)


def _nats_urls(text: str) -> list[str]:
    urls = [u.strip() for u in text.split(",") if u.strip()]
    if not urls:
        raise argparse.ArgumentTypeError("give at least one nats://host:port")
    for url in urls:
        if not url.startswith("nats://"):
            raise argparse.ArgumentTypeError(f"{url!r} is not a nats://host:port URL")
    return urls


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


def _viewer_tokens(args: argparse.Namespace) -> dict[str, Any]:
    try:
        if args.viewer_tokens_file is not None:
            return parse_tokens(args.viewer_tokens_file.read_text(encoding="utf-8"))
        return parse_tokens(os.environ.get("FLEET_VIEWER_TOKENS", ""))
    except OSError as e:
        raise UserError(f"cannot read viewer tokens file: {e}", exit_code=2) from e
    except ValueError as e:
        raise UserError(f"viewer tokens: {e}", exit_code=2) from e


def _config_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"cannot read fleet config {path}: {e}", exit_code=2) from e
    if not isinstance(data, dict):
        raise UserError(f"fleet config {path} must be a mapping of settings", exit_code=2)
    for key, where in (
        ("api_tokens", "--tokens-file or FLEET_API_TOKENS"),
        ("viewer_tokens", "--viewer-tokens-file or FLEET_VIEWER_TOKENS"),
    ):
        if key in data:
            raise UserError(f"{path}: {key} do not belong in the config; use {where}", exit_code=2)
    return data


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    """Only the flags given on the command line, so they override the config file."""
    given: dict[str, Any] = {
        "database_url": args.db,
        "root": args.root,
        "group": args.instances_group,
        "instance": args.instance,
        "subscription": args.subscription,
        "source": args.source,
        "nats_urls": args.nats,
        "http_host": args.host,
        "http_port": args.port,
        "samples_dir": args.samples_dir,
        "policy_file": args.policy,
        "release_signing_key": args.release_signing_key,
        "release_public_keys": args.release_key or None,
    }
    if args.broker is not None:
        (given["broker_host"], given["broker_port"]), *more = args.broker
        if more:
            given["broker_endpoints"] = [f"{h}:{p}" for h, p in more]
    return {k: v for k, v in given.items() if v is not None}


def host_ports(value: str) -> list[tuple[str, int]]:
    """``HOST:PORT[,HOST:PORT...]``: the nodes of one broker, the first one first."""
    parts = [p.strip() for p in value.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"expected HOST:PORT[,HOST:PORT...], got {value!r}")
    return [host_port(p) for p in parts]


def serve_command(args: argparse.Namespace) -> int:
    from cloud_trainer.fleet.service import FleetService

    tokens, generated = _tokens(args)
    viewers = _viewer_tokens(args)
    try:
        settings = FleetSettings(
            **{
                **_config_file(args.config),
                **_flags(args),
                "api_tokens": tokens,
                "viewer_tokens": viewers,
            }
        )
        service = FleetService(settings)
    except (ValidationError, ProtocolError, PolicyConfigError, ValueError) as e:
        raise UserError(f"invalid fleet settings: {e}", exit_code=2) from e
    except StoreError as e:
        raise UserError(str(e)) from e
    try:
        service.start()
    except LinkError as e:
        service.stop()
        raise UserError(f"{e} (start Mosquitto or pass --broker HOST:PORT)") from e
    except JetStreamError as e:
        service.stop()
        raise UserError(f"{e} (check --nats)") from e
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
