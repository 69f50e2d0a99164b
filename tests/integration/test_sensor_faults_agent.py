"""A weather station notices its own stuck barometer.

A real agent replays real station rows (shared data, March 2015: held out from the
training years the sensor-health baseline was fitted on) in which the pressure sensor
freezes at a known hour, through a real ONNX forecaster carrying that baseline, over a real
Mosquitto to a running fleet service. A ``sensor_fault`` message names the sensor and the
test; predictions made while it is faulty carry the flag, telemetry lists it; with
``withhold_forecasts`` no forecast is published from then on; the fleet stores the fault and
its API serves it as open.
"""

from __future__ import annotations

import csv
import gzip
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud_trainer.fleet.service import FleetService
from cloud_trainer.fleet.settings import FleetSettings, parse_tokens
from cloud_trainer.fleet.store import queries, sqlite_url
from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.comms.mqtt import BrokerEndpoint
from edge_agent.config.device import DeviceConfig
from edge_agent.health.service import SensorHealthService
from edge_agent.protocol import (
    PredictionMessage,
    SensorFault,
    StatusMessage,
    TelemetryMessage,
    decode_message,
)
from tests.integration.agent_fixtures import build_agent
from tests.support.mqtt import Collector
from tests.support.onnx_models import weather_classifier
from tests.support.station_history import load_station
from tests.support.weather_csv import HEADER, write_csv

pytestmark = pytest.mark.integration

TOKEN = "operator-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SITE = "harbour"
FIRST = datetime(2015, 3, 1, tzinfo=UTC)
HOURS = 96
STUCK_AT = FIRST + timedelta(hours=60)  # the barometer repeats its 11:00 reading from 12:00
FLAG = "sensor_fault:pressure_mb"


def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout:.0f} s"
        time.sleep(0.05)


def stuck_barometer_csv(shared_data: Path, path: Path) -> Path:
    """The real rows of FIRST .. FIRST + HOURS, in file order, pressure frozen from STUCK_AT."""
    with gzip.open(shared_data / "weather" / "weather_dataset_raw.csv.gz", "rt", newline="") as f:
        rows = [
            (datetime.fromisoformat(row["Timestamp"]).astimezone(UTC), row)
            for row in csv.DictReader(f)
        ]
    window = [(ts, r) for ts, r in rows if FIRST <= ts < FIRST + timedelta(hours=HOURS)]
    assert len(window) == HOURS
    frozen = next(r for ts, r in window if ts == STUCK_AT - timedelta(hours=1))
    for ts, row in window:
        if ts >= STUCK_AT:
            row["Pressure_millibars"] = frozen["Pressure_millibars"]
    return write_csv(path, [r for _, r in window], HEADER)


@dataclass
class StationRun:
    messages: list[Any]
    source: dict[str, int]
    agent_counters: dict[str, int]

    def of(self, kind: type) -> list[Any]:
        return [m for m in self.messages if isinstance(m, kind)]


@dataclass
class Fleet:
    service: FleetService
    root: str
    endpoint: BrokerEndpoint
    workdir: Path
    model: Path
    csv: Path


@pytest.fixture(scope="module")
def fleet(
    mosquitto: MosquittoBroker, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("sensor-faults")
    root = f"sf{uuid.uuid4().hex[:6]}"
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
    station = load_station(shared_data)
    model = workdir / "rain4h.onnx"
    weather_classifier(model, sensor_health=station.baseline)
    try:
        yield Fleet(
            service,
            root,
            BrokerEndpoint(mosquitto.host, mosquitto.port),
            workdir,
            model,
            stuck_barometer_csv(shared_data, workdir / "station.csv"),
        )
    finally:
        service.stop()


def run_station(fleet: Fleet, device: str, sensor_health: dict[str, Any]) -> StationRun:
    outbox = fleet.workdir / f"{device}.db"
    config = DeviceConfig.model_validate(
        {
            "device_id": device,
            "site": SITE,
            "kind": "weather",
            "source": {"type": "csv_replay", "path": str(fleet.csv), "speed": 36_000.0},
            "model": {"path": str(fleet.model), "version": 5},
            "broker": {
                "host": fleet.endpoint.host,
                "port": fleet.endpoint.port,
                "topic_root": fleet.root,
            },
            "limits": {
                "outbox_path": str(outbox),
                "telemetry_interval_s": 0.5,
                "flush_timeout_s": 10,
            },
            "api": {"port": 0},
            "sensor_health": sensor_health,
        }
    )
    agent = build_agent(config)
    SensorHealthService(agent, config.sensor_health).attach()
    with Collector(fleet.endpoint, f"{fleet.root}/{SITE}/{device}/#") as collector:

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
            lambda: any(isinstance(m, StatusMessage) and m.state == "offline" for m in decoded()),
            what="offline status",
        )
        messages = decoded()
    assert agent.source is not None
    return StationRun(messages, dict(agent.source.counters), dict(agent.counters))


