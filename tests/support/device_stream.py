"""A device's durable publishing path (outbox → publisher → MQTT) driven at a steady rate.

It uses the agent's own classes, so what it proves holds for the agent; it records every
seq whose append returned, which is what "committed" means on a device.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from types import TracebackType

from cloud_trainer.fleet.sim import SimulatedDevice
from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink
from edge_agent.outbox import OutboxPublisher, OutboxStore, Priority
from edge_agent.protocol import Channel, DeviceKind, PredictionMessage, TopicTree, encode


class DeviceStream:
    """Queues one prediction every ``interval_s`` into a real outbox that a real publisher
    drains to the broker, reconnecting by itself when the broker goes away."""

    def __init__(
        self,
        endpoint: BrokerEndpoint,
        root: str,
        workdir: Path,
        device_id: str = "cam-01",
        interval_s: float = 0.01,
    ) -> None:
        self.device = SimulatedDevice(device_id, "park", DeviceKind.CAMERA)
        self.topic = TopicTree(root).device("park", device_id, Channel.PREDICTIONS)
        self.interval_s = interval_s
        self.store = OutboxStore(workdir / f"{device_id}-outbox.db")
        self.link = MqttLink(
            endpoint, client_id=f"{device_id}-{uuid.uuid4().hex[:8]}", reconnect_max_s=2.0
        )
        self.publisher = OutboxPublisher(self.store, self.link)
        self.committed: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="device-stream", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.device.prediction()

            def payload(seq: int, message: PredictionMessage = message) -> bytes:
                return encode(message.model_copy(update={"seq": seq}))

            seq = self.store.append(self.topic, payload, Priority.PREDICTION)
            if seq is not None:
                self.committed.append(seq)
            self.publisher.notify()
            time.sleep(self.interval_s)

    def start(self) -> DeviceStream:
        self.link.start(timeout=10)
        self.publisher.start()
        self._thread.start()
        return self

    def pause(self) -> None:
        """Stop queueing new messages (the publisher goes on draining the outbox)."""
        self._stop.set()
        self._thread.join(5)

    def drain(self, timeout: float) -> bool:
        """Wait until the broker acknowledged everything queued; True when the outbox is empty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.store.depth == 0:
                return True
            self.publisher.notify()
            time.sleep(0.05)
        return self.store.depth == 0

    def close(self) -> None:
        self.pause()
        self.publisher.stop(flush_timeout=2.0)
        self.link.stop()
        self.store.close()

    def __enter__(self) -> DeviceStream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
