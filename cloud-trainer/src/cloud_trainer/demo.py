"""``cloud-trainer demo``: the main job on embedded defaults, shown end to end on one machine."""

from __future__ import annotations

import argparse
import logging
import queue
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cloud_trainer.errors import UserError
from cloud_trainer.stack.mosquitto import BrokerUnavailable, MosquittoBroker
from edge_agent.comms.mqtt import BrokerEndpoint, LinkError, MqttLink, Will
from edge_agent.protocol import (
    Channel,
    Command,
    CommandAck,
    DriftAlert,
    DriftWindow,
    FeatureDrift,
    PredictionMessage,
    ProtocolError,
    ReleaseManifest,
    SignatureError,
    SigningKey,
    StatusMessage,
    TelemetryMessage,
    TensorSpec,
    TopicTree,
    UpdateEvent,
    UpdateState,
    decode_manifest,
    encode,
    safe_decode,
    utc_now,
    verify_manifest,
)

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="run the main job end to end on embedded defaults")
    p.add_argument("--workdir", type=Path, help="keep the run's files here (default: temporary)")
    p.add_argument(
        "--broker", help="HOST:PORT of an existing broker (default: start a private Mosquitto)"
    )
    p.set_defaults(func=run)


@dataclass
class FleetListener:
    """Subscribes to every device channel and collects what arrives, decoded."""

    tree: TopicTree
    received: queue.Queue[tuple[str, Any]] = field(default_factory=queue.Queue)

    def attach(self, link: MqttLink) -> None:
        link.subscribe(f"{self.tree.root}/+/+/#", self._on_device)
        link.subscribe(self.tree.all_releases(), self._on_release)

    def _on_device(self, topic: str, payload: bytes) -> None:
        # "root/+/+/#" also matches "root/releases/<model>": those go to _on_release.
        if not topic.startswith(f"{self.tree.root}/releases/"):
            self.received.put((topic, safe_decode(payload)))

    def _on_release(self, topic: str, payload: bytes) -> None:
        try:
            self.received.put((topic, decode_manifest(payload)))
        except ProtocolError as e:
            self.received.put((topic, e))


def _endpoint(spec: str | None, broker: MosquittoBroker | None) -> BrokerEndpoint:
    if broker is not None:
        return BrokerEndpoint(broker.host, broker.port)
    assert spec is not None
    host, _, port = spec.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--broker must be HOST:PORT, got {spec!r}", exit_code=2)
    return BrokerEndpoint(host, int(port))


def run(args: argparse.Namespace) -> int:
    console = Console(width=max(Console().width, 120))
    with tempfile.TemporaryDirectory(prefix="edge-mlops-demo-") as tmp:
        workdir: Path = args.workdir or Path(tmp)
        broker = None
        if args.broker is None:
            try:
                broker = MosquittoBroker(workdir=workdir / "broker").start()
            except BrokerUnavailable as e:
                raise UserError(str(e)) from e
            console.print(f"[bold]broker[/] Mosquitto on {broker.host}:{broker.port}")
        try:
            return _contract_tour(console, workdir, _endpoint(args.broker, broker))
        finally:
            if broker is not None:
                broker.close()


