"""Roles of the fleet API: every read needs a viewer or operator token, every change an operator's.

The service runs for real (SQLite, a private Mosquitto, uvicorn on a free loopback port); the
route walk covers every route the app has, so a route added later without thought is caught.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from starlette.routing import Mount

from cloud_trainer.cli import main as cloud_main
from cloud_trainer.fleet.api.deps import DASHBOARD_COOKIE, dashboard_cookie
from cloud_trainer.fleet.service import FleetService
from cloud_trainer.fleet.settings import FleetSettings, parse_tokens
from cloud_trainer.fleet.sim import SimulatedFleet
from cloud_trainer.fleet.store import sqlite_url
from cloud_trainer.release.fleet_client import FleetClient, FleetUnavailable
from cloud_trainer.stack.mosquitto import MosquittoBroker
from tests.support.fleet_service import fleet_settings

pytestmark = pytest.mark.integration

OPERATOR = "operator-token-0123456789"
VIEWER = "viewer-token-0123456789ab"
AS_OPERATOR = {"Authorization": f"Bearer {OPERATOR}"}
AS_VIEWER = {"Authorization": f"Bearer {VIEWER}"}

# What answers without a token, and why:
# - /healthz, /readyz: probes of orchestrators and load balancers carry no credentials;
# - GET / (a redirect), /dashboard (static page, scripts, styles): the sign-in page itself;
# - GET /api/session: what the page may offer, needed to draw the sign-in; DELETE /api/session:
#   signing out only forgets the dashboard cookie;
# - /openapi.json, /docs, /redoc: the description of the API, no fleet data in it.
# /metrics is NOT open: it tells the fleet's size and activity; Prometheus scrapes it with a
# viewer token (authorization: credentials_file in the scrape config).
OPEN = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/"),
    ("GET", "/api/session"),
    ("DELETE", "/api/session"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
}
# Not GETs, yet they change nothing: a viewer may make them.
VIEWER_MAY_POST = {
    "/api/session",
    "/api/governance/models/{model}/versions/{version}/explain",
}
SAMPLE_PATH_VALUES = {"model": "catdog", "version": "1", "model_name": "catdog"}


@pytest.fixture(scope="module")
def service(
    mosquitto: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FleetService]:
    workdir = tmp_path_factory.mktemp("fleet-roles")
    root = f"roles{uuid.uuid4().hex[:6]}"
    settings = fleet_settings(
        mosquitto, workdir, root, operators=f"operator={OPERATOR}", viewers=f"wallboard={VIEWER}"
    )
    running = FleetService(settings).start()
    fleet = SimulatedFleet.build(running.consumer.link.endpoint, root, cameras=1, stations=0)
    fleet.start()
    fleet.publish("cam-00", fleet.devices["cam-00"].status())
    cam = fleet.devices["cam-00"]
    fleet.publish("cam-00", cam.drift("raised", score=0.7))
    deadline = time.monotonic() + 10
    while running.store.counts()["drift_alerts"] < 1:
        assert time.monotonic() < deadline, "the drift alert never reached the store"
        time.sleep(0.05)
    yield running
    fleet.stop()
    running.stop()


@pytest.fixture
def client(service: FleetService) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.base_url, timeout=10) as http:
        yield http


def _concrete(path: str) -> str:
    """A URL for a route template: every path parameter gets a plausible value."""
    return re.sub(r"{(\w+)(:\w+)?}", lambda m: SAMPLE_PATH_VALUES.get(m.group(1), "1"), path)


def _every_route(service: FleetService) -> list[tuple[str, str]]:
    """(method, path) of every route, those of included routers too, as the app serves them."""
    found: list[tuple[str, str]] = []
    for route in iter_route_contexts(service.app.routes):
        if isinstance(route.route, Mount):
            assert route.path == "/dashboard", route.path  # the static page, served openly
            continue
        assert route.path is not None and route.methods, route
        found.extend((m, route.path) for m in sorted(route.methods) if m != "HEAD")
    return found


def test_every_route_but_the_open_ones_answers_401_without_a_token(
    service: FleetService, client: httpx.Client
) -> None:
    routes = _every_route(service)
    assert len(routes) > 20 and set(routes) >= OPEN  # the walk sees the whole app
    refused = []
    for method, path in routes:
        if (method, path) in OPEN:
            continue
        answer = client.request(method, _concrete(path))
        if answer.status_code != 401:
            refused.append(f"{method} {path}: {answer.status_code}")
        else:
            assert answer.headers["www-authenticate"] == "Bearer"
            assert answer.json() == {"detail": "a bearer token is required"}
    assert refused == [], "routes that answer without a token"
    wrong = client.get("/api/devices", headers={"Authorization": "Bearer not-a-token-at-all"})
    assert wrong.status_code == 401 and wrong.json() == {"detail": "invalid token"}
    for method, path in sorted(OPEN - {("GET", "/readyz")}):
        assert client.request(method, path).status_code < 400, (method, path)
    assert client.get("/dashboard/").status_code == 200


def test_a_viewer_reads_everything_and_changes_nothing(
    service: FleetService, client: httpx.Client
) -> None:
    for path in ("/api/devices", "/api/devices/cam-00", "/api/alerts", "/api/releases"):
        assert client.get(path, headers=AS_VIEWER).status_code == 200, path
    assert client.get("/metrics", headers=AS_VIEWER).status_code == 200
    changes = [
        (m, p)
        for m, p in _every_route(service)
        if m != "GET" and (m, p) not in OPEN and not (m == "POST" and p in VIEWER_MAY_POST)
    ]
    assert ("POST", "/api/alerts/{alert_id}/ack") in changes
    for method, path in changes:
        answer = client.request(method, _concrete(path), headers=AS_VIEWER)
        assert answer.status_code == 403, f"{method} {path}: {answer.status_code}"
        assert answer.json() == {
            "detail": "token 'wallboard' is a viewer token: it may read but not change the fleet"
        }
    (alert,) = client.get("/api/alerts", headers=AS_VIEWER).json()["alerts"]
    assert alert["acknowledged_at"] is None  # the 403 came before anything was done
    acked = client.post(f"/api/alerts/{alert['id']}/ack", headers=AS_OPERATOR)
    assert acked.status_code == 200 and acked.json()["acknowledged_by"] == "operator"


def test_sign_in_tells_the_role_and_sets_a_cookie_only_for_the_live_stream(
    client: httpx.Client, service: FleetService
) -> None:
    viewer = client.post("/api/session", headers=AS_VIEWER)
    assert viewer.json() == {"name": "wallboard", "role": "viewer"}
    cookie = viewer.headers["set-cookie"]
    assert f"{DASHBOARD_COOKIE}={dashboard_cookie(VIEWER)}" in cookie
    assert VIEWER not in cookie  # derived from the token, not the token itself
    for attribute in ("HttpOnly", "Path=/api", "SameSite=strict"):
        assert attribute.lower() in cookie.lower()
    operator = client.post("/api/session", headers=AS_OPERATOR).json()
    assert operator == {"name": "operator", "role": "operator"}
    assert client.post("/api/session").status_code == 401
    with httpx.Client(base_url=service.base_url, timeout=10) as browser:
        browser.cookies.set(DASHBOARD_COOKIE, dashboard_cookie(VIEWER))
        # The cookie opens the live stream, and nothing else.
        with browser.stream("GET", "/api/events") as stream:
            assert stream.status_code == 200
            first = next(stream.iter_lines())
            assert first.startswith("retry:")
        assert browser.get("/api/devices").status_code == 401
        assert browser.post("/api/alerts/1/ack").status_code == 401
        browser.cookies.set(DASHBOARD_COOKIE, dashboard_cookie("some-other-token-0123456"))
        assert browser.get("/api/events").status_code == 401
    signed_out = client.delete("/api/session")
    assert signed_out.status_code == 204
    assert f'{DASHBOARD_COOKIE}=""' in signed_out.headers["set-cookie"]


def test_the_release_tooling_reads_with_a_token(
    service: FleetService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGE_MLOPS_FLEET_TOKEN", raising=False)
    with pytest.raises(FleetUnavailable, match="401: no token given"):
        FleetClient(service.base_url).devices("catdog")
    assert [d["device_id"] for d in FleetClient(service.base_url, token=VIEWER).devices("catdog")]
    monkeypatch.setenv("EDGE_MLOPS_FLEET_TOKEN", VIEWER)
    assert FleetClient(service.base_url).releases("catdog") == []


def test_viewer_tokens_are_checked_like_operator_tokens(tmp_path: Path) -> None:
    settings = FleetSettings(
        database_url=sqlite_url(tmp_path / "fleet.db"),
        api_tokens=parse_tokens(f"operator={OPERATOR}"),
        viewer_tokens=parse_tokens(f"wallboard={VIEWER}"),
    )
    assert settings.token_holder(OPERATOR) == ("operator", "operator")
    assert settings.token_holder(VIEWER) == ("wallboard", "viewer")
    assert settings.token_holder(VIEWER[:-1]) is None
    assert settings.token_owner(VIEWER) is None  # a viewer token is no operator's
    with pytest.raises(ValueError, match="at least 16 characters"):
        parse_tokens("wallboard=short")


def test_viewer_tokens_come_from_their_own_file_never_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLEET_VIEWER_TOKENS", raising=False)
    serve = ["fleet", "serve", "--db", f"sqlite:///{tmp_path / 'f.db'}", "--port", "0"]
    viewers = tmp_path / "viewers"
    viewers.write_text("wallboard=short\n")
    assert cloud_main([*serve, "--viewer-tokens-file", str(viewers)]) == 2
    assert "viewer tokens: token entry 'wallboard'" in capsys.readouterr().err
    assert cloud_main([*serve, "--viewer-tokens-file", str(tmp_path / "missing")]) == 2
    assert "cannot read viewer tokens file" in capsys.readouterr().err
    config = tmp_path / "fleet.yaml"
    config.write_text(f"viewer_tokens:\n  wallboard: {VIEWER}\n")
    assert cloud_main([*serve, "--config", str(config)]) == 2
    assert "viewer_tokens do not belong in the config" in capsys.readouterr().err


def test_the_openapi_document_says_which_token_each_operation_needs(
    client: httpx.Client,
) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "security" not in paths["/healthz"]["get"]
    assert "security" not in paths["/api/session"]["get"]
    devices = paths["/api/devices"]
    assert devices["get"]["security"] == [{"HTTPBearer": []}]
    assert "401" in devices["get"]["responses"] and "403" not in devices["get"]["responses"]
    assert {"401", "403"} <= set(devices["post"]["responses"])
    explain = paths["/api/governance/models/{model}/versions/{version}/explain"]["post"]
    assert "403" not in explain["responses"]  # a read, though a POST
