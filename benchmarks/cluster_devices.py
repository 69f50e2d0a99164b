"""Simulated devices for the broker cluster benchmark: one MQTT session each, failing over.

Each process holds ``count`` devices, every one its own MQTT 3.1.1 session driven from one
selector loop (no thread per device), sending one QoS 1 message a second at its own phase
(nine predictions, then a telemetry). Device ``i`` starts on endpoint ``i mod n``; when its
connection drops (its node was killed) it reconnects to the next endpoint after a jittered
back-off, the way the agent does, and sends again everything the broker had not acknowledged
(receivers drop the duplicates by seq). Like the agent it keeps what the broker acknowledged
in the last ``RESEND_WINDOW_S`` and sends that again after a reconnection and when the fleet
asks (a ``resend`` command on its ``cmd`` topic, with ``within_s``). What the broker
acknowledged is reported per ``(device_id, seq)`` so the benchmark can count what was
acknowledged and never stored.
"""

from __future__ import annotations

import contextlib
import heapq
import random
import selectors
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from cloud_trainer.fleet.sim import SimulatedDevice
from edge_agent.protocol import Channel, Command, DeviceKind, TopicTree, encode

Pending = tuple[str, bytes, int]  # topic, payload, seq
RESEND_WINDOW_S = 30.0  # the agent's default broker.resend_window_s


@dataclass
class Device:
    """One simulated device: its message source, its connection, what awaits a PUBACK."""

    sim: SimulatedDevice
    client_id: str
    topics: tuple[str, str]
    cmd_topic: str
    ack_topic: str
    endpoints: list[tuple[str, int]]
    endpoint_index: int
    client: paho.Client | None = None
    fd: int | None = None  # the socket registered with the selector
    connected: bool = False
    lost_at: float | None = None
    retry_at: float = 0.0
    failovers: int = 0
    in_flight: dict[int, Pending] = field(default_factory=dict)
    backlog: list[Pending] = field(default_factory=list)
    acked: list[int] = field(default_factory=list)
    sent_at: dict[int, float] = field(default_factory=dict)  # seq -> first sent (wall clock)
    recent: deque[tuple[float, Pending]] = field(default_factory=deque)  # acked, ack order
    resent: int = 0
    resend_commands: int = 0


