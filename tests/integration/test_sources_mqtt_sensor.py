"""A weather station publishing JSON readings through a real Mosquitto to the MQTT source."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink
from edge_agent.features.weather import FEATURE_NAMES, MAX_LAG_HOURS
from edge_agent.sources import MqttSensorSourceConfig, Sample, SourceError, open_source

pytestmark = pytest.mark.integration


def reading(ts: datetime, **override: object) -> dict[str, object]:
    base: dict[str, object] = {
        "ts": ts.isoformat().replace("+00:00", "Z"),
        "temperature_c": 3.5,
        "apparent_temperature_c": 1.0,
        "humidity": 0.86,
        "wind_speed_kmph": 14.0,
        "wind_bearing_deg": 250,
        "visibility_km": 9.5,
        "pressure_mb": 1008.0,
        "condition": "rain",
        "battery_v": 3.9,  # extra keys from the sensor are ignored
    }
    return {**base, **override}


def test_json_readings_over_the_broker(broker_endpoint: BrokerEndpoint) -> None:
    topic = f"stations/{uuid.uuid4().hex[:8]}/readings"
    link = MqttLink(broker_endpoint, client_id=f"agent-{uuid.uuid4().hex[:8]}")
    link.start()
    sensor = MqttLink(broker_endpoint, client_id=f"sensor-{uuid.uuid4().hex[:8]}")
    sensor.start()
    # Backfilled history: accept a day of age; three days is still stale.
    config = MqttSensorSourceConfig(
        type="mqtt_sensor", topic=topic, close_after_s=0, max_age_s=86400
    )
    source = open_source(config, mqtt=link)
    try:
        # The broker handles SUBSCRIBEs in order: once a probe subscribed after the sensor
        # topic echoes back, the sensor subscription is live.
        echoed = threading.Event()
        link.subscribe(f"{topic}/probe", lambda _t, _p: echoed.set())
        assert link.publish(f"{topic}/probe", b"1").wait(5)
        assert echoed.wait(5)
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        hours = 12
        t0 = now - timedelta(hours=hours)
        payloads: list[bytes] = []
        for h in range(hours):
            payloads.append(json.dumps(reading(t0 + timedelta(hours=h))).encode())
        defects = [
            b"{not json",
            b"[1, 2, 3]",
            json.dumps(reading(t0, humidity=None)).encode(),  # null
            b'{"ts": 1700000000, "temperature_c": NaN}',  # NaN literal, fields missing
            json.dumps(reading(t0 + timedelta(minutes=90), humidity=float("nan"))).encode(),
            json.dumps(reading(t0 + timedelta(minutes=95), pressure_mb=0)).encode(),
            json.dumps(reading(now - timedelta(days=3))).encode(),  # stale
            json.dumps(reading(now + timedelta(days=1))).encode(),  # clock far ahead
            json.dumps(reading(t0 + timedelta(hours=1))).encode(),  # duplicate of hour 1
        ]
        for i, d in enumerate(defects):
            payloads.insert(2 + i, d)
        for p in payloads:
            assert sensor.publish(topic, p, qos=1).wait(5)
        samples: list[Sample] = []
        deadline = time.monotonic() + 10
        # With close_after_s=0 the last (past) hour closes without waiting for a later one.
        while len(samples) < hours - MAX_LAG_HOURS and time.monotonic() < deadline:
            if (s := source.read(0.5)) is not None:
                samples.append(s)
        c = source.counters
        assert len(samples) == hours - MAX_LAG_HOURS, dict(c)
        assert c["readings"] == hours
        assert c["malformed"] == 3  # not JSON, not an object, missing fields
        assert (c["rejected_nan"], c["out_of_range"], c["stale"]) == (2, 1, 1)
        assert (c["future"], c["duplicate"]) == (1, 1)
        assert samples[-1].ts == now - timedelta(hours=1)
        assert samples[-1].features is not None and list(samples[-1].features) == list(
            FEATURE_NAMES
        )
        assert samples[-1].observed_label == "rain"
    finally:
        source.close()
        sensor.stop()
        link.stop()


def test_mqtt_source_needs_the_link() -> None:
    config = MqttSensorSourceConfig(type="mqtt_sensor", topic="stations/x/readings")
    with pytest.raises(SourceError, match="needs the MQTT link"):
        open_source(config)
