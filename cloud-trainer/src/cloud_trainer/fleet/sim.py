"""A simulated fleet: lightweight devices that speak the real protocol over a real broker."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink, Will
from edge_agent.protocol import (
    Channel,
    Command,
    CommandAck,
    DeviceKind,
    DriftAlert,
    DriftWindow,
    FeatureDrift,
    MessageBase,
    PredictionMessage,
    ProtocolError,
    SensorFault,
    StatusMessage,
    StreamEventMessage,
    TelemetryMessage,
    TopicTree,
    UpdateEvent,
    UpdateState,
    VisitEvent,
    decode_message,
    encode,
    utc_now,
)

log = logging.getLogger(__name__)

CHANNEL_OF: dict[str, Channel] = {
    "status": Channel.STATUS,
    "telemetry": Channel.TELEMETRY,
    "prediction": Channel.PREDICTIONS,
    "drift": Channel.DRIFT,
    "event": Channel.EVENTS,
    "cmd_ack": Channel.CMD_ACK,
    "sensor_fault": Channel.SENSOR_FAULTS,
    "visit": Channel.EVENTS,
    "stream": Channel.EVENTS,
}
LABELS = {DeviceKind.CAMERA: ("cat", "dog"), DeviceKind.WEATHER: ("no_rain", "rain")}
MODELS = {DeviceKind.CAMERA: "catdog", DeviceKind.WEATHER: "rain4h"}


@dataclass
class SimulatedDevice:
    """Builds the messages one device would send, with its own sequence counter."""

    device_id: str
    site: str
    kind: DeviceKind
    model_version: int = 1
    seed: int = 0
    seq: int = 0
    clock: datetime | None = None
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(f"{self.seed}:{self.device_id}")  # noqa: S311 - simulation

    @property
    def model_name(self) -> str:
        return MODELS[self.kind]

    def _base(self) -> dict[str, object]:
        self.seq += 1
        ts = self.clock or utc_now()
        if self.clock is not None:
            self.clock += timedelta(seconds=1)
        return {"device_id": self.device_id, "ts": ts, "seq": self.seq}

    def status(self, state: str = "online") -> StatusMessage:
        return StatusMessage.model_validate(
            {
                **self._base(),
                "state": state,
                "site": self.site,
                "kind": self.kind,
                "agent_version": "0.1.0",
                "model_name": self.model_name,
                "model_version": self.model_version,
            }
        )

    def telemetry(self) -> TelemetryMessage:
        r = self._rng
        return TelemetryMessage.model_validate(
            {
                **self._base(),
                "uptime_s": 60.0 * self.seq,
                "cpu_percent": round(r.uniform(10, 80), 1),
                "mem_percent": round(r.uniform(20, 60), 1),
                "disk_percent": round(r.uniform(5, 30), 1),
                "temperature_c": round(r.uniform(35, 70), 1),
                "rss_bytes": r.randint(80, 200) * 1_000_000,
                "inference_p50_ms": round(r.uniform(3, 9), 2),
                "inference_p95_ms": round(r.uniform(9, 20), 2),
                "fps": 5.0 if self.kind is DeviceKind.CAMERA else 0.0,
                "model_name": self.model_name,
                "model_version": self.model_version,
                # A station learns how right it was once each forecast's hour has come.
                "labelled": self._labelled(),
            }
        )

    def _labelled(self) -> dict[str, float | int] | None:
        if self.kind is not DeviceKind.WEATHER:
            return None
        accuracy = round(self._rng.uniform(0.82, 0.95), 3)
        return {"accuracy": accuracy, "macro_f1": round(accuracy - 0.04, 3), "n": 48}

    def prediction(self, label: str | None = None) -> PredictionMessage:
        labels = LABELS[self.kind]
        chosen = label or self._rng.choice(labels)
        confidence = round(self._rng.uniform(0.55, 0.99), 3)
        other = next(x for x in labels if x != chosen)
        return PredictionMessage.model_validate(
            {
                **self._base(),
                "model_name": self.model_name,
                "model_version": self.model_version,
                "label": chosen,
                "confidence": confidence,
                "scores": {chosen: confidence, other: round(1 - confidence, 3)},
                "latency_ms": round(self._rng.uniform(3, 12), 2),
                "horizon_s": 14400 if self.kind is DeviceKind.WEATHER else None,
            }
        )

    def drift(
        self,
        state: str = "raised",
        score: float = 0.4,
        detector: str = "features",
        metric: str = "psi",
        threshold: float = 0.25,
    ) -> DriftAlert:
        base = self._base()
        end = base["ts"]
        assert isinstance(end, datetime)
        feature = "pressure_hpa" if self.kind is DeviceKind.WEATHER else "brightness"
        return DriftAlert.model_validate(
            {
                **base,
                "model_name": self.model_name,
                "model_version": self.model_version,
                "state": state,
                "detector": detector,
                "severity": "critical" if score >= 0.5 else "warning",
                "window": DriftWindow(start=end - timedelta(hours=24), end=end, n=1440),
                "features": [
                    FeatureDrift.model_validate(
                        {"name": feature, "metric": metric, "score": score, "threshold": threshold}
                    )
                ],
                "summary": f"{feature} moved ({metric} {score:.2f})",
            }
        )

    def sensor_fault(
        self, state: str = "raised", sensor: str = "pressure_mb", test: str = "stuck"
    ) -> SensorFault:
        base = self._base()
        at = base["ts"]
        assert isinstance(at, datetime)
        return SensorFault.model_validate(
            {
                **base,
                "sensor": sensor,
                "test": test,
                "state": state,
                "since": at - timedelta(hours=3),
                "observed_at": at,
                "value": 1013.2,
                "score": 3.0,
                "threshold": 2.0,
                "model_name": self.model_name,
                "model_version": self.model_version,
                "summary": f"{sensor} {test} ({state}), simulated",
            }
        )

    def visit(self, phase: str, visit_id: str, label: str = "cat", frames: int = 6) -> VisitEvent:
        """A camera's visit that began a minute ago and, for ``end``, ended 10 s ago."""
        base = self._base()
        at = base["ts"]
        assert isinstance(at, datetime)
        end = phase == "end"
        return VisitEvent.model_validate(
            {
                **base,
                "phase": phase,
                "visit_id": visit_id,
                "model_name": self.model_name,
                "model_version": self.model_version,
                "label": label,
                "confidence": 0.93,
                "started_at": at - timedelta(seconds=60),
                "ended_at": at - timedelta(seconds=10) if end else None,
                "subject_frames": frames if end else 2,
                "frames": frames + 2 if end else 2,
                "label_frames": {label: frames if end else 2},
                "ended_by": "quiet" if end else None,
                "snapshot": {
                    "id": visit_id,
                    "bytes": 41_000,
                    "sha256": f"{self._rng.getrandbits(256):064x}",
                    "width": 640,
                    "height": 480,
                }
                if end
                else None,
            }
        )

    def stream(self, state: str, down_s: float | None = None) -> StreamEventMessage:
        base = self._base()
        detail = "reconnected" if state == "restored" else "no frame"
        return StreamEventMessage.model_validate(
            {
                **base,
                "source": "gate",
                "state": state,
                "at": base["ts"],
                "detail": detail,
                "down_s": down_s,
            }
        )

    def event(self, state: UpdateState, to_version: int, release_id: str | None) -> UpdateEvent:
        return UpdateEvent.model_validate(
            {
                **self._base(),
                "model_name": self.model_name,
                "release_id": release_id,
                "from_version": self.model_version,
                "to_version": to_version,
                "state": state,
            }
        )

    def ack(self, command: Command, result: str, detail: str | None = None) -> CommandAck:
        return CommandAck.model_validate(
            {**self._base(), "cmd_id": command.cmd_id, "result": result, "detail": detail}
        )