def _contract_tour(console: Console, workdir: Path, endpoint: BrokerEndpoint) -> int:
    tree = TopicTree()
    site, device = "demo-park", "cam-01"
    key = SigningKey.generate()
    key.save(workdir / "keys" / "fleet.key", workdir / "keys" / "fleet.pub")
    console.print(f"[bold]keys[/] fleet signing key {key.key_id} written to {workdir / 'keys'}")

    cloud = MqttLink(endpoint, client_id="demo-cloud")
    listener = FleetListener(tree)
    listener.attach(cloud)
    offline = StatusMessage(device_id=device, ts=utc_now(), seq=0, state="offline", site=site)
    device_link = MqttLink(
        endpoint,
        client_id=f"demo-{device}",
        will=Will(tree.device(site, device, Channel.STATUS), encode(offline)),
    )
    acks: queue.Queue[bytes] = queue.Queue()
    try:
        cloud.start()
        device_link.start()
    except LinkError as e:
        raise UserError(str(e)) from e
    device_link.subscribe(tree.device(site, device, Channel.CMD), lambda _t, p: acks.put(p))
    time.sleep(0.2)

    now = utc_now()
    outgoing: list[tuple[Channel, Any]] = [
        (
            Channel.STATUS,
            StatusMessage(
                device_id=device,
                ts=now,
                seq=1,
                state="online",
                site=site,
                kind="camera",
                model_name="catdog",
                model_version=1,
            ),
        ),
        (
            Channel.TELEMETRY,
            TelemetryMessage(
                device_id=device,
                ts=now,
                seq=2,
                uptime_s=12.5,
                cpu_percent=23.0,
                mem_percent=41.0,
                disk_percent=12.0,
                rss_bytes=95_000_000,
                inference_p50_ms=6.1,
                inference_p95_ms=8.4,
                fps=4.9,
            ),
        ),
        (
            Channel.PREDICTIONS,
            PredictionMessage(
                device_id=device,
                ts=now,
                seq=3,
                model_name="catdog",
                model_version=1,
                label="cat",
                confidence=0.93,
                scores={"cat": 0.93, "dog": 0.07},
                latency_ms=6.2,
                input_ts=now,
            ),
        ),
        (
            Channel.DRIFT,
            DriftAlert(
                device_id=device,
                ts=now,
                seq=4,
                model_name="catdog",
                model_version=1,
                state="raised",
                detector="image_stats",
                window=DriftWindow(start=now - timedelta(hours=1), end=now, n=3600),
                features=[FeatureDrift(name="brightness", metric="psi", score=0.31, threshold=0.2)],
                summary="brightness moved (PSI 0.31 > 0.20)",
            ),
        ),
        (
            Channel.EVENTS,
            UpdateEvent(
                device_id=device,
                ts=now,
                seq=5,
                model_name="catdog",
                from_version=1,
                to_version=2,
                state=UpdateState.COMMITTED,
            ),
        ),
    ]
    for channel, message in outgoing:
        device_link.publish(
            tree.device(site, device, channel), encode(message), retain=channel is Channel.STATUS
        ).wait(5)
    cmd = Command(device_id=device, ts=now, seq=1, cmd_id="c-1", action="ping", issued_by="demo")
    cloud.publish(tree.device(site, device, Channel.CMD), encode(cmd)).wait(5)
    got_cmd = safe_decode(acks.get(timeout=5))
    if isinstance(got_cmd, Command):
        ack = CommandAck(
            device_id=device, ts=utc_now(), seq=6, cmd_id=got_cmd.cmd_id, result="done"
        )
        device_link.publish(tree.device(site, device, Channel.CMD_ACK), encode(ack)).wait(5)

    manifest = key.sign(
        ReleaseManifest(
            release_id="catdog-2-demo",
            model="catdog",
            version=2,
            sha256="0" * 64,
            size=1,
            urls=["http://127.0.0.1/artifacts/catdog/2/model.onnx"],
            inputs=[TensorSpec(name="image", dtype="float32", shape=[None, 224, 224, 3])],
            outputs=[TensorSpec(name="probs", dtype="float32", shape=[None, 2])],
            created=now,
            publisher="demo-cloud",
        )
    )
    cloud.publish(tree.release("catdog"), encode(manifest), retain=True).wait(5)
    device_link.stop()  # clean stop: the broker does not send the Will

    table = Table(title="messages seen by the fleet side")
    for col in ("topic", "type", "seq", "check"):
        table.add_column(col)
    seen = 0
    deadline = time.monotonic() + 5
    while seen < len(outgoing) + 3 and time.monotonic() < deadline:
        try:
            topic, item = listener.received.get(timeout=0.5)
        except queue.Empty:
            continue
        seen += 1
        if isinstance(item, ReleaseManifest):
            try:
                verify_manifest(item, key.public_key)
                check = "signature ok"
            except SignatureError as e:
                check = f"REFUSED: {e}"
            table.add_row(topic, "release", "-", check)
        elif isinstance(item, ProtocolError):
            table.add_row(topic, "-", "-", f"rejected: {item}")
        else:
            table.add_row(topic, item.type, str(item.seq), "decoded")
    cloud.stop()
    console.print(table)
    tampered = manifest.model_copy(update={"version": 3})
    try:
        verify_manifest(tampered, key.public_key)
        console.print("[red]tampered manifest was accepted[/]")
        return 1
    except SignatureError as e:
        console.print(f"[bold]tamper check[/] {e}")
    return 0 if seen >= len(outgoing) + 3 else 1