@pytest.fixture(scope="module")
def flagged(fleet: Fleet) -> StationRun:
    return run_station(fleet, "wx-flag", {"withhold_forecasts": False})


@pytest.fixture(scope="module")
def withheld(fleet: Fleet) -> StationRun:
    return run_station(fleet, "wx-hold", {"withhold_forecasts": True})


def test_a_sensor_fault_names_the_stuck_barometer(flagged: StationRun) -> None:
    assert flagged.source["readings"] == HOURS
    faults = flagged.of(SensorFault)
    assert faults, "no sensor_fault message"
    first = faults[0]
    assert (first.sensor, first.test, first.state) == ("pressure_mb", "stuck", "raised")
    assert first.since == STUCK_AT
    assert STUCK_AT <= first.observed_at <= STUCK_AT + timedelta(hours=3)
    assert (first.device_id, first.model_name, first.model_version) == ("wx-flag", "rain4h", 5)
    assert first.score > first.threshold
    # Nothing else was blamed, and the frozen barometer never cleared.
    assert {(f.sensor, f.state) for f in faults} == {("pressure_mb", "raised")}


def test_predictions_made_while_faulty_carry_the_flag(flagged: StationRun) -> None:
    detected = flagged.of(SensorFault)[0].observed_at
    predictions = flagged.of(PredictionMessage)
    before = [p for p in predictions if p.input_ts is not None and p.input_ts < detected]
    after = [p for p in predictions if p.input_ts is not None and p.input_ts >= detected]
    assert before and after
    assert all(p.flags is None for p in before)
    assert all(p.flags == [FLAG] for p in after)
    telemetry = flagged.of(TelemetryMessage)
    assert telemetry[0].sensor_faults is None  # absent while every sensor is healthy
    assert telemetry[-1].sensor_faults == ["pressure_mb"]


def test_withholding_stops_forecasts_while_a_sensor_is_faulty(
    flagged: StationRun, withheld: StationRun
) -> None:
    detected = withheld.of(SensorFault)[0].observed_at
    assert detected == flagged.of(SensorFault)[0].observed_at
    predictions = withheld.of(PredictionMessage)
    times = [p.input_ts for p in predictions if p.input_ts is not None]
    assert times and max(times) < detected
    expected = len(flagged.of(PredictionMessage)) - len(predictions)
    assert expected > 0
    assert withheld.agent_counters["withheld_sensor_fault"] == expected
    assert withheld.of(TelemetryMessage)[-1].dropped["withheld_sensor_fault"] == expected


def test_the_fleet_stores_and_serves_the_fault(fleet: Fleet, flagged: StationRun) -> None:
    sent = flagged.of(SensorFault)
    store = fleet.service.store

    def stored() -> int:
        return len(store.read(lambda c: queries.sensor_faults(c, "wx-flag"))["history"])

    wait_until(lambda: stored() == len(sent), what="sensor faults stored")
    with httpx.Client(base_url=fleet.service.base_url, headers=AUTH, timeout=10) as client:
        detail = client.get("/api/devices/wx-flag").json()
    faults = detail["sensor_faults"]
    assert faults["faulty"] == ["pressure_mb"]
    (open_fault,) = faults["open"]
    assert (open_fault["sensor"], open_fault["test"], open_fault["state"]) == (
        "pressure_mb",
        "stuck",
        "raised",
    )
    assert open_fault["since"] == pytest.approx(STUCK_AT.timestamp())
    assert open_fault["seq"] == sent[0].seq
