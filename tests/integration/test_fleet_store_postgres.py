"""The fleet store at scale: telemetry day partitions and their retention on PostgreSQL,
batched exactly-once ingest and the paged device listing, on both backends."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from cloud_trainer.fleet.service import FleetService
from cloud_trainer.fleet.sim import SimulatedDevice
from cloud_trainer.fleet.store import Envelope, FleetStore, queries
from cloud_trainer.fleet.store import partitions as parts
from cloud_trainer.fleet.store.schema import metadata
from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.protocol import DeviceKind, MessageBase
from tests.support.fleet_service import fleet_settings
from tests.support.postgres import postgres_url, store_url

pytestmark = pytest.mark.integration

DAY = 86400.0
TOKEN = "operator-token-0123456789"
__all__ = ["postgres_url", "store_url"]


def _telemetry_at(device: SimulatedDevice, when: datetime) -> MessageBase:
    device.clock = when
    return device.telemetry()


def _envs(messages: list[MessageBase], received_at: float) -> list[Envelope]:
    return [Envelope("park", m, received_at) for m in messages]


def _partition_rows(url: str) -> dict[str, int]:
    """Telemetry rows per partition, read from the database itself."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT tableoid::regclass::text, count(*) FROM telemetry GROUP BY 1")
            )
            return {str(name): int(n) for name, n in rows}
    finally:
        engine.dispose()


def test_a_new_postgres_store_partitions_telemetry_by_day(postgres_url: str) -> None:
    now = time.time()
    today = parts.day_of(now)
    device = SimulatedDevice("cam-01", "park", DeviceKind.CAMERA)
    # A replayed backlog three days old: its day gets a partition on demand.
    old = datetime.fromtimestamp((today - 3) * DAY + 3600, UTC)
    store = FleetStore(postgres_url)
    try:
        assert store.partitioned
        result = store.ingest(_envs([_telemetry_at(device, old)], now))
        names = store.read(parts.partition_names)
    finally:
        store.close()
    assert result.stored["telemetry"] == 1
    assert {parts.partition_name(d) for d in (today - 3, today, today + 1)} <= set(names)
    assert _partition_rows(postgres_url) == {parts.partition_name(today - 3): 1}


def test_retention_drops_whole_old_days_and_keeps_newer_rows(postgres_url: str) -> None:
    now = time.time()
    today = parts.day_of(now)
    device = SimulatedDevice("cam-02", "park", DeviceKind.CAMERA)
    at = [datetime.fromtimestamp((today - k) * DAY + 600, UTC) for k in (5, 5, 1)]
    messages = [_telemetry_at(device, when) for when in at]
    fresh = _telemetry_at(device, datetime.fromtimestamp(now - 60, UTC))
    store = FleetStore(postgres_url)
    try:
        store.ingest(_envs([*messages, fresh], now))
        removed = store.prune(now, telemetry_s=2 * DAY, predictions_s=30 * DAY, dedupe_s=30 * DAY)
        names = store.read(parts.partition_names)
        series = store.read(lambda c: queries.telemetry_series(c, "cam-02", 0.0, 100))
    finally:
        store.close()
    assert removed["telemetry"] == 2
    assert parts.partition_name(today - 5) not in names
    assert parts.partition_name(today - 1) in names and parts.partition_name(today) in names
    assert [row["seq"] for row in series] == [messages[2].seq, fresh.seq]


def test_retention_deletes_inside_the_day_that_straddles_the_cutoff(postgres_url: str) -> None:
    now = time.time()
    device = SimulatedDevice("cam-03", "park", DeviceKind.CAMERA)
    older = _telemetry_at(device, datetime.fromtimestamp(now - 7200, UTC))
    newer = _telemetry_at(device, datetime.fromtimestamp(now - 60, UTC))
    store = FleetStore(postgres_url)
    try:
        store.ingest(_envs([older, newer], now))
        removed = store.prune(now, telemetry_s=3600, predictions_s=DAY, dedupe_s=DAY)
        series = store.read(lambda c: queries.telemetry_series(c, "cam-03", 0.0, 100))
    finally:
        store.close()
    assert removed["telemetry"] == 1
    assert [row["seq"] for row in series] == [newer.seq]


