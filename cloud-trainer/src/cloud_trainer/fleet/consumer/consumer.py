"""The MQTT consumer: device messages from a persistent session, checked, queued, stored,
then acknowledged."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cloud_trainer.fleet.consumer.writer import (
    BatchWriter,
    Received,
    ReleaseSeen,
    RolloutSeen,
    WriterSettings,
)
from cloud_trainer.fleet.metrics import FleetMetrics
from cloud_trainer.fleet.store import Envelope, FleetStore, StoredAlert
from edge_agent.comms.mqtt import Ack, BrokerEndpoint, MqttLink, shared_filter
from edge_agent.protocol import (
    Channel,
    ProtocolError,
    StatusMessage,
    TopicTree,
    decode_manifest,
    decode_rollout_record,
    key_id,
    safe_decode,
    verify_manifest,
)

log = logging.getLogger(__name__)

# The message types each device channel may carry; ``cmd`` is cloud → device, not consumed.
CHANNEL_TYPES: dict[Channel, frozenset[str]] = {
    Channel.STATUS: frozenset({"status"}),
    Channel.TELEMETRY: frozenset({"telemetry"}),
    Channel.PREDICTIONS: frozenset({"prediction"}),
    Channel.DRIFT: frozenset({"drift"}),
    # Update-lifecycle events, a camera's visits and its stream losses and recoveries.
    Channel.EVENTS: frozenset({"event", "visit", "stream"}),
    Channel.CMD_ACK: frozenset({"cmd_ack"}),
    Channel.SENSOR_FAULTS: frozenset({"sensor_fault"}),
}


Subscription = Literal["plain", "shared"]


def consumer_client_id(root: str, group: str, instance: str) -> str:
    """The broker session of one consumer instance: stable across its restarts."""
    return "-".join(("fleet", root.replace("/", "_"), group, instance))


@dataclass(frozen=True)
class ConsumerSettings:
    root: str = "mlops"
    group: str = "fleet"
    client_id: str | None = None
    # plain: one instance on a persistent session, nothing lost across broker or service
    # restarts. shared: $share/{group}/... splits the load, but Mosquitto does not restore
    # shared subscriptions after its own restart (what is sent before we re-subscribe is lost).
    subscription: Subscription = "plain"
    # False when device messages come from another source (JetStream): MQTT then carries
    # only the releases and rollout records.
    device_channels: bool = True
    queue_max: int = 20_000
    put_timeout_s: float = 5.0
    release_keys: tuple[Ed25519PublicKey, ...] = ()


class FleetConsumer:
    """Subscribes every device channel as ``{root}/+/+/{channel}`` on a persistent session
    (or ``$share/{group}/...`` with ``subscription="shared"``, where instances in one group
    split the messages between them).

    Handlers run on paho's thread, so they only check and enqueue; a writer thread stores
    batches and acknowledges each message to the broker after its batch committed, so a
    crash loses nothing (the broker re-sends) and stores nothing twice (the seq key).
    Nothing raises out of a handler: a bad payload is counted under its reason, logged and
    acknowledged.
    """

    def __init__(
        self,
        endpoint: BrokerEndpoint | Sequence[BrokerEndpoint],
        store: FleetStore,
        metrics: FleetMetrics,
        settings: ConsumerSettings | None = None,
        writer: WriterSettings | None = None,
        on_alerts: Callable[[list[StoredAlert]], None] | None = None,
    ) -> None:
        self.settings = settings or ConsumerSettings()
        self.tree = TopicTree(self.settings.root)
        self.metrics = metrics
        client_id = self.settings.client_id or consumer_client_id(
            self.settings.root, self.settings.group, "a"
        )
        self.link = MqttLink(
            endpoint,
            client_id=client_id,
            max_inflight=100,
            persistent_session=True,
            manual_ack=True,
        )
        self._queue: queue.Queue[Received] = queue.Queue(self.settings.queue_max)
        self.writer = BatchWriter(
            store, self._queue, metrics, writer or WriterSettings(), on_alerts
        )
        metrics.gauge("fleet_ingest_queue_depth", lambda: float(self._queue.qsize()))

    @property
    def connected(self) -> bool:
        return self.link.connected.is_set()

    def start(self, timeout: float | None = 10.0) -> None:
        group = self.settings.group
        for channel in CHANNEL_TYPES if self.settings.device_channels else ():
            topic_filter = self.tree.fleet_filter(channel)
            if self.settings.subscription == "shared":
                topic_filter = shared_filter(group, topic_filter)
            self.link.subscribe_acked(topic_filter, self._on_device_message)
        # Releases are retained and few: every instance reads them all (upserts are idempotent).
        self.link.subscribe_acked(self.tree.all_releases(), self._on_release)
        self.link.subscribe_acked(self.tree.all_rollout_logs(), self._on_rollout_record)
        self.writer.start()
        self.link.start(timeout=timeout)
        if timeout is not None:
            self._wait_subscribed(timeout)
        log.info(
            "fleet consumer on %s (%s subscription, persistent session %s)",
            self.tree.root,
            self.settings.subscription,
            self.link.client_id,
        )

    def _wait_subscribed(self, timeout: float) -> None:
        # The broker answers subscriptions in order: once a probe published after them comes
        # back, every filter above is active and nothing sent from now on is missed.
        arrived = threading.Event()
        probe = f"_fleet_probe/{self.link.client_id}"
        self.link.subscribe(probe, lambda _t, _p: arrived.set())
        self.link.publish(probe, b"1", qos=1)
        if not arrived.wait(timeout):
            log.warning("subscriptions not confirmed within %.0fs", timeout)
        self.link.unsubscribe(probe)

    def stop(self, drain_timeout: float = 10.0) -> None:
        """Write and acknowledge what is queued, then leave the broker (the persistent session
        stays, so what arrives from now on waits there for the next start)."""
        self.writer.flush(drain_timeout)
        self.link.stop()
        self.writer.stop(drain_timeout)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything received so far is written (tests, shutdown)."""
        return self.writer.flush(timeout)

    # -- handlers (paho network thread) -------------------------------------------------

    def _reject(self, reason: str, topic: str, detail: str, ack: Ack) -> None:
        self.metrics.inc("fleet_messages_rejected_total", reason=reason)
        log.warning("rejected message on %s (%s): %s", topic, reason, detail)
        ack()  # refused for what it is: sending it again would change nothing

    def _on_device_message(self, topic: str, payload: bytes, ack: Ack) -> None:
        received = self.check_device_message(topic, payload, ack)
        if received is not None:
            self._enqueue(received, topic)

    def check_device_message(self, topic: str, payload: bytes, ack: Ack) -> Received | None:
        """The message ready to queue, or None when it was refused (counted, logged and
        acknowledged); every source of device messages goes through here."""
        try:
            address = self.tree.parse(topic)
        except ProtocolError as e:
            self._reject("bad_topic", topic, str(e), ack)
            return None
        channel = address.channel
        if channel is None or channel not in CHANNEL_TYPES:
            self._reject("bad_topic", topic, "not a device channel the fleet consumes", ack)
            return None
        self.metrics.inc("fleet_messages_received_total", channel=channel.value)
        decoded = safe_decode(payload)
        if isinstance(decoded, ProtocolError):
            self._reject("malformed", topic, str(decoded), ack)
            return None
        if decoded.type not in CHANNEL_TYPES[channel]:
            wrong = f"a {decoded.type} message on the {channel.value} channel"
            self._reject("wrong_channel", topic, wrong, ack)
            return None
        if decoded.device_id != address.device:
            mismatch = (
                f"payload device_id {decoded.device_id!r} sent on the topic of {address.device!r}"
            )
            self._reject("device_mismatch", topic, mismatch, ack)
            return None
        if isinstance(decoded, StatusMessage) and decoded.site != address.site:
            mismatch = f"status names site {decoded.site!r}, topic {address.site!r}"
            self._reject("site_mismatch", topic, mismatch, ack)
            return None
        assert address.site is not None
        return Received(Envelope(address.site, decoded, time.time()), ack)

    @property
    def queue_room(self) -> int:
        """How many more messages the ingest queue takes before a put would wait."""
        return self._queue.maxsize - self._queue.qsize()

    def offer(self, received: Received) -> bool:
        """Queue a checked message without waiting; False (nothing acknowledged) when full."""
        try:
            self._queue.put_nowait(received)
        except queue.Full:
            return False
        return True

    def _on_release(self, topic: str, payload: bytes, ack: Ack) -> None:
        if not payload:
            ack()
            return  # a cleared retained release
        try:
            manifest = decode_manifest(payload)
            if self.settings.release_keys:
                verify_manifest(manifest, {key_id(k): k for k in self.settings.release_keys})
        except ProtocolError as e:
            self._reject("bad_release", topic, str(e), ack)
            return
        self.metrics.inc("fleet_releases_seen_total")
        self._enqueue(Received(ReleaseSeen(manifest, time.time()), ack), topic)

    def _on_rollout_record(self, topic: str, payload: bytes, ack: Ack) -> None:
        try:
            record = decode_rollout_record(payload)
        except ProtocolError as e:
            self._reject("bad_rollout_record", topic, str(e), ack)
            return
        self._enqueue(Received(RolloutSeen(record, time.time()), ack), topic)

    def _enqueue(self, received: Received, topic: str) -> None:
        # Blocking here holds back paho's reads, so the broker queues for us (backpressure);
        # only a writer stuck for longer than put_timeout_s makes us drop, counted.
        try:
            self._queue.put(received, timeout=self.settings.put_timeout_s)
        except queue.Full:
            self._reject("overload", topic, "ingest queue full", received.ack)
