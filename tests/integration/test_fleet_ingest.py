"""The fleet consumer over a real Mosquitto into a real SQLite store: every type, once each."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_trainer.fleet.consumer import ConsumerSettings, FleetConsumer
from cloud_trainer.fleet.consumer.consumer import Subscription
from cloud_trainer.fleet.metrics import FleetMetrics
from cloud_trainer.fleet.sim import SimulatedFleet
from cloud_trainer.fleet.store import FleetStore, queries, sqlite_url
from edge_agent.comms.mqtt import BrokerEndpoint
from edge_agent.protocol import Channel, Command, UpdateState, encode
from tests.support.samples import sample_messages

pytestmark = pytest.mark.integration


def _root() -> str:
    return f"fl{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FleetStore]:
    fleet_store = FleetStore(sqlite_url(tmp_path / "fleet.db"))
    yield fleet_store
    fleet_store.close()


def _consumer(
    endpoint: BrokerEndpoint,
    store: FleetStore,
    root: str,
    name: str,
    subscription: Subscription = "plain",
) -> FleetConsumer:
    consumer = FleetConsumer(
        endpoint,
        store,
        FleetMetrics(),
        ConsumerSettings(
            root=root, group="fleet", client_id=f"{root}-{name}", subscription=subscription
        ),
    )
    consumer.start()
    return consumer


def settle(consumers: list[FleetConsumer], expected: int, timeout: float = 15.0) -> None:
    """Wait until the instances together received ``expected`` messages and wrote them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = sum(c.metrics.value("fleet_messages_received_total") for c in consumers)
        if got >= expected:
            break
        time.sleep(0.02)
    assert got == expected, f"received {got} of {expected} messages"
    for consumer in consumers:
        assert consumer.flush(timeout)


def test_every_message_type_lands_in_the_store_once_even_after_replay(
    broker_endpoint: BrokerEndpoint, store: FleetStore
) -> None:
    root = _root()
    consumer = _consumer(broker_endpoint, store, root, "a")
    fleet = SimulatedFleet.build(broker_endpoint, root, cameras=1, stations=1)
    fleet.start()
    try:
        cam, wx = fleet.devices["cam-00"], fleet.devices["wx-00"]
        fleet.publish("cam-00", cam.status())
        fleet.publish("wx-00", wx.status())
        fleet.round(predictions=4)
        fleet.publish("cam-00", cam.drift("raised", score=0.6))
        fleet.publish("wx-00", wx.event(UpdateState.COMMITTED, 2, "rain4h-2"))
        command = sample_messages("cam-00")[5]
        assert isinstance(command, Command)
        fleet.publish("cam-00", cam.ack(command, "done"))
        fleet.publish("wx-00", wx.sensor_fault("raised", "pressure_mb", "stuck"))
        settle([consumer], len(fleet.sent))
        first = store.counts()
        # Store-and-forward replay: every payload again, in the same order.
        for topic, payload in list(fleet.sent):
            fleet.publish_raw(topic.split("/")[2], topic, payload)
        settle([consumer], len(fleet.sent))
        again = store.counts()
    finally:
        fleet.stop()
        consumer.stop()

    assert first["telemetry"] == 2
    assert first["prediction_buckets"] >= 2
    assert first["drift_alerts"] == 1
    assert first["update_events"] == 1
    assert first["command_acks"] == 1
    assert first["release_devices"] == 1
    assert first["sensor_faults"] == 1
    assert again == first
    faults = store.read(lambda c: queries.sensor_faults(c, "wx-00"))
    assert faults["faulty"] == ["pressure_mb"] and faults["open"][0]["test"] == "stuck"
    metrics = consumer.metrics
    assert metrics.value("fleet_messages_duplicate_total") == len(fleet.sent) / 2

    def predicted(device_id: str) -> int:
        found = store.read(lambda c: queries.prediction_distribution(c, device_id, 0.0))
        return sum(int(v["total"]) for v in found["versions"])

    assert predicted("cam-00") + predicted("wx-00") == 8

    camera = store.device("cam-00")
    assert camera is not None
    assert (camera["site"], camera["kind"], camera["state"]) == ("site-0", "camera", "online")
    assert (camera["model_name"], camera["drift_status"]) == ("catdog", "drift")
    assert camera["online"] is True
    station = store.device("wx-00")
    assert station is not None and station["model_version"] == 2  # committed update


