"""A small MQTT interface (publish / subscribe / stop) over paho-mqtt 2.x with a dispatcher."""

from __future__ import annotations

import logging
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
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
    """

    def __init__(
        self,
        endpoint: BrokerEndpoint,
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
        self.endpoint = endpoint
        self.client_id = client_id or f"edge-{uuid.uuid4().hex[:12]}"
        self.persistent_session = persistent_session
        self.manual_ack = manual_ack
        self.connected = threading.Event()
        self.subscribe_failures: list[str] = []
        self._handlers: dict[str, tuple[int, Handler | None, AckHandler | None]] = {}
        self._pending_subs: dict[int, str] = {}
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
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._client = client
        self._set_will()
        self._started = False

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
            raise LinkError(
                f"cannot connect to {self.endpoint.host}:{self.endpoint.port}: {e}"
            ) from e
        self._client.loop_start()
        self._started = True
        if timeout is None:
            return
        if not self.connected.wait(timeout):
            reason = self._refused or "no answer"
            self.stop()
            raise LinkError(
                f"broker {self.endpoint.host}:{self.endpoint.port} not reached in "
                f"{timeout:.0f}s ({reason})"
            )

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
        self.connected.set()
        log.info("connected to %s:%s as %s", self.endpoint.host, self.endpoint.port, self.client_id)
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
            log.warning("disconnected from broker: %s", reason)
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
        for reason in reason_codes:
            if reason.is_failure:
                failure = f"{topic_filter}: {reason}"
                self.subscribe_failures.append(failure)
                del self.subscribe_failures[:-100]
                log.error("broker refused the subscription %s", failure)

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
