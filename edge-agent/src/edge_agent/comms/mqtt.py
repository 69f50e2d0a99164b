"""A small MQTT interface (publish / subscribe / stop) over paho-mqtt 2.x with a dispatcher."""

from __future__ import annotations

import dataclasses
import logging
import random
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, _ConnectionState
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]
# A handler that takes the message's acknowledgement with it: call ``ack()`` once the
# message is safe (stored), from any thread. Only on a link with ``manual_ack``.
Ack = Callable[[], None]
AckHandler = Callable[[str, bytes, Ack], None]

# Largest MQTT packet a link reads: the wire contract caps payloads at 256 KiB
# (protocol.codec.MAX_PAYLOAD_BYTES); a packet over this ends the connection before its
# body is read, so a broker without a size limit cannot make us buffer 100 MB.
DEFAULT_MAX_PACKET_BYTES = 1024 * 1024


def shared_filter(group: str, topic_filter: str) -> str:
    """An MQTT 5 / Mosquitto shared subscription: instances in ``group`` split the messages."""
    return f"$share/{group}/{topic_filter}"


def strip_share(topic_filter: str) -> str:
    """The plain filter inside a shared one: messages arrive on topics matching that part."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        if len(parts) == 3:
            return parts[2]
    return topic_filter


class LinkError(RuntimeError):
    """The broker could not be reached, refused us, or a publish failed."""


@dataclass(frozen=True)
class BrokerEndpoint:
    """Where and how to connect; the password is never logged."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive_s: int = 30

    @property
    def address(self) -> str:
        """``host:port`` as an operator writes it (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _same_login(endpoints: Sequence[BrokerEndpoint]) -> tuple[BrokerEndpoint, ...]:
    """The endpoints of one link, which may differ only in host and port: one session, one
    identity, whichever node holds it."""
    if not endpoints:
        raise ValueError("a link needs at least one broker endpoint")
    first = endpoints[0]
    for other in endpoints[1:]:
        if dataclasses.replace(other, host=first.host, port=first.port) != first:
            raise ValueError(
                f"broker endpoint {other.address} differs from {first.address} in more than "
                "host and port: the endpoints of one link share credentials, TLS and keepalive"
            )
    return tuple(endpoints)


class EndpointRotation:
    """Which endpoint the next connection attempt goes to, and how long to wait before it.

    Round robin: a lost connection or a failed attempt moves on to the next endpoint. Within
    a round a failed attempt hops to the next endpoint after about ``hop_s``; only a whole
    round of failures waits the back-off, which doubles per failed round from ``min_s`` up
    to ``max_s``, drawn from ``[d / 2, d]`` so a fleet does not retry in lockstep. The first
    attempt after a lost connection waits the base delay: a fleet that lost one node does
    not land on the next one in the same instant.
    """

    def __init__(
        self,
        endpoints: Sequence[BrokerEndpoint],
        min_s: float,
        max_s: float,
        hop_s: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("a rotation needs at least one endpoint")
        if min_s <= 0 or max_s < min_s or hop_s < 0:
            raise ValueError("need 0 < min_s <= max_s and hop_s >= 0")
        self.endpoints = tuple(endpoints)
        self.min_s = min_s
        self.max_s = max_s
        self.hop_s = hop_s
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._index = -1
        self._left_in_round = len(self.endpoints)
        self._failed_rounds = 0
        self._just_lost = False

    @property
    def current(self) -> BrokerEndpoint:
        """The endpoint of the latest attempt (the first before any)."""
        return self.endpoints[max(self._index, 0)]

    def next_endpoint(self) -> BrokerEndpoint:
        """Advance to the endpoint of the next attempt."""
        self._index = (self._index + 1) % len(self.endpoints)
        return self.endpoints[self._index]

    def connected(self) -> None:
        self._failed_rounds = 0
        self._left_in_round = len(self.endpoints)
        self._just_lost = True

    def _backoff(self) -> float:
        ceiling = min(self.max_s, self.min_s * 2.0 ** max(0, self._failed_rounds - 1))
        return ceiling * (1.0 - 0.5 * self._rng.random())

    def delay(self) -> float:
        """Seconds to wait before the next attempt; call once per lost or failed attempt."""
        if self._just_lost:
            self._just_lost = False
            return self._backoff()
        self._left_in_round -= 1
        if self._left_in_round > 0:
            return self.hop_s * (1.0 - 0.5 * self._rng.random())
        self._left_in_round = len(self.endpoints)
        self._failed_rounds += 1
        return self._backoff()


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class _CappedClient(paho.Client):
    """paho reads a whole packet before anything can look at its size; this refuses one
    whose declared length is over ``max_packet_bytes`` as soon as the length is known.

    paho calls ``_sock_recv`` for the body only after it has decoded the remaining
    length; raising OSError there makes it drop the connection (and reconnect), having
    allocated nothing for the body.
    """

    max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES
    oversized: int = 0
    rotation: EndpointRotation | None = None

    def reconnect(self) -> MQTTErrorCode:
        """paho reconnects to the one host it was given: every attempt takes the next one."""
        if self.rotation is not None:
            endpoint = self.rotation.next_endpoint()
            self._host, self._port = endpoint.host, endpoint.port
        return super().reconnect()

    def _reconnect_wait(self) -> None:
        """The rotation's delay instead of paho's plain doubling; paho's loop calls this
        after every lost connection or failed attempt. Ends early when the link stops."""
        if self.rotation is None:
            super()._reconnect_wait()
            return
        deadline = time.monotonic() + self.rotation.delay()
        stopping = (
            _ConnectionState.MQTT_CS_DISCONNECTING,
            _ConnectionState.MQTT_CS_DISCONNECTED,
        )
        while self._state not in stopping and not self._thread_terminate:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.1))

    def _sock_recv(self, bufsize: int) -> bytes:
        packet = self._in_packet
        if packet["have_remaining"] and packet["remaining_length"] > self.max_packet_bytes:
            size = int(packet["remaining_length"])
            self.oversized += 1
            log.error(
                "broker sent a packet of %s bytes, over the %s-byte limit: disconnecting",
                size,
                self.max_packet_bytes,
            )
            raise OSError(f"incoming MQTT packet of {size} bytes is over the limit")
        return super()._sock_recv(bufsize)


class PublishResult:
    """Handle for one publish; ``wait`` returns True once the broker acknowledged it."""

    def __init__(self, info: paho.MQTTMessageInfo) -> None:
        self._info = info

    @property
    def mid(self) -> int:
        return int(self._info.mid)

    @property
    def refused(self) -> bool:
        """paho did not queue the message (no connection, or its queue is full)."""
        return self._info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN)

    @property
    def done(self) -> bool:
        """Acknowledged by the broker (PUBACK for QoS 1); never blocks, never raises."""
        if self.refused:
            return False
        try:
            return bool(self._info.is_published())
        except (RuntimeError, ValueError):
            return False

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the acknowledgement; False if refused or timed out."""
        if self.refused:
            return False
        try:
            self._info.wait_for_publish(timeout=timeout)
        except (RuntimeError, ValueError):
            return False
        return self.done


