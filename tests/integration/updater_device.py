"""A device for the updater tests: model slot, updater, MQTT and a frame loop, in or out of process.

Run as ``python -m tests.integration.updater_device CONFIG.json`` it is the process the
kill -9 tests kill; with ``pause_at`` it stops dead on reaching that update state, so the
test can kill it exactly there.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink
from edge_agent.inference import InferenceEngine, InferenceError, ModelSlot
from edge_agent.protocol import (
    Channel,
    PredictionMessage,
    TopicTree,
    UpdateEvent,
    encode,
    utc_now,
)
from edge_agent.sources.sample import Sample
from edge_agent.updater.boot import ProvisionedModel
from edge_agent.updater.config import UpdaterConfig
from edge_agent.updater.events import ClockSequence, MqttEventSink
from edge_agent.updater.service import ModelUpdater
from tests.support.onnx_models import red_frame

SITE = "lab"


@dataclass
class Served:
    """What the frame loop saw: one entry per frame."""

    at: float
    sha256: str
    ok: bool


@dataclass
class Device:
    """A real updater on a real broker, fed red frames every ``frame_s`` seconds."""

    config: UpdaterConfig
    endpoint: BrokerEndpoint
    root: str
    device_id: str = "cam-01"
    model: str = "catdog"
    groups: tuple[str, ...] = ()
    frame_s: float = 0.005
    provisioned: ProvisionedModel | None = None
    publish_every: int = 0
    served: list[Served] = field(default_factory=list)
    extra_hooks: list[Any] = field(default_factory=list)
    events: list[UpdateEvent] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Device:
        self.tree = TopicTree(self.root)
        self.link = MqttLink(self.endpoint, client_id=f"dev-{self.device_id}-{time.time_ns()}")
        self.link.start()
        self.seq = ClockSequence()
        sink = MqttEventSink(self.link, self.tree, SITE, self.device_id)
        self.updater = ModelUpdater(
            self.config,
            model=self.model,
            device_id=self.device_id,
            groups=self.groups,
            sink=sink,
            next_seq=self.seq,
        )
        self.updater.add_transition_hook(self.events.append)
        for hook in self.extra_hooks:
            self.updater.add_transition_hook(hook)
        engine = self.updater.boot(self.provisioned)
        self.slot = ModelSlot(engine)
        self.updater.start(self.slot)
        self.updater.subscribe(self.link, self.tree)
        self._frames = threading.Thread(target=self._frame_loop, daemon=True)
        self._frames.start()
        return self

    def _frame_loop(self) -> None:
        frame = red_frame()
        n = 0
        while not self._stop.is_set():
            sample = Sample(ts=datetime.now(UTC), input_id=f"f{n}", frame=frame)
            try:
                prediction, engine = self.updater.predict(self.slot, sample)
                self.served.append(Served(time.monotonic(), engine.sha256, True))
                if self.publish_every and n % self.publish_every == 0:
                    self._publish(prediction.label, prediction.confidence, engine, n)
            except InferenceError:
                self.served.append(Served(time.monotonic(), self.slot.current.sha256, False))
            n += 1
            time.sleep(self.frame_s)

    def _publish(self, label: str, confidence: float, engine: InferenceEngine, n: int) -> None:
        record = self.updater.state.active
        message = PredictionMessage(
            device_id=self.device_id,
            ts=utc_now(),
            seq=self.seq(),
            model_name=self.model,
            model_version=record.version if record and record.sha256 == engine.sha256 else 0,
            label=label,
            confidence=confidence,
            latency_ms=0.0,
            input_id=f"f{n}",
        )
        self.link.publish(
            self.tree.device(SITE, self.device_id, Channel.PREDICTIONS), encode(message)
        )

    def wait_for(self, predicate: Any, timeout: float = 20.0) -> UpdateEvent:
        """The first event matching ``predicate`` (waiting up to ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for event in list(self.events)[seen:]:
                if predicate(event):
                    return event
            time.sleep(0.01)
        states = [(e.release_id, e.state.value, e.reason) for e in self.events]
        raise AssertionError(f"no matching update event in {timeout} s; saw {states}")

    def stop(self) -> None:
        self._stop.set()
        self._frames.join(5)
        self.updater.stop()
        self.link.stop()


def _main(config_path: Path) -> int:
    spec = json.loads(config_path.read_text())
    config = UpdaterConfig.model_validate(spec["updater"])
    pause_at = spec.get("pause_at")
    device = Device(
        config,
        BrokerEndpoint("127.0.0.1", int(spec["port"])),
        spec["root"],
        provisioned=ProvisionedModel(Path(spec["provisioned"]), 1),
        publish_every=20,
    )
    marker = Path(spec["marker"])

    def pause(event: UpdateEvent) -> None:
        if pause_at and event.state.value == pause_at:
            marker.write_text(event.state.value)
            time.sleep(3600)  # the test kills us here

    device.extra_hooks.append(pause)
    device.start()
    while True:
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(_main(Path(sys.argv[1])))
