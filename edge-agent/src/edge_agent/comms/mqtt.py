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
    """

    def __init__(
        self,
        endpoint: BrokerEndpoint,
        client_id: str | None = None,
        will: Will | None = None,
        max_inflight: int = 50,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
    ) -> None:
        self.endpoint = endpoint
        self.client_id = client_id or f"edge-{uuid.uuid4().hex[:12]}"
        self.connected = threading.Event()
        self._handlers: dict[str, tuple[int, Handler]] = {}
        self._lock = threading.Lock()
        self._refused: str | None = None
        self._on_connect_hooks: list[Callable[[], None]] = []
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        if endpoint.username is not None:
            client.username_pw_set(endpoint.username, endpoint.password)
        if endpoint.ca_file is not None:
            client.tls_set(
                ca_certs=endpoint.ca_file,
                certfile=endpoint.cert_file,
                keyfile=endpoint.key_file,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        if will is not None:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        client.max_inflight_messages_set(max_inflight)
        client.reconnect_delay_set(
            min_delay=max(1, int(reconnect_min_s)), max_delay=int(reconnect_max_s)
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        self._started = False

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
        with self._lock:
            self._handlers[topic_filter] = (qos, handler)
        if self.connected.is_set():
            self._client.subscribe(topic_filter, qos=qos)

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
            subs = [(f, qos) for f, (qos, _h) in self._handlers.items()]
        for topic_filter, qos in subs:
            client.subscribe(topic_filter, qos=qos)
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

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            handlers = [
                h
                for f, (_q, h) in self._handlers.items()
                if paho.topic_matches_sub(strip_share(f), msg.topic)
            ]
        for handler in handlers:
            try:
                handler(msg.topic, bytes(msg.payload))
            except Exception:
                log.exception("handler for %s failed", msg.topic)
