"""The fleet HTTP API on a running service fed by simulated devices over a real broker."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from cloud_trainer.fleet.service import FleetService
from cloud_trainer.fleet.sim import SimulatedFleet
from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.protocol import UpdateState, encode
from tests.support.fleet_service import fleet_settings
from tests.support.samples import sample_manifest

pytestmark = pytest.mark.integration

TOKEN = "operator-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
VIEWER = "viewer-token-0123456789ab"  # reads need a token; the client reads as a viewer
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture(scope="module")
def running(
    mosquitto: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FleetService, SimulatedFleet]]:
    workdir = tmp_path_factory.mktemp("fleet-api")
    root = f"api{uuid.uuid4().hex[:6]}"
    settings = fleet_settings(
        mosquitto,
        workdir,
        root,
        operators=f"operator={TOKEN}",
        viewers=f"reader={VIEWER}",
        max_sample_bytes=64 * 1024,
        max_concurrent_requests=4,
    )
    service = FleetService(settings).start()
    fleet = SimulatedFleet.build(service.consumer.link.endpoint, root, cameras=2, stations=1)
    fleet.start()
    for device_id, device in fleet.devices.items():
        fleet.publish(device_id, device.status())
    fleet.round(predictions=5)
    cam = fleet.devices["cam-00"]
    fleet.publish("cam-00", cam.drift("raised", score=0.7))
    fleet.publish("cam-00", cam.event(UpdateState.DOWNLOADING, 4, "catdog-4"))
    fleet.publish("cam-00", cam.event(UpdateState.COMMITTED, 4, "catdog-4"))
    release = sample_manifest()
    fleet.publish_raw("cam-00", f"{root}/releases/catdog", encode(release), retain=True)
    _wait_until(lambda: service.store.counts()["update_events"] == 2)
    _wait_until(lambda: service.store.counts()["releases"] == 1)
    yield service, fleet
    fleet.stop()
    service.stop()


def _wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.fixture
def client(running: tuple[FleetService, SimulatedFleet]) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {VIEWER}"}
    with httpx.Client(base_url=running[0].base_url, headers=headers, timeout=10) as http:
        yield http


def test_devices_list_filters_and_detail(client: httpx.Client) -> None:
    everything = client.get("/api/devices").json()
    assert everything["count"] == 3
    assert {d["device_id"] for d in everything["devices"]} == {"cam-00", "cam-01", "wx-00"}
    assert all(d["online"] for d in everything["devices"])
    by_kind = client.get("/api/devices", params={"kind": "weather"}).json()["devices"]
    assert [d["device_id"] for d in by_kind] == ["wx-00"]
    by_site = client.get("/api/devices", params={"site": "site-1"}).json()["devices"]
    assert [d["device_id"] for d in by_site] == ["cam-01"]
    by_model = client.get("/api/devices", params={"model": "catdog"}).json()["devices"]
    assert sorted(d["device_id"] for d in by_model) == ["cam-00", "cam-01"]
    assert client.get("/api/devices", params={"site": "Bad/Site"}).status_code == 422

    detail = client.get("/api/devices/cam-00").json()
    assert detail["device"]["model_version"] == 4  # the committed update
    assert detail["device"]["drift_status"] == "drift"
    assert len(detail["telemetry"]) == 1
    assert detail["telemetry"][0]["cpu_percent"] > 0
    (version,) = [v for v in detail["predictions"]["versions"] if v["model_version"] == 1]
    assert version["total"] == 5
    assert sum(s["count"] for s in version["labels"].values()) == 5
    assert [a["detector"] for a in detail["alerts"]] == ["features"]
    assert detail["alerts"][0]["features"][0]["threshold"] == 0.25
    assert [u["state"] for u in detail["updates"]] == ["committed", "downloading"]
    assert client.get("/api/devices/nope").status_code == 404


def test_alerts_acknowledge_needs_a_token(client: httpx.Client) -> None:
    (alert,) = client.get("/api/alerts", params={"device": "cam-00"}).json()["alerts"]
    url = f"/api/alerts/{alert['id']}/ack"
    assert client.post(url).status_code == 403  # the client's token is a viewer's
    assert httpx.post(f"{client.base_url}{url}").status_code == 401
    assert client.post(url, headers={"Authorization": "Bearer wrong-token"}).status_code == 401
    acked = client.post(url, headers=AUTH)
    assert acked.status_code == 200 and acked.json()["acknowledged_by"] == "operator"
    assert client.post(url, headers=AUTH).status_code == 409
    assert client.post("/api/alerts/999999/ack", headers=AUTH).status_code == 404
    open_alerts = client.get("/api/alerts", params={"unacknowledged": True}).json()
    assert all(a["id"] != alert["id"] for a in open_alerts["alerts"])


def test_releases_show_each_devices_outcome(client: httpx.Client) -> None:
    releases = client.get("/api/releases").json()["releases"]
    assert [r["release_id"] for r in releases] == ["catdog-4"]
    assert releases[0]["outcome_counts"] == {"committed": 1}
    detail = client.get("/api/releases/catdog-4").json()
    assert detail["devices"][0]["device_id"] == "cam-00"
    assert detail["rollout"]["percent"] == 10
    assert client.get("/api/releases/none").status_code == 404


def test_command_is_published_and_its_ack_tracked(
    client: httpx.Client, running: tuple[FleetService, SimulatedFleet]
) -> None:
    url = "/api/devices/cam-01/commands"
    assert client.post(url, json={"action": "ping"}).status_code == 403  # a viewer
    assert client.post(url, json={"action": "reboot"}, headers=AUTH).status_code == 422
    missing = client.post("/api/devices/ghost/commands", json={"action": "ping"}, headers=AUTH)
    assert missing.status_code == 404
    sent = client.post(url, json={"action": "pin", "args": {"version": 3}}, headers=AUTH)
    assert sent.status_code == 202
    cmd_id = sent.json()["cmd_id"]
    _wait_until(lambda: client.get(f"/api/commands/{cmd_id}").json()["status"] == "done")
    fleet = running[1]
    (received,) = [c for c in fleet.commands if c.cmd_id == cmd_id]
    assert (received.device_id, received.action, received.args) == ("cam-01", "pin", {"version": 3})
    assert received.issued_by == "operator"


def test_sample_upload_is_stored_with_provenance(
    client: httpx.Client, running: tuple[FleetService, SimulatedFleet]
) -> None:
    form = {"device_id": "cam-00", "label": "cat", "captured_at": "2026-11-28T12:00:00Z"}
    files = {"file": ("frame.png", PNG, "image/png")}
    assert client.post("/api/samples", data=form, files=files).status_code == 403  # a viewer
    first = client.post("/api/samples", data=form, files=files, headers=AUTH)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["sha256"] == hashlib.sha256(PNG).hexdigest()
    stored = Path(running[0].settings.samples_dir) / "cam-00" / f"{body['sha256']}.png"
    assert stored.read_bytes() == PNG
    again = client.post("/api/samples", data=form, files=files, headers=AUTH)
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    (row,) = client.get("/api/samples", params={"device": "cam-00"}).json()["samples"]
    assert (row["label"], row["uploaded_by"], row["size"]) == ("cat", "operator", len(PNG))

    def post(name: str, data: bytes, kind: str, device: str = "cam-00") -> httpx.Response:
        return client.post(
            "/api/samples",
            data={"device_id": device},
            files={"file": (name, data, kind)},
            headers=AUTH,
        )

    assert post("x.png", b"GIF89a" + PNG, "image/png").status_code == 422
    assert post("x.gif", b"GIF89a", "image/gif").status_code == 415
    assert post("x.png", PNG, "image/png", device="../etc").status_code == 422
    assert post("x.bin", b"\0" * (80 * 1024), "application/octet-stream").status_code == 413
    assert post("x.bin", b"\0" * (200 * 1024), "application/octet-stream").status_code == 413
    leftovers = list((Path(running[0].settings.samples_dir) / "cam-00").iterdir())
    assert [p.name for p in leftovers] == [stored.name]


def test_registration_and_request_caps(client: httpx.Client) -> None:
    body = {"device_id": "cam-99", "site": "harbour", "kind": "camera", "groups": ["canary"]}
    assert client.post("/api/devices", json=body).status_code == 403  # a viewer
    created = client.post("/api/devices", json=body, headers=AUTH)
    assert created.status_code == 201
    assert created.json()["device"]["groups"] == ["canary"]
    assert client.post("/api/devices", json=body, headers=AUTH).status_code == 200
    bad = client.post("/api/devices", json={**body, "site": "Har/bour"}, headers=AUTH)
    assert bad.status_code == 422 and "site" in bad.text
    huge = {**body, "groups": ["g"] * 40_000}
    assert client.post("/api/devices", json=huge, headers=AUTH).status_code == 413


def test_overload_answers_503_with_retry_after(
    client: httpx.Client, running: tuple[FleetService, SimulatedFleet]
) -> None:
    limit = running[0].settings.max_concurrent_requests
    release = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield b'{"device_id": "cam-98", '
        release.wait(10)
        yield b'"site": "harbour"}'

    def hold() -> None:
        with httpx.Client(base_url=running[0].base_url, timeout=15) as other:
            other.post("/api/devices", content=slow_body(), headers=AUTH)

    holders = [threading.Thread(target=hold) for _ in range(limit)]
    for thread in holders:
        thread.start()
    try:
        _wait_until(lambda: client.get("/api/devices").status_code == 503, timeout=30)
        refused = client.get("/api/devices")
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        assert client.get("/healthz").status_code == 200  # probes are never shed
    finally:
        release.set()
        for thread in holders:
            thread.join(15)
    assert client.get("/api/devices").status_code == 200


def test_health_readiness_and_metrics(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "sqlite"
    text = client.get("/metrics").text
    assert 'fleet_messages_stored_total{type="telemetry"} 3' in text
    assert "fleet_devices_online " in text
    assert "fleet_http_requests_total" in text


def test_the_device_listing_is_read_once_a_second_and_never_misses_a_change_here(
    client: httpx.Client,
) -> None:
    url = "/api/devices?site=cachesite"
    first = client.get(url)
    assert first.status_code == 200 and first.json()["count"] == 0
    assert first.headers["cache-control"] == "private, max-age=1"
    # The same query again within the second: the same answer, not a second read.
    assert client.get(url).json()["now"] == first.json()["now"]
    # A write through this service is seen at once.
    body = {"device_id": "cam-77", "site": "cachesite", "kind": "camera"}
    assert client.post("/api/devices", json=body, headers=AUTH).status_code == 201
    after = client.get(url).json()
    assert after["count"] == 1 and after["now"] > first.json()["now"]
    # And with no write, the answer is read again once it is a second old.
    time.sleep(1.1)
    assert client.get(url).json()["now"] > after["now"]
