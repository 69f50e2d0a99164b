"""The dashboard in a real headless Chromium against a running service and simulated fleet."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_trainer.fleet.store import queries
from cloud_trainer.stack.mosquitto import MosquittoBroker
from tests.integration.dashboard_fixtures import (
    TOKEN,
    VIEWER_TOKEN,
    DashboardFleet,
    start_dashboard_fleet,
    wait_until,
)

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path(os.environ.get("EDGE_MLOPS_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ARTIFACTS = (
    Path(
        os.environ.get(
            "EDGE_MLOPS_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"
        )
    )
    / "dashboard"
)


@pytest.fixture(scope="module")
def running(
    mosquitto: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DashboardFleet]:
    dash = start_dashboard_fleet(mosquitto, tmp_path_factory.mktemp("dashboard-browser"))
    yield dash
    dash.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found (scripts/test.sh installs Debian's chromium as root)")
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, running: DashboardFleet) -> Iterator[Any]:
    """A fresh browser context (empty sessionStorage) at 1280x800; every request recorded."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, base_url=running.base_url
    )
    context.set_default_timeout(10_000)
    tab = context.new_page()
    tab.requests = []
    tab.errors = []
    tab.on("request", lambda r: tab.requests.append(r.url))
    tab.on("pageerror", lambda e: tab.errors.append(str(e)))
    tab.on("dialog", lambda d: d.accept())
    yield tab
    context.close()
    assert tab.errors == [], f"JavaScript errors: {tab.errors}"
    foreign = [u for u in tab.requests if not u.startswith((running.base_url, "data:"))]
    assert foreign == [], f"the page fetched from elsewhere: {foreign}"


def shot(page: Any, name: str, full_page: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def open_dashboard(page: Any, hash_: str = "", token: str | None = TOKEN) -> None:
    """Opens the page and, unless ``token`` is None, signs in: every read needs a token."""
    page.goto(f"/dashboard/{hash_}")
    page.wait_for_selector("body[data-ready=true]")
    if token is not None:
        sign_in(page, token)
        expect(page.locator("#who")).to_contain_text("signed in as")


def sign_in(page: Any, token: str = TOKEN) -> None:
    expect(page.locator("#login")).to_be_visible()  # asked for at once, before any data
    page.fill("#token", token)
    page.click("#login-submit")


def test_overview_lists_every_device_and_filters(page: Any) -> None:
    open_dashboard(page)
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(5)
    expect(page.locator("tr[data-device=cam-02] .presence")).to_have_text("offline")
    expect(page.locator("tr[data-device=cam-00] .presence")).to_have_text("online")
    expect(page.locator("tr[data-device=cam-00] .drift")).to_contain_text("drift")
    expect(page.locator("tr[data-device=wx-00] .drift")).to_have_text("ok")
    expect(page.locator("tr[data-device=cam-00] .model")).to_have_text("catdog v4")
    expect(page.locator("#live")).to_have_text("live")
    shot(page, "overview")

    page.select_option("#filter-site", "site-1")
    expect(page).to_have_url(re.compile(r"#/fleet\?site=site-1$"))
    expect(rows).to_have_count(2)
    page.select_option("#filter-kind", "camera")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-device", "cam-01")
    page.click("text=Clear filters")
    expect(rows).to_have_count(5)
    page.select_option("#filter-model", "rain4h")
    expect(page.locator("#shown-count")).to_have_text("2 of 5 devices")
    page.select_option("#filter-online", "false")
    expect(rows).to_have_count(0)
    expect(page.locator(".empty")).to_have_text("No device matches these filters.")


def test_device_detail_shows_charts_predictions_drift_and_history(page: Any) -> None:
    open_dashboard(page)
    page.click("tr[data-device=cam-00] a")
    expect(page).to_have_url(re.compile(r"#/device/cam-00$"))
    expect(page.locator("figure.chart canvas")).to_have_count(5)
    for title in ("CPU", "Memory", "Temperature", "Inference latency", "Frames per second"):
        expect(page.locator(f"figure[data-chart='{title}'] canvas")).to_be_visible()
    expect(page.locator(".bar-row[data-label=cat]")).to_be_visible()
    expect(page.locator(".bar-row[data-label=dog]")).to_be_visible()
    expect(page.locator(".version-block h3")).to_contain_text("catdog v1 · 48 predictions")
    detector = page.locator(".detector[data-detector=features]")
    expect(detector.locator(".bar-row[data-feature=brightness] .bar-value")).to_have_text(
        "0.700 / 0.25"
    )
    expect(detector).to_contain_text("over threshold")
    history = page.locator("text=catdog-v4-seed")
    expect(history).to_have_count(2)
    expect(page.locator("td .badge", has_text="committed")).to_be_visible()
    visits = page.locator("#visits tr[data-visit]")
    expect(visits).to_have_count(2)
    expect(visits.first).to_have_attribute("data-visit", "visit-seed-2")  # newest first
    expect(visits.first).to_contain_text("under way")
    expect(page.locator("#visits tr[data-visit=visit-seed-1]")).to_contain_text("9 / 11")
    expect(page.locator("#visits tr[data-state=restored]")).to_contain_text("down 12.5 s")
    shot(page, "device", full_page=True)


def test_sign_in_then_acknowledge_an_alert(page: Any, running: DashboardFleet) -> None:
    open_dashboard(page, "#/alerts", token=None)
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator(".signed-out-note")).to_be_visible()  # no data before signing in
    expect(page.locator("#live")).to_have_text("not signed in")
    page.fill("#token", "wrong-token-0123456789")
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_have_text(
        "That token is not valid for this fleet service."
    )
    shot(page, "sign-in")
    page.fill("#token", TOKEN)
    page.click("#login-submit")
    expect(page.locator("#who")).to_have_text("signed in as operator")
    badge = page.locator("#alert-badge")
    expect(badge).to_have_text(re.compile(r"^[1-9][0-9]*$"))
    before = int(badge.inner_text())
    row = page.locator("tr", has=page.locator("a", has_text="cam-00"))
    expect(row).to_have_count(1)
    row.locator(".ack-button").click()
    expect(row).to_have_count(0)
    expect(badge).to_have_text(str(before - 1))
    alerts = running.service.store.read(lambda c: queries.list_alerts(c, device_id="cam-00"))
    assert alerts[-1]["acknowledged_by"] == "operator"
    page.uncheck("#only-open")
    expect(page.locator("td.ack", has_text="acknowledged by operator")).to_have_count(1)


