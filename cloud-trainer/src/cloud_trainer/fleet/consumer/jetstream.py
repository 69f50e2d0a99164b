"""The JetStream source: device messages from a replicated stream that instances share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from cloud_trainer.fleet.consumer.consumer import CHANNEL_TYPES, FleetConsumer
from edge_agent.comms.mqtt import Ack

log = logging.getLogger(__name__)

#: JetStream API error code for "stream name already in use with a different configuration".
STREAM_NAME_IN_USE = 10058

GiB = 1024**3


class JetStreamError(RuntimeError):
    """The cluster could not be reached, or the stream or consumer could not be set up."""


@dataclass(frozen=True)
class JetStreamSettings:
    urls: tuple[str, ...]
    stream: str = "FLEET"
    durable: str = "fleet"
    # None: min(3, the number of servers in the cluster).
    replicas: int | None = None
    # What the stream keeps for consumers that are down: the oldest goes first past either.
    max_age_s: float = 7 * 86400.0
    max_bytes: int = 1 * GiB
    duplicate_window_s: float = 120.0
    # A message not acknowledged for this long goes to another instance; longer than a
    # batch takes to commit, shorter than anyone wants to wait after an instance dies.
    ack_wait_s: float = 30.0
    max_ack_pending: int = 5000
    fetch_batch: int = 500
    # How often the stream's leader is looked up; a move is reported to ``on_leader_moved``.
    leader_check_s: float = 1.0
    # Added to the time the leader was last seen alive: messages the MQTT side acknowledged
    # just before, still on their way to the stream, count as possibly lost too.
    leader_margin_s: float = 5.0


def nats_root(root: str) -> str:
    """NATS's MQTT bridge turns each ``/`` of a topic into ``.`` of a subject."""
    return root.replace("/", ".")


def device_subjects(root: str) -> list[str]:
    """The stream's subjects: every device channel the fleet consumes, for every device."""
    return [f"{nats_root(root)}.*.*.{c.value.replace('/', '.')}" for c in CHANNEL_TYPES]


def subject_topic(subject: str) -> str:
    """The MQTT topic a device published on (device and site names hold no dots)."""
    return subject.replace(".", "/")


