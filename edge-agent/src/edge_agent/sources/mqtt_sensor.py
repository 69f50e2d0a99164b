"""Weather station publishing JSON readings on an MQTT topic (through the agent's MqttLink).

Payload: ``{"ts": "2026-11-28T12:00:00Z", "temperature_c": 3.2, "apparent_temperature_c": 0.5,
"humidity": 0.87, "wind_speed_kmph": 14.1, "wind_bearing_deg": 250, "visibility_km": 9.8,
"pressure_mb": 1011.6, "condition": "rain"}``; ``ts`` may also be Unix seconds, ``condition``
may be null, other keys are ignored. ``null`` or ``NaN`` values are rejected as
``rejected_nan``.
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import time
from datetime import UTC, datetime
from typing import Literal

from pydantic import Field

from edge_agent.comms.mqtt import MqttLink
from edge_agent.config.base import ConfigModel
from edge_agent.sources.sample import Sample
from edge_agent.sources.station import (
    CloseAfterSeconds,
    MaxAgeSeconds,
    MaxFutureSeconds,
    ReadingRejected,
    StationPipeline,
    reading_from_mapping,
)

log = logging.getLogger(__name__)

MAX_PAYLOAD = 4096


class MqttSensorSourceConfig(ConfigModel):
    """Readings arriving as JSON on an MQTT topic of the device's broker."""

    type: Literal["mqtt_sensor"] = Field(title="Type", description="Source plugin: MQTT topic.")
    name: str = Field(
        default="station", min_length=1, max_length=64, title="Name", description="Source name."
    )
    topic: str = Field(
        min_length=1, max_length=256, title="Topic", description="Topic (filter) to read."
    )
    qos: Literal[0, 1, 2] = Field(default=1, title="QoS", description="Subscription QoS.")
    queue_size: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        title="Queue size",
        description="Readings held between the network thread and the reader; more are "
        "dropped and counted as queue_overflow.",
    )
    max_age_s: MaxAgeSeconds = 3600.0
    max_future_s: MaxFutureSeconds = 300.0
    close_after_s: CloseAfterSeconds = 300.0


class MqttSensorSource:
    """The paho thread only queues payloads; parsing and validation run on the reader."""

    def __init__(self, config: MqttSensorSourceConfig, mqtt: MqttLink) -> None:
        self.config = config
        self.name = config.name
        self.counters: collections.Counter[str] = collections.Counter()
        self.pipeline = StationPipeline(
            self.counters, max_age_s=config.max_age_s, max_future_s=config.max_future_s
        )
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=config.queue_size)
        self._ready: collections.deque[Sample] = collections.deque()
        self._mqtt = mqtt
        mqtt.subscribe(config.topic, self._on_message, qos=config.qos)

    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            self.counters["queue_overflow"] += 1

    def read(self, timeout: float) -> Sample | None:
        deadline = time.monotonic() + max(0.0, timeout)
        while not self._ready:
            self._ready.extend(
                self.pipeline.close_due(datetime.now(UTC), self.config.close_after_s)
            )
            if self._ready:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                payload = self._queue.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            self._payload(payload)
        return self._ready.popleft()

    def _payload(self, payload: bytes) -> None:
        try:
            if len(payload) > MAX_PAYLOAD:
                raise ReadingRejected("malformed", f"payload of {len(payload)} bytes")
            try:
                data = json.loads(payload)
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ReadingRejected("malformed", f"payload is not JSON: {e}") from e
            if not isinstance(data, dict):
                raise ReadingRejected("malformed", "payload is not a JSON object")
            reading = reading_from_mapping(data)
        except ReadingRejected as e:
            self.pipeline.reject(e)
            log.debug("sensor %s: %s", self.name, e)
            return
        self._ready.extend(self.pipeline.offer(reading, datetime.now(UTC)))

    def close(self) -> None:
        self._mqtt.unsubscribe(self.config.topic)
