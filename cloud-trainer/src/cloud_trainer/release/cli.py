"""``cloud-trainer release …``: keygen, publish, status, rollback, pin, serve, rollout."""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from cloud_trainer.errors import UserError
from cloud_trainer.release.artefacts import ArtefactServer, ArtefactStore
from cloud_trainer.release.audience import (
    Audience,
    AudienceError,
    audience,
    describe_rule,
    resolve_percent,
    version_key,
)
from cloud_trainer.release.fleet_client import FleetClient, FleetUnavailable
from cloud_trainer.release.publisher import (
    ReleaseChannel,
    ReleaseError,
    ReleaseTarget,
    prepare_release,
    read_metadata,
    read_spec,
    record_in_registry,
    retarget,
)
from cloud_trainer.release.restore import Restore, RestoreSource, from_fleet
from cloud_trainer.release.rollout import RolloutController, RolloutPolicy, parse_waves
from edge_agent.comms.mqtt import BrokerEndpoint, LinkError, MqttLink
from edge_agent.protocol import (
    Channel,
    Command,
    ProtocolError,
    ReleaseManifest,
    Rollout,
    SigningKey,
    TopicTree,
    UpdateEvent,
    encode,
    safe_decode,
    utc_now,
)
from edge_agent.protocol.bundle import STRICT_AGENT, required_agent

log = logging.getLogger(__name__)

PRIVATE_KEY = "fleet-release.key"
PUBLIC_KEY = "fleet-release.pub"