class JetStreamSource:
    """Pulls device messages from a durable consumer that every instance binds to, so
    JetStream splits the work between them; each message goes through the consumer's own
    checks and batch writer and is acknowledged after the commit that stored it.

    A message not acknowledged within ``ack_wait_s`` (an instance killed mid-batch) is
    delivered again, to whichever instance pulls next; the ``(device_id, type, seq)`` key
    stores it once. Runs its own asyncio loop on a thread; acknowledgements from the writer
    thread are handed to that loop.
    """

    def __init__(self, consumer: FleetConsumer, settings: JetStreamSettings) -> None:
        if not settings.urls:
            raise ValueError("the JetStream source needs at least one nats:// URL")
        self.consumer = consumer
        self.settings = settings
        self.metrics = consumer.metrics
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._stopping: asyncio.Event | None = None
        self._nc: Client | None = None
        self._pending: dict[int, Msg] = {}
        self._acks: set[asyncio.Task[None]] = set()
        self._drain_timeout = 10.0
        self.replicas = 0
        self.leader: str | None = None
        # Called (on a thread of its own) with the seconds in which acknowledged device
        # messages may have been lost when the stream's leader moved; see _watch_leader.
        self.on_leader_moved: Callable[[float], None] | None = None

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def start(self, timeout: float = 20.0) -> None:
        """Connect, create or update the stream and the durable consumer, start pulling."""
        self._thread = threading.Thread(target=self._run, name="fleet-jetstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise JetStreamError(
                f"JetStream at {', '.join(self.settings.urls)} not ready in {timeout:.0f}s"
            )
        if self._failed is not None:
            failed = self._failed
            self.stop()
            raise JetStreamError(f"JetStream setup failed: {failed}") from failed
        log.info(
            "fleet consumer on JetStream stream %s (%s replicas), durable %s",
            self.settings.stream,
            self.replicas,
            self.settings.durable,
        )

    def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop pulling, let the writer commit and acknowledge what it holds, hand the rest
        back (nak) so another instance takes it at once, then leave."""
        if self._thread is None:
            return
        self._drain_timeout = drain_timeout
        stopping = self._stopping
        if stopping is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(stopping.set)
        self._thread.join(drain_timeout + 10)
        self._thread = None

    # -- the loop thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        try:
            self._nc = await nats.connect(
                servers=list(self.settings.urls),
                name=f"fleet-{self.settings.durable}",
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=5,
            )
            js = self._nc.jetstream()
            await self._ensure_stream(js)
            await self._ensure_consumer(js)
            sub = await js.pull_subscribe_bind(
                durable=self.settings.durable, stream=self.settings.stream
            )
        except (nats.errors.Error, OSError) as e:
            self._failed = e
            self._ready.set()
            if self._nc is not None:
                await self._nc.close()
            return
        self._ready.set()
        watcher = asyncio.ensure_future(self._watch_leader())
        try:
            await self._pull(sub)
        finally:
            watcher.cancel()
            # What was pulled is committed and acknowledged before anything is handed back.
            await asyncio.to_thread(self.consumer.flush, self._drain_timeout)
            await self._hand_back()
            await self._nc.close()

    def _cluster_size(self) -> int:
        assert self._nc is not None
        info: dict[str, Any] = getattr(self._nc, "_server_info", {}) or {}
        advertised = set(info.get("connect_urls") or [])
        return max(len(advertised), len(set(self.settings.urls)), 1)

    def _stream_config(self) -> StreamConfig:
        self.replicas = self.settings.replicas or min(3, self._cluster_size())
        return StreamConfig(
            name=self.settings.stream,
            subjects=device_subjects(self.consumer.settings.root),
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=self.replicas,
            max_age=self.settings.max_age_s,
            max_bytes=self.settings.max_bytes,
            discard=DiscardPolicy.OLD,
            duplicate_window=self.settings.duplicate_window_s,
        )

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        """Idempotent: instances starting together may each create or update the stream."""
        config = self._stream_config()
        try:
            await js.stream_info(self.settings.stream)
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(config)
                return
            except nats.js.errors.BadRequestError as e:
                if e.err_code != STREAM_NAME_IN_USE:
                    raise  # a real refusal (storage, overlapping subjects): say it
                # another instance created it first: update it like an existing one
        await js.update_stream(config)

    async def _ensure_consumer(self, js: JetStreamContext) -> None:
        config = ConsumerConfig(
            durable_name=self.settings.durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.settings.ack_wait_s,
            max_ack_pending=self.settings.max_ack_pending,
        )
        try:
            await js.add_consumer(self.settings.stream, config)
        except nats.js.errors.BadRequestError as e:
            # An existing durable with other settings: keep it (it holds the position).
            await js.consumer_info(self.settings.stream, self.settings.durable)
            log.warning("durable %s kept with its own settings: %s", self.settings.durable, e)

    async def _watch_leader(self) -> None:
        """Report the stream's leader moving, with how long it may have had none.

        NATS's MQTT listener acknowledges a QoS 1 PUBLISH (PUBACK) without waiting for the
        stream that captures the subject to store it. While the stream elects a new leader
        (its old one died), messages that devices on the surviving nodes send are
        acknowledged and dropped: no device can see it. The move is seen here, and
        ``on_leader_moved`` asks the devices to send again what their broker acknowledged
        in that time (the agent keeps a resend window for exactly this); the
        ``(device_id, type, seq)`` key stores each once.
        """
        assert self._nc is not None and self._stopping is not None
        js = self._nc.jetstream(timeout=2.0)
        alive_at = time.monotonic()
        while not self._stopping.is_set():
            leader: str | None = None
            try:
                info = await js.stream_info(self.settings.stream)
                leader = info.cluster.leader if info.cluster is not None else None
            except Exception as e:  # noqa: BLE001 - no leader, or no connection: look again
                log.debug("stream %s: no leader seen: %r", self.settings.stream, e)
            now = time.monotonic()
            if leader is not None:
                if self.leader is not None and leader != self.leader:
                    within = now - alive_at + self.settings.leader_margin_s
                    self.metrics.inc("fleet_jetstream_leader_moves_total")
                    log.warning(
                        "stream %s leader moved %s -> %s; up to %.1fs of acknowledged "
                        "device messages may need resending",
                        self.settings.stream,
                        self.leader,
                        leader,
                        within,
                    )
                    if self.on_leader_moved is not None:
                        threading.Thread(
                            target=self.on_leader_moved,
                            args=(within,),
                            name="fleet-leader-moved",
                            daemon=True,
                        ).start()
                self.leader = leader
                alive_at = now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.leader_check_s)

    async def _pull(self, sub: JetStreamContext.PullSubscription) -> None:
        """Pull until stopped. Nothing ends this loop but ``stop()``: an unattended service
        whose source died would look healthy while the stream grew."""
        assert self._stopping is not None
        batch = self.settings.fetch_batch
        delay = 0.1
        while not self._stopping.is_set():
            if self.consumer.queue_room < batch:
                await asyncio.sleep(0.02)  # the writer is behind: JetStream keeps the rest
                continue
            try:
                msgs = await sub.fetch(batch, timeout=1.0)
                for msg in msgs:
                    await self._take(msg)
            # nats-py raises its own TimeoutError, or a bare one while reconnecting.
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except Exception as e:  # noqa: BLE001 - logged, counted, retried with back-off
                self.metrics.inc("fleet_jetstream_errors_total")
                log.warning("JetStream pull failed, retrying in %.1fs: %r", delay, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1

    async def _take(self, msg: Msg) -> None:
        sequence = msg.metadata.sequence.stream
        self._pending[sequence] = msg
        received = self.consumer.check_device_message(
            subject_topic(msg.subject), msg.data, self._ack_for(sequence, msg)
        )
        if received is not None and not self.consumer.offer(received):
            # Full despite the room check (releases share the queue): send it again soon.
            self._pending.pop(sequence, None)
            self.metrics.inc("fleet_jetstream_naks_total")
            await msg.nak(delay=1.0)

    def _ack_for(self, sequence: int, msg: Msg) -> Ack:
        def ack() -> None:
            try:
                self._loop.call_soon_threadsafe(self._send_ack, sequence, msg)
            except RuntimeError:
                # The loop is gone (stopped mid-drain): JetStream delivers it again.
                log.warning(
                    "stream message %s committed after shutdown, not acknowledged", sequence
                )

        return ack

    def _send_ack(self, sequence: int, msg: Msg) -> None:
        if self._pending.get(sequence) is msg:
            del self._pending[sequence]
        task = self._loop.create_task(self._ack(msg))
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)

    async def _ack(self, msg: Msg) -> None:
        try:
            await msg.ack()
        except nats.errors.Error as e:
            # Delivered again after ack_wait; the store's seq key keeps it from counting twice.
            log.warning("acknowledgement lost: %s", e)

    async def _hand_back(self) -> None:
        assert self._nc is not None
        await asyncio.gather(*self._acks)
        for msg in list(self._pending.values()):
            try:
                await msg.nak()
            except nats.errors.Error as e:
                log.warning("could not hand a message back: %s", e)
        self._pending.clear()
        try:
            await self._nc.flush(timeout=2)
        except nats.errors.Error as e:
            log.warning("final acknowledgements not confirmed: %s", e)
