"""The weather station's own accuracy reaches the cloud in its telemetry.

A real agent replays real station rows (shared data) through a real ONNX forecaster; the
condition each hour reports is the label of the forecast made 4 hours before. Its telemetry
goes through a real Mosquitto to a running fleet service: the messages carry accuracy,
macro-F1 and n over the accuracy window that match a hand computation on the same rows, the
store keeps them, the API returns them and the dashboard charts them.
"""

from __future__ import annotations

import csv
import gzip
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Column, MetaData, Table, create_engine, inspect, text
from sqlalchemy.exc import OperationalError

from cloud_trainer.fleet.service import FleetService
from cloud_trainer.fleet.settings import FleetSettings, parse_tokens
from cloud_trainer.fleet.store import Envelope, FleetStore, StoreError, queries, sqlite_url
from cloud_trainer.fleet.store import schema as t
from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.comms.mqtt import BrokerEndpoint
from edge_agent.config.device import DeviceConfig
from edge_agent.drift.service import DriftService
from edge_agent.protocol import (
    LabelledAccuracy,
    PredictionMessage,
    StatusMessage,
    TelemetryMessage,
    decode_message,
)
from tests.integration.agent_fixtures import build_agent
from tests.support.mqtt import Collector
from tests.support.onnx_models import weather_classifier
from tests.support.samples import sample_messages

pytestmark = pytest.mark.integration

TOKEN = "operator-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEVICE, SITE = "wx-07", "harbour"
# Rows 5112-5251 of the real file: 140 consecutive clean hours from 2006-03-10, rain and snow.
SKIP_ROWS, ROWS = 5112, 140
WINDOW = 48
SPEED = 36_000.0  # ten station hours a second: telemetry (every 0.5 s) sees the window grow
HORIZON = timedelta(hours=4)
NEW_COLUMNS = ("accuracy", "macro_f1", "labelled_n")


def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout:.0f} s"
        time.sleep(0.05)


@dataclass
class StationRun:
    service: FleetService
    idle: TelemetryMessage
    finished_at: datetime
    telemetry: list[TelemetryMessage]
    predictions: list[PredictionMessage]
    observed: dict[datetime, str]
    source: dict[str, int]


