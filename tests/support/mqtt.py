"""Test helpers around a real broker: collect what arrives on a topic filter."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Collection
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
        self._link = MqttLink(self.endpoint, client_id=f"collector-{uuid.uuid4().hex[:12]}")
        self._link.subscribe(self.topic_filter, self._on_message)
        self._link.start()
        # A round trip proves the subscription is active before the test publishes.
        probe = f"_probe/{self._link.client_id}"
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

    def wait_until(
        self, done: Callable[[list[tuple[str, bytes]]], bool], timeout: float = 10.0
    ) -> bool:
        """Wait until ``done(messages)`` holds; False at the deadline (the caller judges)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not done(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return True

    def seqs(self) -> set[int]:
        """The ``seq`` of every JSON message received so far."""
        with self._cond:
            return {int(json.loads(p)["seq"]) for _t, p in self.messages}

    def wait_for_seqs(self, wanted: Collection[int], timeout: float = 30.0) -> set[int]:
        """Wait until every seq in ``wanted`` has arrived (or the deadline); returns all seen.

        A QoS 1 message the broker acknowledged to its publisher may still be on its way to
        this subscriber: reading ``messages`` at once would count it lost.
        """
        need = set(wanted)
        seen: set[int] = set()
        parsed = 0

        def arrived(messages: list[tuple[str, bytes]]) -> bool:
            nonlocal parsed
            for _t, payload in messages[parsed:]:
                seen.add(int(json.loads(payload)["seq"]))
            parsed = len(messages)
            return need <= seen

        self.wait_until(arrived, timeout)
        return seen

    def __exit__(self, *exc: object) -> None:
        if self._link is not None:
            self._link.stop()
