"""A running fleet service with a seeded simulated fleet, for the dashboard's tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cloud_trainer.fleet.service import FleetService
from cloud_trainer.fleet.settings import FleetSettings, parse_tokens
from cloud_trainer.fleet.sim import SimulatedFleet
from cloud_trainer.fleet.store import sqlite_url
from cloud_trainer.release.publisher import ReleaseChannel
from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink
from edge_agent.protocol import (
    ReleaseManifest,
    Rollout,
    RolloutRecord,
    SigningKey,
    TopicTree,
    UpdateState,
    encode,
)
from tests.support.samples import sample_manifest

TOKEN = "operator-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
VIEWER_TOKEN = "viewer-token-0123456789ab"
VIEWER_AUTH = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
HISTORY_POINTS = 24


def wait_until(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout:.0f} s"
        time.sleep(0.05)


@dataclass
class DashboardFleet:
    service: FleetService
    fleet: SimulatedFleet
    key: SigningKey
    public_key: Path
    root: str

    @property
    def base_url(self) -> str:
        return self.service.base_url

    def stop(self) -> None:
        self.fleet.stop()
        self.service.stop()


def _release(key: SigningKey, version: int, created: datetime, percent: float) -> ReleaseManifest:
    manifest = sample_manifest(
        release_id=f"catdog-v{version}-seed",
        version=version,
        created=created,
        rollout=Rollout(percent=percent),
    )
    return key.sign(manifest)


def _publish_releases(endpoint: BrokerEndpoint, root: str, key: SigningKey) -> None:
    """Two signed catdog releases through the release tooling's channel: v3, then v4 at 25%."""
    now = datetime.now(UTC)
    link = MqttLink(endpoint, client_id=f"release-seed-{uuid.uuid4().hex[:8]}")
    link.start()
    try:
        channel = ReleaseChannel(link, TopicTree(root), key)
        channel.publish(_release(key, 3, now - timedelta(days=2), 100.0))
        v4 = channel.publish(_release(key, 4, now - timedelta(hours=1), 25.0))
        step = RolloutRecord(
            release_id=v4.release_id,
            model=v4.model,
            version=v4.version,
            seq=0,
            ts=now - timedelta(hours=1),
            action="started",
            wave=0,
            audience="25% of the fleet",
            reason="wave 0 published",
            publisher=v4.publisher,
        )
        topic = TopicTree(root).rollout_log(v4.model)
        assert link.publish(topic, encode(step), qos=1).wait(10), "rollout record not sent"
    finally:
        link.stop()


def _seed(fleet: SimulatedFleet, key: SigningKey) -> None:
    """Status, a day's telemetry and predictions, drift, update outcomes, one offline device."""
    for device_id, device in fleet.devices.items():
        fleet.publish(device_id, device.status())
    start = datetime.now(UTC) - timedelta(minutes=2 * HISTORY_POINTS)
    for i in range(HISTORY_POINTS):
        for device_id, device in fleet.devices.items():
            device.clock = start + timedelta(minutes=2 * i)
            fleet.publish(device_id, device.telemetry())
            fleet.publish(device_id, device.prediction())
            fleet.publish(device_id, device.prediction())
    for device in fleet.devices.values():
        device.clock = None
    cam0, cam1, cam2 = (fleet.devices[f"cam-0{i}"] for i in range(3))
    fleet.publish("cam-00", cam0.drift("raised", score=0.7))
    # The station's own labelled accuracy fell below its floor (lower is worse).
    wx1 = fleet.devices["wx-01"]
    fleet.publish(
        "wx-01", wx1.drift("raised", 0.646, detector="accuracy", metric="accuracy", threshold=0.7)
    )
    fleet.publish("cam-00", cam0.event(UpdateState.DOWNLOADING, 4, "catdog-v4-seed"))
    fleet.publish("cam-00", cam0.event(UpdateState.COMMITTED, 4, "catdog-v4-seed"))
    fleet.publish("cam-01", cam1.event(UpdateState.FAILED, 4, "catdog-v4-seed"))
    fleet.publish("cam-02", cam2.event(UpdateState.COMMITTED, 3, "catdog-v3-seed"))
    fleet.publish("cam-02", cam2.status("offline"))
    # A camera's visits: one over, one under way; its stream dropped and came back.
    fleet.publish("cam-00", cam0.visit("start", "visit-seed-1"))
    fleet.publish("cam-00", cam0.visit("end", "visit-seed-1", frames=9))
    fleet.publish("cam-00", cam0.stream("lost"))
    fleet.publish("cam-00", cam0.stream("restored", down_s=12.5))
    fleet.publish("cam-00", cam0.visit("start", "visit-seed-2", label="dog"))


def start_dashboard_fleet(
    broker: MosquittoBroker, workdir: Path, *, signing: bool = True
) -> DashboardFleet:
    """A service on a free port, fed by 3 cameras and 2 weather stations over ``broker``."""
    root = f"dash{uuid.uuid4().hex[:6]}"
    key = SigningKey.generate()
    private, public = workdir / "fleet-release.key", workdir / "fleet-release.pub"
    key.save(private, public)
    settings = FleetSettings(
        database_url=sqlite_url(workdir / "fleet.db"),
        broker_host=broker.host,
        broker_port=broker.port,
        root=root,
        http_port=0,
        api_tokens=parse_tokens(f"operator={TOKEN}"),
        viewer_tokens=parse_tokens(f"wallboard={VIEWER_TOKEN}"),
        samples_dir=workdir / "samples",
        release_signing_key=private if signing else None,
        release_public_keys=[public],
    )
    service = FleetService(settings).start()
    endpoint = service.consumer.link.endpoint
    fleet = SimulatedFleet.build(endpoint, root, cameras=3, stations=2)
    fleet.start()
    running = DashboardFleet(service, fleet, key, public, root)
    try:
        _seed(fleet, key)
        _publish_releases(endpoint, root, key)
        store = service.store
        wait_until(lambda: store.counts()["update_events"] == 4, what="update events stored")
        wait_until(lambda: store.counts()["releases"] == 2, what="releases stored")
        wait_until(lambda: store.counts()["rollout_log"] == 1, what="rollout history stored")
        wait_until(lambda: store.counts()["drift_alerts"] == 2, what="drift alerts stored")
        wait_until(lambda: store.counts()["visits"] == 2, what="visits stored")
        wait_until(lambda: store.counts()["stream_events"] == 2, what="stream events stored")
        wait_until(
            lambda: store.counts()["telemetry"] == HISTORY_POINTS * len(fleet.devices),
            what="telemetry stored",
        )
        wait_until(lambda: store.device("cam-02")["state"] == "offline", what="cam-02 offline")  # type: ignore[index]
    except BaseException:
        running.stop()
        raise
    return running