def test_the_same_telemetry_twice_across_a_day_boundary_is_stored_once(store_url: str) -> None:
    now = time.time()
    midnight = parts.day_of(now) * DAY
    device = SimulatedDevice("cam-04", "park", DeviceKind.CAMERA)
    before = _telemetry_at(device, datetime.fromtimestamp(midnight - 0.5, UTC))
    after = _telemetry_at(device, datetime.fromtimestamp(midnight + 0.5, UTC))
    store = FleetStore(store_url)
    try:
        first = store.ingest(_envs([before, after, before], now))
        # The replay comes later, in the other order, with one new message.
        later = _telemetry_at(device, datetime.fromtimestamp(midnight + 30, UTC))
        replay = store.ingest(_envs([after, before, later], now + 5))
        series = store.read(lambda c: queries.telemetry_series(c, "cam-04", 0.0, 100))
    finally:
        store.close()
    assert (first.stored["telemetry"], first.duplicates) == (2, 1)
    assert (replay.stored["telemetry"], replay.duplicates) == (1, 2)
    assert [row["seq"] for row in series] == [before.seq, after.seq, later.seq]
    if store_url.startswith("postgresql"):
        assert _partition_rows(store_url) == {
            parts.partition_name(parts.day_of(midnight) - 1): 1,
            parts.partition_name(parts.day_of(midnight)): 2,
        }


