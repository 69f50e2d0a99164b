"""Update events: building them with the device's sequence, and sending them over MQTT."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from edge_agent.comms.mqtt import MqttLink
from edge_agent.protocol.codec import encode
from edge_agent.protocol.messages import UpdateEvent, UpdateState, utc_now
from edge_agent.protocol.topics import Channel, TopicTree

log = logging.getLogger(__name__)

EventSink = Callable[[UpdateEvent], None]
TransitionHook = Callable[[UpdateEvent], None]


class ClockSequence:
    """Per-device monotonic sequence numbers that survive restarts without a file.

    Microseconds since the epoch, bumped when two calls land in the same microsecond. The
    agent runtime has its own persisted counter; this one serves the updater run alone.
    """

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, time.time_ns() // 1000)
            return self._last


class MqttEventSink:
    """Publishes events on ``{root}/{site}/{device}/events`` with QoS 1.

    paho keeps QoS 1 messages queued while the broker is away and sends them after the
    reconnection; the agent runtime's durable outbox replaces this sink in production.
    """

    def __init__(self, link: MqttLink, tree: TopicTree, site: str, device_id: str) -> None:
        self.link = link
        self.topic = tree.device(site, device_id, Channel.EVENTS)

    def __call__(self, event: UpdateEvent) -> None:
        self.link.publish(self.topic, encode(event), qos=1)


class EventEmitter:
    """Builds each transition's UpdateEvent, hands it to the sink and to the hooks."""

    def __init__(
        self,
        device_id: str,
        model: str,
        sink: EventSink,
        next_seq: Callable[[], int],
    ) -> None:
        self.device_id = device_id
        self.model = model
        self.sink = sink
        self.next_seq = next_seq
        self.hooks: list[TransitionHook] = []

    def emit(
        self,
        state: UpdateState,
        *,
        to_version: int,
        from_version: int | None,
        release_id: str | None,
        reason: str | None = None,
        duration_ms: float | None = None,
    ) -> UpdateEvent:
        event = UpdateEvent(
            device_id=self.device_id,
            ts=utc_now(),
            seq=self.next_seq(),
            model_name=self.model,
            release_id=release_id,
            from_version=from_version,
            to_version=to_version,
            state=state,
            reason=reason[:1024] if reason else None,
            duration_ms=duration_ms,
        )
        log.info(
            "update %s: %s v%s→v%s%s",
            release_id,
            state.value,
            from_version,
            to_version,
            f" ({reason})" if reason else "",
        )
        try:
            self.sink(event)
        except Exception:  # a failing sink must never stop an update half way
            log.exception("could not send update event %s", state.value)
        for hook in self.hooks:
            try:
                hook(event)
            except Exception:
                log.exception("update transition hook failed")
        return event