def test_malformed_and_spoofed_payloads_are_rejected_and_counted(
    broker_endpoint: BrokerEndpoint, store: FleetStore
) -> None:
    root = _root()
    consumer = _consumer(broker_endpoint, store, root, "a")
    fleet = SimulatedFleet.build(broker_endpoint, root, cameras=2, stations=0)
    fleet.start()
    cam0, cam1 = fleet.devices["cam-00"], fleet.devices["cam-01"]
    telemetry_topic = fleet.tree.device(cam0.site, "cam-00", Channel.TELEMETRY)
    status_topic = fleet.tree.device(cam0.site, "cam-00", Channel.STATUS)
    valid = json.loads(encode(cam0.telemetry()))
    try:
        bad = {
            "malformed": [
                b"",
                b"\xff\xfe not utf-8",
                b"{not json",
                b"[1, 2]",
                json.dumps({**valid, "cpu_percent": 250}).encode(),
                json.dumps({**valid, "schema_version": 99}).encode(),
                json.dumps({**valid, "cpu_percent": "NaN"}).encode(),
                b'{"schema_version": 1, "type": "telemetry", "cpu_percent": NaN}',
            ],
            # cam-01's message published on cam-00's topic: a device speaking for another.
            "device_mismatch": [encode(cam1.telemetry())],
            "wrong_channel": [encode(cam0.prediction())],
        }
        for payloads in bad.values():
            for payload in payloads:
                fleet.publish_raw("cam-00", telemetry_topic, payload)
        wrong_site = cam0.status().model_copy(update={"site": "elsewhere"})
        fleet.publish_raw("cam-00", status_topic, encode(wrong_site))
        # The consumer is still alive and stores the next valid message.
        fleet.publish("cam-00", cam0.telemetry())
        settle([consumer], 12)
    finally:
        fleet.stop()
        consumer.stop()

    rejected = {
        reason: consumer.metrics.value("fleet_messages_rejected_total", reason=reason)
        for reason in ("malformed", "device_mismatch", "wrong_channel", "site_mismatch")
    }
    assert rejected == {
        "malformed": 8,
        "device_mismatch": 1,
        "wrong_channel": 1,
        "site_mismatch": 1,
    }
    counts = store.counts()
    assert counts["telemetry"] == 1
    assert counts["received"] == 1


def test_two_instances_on_one_shared_subscription_split_without_loss_or_duplicates(
    broker_endpoint: BrokerEndpoint, store: FleetStore
) -> None:
    root = _root()
    first = _consumer(broker_endpoint, store, root, "one", "shared")
    second = _consumer(broker_endpoint, store, root, "two", "shared")
    fleet = SimulatedFleet.build(broker_endpoint, root, cameras=4, stations=2)
    fleet.start()
    try:
        sent = sum(fleet.round(predictions=4) for _ in range(10))
        settle([first, second], sent)
    finally:
        fleet.stop()
        first.stop()
        second.stop()

    def stored(consumer: FleetConsumer) -> float:
        return consumer.metrics.value("fleet_messages_stored_total")

    assert sent == 300
    assert stored(first) > 0 and stored(second) > 0
    assert stored(first) + stored(second) == sent
    received = sum(c.metrics.value("fleet_messages_received_total") for c in (first, second))
    assert received == sent  # each message went to exactly one instance
    counts = store.counts()
    assert counts["telemetry"] == 60
    assert counts["received"] == sent