class MqttLink:
    """One MQTT session: reconnects by itself, re-subscribes, fans messages out to handlers.

    Handlers run on paho's network thread: they must be quick and must not raise; an
    exception is logged and swallowed here so the network thread survives.

    ``persistent_session`` keeps the session on the broker while we are away (MQTT 3.1.1
    clean_session false, with a stable ``client_id``): QoS 1 messages for our
    subscriptions are queued and delivered when we come back. With ``manual_ack`` a QoS 1
    message is acknowledged only when its ``AckHandler`` calls ``ack()`` (after storing it),
    so one the process took but never stored is delivered again after a crash.

    ``will`` may be a callable: it is called before every connection, so each session's
    will can carry values of its own (the agent's carries a fresh seq).

    ``endpoint`` may be several endpoints of one clustered broker (same credentials and
    TLS): paho reconnects to one host only, so the link rotates through them itself
    (:class:`EndpointRotation`), one connection at a time, with the same client id and
    session. ``endpoint`` stays the first; ``current_endpoint`` is the one connected now.
    """

    def __init__(
        self,
        endpoint: BrokerEndpoint | Sequence[BrokerEndpoint],
        client_id: str | None = None,
        will: Will | Callable[[], Will] | None = None,
        max_inflight: int = 50,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        *,
        persistent_session: bool = False,
        manual_ack: bool = False,
        max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES,
    ) -> None:
        if persistent_session and not client_id:
            raise ValueError("a persistent session needs a stable client_id")
        endpoints = _same_login([endpoint] if isinstance(endpoint, BrokerEndpoint) else endpoint)
        self.endpoints = endpoints
        self.endpoint = endpoints[0]
        endpoint = endpoints[0]
        self._current: BrokerEndpoint | None = None
        self.client_id = client_id or f"edge-{uuid.uuid4().hex[:12]}"
        self.persistent_session = persistent_session
        self.manual_ack = manual_ack
        self.connected = threading.Event()
        self.subscribe_failures: list[str] = []
        self._handlers: dict[str, tuple[int, Handler | None, AckHandler | None]] = {}
        self._pending_subs: dict[int, str] = {}
        self._sub_attempts: dict[str, int] = {}  # refused subscriptions: tries so far
        self._lock = threading.Lock()
        self._refused: str | None = None
        self._on_connect_hooks: list[Callable[[], None]] = []
        self._will = will
        self._generation = 0  # bumped per connection: an ack never crosses sessions
        client = _CappedClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv311,
            clean_session=not persistent_session,
            manual_ack=manual_ack,
        )
        client.max_packet_bytes = max_packet_bytes
        if endpoint.username is not None:
            client.username_pw_set(endpoint.username, endpoint.password)
        if endpoint.ca_file is not None:
            client.tls_set(
                ca_certs=endpoint.ca_file,
                certfile=endpoint.cert_file,
                keyfile=endpoint.key_file,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        client.max_inflight_messages_set(max_inflight)
        client.reconnect_delay_set(
            min_delay=max(1, int(reconnect_min_s)), max_delay=int(reconnect_max_s)
        )
        if len(endpoints) > 1:
            client.rotation = EndpointRotation(
                endpoints, max(0.1, reconnect_min_s), max(reconnect_min_s, reconnect_max_s)
            )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._client = client
        self._set_will()
        self._started = False

    @property
    def current_endpoint(self) -> BrokerEndpoint | None:
        """The endpoint this link is connected to now; None while it is not connected."""
        return self._current if self.connected.is_set() else None

    @property
    def oversized_packets(self) -> int:
        """Packets refused for their size since the link was made."""
        return self._client.oversized

    def _set_will(self) -> None:
        will = self._will() if callable(self._will) else self._will
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float | None = 10.0) -> None:
        """Connect and start the network thread; wait up to ``timeout`` for the session.

        With ``timeout=None`` it returns at once and keeps trying in the background.
        """
        try:
            self._client.connect_async(
                self.endpoint.host, self.endpoint.port, keepalive=self.endpoint.keepalive_s
            )
        except (OSError, ValueError) as e:
            raise LinkError(f"cannot connect to {self.endpoint.address}: {e}") from e
        self._client.loop_start()
        self._started = True
        if timeout is None:
            return
        if not self.connected.wait(timeout):
            reason = self._refused or "no answer"
            self.stop()
            where = ", ".join(e.address for e in self.endpoints)
            raise LinkError(f"broker {where} not reached in {timeout:.0f}s ({reason})")

    def stop(self, final: tuple[str, bytes] | None = None) -> None:
        """Disconnect cleanly (the Last Will is not sent); ``final`` is published first."""
        if not self._started:
            return
        if final is not None and self.connected.is_set():
            self.publish(final[0], final[1], qos=1, retain=True).wait(2.0)
        self.connected.clear()
        self._client.disconnect()
        self._client.loop_stop()
        self._started = False
        self.connected.clear()

    def on_connect(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` (on the network thread) after every (re)connection."""
        self._on_connect_hooks.append(hook)

    # -- publish / subscribe -------------------------------------------------------------

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> PublishResult:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        return PublishResult(info)

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        self._add_subscription(topic_filter, qos, handler, None)

    def subscribe_acked(self, topic_filter: str, handler: AckHandler, qos: int = 1) -> None:
        """Subscribe with a handler that acknowledges each message itself (``manual_ack``)."""
        if not self.manual_ack:
            raise ValueError("subscribe_acked needs a link made with manual_ack=True")
        self._add_subscription(topic_filter, qos, None, handler)

    def _add_subscription(
        self, topic_filter: str, qos: int, handler: Handler | None, acked: AckHandler | None
    ) -> None:
        with self._lock:
            self._handlers[topic_filter] = (qos, handler, acked)
        if self.connected.is_set():
            self._send_subscribe(self._client, topic_filter, qos)

    def _send_subscribe(self, client: paho.Client, topic_filter: str, qos: int) -> None:
        _rc, mid = client.subscribe(topic_filter, qos=qos)
        if mid is not None:
            with self._lock:
                self._pending_subs[int(mid)] = topic_filter

    def unsubscribe(self, topic_filter: str) -> None:
        with self._lock:
            self._handlers.pop(topic_filter, None)
        if self.connected.is_set():
            self._client.unsubscribe(topic_filter)

    # -- paho callbacks (VERSION2 signatures) --------------------------------------------

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            log.warning("broker refused connection: %s", reason)
            return
        with self._lock:
            subs = [(f, qos) for f, (qos, _h, _a) in self._handlers.items()]
            self._generation += 1
        # Every connection subscribes again, persistent session or not: a broker that lost
        # the session (restart without persistence, or $share subscriptions it does not
        # restore) would otherwise deliver nothing, silently.
        for topic_filter, qos in subs:
            self._send_subscribe(client, topic_filter, qos)
        rotation = self._client.rotation
        if rotation is not None:
            rotation.connected()
        self._current = self.endpoint if rotation is None else rotation.current
        self.connected.set()
        log.info("connected to %s as %s", self._current.address, self.client_id)
        for hook in self._on_connect_hooks:
            try:
                hook()
            except Exception:
                log.exception("on-connect hook failed")

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if was_connected:
            where = self._current.address if self._current is not None else "?"
            log.warning("disconnected from broker %s: %s", where, reason)
        try:
            self._set_will()  # the next session's will
        except Exception:
            log.exception("could not prepare the Last Will of the next session")

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self._lock:
            topic_filter = self._pending_subs.pop(mid, "?")
            generation = self._generation
        if not any(reason.is_failure for reason in reason_codes):
            with self._lock:
                if self._sub_attempts.pop(topic_filter, 0):
                    log.info("subscribed to %s after all", topic_filter)
            return
        failure = f"{topic_filter}: {', '.join(str(r) for r in reason_codes)}"
        self.subscribe_failures.append(failure)
        del self.subscribe_failures[:-100]
        with self._lock:
            attempt = self._sub_attempts.get(topic_filter, 0) + 1
            self._sub_attempts[topic_filter] = attempt
        # A refusal can be passing (a clustered broker electing the leader of what backs
        # the subscription): ask again, 1 s then doubling up to a minute, while connected.
        delay = min(60.0, 2.0 ** (attempt - 1))
        log.error("broker refused the subscription %s; asking again in %.0fs", failure, delay)
        timer = threading.Timer(delay, self._subscribe_again, args=(topic_filter, generation))
        timer.daemon = True
        timer.start()

    def _subscribe_again(self, topic_filter: str, generation: int) -> None:
        """A refused subscription, asked again on the same connection if it still stands
        (a new connection subscribes to everything anyway)."""
        with self._lock:
            wanted = self._handlers.get(topic_filter)
            same = generation == self._generation
        if wanted is not None and same and self.connected.is_set():
            self._send_subscribe(self._client, topic_filter, wanted[0])

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            matched = [
                (h, a)
                for f, (_q, h, a) in self._handlers.items()
                if paho.topic_matches_sub(strip_share(f), msg.topic)
            ]
            generation = self._generation
        acked = [a for _h, a in matched if a is not None]
        ack = self._acker(msg, generation, len(acked)) if self.manual_ack else None
        payload = bytes(msg.payload)
        for handler, acked_handler in matched:
            try:
                if acked_handler is not None and ack is not None:
                    acked_handler(msg.topic, payload, ack)
                elif handler is not None:
                    handler(msg.topic, payload)
            except Exception:
                log.exception("handler for %s failed", msg.topic)
        if ack is not None and not acked:
            ack()  # no handler keeps this message: acknowledge it now

    def _acker(self, msg: paho.MQTTMessage, generation: int, holders: int) -> Ack:
        """``ack`` for one message: PUBACK once every acked handler has called it, and only
        on the session that received it (after a reconnect the broker sends it again)."""
        left = [max(1, holders)]
        mid, qos = int(msg.mid), int(msg.qos)

        def ack() -> None:
            with self._lock:
                left[0] -= 1
                if left[0] != 0 or generation != self._generation:
                    return
            if qos > 0:
                self._client.ack(mid, qos)

        return ack
