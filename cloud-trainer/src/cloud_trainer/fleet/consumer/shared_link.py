"""An MqttLink whose handlers also fire for ``$share/{group}/...`` subscriptions."""

from __future__ import annotations

import logging
from typing import Any

import paho.mqtt.client as paho

from edge_agent.comms.mqtt import MqttLink

log = logging.getLogger(__name__)


def shared_filter(group: str, topic_filter: str) -> str:
    return f"$share/{group}/{topic_filter}"


def strip_share(topic_filter: str) -> str:
    """The plain filter inside a shared one: messages arrive on topics matching that part."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        if len(parts) == 3:
            return parts[2]
    return topic_filter


class SharedSubscriptionLink(MqttLink):
    """Dispatches by the filter without its ``$share/{group}/`` prefix.

    The broker delivers a shared subscription's messages on their real topic, which paho's
    ``topic_matches_sub`` does not match against the ``$share/...`` filter, so the base
    dispatcher would drop them.
    """

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
