"""What the cloud sees on the broker during the loop, as a readable timeline."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink
from edge_agent.protocol import (
    CommandAck,
    DriftAlert,
    PredictionMessage,
    ProtocolError,
    StatusMessage,
    TelemetryMessage,
    TopicTree,
    UpdateEvent,
    VisitEvent,
    safe_decode,
)


@dataclass
class DeviceView:
    predictions: Counter[int] = field(default_factory=Counter)
    labels: Counter[str] = field(default_factory=Counter)
    telemetry: int = 0
    last_telemetry: TelemetryMessage | None = None
    clock: datetime | None = None  # capture time of the newest prediction's input
    status: str | None = None
    alerts: list[DriftAlert] = field(default_factory=list)
    events: list[UpdateEvent] = field(default_factory=list)
    visits: list[VisitEvent] = field(default_factory=list)


@dataclass(frozen=True)
class Entry:
    at_s: float
    device: str
    text: str


class Timeline:
    """Subscribes to every device channel; notable messages become timeline entries."""

    def __init__(
        self, endpoint: BrokerEndpoint, tree: TopicTree, echo: Callable[[Entry], None]
    ) -> None:
        self.tree = tree
        self.echo = echo
        self.started = time.monotonic()
        self.devices: dict[str, DeviceView] = {}
        self.entries: list[Entry] = []
        self.rejected = 0
        self._cond = threading.Condition()
        self._link = MqttLink(endpoint, client_id=f"timeline-{id(self):x}")
        self._link.subscribe(f"{tree.root}/+/+/#", self._on_message)

    def start(self) -> Timeline:
        self._link.start()
        return self

    def stop(self) -> None:
        self._link.stop()

    def note(self, device: str, text: str) -> None:
        entry = Entry(time.monotonic() - self.started, device, text)
        with self._cond:
            self.entries.append(entry)
            self._cond.notify_all()
        self.echo(entry)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def view(self, device: str) -> DeviceView:
        with self._cond:
            return self.devices.setdefault(device, DeviceView())

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic.startswith(f"{self.tree.root}/releases/"):
            return
        message = safe_decode(payload)
        if isinstance(message, ProtocolError):
            with self._cond:
                self.rejected += 1
            return
        device = message.device_id
        with self._cond:
            view = self.devices.setdefault(device, DeviceView())
        text = self._describe(view, message)
        with self._cond:
            self._cond.notify_all()
        if text is not None:
            self.note(device, text)

    def _describe(self, view: DeviceView, message: object) -> str | None:
        if isinstance(message, PredictionMessage):
            first = view.predictions[message.model_version] == 0
            view.predictions[message.model_version] += 1
            view.labels[message.label] += 1
            view.clock = message.input_ts or view.clock
            if first:
                when = f" for {message.input_ts:%Y-%m-%d %H:%M}" if message.input_ts else ""
                return (
                    f"first prediction from {message.model_name} v{message.model_version}"
                    f"{when}: {message.label} ({message.confidence:.2f}, "
                    f"{message.latency_ms:.1f} ms)"
                )
            return None
        if isinstance(message, TelemetryMessage):
            view.telemetry += 1
            view.last_telemetry = message
            if view.telemetry == 1:
                rss = message.rss_bytes / 2**20
                p50 = message.inference_p50_ms or 0.0
                return (
                    f"telemetry: cpu {message.cpu_percent:.0f}% rss {rss:.0f} MiB p50 {p50:.1f} ms"
                )
            return None
        if isinstance(message, StatusMessage):
            changed = view.status != message.state
            view.status = message.state
            return f"status {message.state}" if changed else None
        if isinstance(message, DriftAlert):
            view.alerts.append(message)
            top = sorted(message.features, key=lambda f: -abs(f.score / (f.threshold or 1)))[:3]
            moved = ", ".join(f"{f.name} {f.metric} {f.score:.2f}>{f.threshold:.2f}" for f in top)
            return (
                f"drift {message.state} by {message.detector} (v{message.model_version}): {moved}"
            )
        if isinstance(message, UpdateEvent):
            view.events.append(message)
            reason = f" ({message.reason})" if message.reason else ""
            return f"update v{message.from_version}→v{message.to_version}: {message.state}{reason}"
        if isinstance(message, VisitEvent):
            view.visits.append(message)
            if message.phase == "start" or message.ended_at is None:
                return None  # a camera's story is its visits, told once each, when they end
            seconds = (message.ended_at - message.started_at).total_seconds()
            snapshot = (
                f", snapshot {message.snapshot.bytes / 1024:.0f} KiB" if message.snapshot else ""
            )
            return (
                f"visit: {message.label} for {seconds:.1f} s ({message.subject_frames} of "
                f"{message.frames} frames, best {message.confidence:.2f}){snapshot}"
            )
        if isinstance(message, CommandAck):
            return f"command {message.cmd_id}: {message.result}"
        return None
