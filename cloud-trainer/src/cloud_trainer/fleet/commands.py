"""Commands to devices: recorded in the store first, then published on the device's ``cmd``."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from cloud_trainer.fleet.metrics import FleetMetrics
from cloud_trainer.fleet.store import FleetStore
from edge_agent.comms.mqtt import MqttLink
from edge_agent.protocol import Channel, Command, TopicTree, encode, utc_now
from edge_agent.protocol.codec import describe_validation_error

log = logging.getLogger(__name__)


class CommandError(ValueError):
    """The command is invalid, its device unknown, or the broker did not take it."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class CommandPublisher:
    """Sends ``Command`` messages over the consumer's MQTT session; acks come back through it.

    The command's ``seq`` is microseconds since the epoch: monotonic per target device
    across restarts and across service instances, with no shared counter to keep.
    """

    def __init__(self, link: MqttLink, store: FleetStore, tree: TopicTree, metrics: FleetMetrics):
        self.link = link
        self.store = store
        self.tree = tree
        self.metrics = metrics

    def send(
        self,
        device_id: str,
        action: str,
        args: dict[str, Any],
        issued_by: str,
        expires_s: float | None = 300.0,
        publish_timeout_s: float = 5.0,
    ) -> Command:
        device = self.store.device(device_id)
        if device is None:
            raise CommandError(f"unknown device {device_id!r}", 404)
        now = utc_now()
        try:
            command = Command.model_validate(
                {
                    "device_id": device_id,
                    "ts": now,
                    "seq": time.time_ns() // 1000,
                    "cmd_id": f"cmd-{uuid.uuid4().hex[:16]}",
                    "action": action,
                    "args": args,
                    "issued_by": issued_by,
                    "expires_at": None if expires_s is None else now + timedelta(seconds=expires_s),
                }
            )
        except ValidationError as e:
            raise CommandError(describe_validation_error("command", e), 422) from e
        if not self.link.connected.is_set():
            raise CommandError("the broker is not connected; try again shortly", 503)
        self.store.record_command(command)
        topic = self.tree.device(str(device["site"]), device_id, Channel.CMD)
        if not self.link.publish(topic, encode(command), qos=1).wait(publish_timeout_s):
            raise CommandError(f"broker did not acknowledge command {command.cmd_id}", 503)
        self.metrics.inc("fleet_commands_sent_total", action=command.action)
        log.info("command %s %s → %s by %s", command.cmd_id, action, device_id, issued_by)
        return command

    def broadcast(
        self,
        action: str,
        args: dict[str, Any],
        issued_by: str,
        *,
        devices: list[tuple[str, str]] | None = None,
        expires_s: float = 60.0,
        publish_timeout_s: float = 10.0,
        connect_timeout_s: float = 30.0,
    ) -> dict[str, tuple[str, str]]:
        """The same command to each of ``devices`` ((site, device_id); default: every device
        heard from within the store's ``offline_after_s``), recorded in one transaction and
        published without waiting between devices. Returns cmd_id -> (site, device_id) of
        what was sent; ``unanswered`` says which of them no device has answered yet.

        For fleet-wide transport matters (``resend`` after a broker stream lost its
        leader); a device offline now does the same by itself when it reconnects.
        """
        # Its own node may be the one that died: give the session time to move.
        if not self.link.connected.wait(connect_timeout_s):
            log.warning("%s not sent: the broker is not connected", action)
            return {}
        now = utc_now()
        if devices is None:
            devices = self.store.heard_from(now.timestamp() - self.store.offline_after_s)
        commands = [
            Command(
                device_id=device_id,
                ts=now,
                seq=time.time_ns() // 1000,
                cmd_id=f"cmd-{uuid.uuid4().hex[:16]}",
                action=action,
                args=args,
                issued_by=issued_by,
                expires_at=now + timedelta(seconds=expires_s),
            )
            for _site, device_id in devices
        ]
        self.store.record_commands(commands)
        results = [
            self.link.publish(self.tree.device(site, c.device_id, Channel.CMD), encode(c))
            for (site, _id), c in zip(devices, commands, strict=True)
        ]
        deadline = time.monotonic() + publish_timeout_s
        taken = sum(r.wait(max(0.0, deadline - time.monotonic())) for r in results)
        self.metrics.inc("fleet_commands_sent_total", taken, action=action)
        log.info("%s to %s devices (%s taken) by %s", action, len(commands), taken, issued_by)
        return {c.cmd_id: target for c, target in zip(commands, devices, strict=True)}

    def unanswered(self, sent: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
        """Those of ``sent`` (from ``broadcast``) that no device has answered yet."""
        waiting = self.store.commands_in_state(list(sent), "sent")
        return {cmd_id: target for cmd_id, target in sent.items() if cmd_id in waiting}
