"""A command to every device heard from lately, and who has not answered it (real broker)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from cloud_trainer.fleet.service import FleetService
from cloud_trainer.fleet.sim import SimulatedDevice, SimulatedFleet
from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.protocol import Channel, DeviceKind, encode
from tests.support.fleet_service import fleet_settings

pytestmark = pytest.mark.integration


def _wait_until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_broadcast_reaches_every_device_heard_from_and_tells_who_is_silent(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    root = f"bc{uuid.uuid4().hex[:6]}"
    settings = fleet_settings(mosquitto, tmp_path, root, operators="operator=" + "t" * 24)
    with FleetService(settings) as service:
        fleet = SimulatedFleet.build(service.consumer.link.endpoint, root, cameras=2, stations=1)
        fleet.start()
        try:
            for device_id, device in fleet.devices.items():
                fleet.publish(device_id, device.status())
            # A device the fleet heard from that is not listening any more.
            silent = SimulatedDevice("silent-01", "harbour", DeviceKind.CAMERA, seed=7)
            first = next(iter(fleet.devices))
            topic = fleet.tree.device("harbour", "silent-01", Channel.STATUS)
            fleet.publish_raw(first, topic, encode(silent.status()))
            everyone = {*fleet.devices, "silent-01"}
            _wait_until(lambda: {d for _s, d in service.store.heard_from(0)} == everyone)

            sent = service.commands.broadcast("resend", {"within_s": 12.5}, "fleet")
            assert {d for _site, d in sent.values()} == everyone
            _wait_until(lambda: len(service.commands.unanswered(sent)) == 1)
            assert list(service.commands.unanswered(sent).values()) == [("harbour", "silent-01")]
            got = [c for c in fleet.commands if c.cmd_id in sent]
            assert {c.device_id for c in got} == set(fleet.devices)
            assert {(c.action, c.args["within_s"], c.issued_by) for c in got} == {
                ("resend", 12.5, "fleet")
            }
            assert all(c.expires_at is not None and c.expires_at > c.ts for c in got)

            # Asked again, only the silent one is asked; a heard-from filter of "nobody"
            # sends nothing.
            again = service.commands.broadcast(
                "resend", {}, "fleet", devices=list(service.commands.unanswered(sent).values())
            )
            assert list(again.values()) == [("harbour", "silent-01")]
            assert service.commands.broadcast("resend", {}, "fleet", devices=[]) == {}
        finally:
            fleet.stop()
