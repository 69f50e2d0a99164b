"""The fleet store behaves the same on SQLite and on a real PostgreSQL (a private server of
the test session's own, or EDGE_MLOPS_TEST_POSTGRES; a throwaway database per test)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from cloud_trainer.fleet.sim import SimulatedDevice
from cloud_trainer.fleet.store import Envelope, FleetStore, StoreError, queries
from edge_agent.protocol import DeviceKind, MessageBase, UpdateState
from tests.support.postgres import postgres_url, store_url

pytestmark = pytest.mark.integration
__all__ = ["postgres_url", "store_url"]


def _traffic(now: float) -> list[Envelope]:
    cam = SimulatedDevice("cam-01", "park", DeviceKind.CAMERA, model_version=3)
    wx = SimulatedDevice("wx-01", "hill", DeviceKind.WEATHER, model_version=7)
    messages = [
        ("park", cam.status()),
        ("hill", wx.status()),
        ("park", cam.telemetry()),
        ("hill", wx.telemetry()),
        *[("park", cam.prediction("cat")) for _ in range(3)],
        ("park", cam.prediction("dog")),
        *[("hill", wx.prediction()) for _ in range(4)],
        ("park", cam.drift("raised", score=0.5)),
        ("hill", wx.event(UpdateState.COMMITTED, 8, "rain4h-8")),
    ]
    return [Envelope(site, m, now) for site, m in messages]


def test_ingest_replay_and_reads_agree_on_both_backends(store_url: str) -> None:
    store = FleetStore(store_url)
    try:
        batch = _traffic(time.time())
        first = store.ingest(batch)
        replay = store.ingest(batch)
        counts = store.counts()
        cam = store.device("cam-01")
        wx = store.device("wx-01")
        distribution = store.read(lambda c: queries.prediction_distribution(c, "cam-01", 0.0))
        alerts = store.read(lambda c: queries.list_alerts(c, device_id="cam-01"))
    finally:
        store.close()

    assert sum(first.stored.values()) == len(batch) and first.duplicates == 0
    assert sum(replay.stored.values()) == 0 and replay.duplicates == len(batch)
    assert counts["received"] == len(batch)
    assert counts["telemetry"] == 2
    assert counts["drift_episodes"] == 1
    assert cam is not None and (cam["state"], cam["drift_status"]) == ("online", "drift")
    assert wx is not None and wx["model_version"] == 8
    (version,) = distribution["versions"]
    assert version["total"] == 4
    assert version["labels"]["cat"]["count"] == 3
    assert version["labels"]["cat"]["share"] == pytest.approx(0.75)
    assert alerts[0]["features"][0]["name"] == "brightness"


def test_a_visit_is_one_row_whichever_phase_arrives_first(store_url: str) -> None:
    cam = SimulatedDevice("cam-02", "park", DeviceKind.CAMERA)
    start, end = cam.visit("start", "v-early"), cam.visit("end", "v-early", frames=9)
    other = cam.visit("start", "v-open", label="dog")
    lost, back = cam.stream("lost"), cam.stream("restored", down_s=12.0)
    now = time.time()
    store = FleetStore(store_url)
    try:
        # A replayed backlog: the end first, then the start, then everything again.
        batches: list[list[MessageBase]] = [[end], [start, other, lost, back], [end, start, other]]
        results = [store.ingest([Envelope("park", m, now) for m in b]) for b in batches]
        visits = store.read(lambda c: queries.visits(c, "cam-02"))
        streams = store.read(lambda c: queries.stream_events(c, "cam-02"))
    finally:
        store.close()
    assert results[2].duplicates == 3
    assert end.snapshot is not None and end.ended_at is not None
    rows = {v["visit_id"]: v for v in visits}
    early = rows["v-early"]
    assert (early["start_seq"], early["end_seq"]) == (start.seq, end.seq)
    assert (early["subject_frames"], early["frames"], early["ended_by"]) == (9, 11, "quiet")
    assert early["ended_at"] == pytest.approx(end.ended_at.timestamp())
    assert early["snapshot_sha256"] == end.snapshot.sha256
    assert early["label_frames"] == {"cat": 9}
    assert rows["v-open"]["ended_at"] is None and rows["v-open"]["label"] == "dog"
    assert [(s["state"], s["down_s"]) for s in streams] == [("restored", 12.0), ("lost", None)]


def test_two_writers_on_one_database_store_each_message_once(store_url: str) -> None:
    """Two service instances can both receive a replayed message; the store keeps one."""
    stores = [FleetStore(store_url), FleetStore(store_url)]
    device = SimulatedDevice("cam-07", "park", DeviceKind.CAMERA)
    now = time.time()
    batches = [[Envelope("park", device.prediction(), now) for _ in range(50)] for _ in range(8)]
    errors: list[BaseException] = []

    def write(store: FleetStore) -> None:
        try:
            for batch in batches:
                store.ingest(batch)
        except BaseException as e:  # reported below, with the backend's own message
            errors.append(e)

    threads = [threading.Thread(target=write, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert errors == []
        counts = stores[0].counts()
        distribution = stores[0].read(lambda c: queries.prediction_distribution(c, "cam-07", 0))
    finally:
        for store in stores:
            store.close()
    assert counts["received"] == 400
    assert distribution["versions"][0]["total"] == 400


def test_unreachable_or_unsupported_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unsupported database 'mysql'"):
        FleetStore("mysql://localhost/fleet")
    with pytest.raises(StoreError, match="cannot reach the fleet database"):
        FleetStore("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(StoreError, match="invalid database URL"):
        FleetStore("not a url")
