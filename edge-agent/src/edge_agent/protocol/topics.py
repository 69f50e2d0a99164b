"""The MQTT topic tree: building topics for a device and parsing them back."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from edge_agent.protocol.errors import ProtocolError

# Identifiers that end up inside topics: no MQTT wildcards, no separators, no '$'.
IDENT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_IDENT = re.compile(IDENT_PATTERN)
DEFAULT_ROOT = "mlops"
RELEASES = "releases"
ROLLOUT = "rollout"


class Channel(StrEnum):
    """The per-device topics, by the last part(s) of their name."""

    STATUS = "status"
    TELEMETRY = "telemetry"
    PREDICTIONS = "predictions"
    DRIFT = "drift"
    EVENTS = "events"
    CMD = "cmd"
    CMD_ACK = "cmd/ack"
    SENSOR_FAULTS = "sensor_faults"


def check_ident(value: str, what: str) -> str:
    """Return ``value`` if it is safe to put in a topic, else raise ProtocolError."""
    if not _IDENT.fullmatch(value):
        raise ProtocolError(
            f"invalid {what} {value!r}: use 1-63 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return value


@dataclass(frozen=True, slots=True)
class TopicAddress:
    """Where a topic points: a device channel, or a model's release topic."""

    root: str
    channel: Channel | None
    site: str | None = None
    device: str | None = None
    model: str | None = None

    @property
    def is_release(self) -> bool:
        return self.model is not None


@dataclass(frozen=True, slots=True)
class TopicTree:
    """Builds and parses topics under one configurable root, e.g. ``mlops``."""

    root: str = DEFAULT_ROOT

    def __post_init__(self) -> None:
        parts = self.root.split("/")
        if not self.root or any(not p or p.startswith("$") or p in ("+", "#") for p in parts):
            raise ProtocolError(f"invalid topic root {self.root!r}")

    def device(self, site: str, device: str, channel: Channel) -> str:
        check_ident(site, "site id")
        check_ident(device, "device id")
        return f"{self.root}/{site}/{device}/{channel.value}"

    def release(self, model: str) -> str:
        return f"{self.root}/{RELEASES}/{check_ident(model, 'model name')}"

    def all_releases(self) -> str:
        return f"{self.root}/{RELEASES}/+"

    def rollout_log(self, model: str) -> str:
        """Where the release tooling records a model's rollout steps (devices never listen)."""
        return f"{self.release(model)}/{ROLLOUT}"

    def all_rollout_logs(self) -> str:
        return f"{self.root}/{RELEASES}/+/{ROLLOUT}"

    def fleet_filter(self, channel: Channel, site: str = "+") -> str:
        """Subscription filter for one channel of every device (of one site)."""
        return f"{self.root}/{site}/+/{channel.value}"

    def parse(self, topic: str) -> TopicAddress:
        """Return what ``topic`` addresses, or raise ProtocolError naming the problem."""
        prefix = self.root + "/"
        if not topic.startswith(prefix):
            raise ProtocolError(f"topic {topic!r} is not under root {self.root!r}")
        rest = topic[len(prefix) :].split("/")
        if len(rest) == 2 and rest[0] == RELEASES:
            return TopicAddress(self.root, None, model=check_ident(rest[1], "model name"))
        if len(rest) < 3:
            raise ProtocolError(f"topic {topic!r} has too few levels")
        site, device, tail = rest[0], rest[1], "/".join(rest[2:])
        try:
            channel = Channel(tail)
        except ValueError:
            raise ProtocolError(f"topic {topic!r}: unknown channel {tail!r}") from None
        return TopicAddress(
            self.root,
            channel,
            site=check_ident(site, "site id"),
            device=check_ident(device, "device id"),
        )