def register(subparsers: Any) -> None:
    release = subparsers.add_parser("release", help="signed model releases to devices")
    verbs = release.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("keygen", help="write the fleet release key pair")
    p.add_argument("--out", type=Path, required=True, help="folder for the key files")
    p.add_argument("--force", action="store_true", help="replace existing keys")
    p.set_defaults(func=cmd_keygen)

    p = verbs.add_parser("publish", help="sign and publish a model version")
    _common(p)
    _model_ref(p)
    _target(p)
    _fleet(p)
    p.add_argument(
        "--dry-run", action="store_true", help="show the audience; store and publish nothing"
    )
    p.set_defaults(func=cmd_publish)

    p = verbs.add_parser("rollout", help="publish in waves, widen while healthy, else roll back")
    _common(p)
    _model_ref(p)
    _target(p, waves=True)
    _fleet(p)
    p.add_argument("--waves", default="10,50,100", help="increasing percentages (10,50,100)")
    p.add_argument("--max-failure-rate", type=float, default=0.2)
    p.add_argument("--min-outcomes", type=int, default=1, help="outcomes before judging a wave")
    p.add_argument("--soak-s", type=float, default=60.0, help="seconds a healthy wave soaks")
    p.add_argument("--wave-timeout-s", type=float, default=3600.0)
    p.set_defaults(func=cmd_rollout)

    p = verbs.add_parser("status", help="show the current release, its rollout and outcomes")
    _broker(p)
    _fleet(p)
    p.add_argument("--model", required=True)
    p.add_argument("--watch-s", type=float, default=0.0, help="collect update events this long")
    p.add_argument("--history", type=int, default=5, help="earlier releases to show (fleet)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_status)

    p = verbs.add_parser("rollback", help="re-release an earlier version (downgrade allowed)")
    _common(p)
    p.add_argument("--model", required=True)
    p.add_argument("--to-version", type=int, help="version to restore (default: registry's)")
    p.add_argument("--file", type=Path, help="ONNX file of that version (default: registry)")
    p.add_argument("--channel", default="stable")
    p.set_defaults(func=cmd_rollback)

    p = verbs.add_parser("pin", help="pin devices to a stored version (or unpin them)")
    _broker(p)
    p.add_argument("--site", required=True)
    p.add_argument("--devices", nargs="+", required=True)
    p.add_argument("--version", type=int, help="version to pin (default: the active one)")
    p.add_argument("--unpin", action="store_true")
    p.set_defaults(func=cmd_pin)

    p = verbs.add_parser("serve", help="serve artefacts over HTTP (Range, ETag)")
    p.add_argument("--artefacts", type=Path, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8700)
    p.add_argument("--rate", type=float, help="bytes per second per download")
    p.set_defaults(func=cmd_serve)


def _broker(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", default="127.0.0.1:1883", help="HOST:PORT of the broker")
    p.add_argument("--root", default="mlops", help="topic root")
    p.add_argument("--username")
    p.add_argument("--password")


def _common(p: argparse.ArgumentParser) -> None:
    _broker(p)
    p.add_argument("--key", type=Path, required=True, help="fleet release private key (PEM)")
    p.add_argument("--publisher", default="cloud", help="identity named in the manifest")
    p.add_argument("--artefacts", type=Path, required=True, help="artefact server's folder")
    p.add_argument("--base-url", required=True, help="URL devices reach the artefact server at")
    p.add_argument("--tracking-uri", help="MLflow tracking/registry URI (default: MLflow's)")


def _model_ref(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True)
    ref = p.add_mutually_exclusive_group(required=True)
    ref.add_argument("--version", type=int)
    ref.add_argument("--alias")
    ref.add_argument("--file", type=Path, help="a local ONNX file (needs --file-version)")
    p.add_argument("--file-version", type=int, help="version number of --file")


def _target(p: argparse.ArgumentParser, *, waves: bool = False) -> None:
    p.add_argument("--channel", default="stable")
    if not waves:
        p.add_argument(
            "--percent",
            type=float,
            help="share of the devices outside --groups/--devices (0-100); default 0 when "
            "groups or devices are named, and required when none are",
        )
    p.add_argument("--groups", nargs="*", default=[], help="groups that take the release")
    p.add_argument("--devices", nargs="*", default=[], help="devices that take the release")
    p.add_argument("--allow-downgrade", action="store_true")


def _fleet(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--fleet-url",
        help="fleet service (http://HOST:PORT): exact audience, rollout history, and the "
        "last committed release to restore",
    )


# -- helpers -----------------------------------------------------------------------------


def _say(text: str) -> None:
    print(text)  # noqa: T201 - the CLI's output to the operator


def _connect(args: argparse.Namespace) -> MqttLink:
    host, _, port = str(args.broker).rpartition(":")
    try:
        endpoint = BrokerEndpoint(host or "127.0.0.1", int(port), args.username, args.password)
    except ValueError as e:
        raise UserError(f"--broker must be HOST:PORT, got {args.broker!r}", 2) from e
    link = MqttLink(endpoint, client_id=f"release-{int(time.time() * 1000) % 10**9}")
    try:
        link.start()
    except LinkError as e:
        raise UserError(str(e)) from e
    return link


def _tree(args: argparse.Namespace) -> TopicTree:
    try:
        return TopicTree(args.root)
    except ProtocolError as e:
        raise UserError(str(e), 2) from e


def _key(path: Path) -> SigningKey:
    try:
        return SigningKey.load(path)
    except ProtocolError as e:
        raise UserError(str(e), 2) from e


def _resolve(args: argparse.Namespace) -> tuple[int, Path]:
    if args.file is not None:
        if args.file_version is None:
            raise UserError("--file needs --file-version", 2)
        return int(args.file_version), Path(args.file)
    from cloud_trainer.registry import RegistryError, resolve_model

    if args.tracking_uri:
        import mlflow

        mlflow.set_tracking_uri(args.tracking_uri)
        mlflow.set_registry_uri(args.tracking_uri)
    ref = (
        f"models:/{args.model}/{args.version}"
        if args.version
        else f"models:/{args.model}@{args.alias}"
    )
    try:
        resolved = resolve_model(ref)
    except RegistryError as e:
        raise UserError(str(e)) from e
    assert resolved.version is not None
    return resolved.version, resolved.path


def _target_of(args: argparse.Namespace) -> ReleaseTarget:
    """The audience asked for; a release with groups alone reaches those groups only."""
    percent = getattr(args, "percent", 0.0)  # a rollout's waves carry its percentages
    try:
        if "percent" in args:
            percent = resolve_percent(args.percent, args.groups, args.devices)
    except AudienceError as e:
        raise UserError(str(e), 2) from e
    return ReleaseTarget(
        channel=args.channel,
        percent=percent,
        groups=tuple(args.groups),
        devices=tuple(args.devices),
        allow_downgrade=args.allow_downgrade,
    )


def _prepare(
    args: argparse.Namespace,
    target: ReleaseTarget | None = None,
    resolved: tuple[int, Path] | None = None,
) -> Any:
    version, path = resolved or _resolve(args)
    try:
        return prepare_release(
            ArtefactStore(args.artefacts),
            args.base_url,
            model=args.model,
            version=version,
            path=path,
            target=target or _target_of(args),
            publisher=args.publisher,
        )
    except (ReleaseError, ValueError) as e:
        raise UserError(str(e)) from e


def _needs_agent(path: Path, model: str) -> str:
    """The oldest agent version that reads the model's spec (checking the file's model)."""
    try:
        spec = read_spec(path)
        metadata = read_metadata(path)
    except ReleaseError as e:
        raise UserError(str(e)) from e
    if spec.name != model:
        raise UserError(f"the file holds model {spec.name!r}, not {model!r}")
    return required_agent(metadata)


def _readable_only(target: ReleaseTarget, seen: Audience) -> tuple[ReleaseTarget, list[str]]:
    """Narrow the release to the reached devices whose agent can read the model."""
    if seen.reached is None:
        if (version_key(seen.needs_agent) or ()) > (version_key(STRICT_AGENT) or ()):
            return target, [
                f"note: this model needs agent {seen.needs_agent} or newer; devices on older "
                "agents will fail it (give --fleet-url to stage it only to those that can)"
            ]
        return target, []
    if not seen.too_old:
        return target, []
    readers = seen.readers
    if not readers:
        raise UserError(
            f"none of the {len(seen.reached)} device(s) in the audience runs an agent that "
            f"reads this model (it needs {seen.needs_agent}); upgrade the agents first"
        )
    narrowed = ReleaseTarget(
        channel=target.channel,
        percent=0.0,
        devices=readers,
        wave=target.wave,
        allow_downgrade=target.allow_downgrade,
    )
    return narrowed, [f"staged only to the {len(readers)} device(s) that can read it"]


def _record(manifest: Any, args: argparse.Namespace) -> None:
    if args.file is not None:
        return
    try:
        record_in_registry(manifest)
    except ReleaseError as e:
        log.warning("%s", e)


# -- verbs -------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    private, public = args.out / PRIVATE_KEY, args.out / PUBLIC_KEY
    if private.exists() and not args.force:
        raise UserError(f"{private} exists; pass --force to replace it", 2)
    key = SigningKey.generate()
    key.save(private, public)
    _say(f"key id {key.key_id}\nprivate {private} (keep on the release host)\npublic  {public}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    key = _key(args.key)
    target = _target_of(args)
    version, path = _resolve(args)
    seen = audience(args.model, target.rollout(), args.fleet_url, _needs_agent(path, args.model))
    target, notes = _readable_only(target, seen)
    if args.dry_run:
        _say(f"dry run: {args.model} v{version} would go to")
        for line in seen.lines() + notes:
            _say(line)
        return 0
    manifest = _prepare(args, target, (version, path))
    link = _connect(args)
    try:
        signed = ReleaseChannel(link, _tree(args), key).publish(manifest)
    except ReleaseError as e:
        raise UserError(str(e)) from e
    finally:
        link.stop()
    _record(signed, args)
    _say(f"published {signed.release_id}: {signed.model} v{signed.version} {signed.sha256[:12]}")
    for line in seen.lines() + notes:
        _say(line)
    return 0


def _restore_sources(args: argparse.Namespace) -> list[RestoreSource]:
    """Where an abort learns what to put back: the fleet's store, then the registry."""
    sources: list[RestoreSource] = []
    if args.fleet_url:
        sources.append(from_fleet(args.fleet_url))
    if args.file is None or args.tracking_uri:

        def champion(failing: ReleaseManifest) -> Restore | None:
            from cloud_trainer.registry import alias_version

            version = alias_version(failing.model, "champion")
            if version is None or version == failing.version:
                return None
            ref = argparse.Namespace(**vars(args))
            ref.file, ref.version, ref.alias, ref.percent = None, version, None, 100.0
            ref.groups, ref.devices = [], []
            return Restore(_prepare(ref), f"v{version} holds the registry's champion alias")

        sources.append(champion)
    return sources


def cmd_rollout(args: argparse.Namespace) -> int:
    key = _key(args.key)
    try:
        waves = parse_waves(args.waves, args.groups)
    except ValueError as e:
        raise UserError(str(e), 2) from e
    policy = RolloutPolicy(
        waves=waves,
        min_outcomes=args.min_outcomes,
        max_failure_rate=args.max_failure_rate,
        soak_s=args.soak_s,
        wave_timeout_s=args.wave_timeout_s,
    )
    resolved = _resolve(args)
    widest = Rollout(
        percent=waves[-1].percent, groups=list(args.groups), devices=list(args.devices)
    )
    seen = audience(args.model, widest, args.fleet_url, _needs_agent(resolved[1], args.model))
    for line in seen.lines():
        _say(line)
    if seen.too_old:
        _say("  their outcomes are not counted: they cannot read this model")
    manifest = _prepare(args, None, resolved)
    link = _connect(args)
    tree = _tree(args)
    channel = ReleaseChannel(link, tree, key)
    try:
        controller = RolloutController(
            link,
            tree,
            channel,
            policy,
            on_decision=lambda d: log.info("%s: %s", d.action, d.reason),
            restore=_restore_sources(args),
            ignore=frozenset(seen.too_old),
        )
        decision = controller.run(manifest, _target_of(args))
    except ReleaseError as e:
        raise UserError(str(e)) from e
    finally:
        link.stop()
    _say(f"rollout {manifest.release_id}: {decision.action} ({decision.reason})")
    return 0 if decision.action == "done" else 1


def cmd_status(args: argparse.Namespace) -> int:
    link = _connect(args)
    tree = _tree(args)
    watched: dict[tuple[str, str], UpdateEvent] = {}
    lock = threading.Lock()

    def on_event(_topic: str, payload: bytes) -> None:
        message = safe_decode(payload)
        if isinstance(message, UpdateEvent) and message.model_name == args.model:
            with lock:
                watched[(message.release_id or "", message.device_id)] = message

    try:
        current = ReleaseChannel(link, tree, SigningKey.generate()).current(args.model)
        if args.watch_s > 0:
            link.subscribe(tree.fleet_filter(Channel.EVENTS), on_event)
            time.sleep(args.watch_s)
    except ReleaseError as e:
        raise UserError(str(e)) from e
    finally:
        link.stop()
    report = _status_report(args, current, dict(watched))
    if args.json:
        _say(json.dumps(report, indent=2, sort_keys=True))
    else:
        for line in _status_lines(report):
            _say(line)
    return 0


def _status_report(
    args: argparse.Namespace,
    current: ReleaseManifest | None,
    watched: dict[tuple[str, str], UpdateEvent],
) -> dict[str, Any]:
    """The current release, events seen while watching (by release), and the fleet's
    record of recent releases: rollout steps and every device's outcome."""
    report: dict[str, Any] = {"model": args.model, "current": None, "watched": {}}
    if current is not None:
        r = current.rollout
        report["current"] = {
            "release_id": current.release_id,
            "version": current.version,
            "channel": current.channel,
            "wave": r.wave,
            "percent": r.percent,
            "groups": list(r.groups),
            "devices": list(r.devices),
            "audience": describe_rule(r),
            "allow_downgrade": current.allow_downgrade,
            "publisher": current.publisher,
        }
    for (release_id, device), event in sorted(watched.items()):
        report["watched"].setdefault(release_id or "(none)", {})[device] = {
            "state": event.state.value,
            "to_version": event.to_version,
            "reason": event.reason,
        }
    report["fleet"] = None
    if args.fleet_url:
        try:
            rows = FleetClient(args.fleet_url).releases(args.model)[: max(args.history, 0) + 1]
        except FleetUnavailable as e:
            report["fleet"] = {"problem": str(e)}
        else:
            report["fleet"] = {"releases": [_release_summary(row) for row in rows]}
    return report


def _release_summary(row: dict[str, Any]) -> dict[str, Any]:
    steps = row.get("history") or []
    aborted = next((s for s in steps if s.get("action") == "aborted"), None)
    restored = next((s for s in steps if s.get("action") == "restored"), None)
    return {
        "release_id": row.get("release_id"),
        "version": row.get("version"),
        "wave": row.get("wave"),
        "created": row.get("created"),
        "outcome_counts": row.get("outcome_counts", {}),
        "aborted": None if aborted is None else aborted.get("reason"),
        "restored": None
        if restored is None
        else {
            "release_id": restored.get("restored_release_id"),
            "version": restored.get("restored_version"),
            "reason": restored.get("reason"),
        },
        "history": [
            {k: s.get(k) for k in ("seq", "ts", "action", "wave", "audience", "reason")}
            for s in steps
        ],
        "devices": {
            str(d.get("device_id")): {"state": d.get("state"), "reason": d.get("reason")}
            for d in row.get("devices") or []
        },
    }


def _status_lines(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    current = report["current"]
    if current is None:
        lines.append(f"{report['model']}: no release published")
    else:
        lines.append(
            f"{report['model']}: release {current['release_id']} v{current['version']} channel "
            f"{current['channel']} wave {current['wave']} percent {current['percent']:g} "
            f"groups {current['groups']} devices {current['devices']} downgrade "
            f"{current['allow_downgrade']} by {current['publisher']}"
        )
        lines.append(f"  audience: {current['audience']}")
    current_id = current["release_id"] if current else None
    for release_id, devices in sorted(
        report["watched"].items(), key=lambda item: item[0] != current_id
    ):
        label = "this release" if release_id == current_id else f"release {release_id}"
        lines.append(f"  events seen for {label}:")
        for device, seen in devices.items():
            lines.append(
                f"    {device}: {seen['state']} v{seen['to_version']} {seen['reason'] or ''}"
            )
        tally = Counter(seen["state"] for seen in devices.values())
        lines.append("    " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items())))
    fleet = report["fleet"]
    if fleet is not None and "problem" in fleet:
        lines.append(f"  fleet history unavailable: {fleet['problem']}")
    for release in (fleet or {}).get("releases", []):
        counts = ", ".join(f"{k} {v}" for k, v in sorted(release["outcome_counts"].items()))
        lines.append(f"release {release['release_id']} v{release['version']}: {counts or '-'}")
        for step in release["history"]:
            lines.append(
                f"  [{step['seq']}] {step['action']} wave {step['wave']}: {step['reason']}"
            )
        for device, outcome in sorted(release["devices"].items()):
            lines.append(f"  {device}: {outcome['state']} {outcome['reason'] or ''}")
    return lines


def cmd_rollback(args: argparse.Namespace) -> int:
    key = _key(args.key)
    if args.file is None and args.to_version is None:
        from cloud_trainer.registry import alias_version

        args.to_version = alias_version(args.model, "champion")
        if args.to_version is None:
            raise UserError("no --to-version given and the model has no champion alias", 2)
    args.version, args.alias, args.file_version = args.to_version, None, args.to_version
    args.percent, args.groups, args.devices, args.allow_downgrade = 100.0, [], [], True
    manifest = _prepare(args)
    link = _connect(args)
    try:
        signed = ReleaseChannel(link, _tree(args), key).publish(
            retarget(manifest, _target_of(args), new_id=False)
        )
    except ReleaseError as e:
        raise UserError(str(e)) from e
    finally:
        link.stop()
    _record(signed, args)
    _say(f"rolled back: {signed.release_id} restores v{signed.version} (downgrade allowed)")
    return 0


def cmd_pin(args: argparse.Namespace) -> int:
    link = _connect(args)
    tree = _tree(args)
    action = "unpin" if args.unpin else "pin"
    try:
        for seq, device in enumerate(args.devices):
            command = Command(
                device_id=device,
                ts=utc_now(),
                seq=int(time.time() * 1000) + seq,
                cmd_id=f"{action}-{device}-{uuid.uuid4().hex[:12]}",
                action=action,
                args={} if args.version is None else {"version": args.version},
                issued_by="cloud",
            )
            topic = tree.device(args.site, device, Channel.CMD)
            if not link.publish(topic, encode(command), qos=1).wait(10):
                raise UserError(f"broker did not acknowledge the {action} for {device}")
            _say(f"{action} sent to {device}")
    except ProtocolError as e:
        raise UserError(str(e), 2) from e
    finally:
        link.stop()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    server = ArtefactServer(args.artefacts, args.host, args.port, args.rate)
    _say(f"serving {args.artefacts} on {server.base_url}")
    try:
        server.serve_forever()
    finally:
        server.stop()
    return 0
