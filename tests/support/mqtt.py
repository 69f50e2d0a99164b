"""Test helpers around a real broker: collect what arrives on a topic filter."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink


@dataclass
class Collector:
    """Subscribes to ``topic_filter`` on a real broker and keeps every (topic, payload)."""

    endpoint: BrokerEndpoint
    topic_filter: str
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _link: MqttLink | None = None

    def __enter__(self) -> Collector:
        self._link = MqttLink(self.endpoint, client_id=f"collector-{id(self):x}")
        self._link.subscribe(self.topic_filter, self._on_message)
        self._link.start()
        # A round trip proves the subscription is active before the test publishes.
        probe = f"_probe/{id(self):x}"
        self._link.subscribe(probe, lambda t, p: None)
        self._link.publish(probe, b"1").wait(5)
        return self

    def _on_message(self, topic: str, payload: bytes) -> None:
        with self._cond:
            self.messages.append((topic, payload))
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"got {len(self.messages)} of {count} messages on {self.topic_filter}"
                    )
                self._cond.wait(left)
            return list(self.messages)

    def __exit__(self, *exc: object) -> None:
        if self._link is not None:
            self._link.stop()