class DeviceSlice:
    """The devices of one process and their selector loop."""

    def __init__(
        self,
        endpoints: list[tuple[str, int]],
        root: str,
        first: int,
        count: int,
        seed: int = 0,
        cmd_qos: int = 1,
    ) -> None:
        self.cmd_qos = cmd_qos
        tree = TopicTree(root)
        self.selector = selectors.DefaultSelector()
        self.rng = random.Random(seed + first)
        self.devices: list[Device] = []
        self.reconnect_s: list[float] = []  # connection lost -> CONNACK on the next node
        for i in range(first, first + count):
            sim = SimulatedDevice(f"sim-{i:05d}", f"site-{i % 10}", DeviceKind.CAMERA, seed=i)
            self.devices.append(
                Device(
                    sim=sim,
                    client_id=f"{root}-dev-{i}",
                    topics=(
                        tree.device(sim.site, sim.device_id, Channel.PREDICTIONS),
                        tree.device(sim.site, sim.device_id, Channel.TELEMETRY),
                    ),
                    cmd_topic=tree.device(sim.site, sim.device_id, Channel.CMD),
                    ack_topic=tree.device(sim.site, sim.device_id, Channel.CMD_ACK),
                    endpoints=endpoints,
                    endpoint_index=i % len(endpoints),
                )
            )

    # -- connections -----------------------------------------------------------------------

    def _connect(self, device: Device) -> None:
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=device.client_id,
            protocol=paho.MQTTv311,
            clean_session=True,
        )

        def on_connect(_c: paho.Client, _u: object, _f: object, rc: Any, _p: object) -> None:
            if rc.is_failure:
                return
            device.connected = True
            if device.lost_at is not None:
                self.reconnect_s.append(time.monotonic() - device.lost_at)
                device.lost_at = None
            client.subscribe(device.cmd_topic, qos=self.cmd_qos)
            # Everything not acknowledged on the old connection goes again, in order, and
            # what was acknowledged within the resend window after it.
            again = sorted(device.in_flight.values(), key=lambda p: p[2]) + device.backlog
            device.in_flight.clear()
            device.backlog.clear()
            for pending in again:
                self._send(device, pending)
            self._resend_recent(device, RESEND_WINDOW_S)

        def on_publish(_c: paho.Client, _u: object, mid: int, _rc: object, _p: object) -> None:
            pending = device.in_flight.pop(mid, None)
            if pending is not None:
                device.acked.append(pending[2])
                now = time.monotonic()
                device.recent.append((now, pending))
                while device.recent and device.recent[0][0] < now - RESEND_WINDOW_S:
                    device.recent.popleft()

        def on_message(_c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
            with contextlib.suppress(ValueError):  # not a command: ignored, as by the agent
                command = Command.model_validate_json(message.payload)
                if command.action == "resend":
                    device.resend_commands += 1
                    within = float(command.args.get("within_s", RESEND_WINDOW_S))
                    age = min(max(time.time() - command.ts.timestamp(), 0.0), 60.0)
                    self._resend_recent(device, min(within + age, RESEND_WINDOW_S))
                    # Answered like the agent answers, so the fleet stops asking.
                    ack = device.sim.ack(command, "done")
                    self._send(device, (device.ack_topic, encode(ack), ack.seq))

        def on_disconnect(_c: paho.Client, _u: object, _f: object, _rc: object, _p: object) -> None:
            self._lost(device)

        client.on_connect = on_connect
        client.on_publish = on_publish
        client.on_disconnect = on_disconnect
        client.on_message = on_message
        host, port = device.endpoints[device.endpoint_index]
        device.client = client
        try:
            client.connect(host, port, keepalive=30)
        except OSError:
            self._lost(device)
            return
        sock = client.socket()
        if sock is not None:
            device.fd = sock.fileno()
            self.selector.register(device.fd, selectors.EVENT_READ, device)

    def _lost(self, device: Device) -> None:
        client = device.client
        if client is None:
            return
        device.client = None
        device.connected = False
        if device.lost_at is None:
            device.lost_at = time.monotonic()
        if device.fd is not None:
            # By file number: paho may have closed the socket already (the number is free
            # for the next connection, so it must leave the selector now).
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(device.fd)
            device.fd = None
        # A dead socket may refuse even the goodbye.
        with contextlib.suppress(Exception):
            client.disconnect()
        device.endpoint_index = (device.endpoint_index + 1) % len(device.endpoints)
        device.failovers += 1
        device.retry_at = time.monotonic() + self.rng.uniform(0.2, 1.0)

    def _resend_recent(self, device: Device, within_s: float) -> None:
        horizon = time.monotonic() - within_s
        rows = [pending for at, pending in device.recent if at >= horizon]
        device.recent.clear()
        device.resent += len(rows)
        for pending in rows:
            self._send(device, pending)

    def _send(self, device: Device, pending: Pending) -> None:
        client = device.client
        if client is None or not device.connected:
            device.backlog.append(pending)
            return
        info = client.publish(pending[0], pending[1], qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            device.backlog.append(pending)
            self._lost(device)
            return
        device.in_flight[info.mid] = pending

    # -- the loop --------------------------------------------------------------------------

    def run(self, start_at: float, seconds: float, drain_s: float = 30.0) -> dict[str, Any]:
        for device in self.devices:
            self._connect(device)
        count = len(self.devices)
        due = [(start_at + k / count, k) for k in range(count)]  # phases spread evenly
        heapq.heapify(due)
        end = start_at + seconds
        sent = 0
        misc_at = 0.0
        while True:
            now = time.time()
            busy = any(d.in_flight or d.backlog for d in self.devices)
            if now >= end and not busy:
                break
            if now >= end + drain_s:
                break  # what was never acknowledged is reported as such
            while due and due[0][0] <= now and now < end:
                at, k = heapq.heappop(due)
                device = self.devices[k]
                telemetry = device.sim.seq % 10 == 9
                message = device.sim.telemetry() if telemetry else device.sim.prediction()
                device.sent_at[message.seq] = now
                self._send(device, (device.topics[telemetry], encode(message), message.seq))
                sent += 1
                heapq.heappush(due, (at + 1.0, k))
            wait = min(0.05, max(0.0, due[0][0] - time.time())) if now < end and due else 0.05
            for key, _mask in self.selector.select(timeout=wait):
                device = key.data
                if device.client is not None and device.client.loop_read() != 0:
                    self._lost(device)
            mono = time.monotonic()
            if mono - misc_at > 0.2:
                misc_at = mono
                for device in self.devices:
                    client = device.client
                    if client is None:
                        if mono >= device.retry_at:
                            self._connect(device)
                        continue
                    wrote = not client.want_write() or client.loop_write() == 0
                    if not wrote or client.loop_misc() != 0:
                        self._lost(device)
        for device in self.devices:
            if device.client is not None:
                device.client.disconnect()
        return {
            "sent": sent,
            "acked": {d.sim.device_id: d.acked for d in self.devices},
            "sent_at": {d.sim.device_id: d.sent_at for d in self.devices},
            "unacked": sum(len(d.in_flight) + len(d.backlog) for d in self.devices),
            "failovers": sum(d.failovers for d in self.devices),
            "resent": sum(d.resent for d in self.devices),
            "resend_commands": sum(d.resend_commands for d in self.devices),
            "reconnect_s": self.reconnect_s,
        }


def device_worker(
    endpoints: list[tuple[str, int]],
    root: str,
    first: int,
    count: int,
    start_at: float,
    seconds: float,
    out: Connection,
    cmd_qos: int = 1,
) -> None:
    """Process entry point: run one slice and send its report through ``out``."""
    out.send(DeviceSlice(endpoints, root, first, count, cmd_qos=cmd_qos).run(start_at, seconds))