def test_racing_writers_with_overlapping_batches_store_each_message_once(store_url: str) -> None:
    """Two instances get the same replayed backlog, cut into batches differently."""
    now = time.time()
    devices = [SimulatedDevice(f"cam-{i:02d}", "park", DeviceKind.CAMERA) for i in range(10)]
    messages: list[MessageBase] = []
    for n in range(600):
        device = devices[n % len(devices)]
        messages.append(device.telemetry() if n % 3 == 0 else device.prediction())
    envs = _envs(messages, now)
    cuts = [
        [envs[i : i + 70] for i in range(0, 600, 70)],
        [envs[i : i + 110] for i in range(0, 600, 110)],
    ]
    cuts[1].reverse()
    stores = [FleetStore(store_url), FleetStore(store_url)]
    errors: list[BaseException] = []
    stored = [0, 0]

    def write(k: int) -> None:
        try:
            for batch in cuts[k]:
                stored[k] += sum(stores[k].ingest(batch + batch[:5]).stored.values())
        except BaseException as e:  # reported below, with the backend's own message
            errors.append(e)

    threads = [threading.Thread(target=write, args=(k,)) for k in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    try:
        assert errors == []
        counts = stores[0].counts()
        totals = [
            stores[0].read(partial(queries.prediction_distribution, device_id=d.device_id, since=0))
            for d in devices
        ]
    finally:
        for store in stores:
            store.close()
    assert sum(stored) == 600
    assert counts["received"] == 600
    assert counts["telemetry"] == 200
    assert sum(t["versions"][0]["total"] for t in totals) == 400


def test_a_partition_dropped_by_another_instance_is_made_again(postgres_url: str) -> None:
    now = time.time()
    today = parts.day_of(now)
    device = SimulatedDevice("cam-05", "park", DeviceKind.CAMERA)
    old_day = datetime.fromtimestamp((today - 4) * DAY + 60, UTC)
    writer, pruner = FleetStore(postgres_url), FleetStore(postgres_url)
    try:
        writer.ingest(_envs([_telemetry_at(device, old_day)], now))
        pruner.prune(now, telemetry_s=2 * DAY, predictions_s=DAY, dedupe_s=30 * DAY)
        assert parts.partition_name(today - 4) not in writer.read(parts.partition_names)
        # The writer still counts on that day's partition: its insert must not be lost.
        late = _telemetry_at(device, old_day + timedelta(minutes=5))
        result = writer.ingest(_envs([late], now))
    finally:
        writer.close()
        pruner.close()
    assert result.stored["telemetry"] == 1
    assert _partition_rows(postgres_url) == {parts.partition_name(today - 4): 1}


def test_an_unpartitioned_store_from_an_earlier_release_keeps_working(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(postgres_url)
    metadata.create_all(engine)  # the layout an earlier release made: a plain table
    engine.dispose()
    now = time.time()
    device = SimulatedDevice("cam-06", "park", DeviceKind.CAMERA)
    old = _telemetry_at(device, datetime.fromtimestamp(now - 3 * DAY, UTC))
    new = _telemetry_at(device, datetime.fromtimestamp(now - 60, UTC))
    with caplog.at_level(logging.WARNING, logger="cloud_trainer.fleet.store.partitions"):
        store = FleetStore(postgres_url)
    try:
        assert not store.partitioned
        assert "telemetry table is not partitioned" in caplog.text
        store.ingest(_envs([old, new], now))
        removed = store.prune(now, telemetry_s=DAY, predictions_s=DAY, dedupe_s=30 * DAY)
        series = store.read(lambda c: queries.telemetry_series(c, "cam-06", 0.0, 100))
    finally:
        store.close()
    assert removed["telemetry"] == 1
    assert [row["seq"] for row in series] == [new.seq]


def _register(store: FleetStore, count: int, now: float) -> None:
    for i in range(count):
        store.register_device(f"dev-{i:03d}", f"site-{i % 3}", "camera", [], None, now=now)
    # A third of them heard from just now, with an online status.
    sims = [
        SimulatedDevice(f"dev-{i:03d}", f"site-{i % 3}", DeviceKind.CAMERA)
        for i in range(0, count, 3)
    ]
    store.ingest([Envelope(s.site, s.status(), now) for s in sims])


def test_device_listing_pages_cover_every_device_once(store_url: str) -> None:
    now = time.time()
    store = FleetStore(store_url)
    try:
        _register(store, 25, now)
        everything, total = store.device_page(None, 0, now=now)
        paged: list[str] = []
        offset = 0
        while True:
            page, page_total = store.device_page(7, offset, now=now)
            assert page_total == 25 and len(page) <= 7
            paged += [d["device_id"] for d in page]
            offset += len(page)
            if len(page) < 7:
                break
        online, online_total = store.device_page(4, 4, now=now, online=True)
        offline, offline_total = store.device_page(None, 0, now=now, online=False)
        site, site_total = store.device_page(2, 0, now=now, site="site-1")
    finally:
        store.close()
    assert total == 25
    assert paged == [d["device_id"] for d in everything]
    assert len(set(paged)) == 25
    assert [(d["site"], d["device_id"]) for d in everything] == sorted(
        (d["site"], d["device_id"]) for d in everything
    )
    assert (online_total, offline_total) == (9, 16)
    assert len(online) == 4 and all(d["online"] for d in online)
    assert not any(d["online"] for d in offline)
    assert site_total == 8 and [d["site"] for d in site] == ["site-1", "site-1"]


def test_the_devices_endpoint_pages_and_keeps_its_shape(
    store_url: str, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    root = f"pg{int(time.time() * 1000) % 10**8}"
    settings = fleet_settings(
        mosquitto, tmp_path, root, operators=f"operator={TOKEN}", database_url=store_url
    )
    service = FleetService(settings).start()
    try:
        _register(service.store, 12, time.time())
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=service.base_url, timeout=10, headers=auth) as http:
            whole = http.get("/api/devices").json()
            first = http.get("/api/devices", params={"limit": 5}).json()
            last = http.get("/api/devices", params={"limit": 5, "offset": 10}).json()
            bad = http.get("/api/devices", params={"limit": 0})
    finally:
        service.stop()
    assert (whole["count"], whole["total"], whole["next_offset"]) == (12, 12, None)
    assert isinstance(whole["now"], float)
    assert (first["count"], first["total"], first["next_offset"]) == (5, 12, 5)
    assert [d["device_id"] for d in first["devices"]] == [
        d["device_id"] for d in whole["devices"][:5]
    ]
    assert (last["count"], last["next_offset"]) == (2, None)
    assert bad.status_code == 422