def _station_rows(csv_path: Path) -> list[dict[str, str]]:
    with gzip.open(csv_path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return rows[SKIP_ROWS : SKIP_ROWS + ROWS]


@pytest.fixture(scope="module")
def run(
    mosquitto: MosquittoBroker, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StationRun]:
    workdir = tmp_path_factory.mktemp("accuracy-telemetry")
    root = f"acc{uuid.uuid4().hex[:6]}"
    service = FleetService(
        FleetSettings(
            database_url=sqlite_url(workdir / "fleet.db"),
            broker_host=mosquitto.host,
            broker_port=mosquitto.port,
            root=root,
            http_port=0,
            api_tokens=parse_tokens(f"operator={TOKEN}"),
            samples_dir=workdir / "samples",
        )
    ).start()
    csv_path = shared_data / "weather" / "weather_dataset_raw.csv.gz"
    weather_classifier(workdir / "rain4h.onnx")
    config = DeviceConfig.model_validate(
        {
            "device_id": DEVICE,
            "site": SITE,
            "kind": "weather",
            "source": {
                "type": "csv_replay",
                "path": str(csv_path),
                "skip_rows": SKIP_ROWS,
                "max_rows": ROWS,
                "speed": SPEED,
            },
            "model": {"path": str(workdir / "rain4h.onnx"), "version": 5},
            "broker": {"host": mosquitto.host, "port": mosquitto.port, "topic_root": root},
            "limits": {
                "outbox_path": str(workdir / "outbox.db"),
                "telemetry_interval_s": 0.5,
                "flush_timeout_s": 10,
            },
            "api": {"port": 0},
            "drift": {"detectors": ["accuracy"], "accuracy_window": WINDOW},
        }
    )
    assert config.drift is not None
    endpoint = BrokerEndpoint(mosquitto.host, mosquitto.port)
    try:
        agent = build_agent(config)
        DriftService(agent, config.drift, workdir).attach()
        idle = agent.telemetry_message()
        with Collector(endpoint, f"{root}/{SITE}/{DEVICE}/#") as collector:

            def decoded() -> list[Any]:
                return [decode_message(p) for _t, p in list(collector.messages)]

            agent.start(connect_timeout=10)
            try:
                inference = agent.supervisor.workers["inference"]
                wait_until(lambda: inference.finished, 60, "end of the replay")
                finished_at = datetime.now(UTC)
                wait_until(
                    lambda: any(
                        isinstance(m, TelemetryMessage) and m.ts > finished_at for m in decoded()
                    ),
                    what="telemetry after the replay",
                )
            finally:
                assert agent.stop() is True
            wait_until(
                lambda: any(
                    isinstance(m, StatusMessage) and m.state == "offline" for m in decoded()
                ),
                what="offline status",
            )
            messages = decoded()
        assert agent.source is not None
        source = dict(agent.source.counters)
        telemetry = [m for m in messages if isinstance(m, TelemetryMessage)]

        def stored() -> int:
            return service.store.read(lambda c: len(queries.telemetry_series(c, DEVICE, 0, 10**4)))

        wait_until(lambda: stored() == len(telemetry), what="telemetry stored")
        observed = {}
        for row in _station_rows(csv_path):
            hour = datetime.fromisoformat(row["Timestamp"]).astimezone(UTC)
            observed[hour] = row["Weather_conditions"]
        yield StationRun(
            service=service,
            idle=idle,
            finished_at=finished_at,
            telemetry=telemetry,
            predictions=[m for m in messages if isinstance(m, PredictionMessage)],
            observed=observed,
            source=source,
        )
    finally:
        service.stop()


def _pairs(run: StationRun) -> list[tuple[str, str]]:
    """By hand: each forecast at hour t against what the station observed at t + 4 h (a
    sample, so a forecast, exists for that hour); snow and clear count as no rain."""
    forecasts = {p.input_ts: p.label for p in run.predictions if p.input_ts is not None}
    assert len(forecasts) == len(run.predictions)
    pairs = []
    for hour in sorted(forecasts):
        target = hour + HORIZON
        if target in forecasts:
            seen = run.observed[target]
            pairs.append((forecasts[hour], "rain" if seen == "rain" else "no_rain"))
    return pairs


def _by_hand(pairs: list[tuple[str, str]]) -> tuple[float, float, int]:
    right = sum(1 for p, o in pairs if p == o)
    f1s = []
    for label in ("no_rain", "rain"):
        tp = sum(1 for p, o in pairs if p == label and o == label)
        fp = sum(1 for p, o in pairs if p == label and o != label)
        fn = sum(1 for p, o in pairs if p != label and o == label)
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return right / len(pairs), sum(f1s) / len(f1s), len(pairs)


def _close(labelled: LabelledAccuracy | None, expected: tuple[float, float, int]) -> bool:
    return (
        labelled is not None
        and labelled.n == expected[2]
        and abs(labelled.accuracy - expected[0]) < 1e-9
        and abs(labelled.macro_f1 - expected[1]) < 1e-9
    )


def test_telemetry_carries_accuracy_over_the_window_as_computed_by_hand(run: StationRun) -> None:
    # Every row was read and kept; every hour past the features' warm-up became a forecast.
    assert run.source["readings"] == run.source["hours"] == ROWS
    samples = ROWS - run.source["warming_up"]
    assert run.source["samples"] == samples == len(run.predictions)
    assert run.predictions[0].horizon_s == 4 * 3600
    pairs = _pairs(run)
    assert len(pairs) == samples - 4
    assert {p for p, _ in pairs} == {"rain", "no_rain"} == {o for _, o in pairs}

    # Nothing labelled yet: the field is absent, not zero or NaN.
    assert run.idle.labelled is None
    first = run.telemetry[0]
    assert first.labelled is None
    # The final window: the last 48 forecasts whose observation arrived.
    final = [m for m in run.telemetry if m.ts > run.finished_at]
    expected = _by_hand(pairs[-WINDOW:])
    assert final and all(_close(m.labelled, expected) for m in final)
    assert final[-1].labelled is not None and final[-1].labelled.n == WINDOW
    # While the window was filling, each report is over the first n forecasts joined.
    filling = [m.labelled for m in run.telemetry if m.labelled and m.labelled.n < WINDOW]
    assert filling, "no telemetry while the window filled"
    for labelled in filling:
        assert _close(labelled, _by_hand(pairs[: labelled.n]))
    # Any full window in between is some run of 48 consecutive joined forecasts.
    runs = {_by_hand(pairs[k : k + WINDOW]) for k in range(len(pairs) - WINDOW + 1)}
    for m in run.telemetry:
        if m.labelled is not None and m.labelled.n == WINDOW:
            assert any(_close(m.labelled, r) for r in runs)


def test_fleet_stores_it_and_the_api_returns_it(run: StationRun) -> None:
    with httpx.Client(base_url=run.service.base_url, headers=AUTH, timeout=10) as client:
        detail = client.get(f"/api/devices/{DEVICE}").json()
    rows = {r["seq"]: r for r in detail["telemetry"]}
    assert len(rows) == len(run.telemetry)
    for message in run.telemetry:
        row = rows[message.seq]
        labelled = message.labelled
        if labelled is None:
            assert (row["accuracy"], row["macro_f1"], row["labelled_n"]) == (None, None, None)
        else:
            assert row["accuracy"] == pytest.approx(labelled.accuracy)
            assert row["macro_f1"] == pytest.approx(labelled.macro_f1)
            assert row["labelled_n"] == labelled.n
    last = detail["telemetry"][-1]
    assert last["labelled_n"] == WINDOW
    assert last["accuracy"] == pytest.approx(_by_hand(_pairs(run)[-WINDOW:])[0])


# -- an older database still opens ------------------------------------------------------

POSTGRES_ADMIN = os.environ.get(
    "EDGE_MLOPS_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "fleet.db")
        return
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"fleet_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as e:
        admin.dispose()
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_ADMIN}: {e.orig}")
    yield admin.url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _old_telemetry_table(url: str, without: tuple[str, ...]) -> None:
    """The telemetry table as a release before these columns made it, with one row."""
    old = MetaData()
    table = Table(
        "telemetry",
        old,
        *(
            Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
            for c in t.telemetry.columns
            if c.name not in without
        ),
    )
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            old.create_all(conn)
            row = {c.name: 0 for c in table.columns if c.name != "id"}
            conn.execute(table.insert(), [{**row, "device_id": "wx-old", "dropped": {}}])
    finally:
        engine.dispose()


def test_an_older_database_gains_the_columns_and_keeps_its_rows(store_url: str) -> None:
    _old_telemetry_table(store_url, NEW_COLUMNS)
    store = FleetStore(store_url)
    try:
        columns = store.read(lambda c: {col["name"] for col in inspect(c).get_columns("telemetry")})
        assert set(NEW_COLUMNS) <= columns
        (old_row,) = store.read(lambda c: queries.telemetry_series(c, "wx-old", -1, 10))
        assert (old_row["accuracy"], old_row["macro_f1"], old_row["labelled_n"]) == (None,) * 3
        telemetry = sample_messages()[1]
        assert isinstance(telemetry, TelemetryMessage)
        labelled = LabelledAccuracy(accuracy=0.9375, macro_f1=0.875, n=48)
        message = telemetry.model_copy(update={"labelled": labelled})
        store.ingest([Envelope("park", message, time.time())])
        (row,) = store.read(lambda c: queries.telemetry_series(c, message.device_id, 0, 10))
        assert (row["accuracy"], row["macro_f1"], row["labelled_n"]) == (0.9375, 0.875, 48)
    finally:
        store.close()
    FleetStore(store_url).close()  # opening again changes nothing


def test_a_missing_required_column_is_refused_not_guessed(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "fleet.db")
    _old_telemetry_table(url, ("cpu_percent",))
    with pytest.raises(StoreError, match="telemetry table lacks column cpu_percent"):
        FleetStore(url)


# -- the dashboard ----------------------------------------------------------------------

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


@pytest.mark.slow
def test_device_page_charts_accuracy_with_n(run: StationRun) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api")
    expect = playwright_api.expect
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found (scripts/test.sh installs Debian's chromium as root)")
    base = run.service.base_url
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=base)
            context.set_default_timeout(10_000)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"/dashboard/#/device/{DEVICE}")
            page.wait_for_selector("body[data-ready=true]")
            page.fill("#token", TOKEN)  # every read needs a token: the page asks at once
            page.click("#login-submit")
            chart = page.locator("figure[data-chart='Labelled accuracy']")
            expect(chart.locator("canvas")).to_be_visible()
            expect(page.locator("figure.chart canvas")).to_have_count(6)
            note = chart.locator(".chart-note")
            expect(note).to_have_attribute("data-n", str(WINDOW))
            accuracy, f1, n = _by_hand(_pairs(run)[-WINDOW:])
            expect(note).to_have_text(
                f"latest: accuracy {accuracy:.3f} · macro-F1 {f1:.3f} · n = {n}"
            )
            # The legend names both series.
            expect(chart.locator(".u-legend")).to_contain_text("macro-F1")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "device-accuracy.png"), full_page=True)
            context.close()
            assert errors == [], f"JavaScript errors: {errors}"
        finally:
            browser.close()
