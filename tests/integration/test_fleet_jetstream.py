"""The fleet consumer on a real 3-node NATS cluster's JetStream into a real SQLite store.

Devices publish over MQTT QoS 1 to any node; the consumers share one durable pull consumer.
Every test counts what the store holds: each telemetry message once, none lost, none twice,
through a consumer killed mid-ingestion and a broker node killed mid-publishing.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import nats.js.errors
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_trainer.fleet.consumer import ConsumerSettings, FleetConsumer, WriterSettings
from cloud_trainer.fleet.consumer.jetstream import (
    JetStreamSettings,
    JetStreamSource,
    device_subjects,
)
from cloud_trainer.fleet.metrics import FleetMetrics
from cloud_trainer.fleet.settings import FleetSettings
from cloud_trainer.fleet.sim import SimulatedDevice
from cloud_trainer.fleet.store import FleetStore, sqlite_url
from cloud_trainer.stack.nats_cluster import ClusterUnavailable, NatsCluster
from edge_agent.comms.mqtt import BrokerEndpoint
from edge_agent.protocol import Channel, DeviceKind, TopicTree, encode

pytestmark = pytest.mark.integration

Message = tuple[str, bytes]


@pytest.fixture(scope="module")
def cluster() -> Iterator[NatsCluster]:
    nodes = NatsCluster()
    try:
        nodes.start()
    except ClusterUnavailable as e:
        pytest.skip(f"no NATS cluster here: {e}")
    try:
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FleetStore]:
    fleet_store = FleetStore(sqlite_url(tmp_path / "fleet.db"))
    yield fleet_store
    fleet_store.close()


def _names() -> tuple[str, str]:
    """A topic root and stream name of their own, so tests sharing the cluster never mix."""
    tag = uuid.uuid4().hex[:8]
    return f"js{tag}", f"FLEET_{tag}"


def telemetry(root: str, devices: int, each: int) -> list[Message]:
    """``devices × each`` telemetry messages (one row each in the store), seqs from 1."""
    tree = TopicTree(root)
    out: list[Message] = []
    for d in range(devices):
        device = SimulatedDevice(f"dev-{d:02d}", f"site-{d % 2}", DeviceKind.WEATHER)
        topic = tree.device(device.site, device.device_id, Channel.TELEMETRY)
        out.extend((topic, encode(device.telemetry())) for _ in range(each))
    return out


class Publisher:
    """A plain paho client publishing QoS 1, as a device would; on a lost connection it
    moves to the next node and sends again whatever it had no PUBACK for."""

    def __init__(self, endpoints: list[tuple[str, int]]) -> None:
        self.endpoints = endpoints
        self.node = 0
        self.pubacked: set[int] = set()
        self.reconnects = 0
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None
        self._mids: dict[int, int] = {}
        self._early: set[int] = set()
        self._next = 0

    def _connect(self) -> mqtt.Client:
        host, port = self.endpoints[self.node % len(self.endpoints)]
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
        client.max_inflight_messages_set(100)
        mids: dict[int, int] = {}
        self._mids = mids

        early: set[int] = set()
        self._early = early

        def on_publish(_c: mqtt.Client, _u: object, mid: int, _rc: object, _p: object) -> None:
            # Runs under paho's own lock: take ours only for bookkeeping, never the reverse.
            with self._lock:
                if mid in mids:
                    self.pubacked.add(mids.pop(mid))
                else:
                    early.add(mid)  # acknowledged before publish() returned its mid

        client.on_publish = on_publish
        client.connect(host, port, keepalive=5)
        client.loop_start()
        deadline = time.monotonic() + 10
        while not client.is_connected():
            assert time.monotonic() < deadline, f"cannot connect to MQTT {host}:{port}"
            time.sleep(0.01)
        return client

    def send(self, messages: list[Message], during: Callable[[int], None] | None = None) -> None:
        """Publish every message (``during(i)`` runs before message ``i``); returns once
        each one has a PUBACK, from whichever node."""
        self._client = self._connect()
        for i, (topic, payload) in enumerate(messages):
            if during is not None:
                during(i)
            self._next = i + 1
            while not self._publish(i, topic, payload):
                self._fail_over(messages)
        deadline = time.monotonic() + 60
        while len(self.pubacked) < len(messages):
            assert time.monotonic() < deadline, f"{len(self.pubacked)} of {len(messages)} acked"
            if self._client is None or not self._client.is_connected():
                self._fail_over(messages)
            time.sleep(0.01)
        self.close()

    def _publish(self, i: int, topic: str, payload: bytes) -> bool:
        assert self._client is not None
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
                self.pubacked.add(i)
            else:
                self._mids[info.mid] = i
        return True

    def _fail_over(self, messages: list[Message]) -> None:
        self.close()
        self.node += 1
        self.reconnects += 1
        self._client = self._connect()
        for j in range(self._next):
            if j not in self.pubacked:
                topic, payload = messages[j]
                if not self._publish(j, topic, payload):
                    return  # lost this one too: the caller fails over again

    def close(self) -> None:
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()
            self._client = None


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def stored(store: FleetStore) -> tuple[int, int]:
    """(telemetry rows, de-duplication keys): both equal the number sent when exactly once."""
    counts = store.counts()
    return counts["telemetry"], counts["received"]


def stream_messages(cluster: NatsCluster, stream: str) -> int:
    async def count() -> int:
        nc = await nats.connect(servers=cluster.nats_urls, connect_timeout=5)
        try:
            info = await nc.jetstream().stream_info(stream)
            return int(info.state.messages)
        finally:
            await nc.close()

    return asyncio.run(count())


class Instance:
    """One in-process fleet consumer reading the stream (its MQTT link is unused here)."""

    def __init__(
        self, cluster: NatsCluster, store: FleetStore, root: str, stream: str, ack_wait: float
    ) -> None:
        host, port = cluster.mqtt_endpoints[0]
        self.consumer = FleetConsumer(
            BrokerEndpoint(host, port),
            store,
            FleetMetrics(),
            ConsumerSettings(
                root=root, client_id=f"{root}-{uuid.uuid4().hex[:6]}", device_channels=False
            ),
            WriterSettings(),
        )
        self.source = JetStreamSource(
            self.consumer,
            JetStreamSettings(
                urls=tuple(cluster.nats_urls),
                stream=stream,
                durable=f"fleet-{root}",
                ack_wait_s=ack_wait,
            ),
        )

    def start(self) -> Instance:
        self.consumer.start()
        self.source.start()
        return self

    def stop(self) -> None:
        self.source.stop()
        self.consumer.stop()

    @property
    def stored(self) -> float:
        return self.consumer.metrics.value("fleet_messages_stored_total")


def test_stream_subjects_follow_the_channels_the_fleet_consumes() -> None:
    subjects = device_subjects("mlops")
    assert "mlops.*.*.telemetry" in subjects
    assert "mlops.*.*.cmd.ack" in subjects
    assert not any(s.endswith(".cmd") for s in subjects)  # cloud → device, not ingested


def test_settings_refuse_jetstream_without_servers_or_with_a_bad_url() -> None:
    with pytest.raises(ValueError, match="needs nats_urls"):
        FleetSettings(source="jetstream")
    with pytest.raises(ValueError, match="must be a nats://host:port URL"):
        FleetSettings(source="jetstream", nats_urls=["127.0.0.1:4222"])
    ok = FleetSettings(source="jetstream", nats_urls=["nats://127.0.0.1:4222"])
    assert ok.nats_urls == ["nats://127.0.0.1:4222"]


def test_mqtt_publishes_to_every_node_are_stored_exactly_once(
    cluster: NatsCluster, store: FleetStore
) -> None:
    root, stream = _names()
    instance = Instance(cluster, store, root, stream, ack_wait=5).start()
    try:
        assert instance.source.replicas == 3
        messages = telemetry(root, devices=6, each=50)
        for n, endpoint in enumerate(cluster.mqtt_endpoints):
            Publisher([endpoint]).send(messages[n::3])
        wait_for("all 300 stored", lambda: stored(store) == (300, 300))
        # Sent again (a device re-sending after a lost PUBACK): recognised, stored once.
        Publisher(cluster.mqtt_endpoints[1:]).send(messages[:40])
        wait_for(
            "the repeats judged",
            lambda: instance.consumer.metrics.value("fleet_messages_duplicate_total") == 40,
        )
    finally:
        instance.stop()
    assert stored(store) == (300, 300)
    assert instance.stored == 300
