"""The dashboard's server side: static page, sign-in, live events, promote and roll back."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cloud_trainer.fleet.web.routes import STATIC
from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.comms.mqtt import MqttLink
from edge_agent.protocol import TopicTree, decode_manifest, load_public_key, verify_manifest
from tests.integration.dashboard_fixtures import (
    AUTH,
    VIEWER_AUTH,
    DashboardFleet,
    start_dashboard_fleet,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def running(
    mosquitto: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DashboardFleet]:
    dash = start_dashboard_fleet(mosquitto, tmp_path_factory.mktemp("dashboard-api"))
    yield dash
    dash.stop()


@pytest.fixture
def client(running: DashboardFleet) -> Iterator[httpx.Client]:
    """Reads with a viewer token, as a wall display would; changes pass AUTH (an operator)."""
    with httpx.Client(base_url=running.base_url, headers=VIEWER_AUTH, timeout=10) as http:
        yield http


def test_page_and_every_asset_come_from_the_service(client: httpx.Client) -> None:
    home = client.get("/")
    assert home.status_code == 307 and home.headers["location"] == "/dashboard/"
    page = client.get("/dashboard/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp
    referenced = re.findall(r'(?:src|href)="([^"#][^"]*)"', page.text)
    assert "vendor/uPlot.iife.min.js" in referenced
    modules = [p.relative_to(STATIC).as_posix() for p in (STATIC / "js").rglob("*.js")]
    for path in [r for r in referenced if not r.startswith("data:")] + modules:
        assert not path.startswith(("http:", "https:", "//")), path
        asset = client.get(f"/dashboard/{path}")
        assert asset.status_code == 200, path
        assert asset.headers["content-type"].split(";")[0] in ("text/css", "text/javascript"), path
    for module in modules:
        text = (STATIC / module).read_text(encoding="utf-8")
        for target in re.findall(r'from "([^"]+)"', text):
            assert target.startswith("."), f"{module} imports {target}"
    assert (STATIC / "vendor" / "uPlot.LICENSE").read_text().startswith("The MIT License")
    assert client.get("/dashboard/vendor/missing.js").status_code == 404


def test_sign_in_checks_the_token(running: DashboardFleet) -> None:
    with httpx.Client(base_url=running.base_url, timeout=10) as client:
        assert client.get("/api/session").json() == {"release_actions": True, "commands": True}
        assert client.post("/api/session").status_code == 401
        bad = client.post("/api/session", headers={"Authorization": "Bearer not-the-token-at-all"})
        assert bad.status_code == 401
        signed_in = client.post("/api/session", headers=AUTH).json()
        assert signed_in == {"name": "operator", "role": "operator"}
        viewer = client.post("/api/session", headers=VIEWER_AUTH).json()
        assert viewer == {"name": "wallboard", "role": "viewer"}


def _events(running: DashboardFleet, found: list[tuple[str, dict]], stop: threading.Event) -> None:
    with (
        httpx.Client(base_url=running.base_url, headers=VIEWER_AUTH, timeout=20) as http,
        http.stream("GET", "/api/events") as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: ") and event is not None:
                found.append((event, json.loads(line[len("data: ") :])))
            if stop.is_set():
                return


def test_live_events_name_what_changed(running: DashboardFleet) -> None:
    found: list[tuple[str, dict]] = []
    stop = threading.Event()
    reader = threading.Thread(target=_events, args=(running, found, stop), daemon=True)
    reader.start()
    wait_until(lambda: any(e == "hello" for e, _ in found), what="hello event")
    assert found[0] == ("hello", {"devices": 5})
    wx = running.fleet.devices["wx-00"]
    running.fleet.publish("wx-00", wx.telemetry())
    wait_until(
        lambda: any(e == "devices" and d["changed"] == ["wx-00"] for e, d in found),
        what="devices event for wx-00",
    )
    running.fleet.publish("wx-00", wx.drift("raised", score=0.9, detector="live-test"))
    wait_until(lambda: any(e == "alerts" for e, _ in found), what="alerts event")
    stop.set()
    running.fleet.publish("wx-00", wx.telemetry())  # wakes the reader so it can return
    reader.join(10)


def _retained_release(running: DashboardFleet) -> dict:
    link = MqttLink(running.service.consumer.link.endpoint, client_id="dash-api-read")
    got: list[bytes] = []
    link.subscribe(TopicTree(running.root).release("catdog"), lambda _t, p: got.append(p))
    link.start()
    try:
        wait_until(lambda: bool(got), what="retained release")
    finally:
        link.stop()
    manifest = decode_manifest(got[-1])
    verify_manifest(manifest, load_public_key(running.public_key))
    return manifest.model_dump(mode="json")


def test_promote_widens_the_current_release(running: DashboardFleet, client: httpx.Client) -> None:
    path = "/api/releases/catdog-v4-seed/promote"
    assert client.post(path, json={"percent": 50}).status_code == 403  # a viewer's token
    assert httpx.post(running.base_url + path, json={"percent": 50}).status_code == 401
    refused = client.post(path, json={"percent": 10}, headers=AUTH)
    assert refused.status_code == 409 and "narrowing" in refused.json()["detail"]
    old = client.post("/api/releases/catdog-v3-seed/promote", json={"percent": 50}, headers=AUTH)
    assert old.status_code == 409 and "no longer the current release" in old.json()["detail"]
    assert (
        client.post("/api/releases/nope/promote", json={"percent": 50}, headers=AUTH).status_code
        == 404
    )
    assert client.post(path, json={"percent": 150}, headers=AUTH).status_code == 422
    done = client.post(path, json={"percent": 50}, headers=AUTH)
    assert done.status_code == 202, done.text
    assert done.json() == {
        "release_id": "catdog-v4-seed",
        "model": "catdog",
        "version": 4,
        "wave": 1,
        "percent": 50.0,
        "allow_downgrade": False,
    }
    wait_until(
        lambda: client.get("/api/releases/catdog-v4-seed").json()["wave"] == 1,
        what="wave 1 recorded by the consumer (signature checked)",
    )
    retained = _retained_release(running)
    assert retained["rollout"]["percent"] == 50.0 and retained["rollout"]["wave"] == 1


def test_rollback_releases_an_earlier_version_again(
    running: DashboardFleet, client: httpx.Client
) -> None:
    unknown = client.post("/api/models/catdog/rollback", json={"to_version": 9}, headers=AUTH)
    assert unknown.status_code == 404 and "known: v3, v4" in unknown.json()["detail"]
    current = client.post("/api/models/catdog/rollback", json={"to_version": 4}, headers=AUTH)
    assert current.status_code == 409
    assert (
        client.post("/api/models/rain4h/rollback", json={"to_version": 1}, headers=AUTH).status_code
        == 404
    )
    assert (
        client.post("/api/models/Bad!/rollback", json={"to_version": 1}, headers=AUTH).status_code
        == 422
    )
    done = client.post("/api/models/catdog/rollback", json={"to_version": 3}, headers=AUTH)
    assert done.status_code == 202, done.text
    restored = done.json()
    assert restored["version"] == 3 and restored["allow_downgrade"] is True
    assert restored["release_id"] != "catdog-v3-seed" and restored["percent"] == 100.0
    wait_until(
        lambda: client.get("/api/releases?model=catdog").json()["count"] == 3,
        what="rollback release recorded",
    )
    newest = client.get("/api/releases?model=catdog").json()["releases"][0]
    assert newest["release_id"] == restored["release_id"] and newest["version"] == 3
    assert _retained_release(running)["allow_downgrade"] is True


def test_release_actions_are_off_without_a_signing_key(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    dash = start_dashboard_fleet(mosquitto, tmp_path, signing=False)
    try:
        with httpx.Client(base_url=dash.base_url, timeout=10) as http:
            assert http.get("/api/session").json()["release_actions"] is False
            answer = http.post(
                "/api/releases/catdog-v4-seed/promote", json={"percent": 50}, headers=AUTH
            )
            assert answer.status_code == 503
            assert "--release-signing-key" in answer.json()["detail"]
    finally:
        dash.stop()