def test_pin_a_device_and_see_it_acknowledged(page: Any, running: DashboardFleet) -> None:
    open_dashboard(page, "#/device/wx-01")
    expect(page.locator("figure.chart canvas")).to_have_count(6)  # and labelled accuracy
    expect(page.locator("figure[data-chart='Labelled accuracy'] .chart-note")).to_contain_text(
        "n = 48"
    )
    accuracy = page.locator(".detector[data-detector=accuracy]")
    expect(accuracy.locator(".bar-value")).to_have_text("0.646 / 0.7")
    expect(accuracy).to_contain_text("below threshold")  # accuracy: lower is worse
    expect(page.locator("#who")).to_have_text("signed in as operator")
    expect(page.locator(".read-only-note")).to_have_count(0)
    page.fill("#pin-version", "1")
    page.click("#pin")
    command = page.locator("tr[data-action=pin]")
    expect(command.locator(".status")).to_have_text("done")
    expect(command).to_contain_text("version=1")
    pins = [c for c in running.fleet.commands if c.action == "pin" and c.device_id == "wx-01"]
    assert [c.args for c in pins] == [{"version": 1}]
    assert pins[0].issued_by == "operator"


def test_promote_then_roll_back_from_the_releases_page(page: Any, running: DashboardFleet) -> None:
    open_dashboard(page, "#/releases")
    current = page.locator("article.release.current")
    expect(current).to_have_attribute("data-release", "catdog-v4-seed")
    expect(current).to_contain_text("wave 0")
    expect(current.locator(".pills")).to_contain_text("committed 1")
    expect(current.locator(".pills")).to_contain_text("failed 1")
    step = current.locator(".rollout-history li[data-action='started']")
    expect(step).to_contain_text("wave 0")
    expect(step).to_contain_text("wave 0 published")
    shot(page, "releases")
    current.locator(".promote-percent").select_option("50")
    current.locator("button.promote").click()
    expect(current).to_contain_text("wave 1")
    expect(current).to_contain_text("50% of the fleet")
    page.locator(".rollback-version").select_option("3")
    page.locator("button.rollback").click()
    expect(current).not_to_have_attribute("data-release", "catdog-v4-seed")
    expect(current).to_contain_text("v3")
    expect(page.locator("article.release")).to_have_count(3)
    newest = running.service.store.read(lambda c: queries.list_releases(c, "catdog"))[0]
    assert newest["version"] == 3 and newest["rollout"]["percent"] == 100.0
    assert newest["release_id"] == current.get_attribute("data-release")
    shot(page, "releases-after-rollback")


def test_live_update_arrives_without_reload(page: Any, running: DashboardFleet) -> None:
    open_dashboard(page)
    page.evaluate("window.__samePage = true")
    badge = page.locator("#alert-badge")
    expect(badge).to_have_text(re.compile(r"^[0-9]+$"))  # counted once signed in
    before = int(badge.inner_text())
    expect(page.locator("tr[data-device=wx-00] .drift")).to_have_text("ok")
    wx = running.fleet.devices["wx-00"]
    running.fleet.publish("wx-00", wx.drift("raised", score=0.9, detector="pressure"))
    expect(page.locator("tr[data-device=wx-00] .drift")).to_have_text("drift: pressure")
    expect(badge).to_have_text(str(before + 1))
    assert page.evaluate("window.__samePage") is True
    wait_until(lambda: running.service.store.device("wx-00")["drift_status"] == "drift")  # type: ignore[index]
    shot(page, "overview-live")


def test_a_viewer_sees_everything_but_every_action_is_disabled(
    page: Any, running: DashboardFleet
) -> None:
    open_dashboard(page, "#/alerts", token=VIEWER_TOKEN)
    expect(page.locator("#who")).to_have_text("signed in as wallboard (viewer)")
    expect(page.locator("#live")).to_have_text("live")  # the stream's cookie works for viewers
    ack = page.locator(".ack-button").first
    expect(ack).to_be_disabled()
    expect(ack).to_have_attribute("title", re.compile("viewer token"))
    page.goto("/dashboard/#/device/wx-01")
    expect(page.locator("figure.chart canvas")).to_have_count(6)
    for button in ("#pin", "#unpin", "#device-rollback", "#update-check"):
        expect(page.locator(button)).to_be_disabled()
    expect(page.locator(".read-only-note")).to_contain_text("viewer token")
    before = running.service.store.read(lambda c: queries.list_releases(c, "catdog"))
    page.goto("/dashboard/#/releases")
    expect(page.locator("button.rollback")).to_be_disabled()
    acts = page.locator("button[data-acts]")
    expect(acts.first).to_be_visible()
    assert acts.count() >= 1
    assert page.evaluate(
        "[...document.querySelectorAll('button[data-acts]')].every((b) => b.disabled)"
    )
    shot(page, "viewer-releases")
    after = running.service.store.read(lambda c: queries.list_releases(c, "catdog"))
    assert after == before  # nothing changed