class SimulatedFleet:
    """N devices, each with its own MQTT session, Last Will and command subscription.

    Every payload published is kept in ``sent`` so tests can compare it with the store.
    Commands are answered ``accepted`` then ``done`` (``rejected`` for ``capture``, which a
    simulated device cannot do).
    """

    def __init__(self, endpoint: BrokerEndpoint, devices: list[SimulatedDevice], root: str):
        self.endpoint = endpoint
        self.devices = {d.device_id: d for d in devices}
        self.tree = TopicTree(root)
        self.sent: list[tuple[str, bytes]] = []
        self.commands: list[Command] = []
        self._links: dict[str, MqttLink] = {}
        self._lock = threading.Lock()

    @classmethod
    def build(
        cls, endpoint: BrokerEndpoint, root: str, cameras: int, stations: int, seed: int = 0
    ) -> SimulatedFleet:
        devices = [
            SimulatedDevice(f"cam-{i:02d}", f"site-{i % 2}", DeviceKind.CAMERA, seed=seed)
            for i in range(cameras)
        ] + [
            SimulatedDevice(f"wx-{i:02d}", f"site-{i % 2}", DeviceKind.WEATHER, seed=seed)
            for i in range(stations)
        ]
        return cls(endpoint, devices, root)

    def topic(self, device: SimulatedDevice, message: MessageBase) -> str:
        kind = str(getattr(message, "type", ""))
        return self.tree.device(device.site, device.device_id, CHANNEL_OF[kind])

    def start(self) -> None:
        for device in self.devices.values():
            offline = StatusMessage(
                device_id=device.device_id,
                ts=utc_now(),
                seq=0,
                state="offline",
                site=device.site,
                last_will=True,
            )
            status_topic = self.tree.device(device.site, device.device_id, Channel.STATUS)
            link = MqttLink(
                self.endpoint,
                client_id=f"sim-{self.tree.root}-{device.device_id}",
                will=Will(status_topic, encode(offline)),
            )
            cmd_topic = self.tree.device(device.site, device.device_id, Channel.CMD)
            link.subscribe(cmd_topic, self._command_handler(device))
            link.start()
            self._links[device.device_id] = link

    def stop(self) -> None:
        for link in self._links.values():
            link.stop()
        self._links.clear()

    def publish(self, device_id: str, message: MessageBase, retain: bool = False) -> None:
        device = self.devices[device_id]
        topic = self.topic(device, message)
        self.publish_raw(device_id, topic, encode(message), retain=retain)

    def publish_raw(self, device_id: str, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publish exactly these bytes from this device's session and wait for the broker."""
        if not self._links[device_id].publish(topic, payload, qos=1, retain=retain).wait(10):
            raise TimeoutError(f"broker did not acknowledge a publish of {device_id} on {topic}")
        with self._lock:
            self.sent.append((topic, payload))

    def round(self, predictions: int = 3) -> int:
        """Every device sends one telemetry and some predictions; returns messages sent."""
        count = 0
        for device_id, device in self.devices.items():
            self.publish(device_id, device.telemetry())
            for _ in range(predictions):
                self.publish(device_id, device.prediction())
            count += 1 + predictions
        return count

    def _command_handler(self, device: SimulatedDevice) -> Callable[[str, bytes], None]:
        def handle(topic: str, payload: bytes) -> None:
            try:
                message = decode_message(payload)
            except ProtocolError as e:
                log.warning("simulated %s got a bad command: %s", device.device_id, e)
                return
            if not isinstance(message, Command):
                return
            with self._lock:
                self.commands.append(message)
            link = self._links[device.device_id]
            ack_topic = self.tree.device(device.site, device.device_id, Channel.CMD_ACK)
            if message.action == "capture":
                replies = [device.ack(message, "rejected", "no camera in a simulation")]
            else:
                replies = [device.ack(message, "accepted"), device.ack(message, "done")]
            for reply in replies:
                link.publish(ack_topic, encode(reply), qos=1)

        return handle
