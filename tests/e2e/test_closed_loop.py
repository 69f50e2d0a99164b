"""The README's main job: the whole loop on embedded defaults, checked against the stores.

One run of ``cloud-trainer demo`` (a real Mosquitto, a real MLflow store, a real fleet
service, two ``edge-agent run`` processes): the station replays a summer its v1 model never
saw, raises a drift alert, the policy engine retrains, the gate promotes, the canary wave
reaches the station, which serves the new version after probation.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cloud_trainer.fleet.store import FleetStore
from cloud_trainer.fleet.store.queries import list_alerts, list_policy_actions, update_history

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.integration]


def test_demo_closes_the_loop(tmp_path: Path, shared_data: Path) -> None:
    workdir = tmp_path / "demo"
    out = subprocess.run(
        [sys.executable, "-m", "cloud_trainer", "demo", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-6000:]
    assert "loop closed" in out.stdout

    # The fleet store saw the alert, ran the retrain, and the station's update lifecycle.
    store = FleetStore(f"sqlite:///{workdir / 'fleet' / 'fleet.db'}")
    try:
        alerts = store.read(lambda c: list_alerts(c, device_id="port-ws-01"))
        actions = store.read(lambda c: list_policy_actions(c, model="weather-rain-4h"))
        history = store.read(lambda c: update_history(c, "port-ws-01"))
    finally:
        store.close()
    raised_v1 = [a for a in alerts if a["state"] == "raised" and a["model_version"] == 1]
    assert raised_v1, alerts
    retrains = [a for a in actions if a["action"] == "retrain"]
    assert any(a["status"] == "done" and "promoted" in (a["detail"] or "") for a in retrains)
    states = [(h["to_version"], h["state"]) for h in reversed(history)]
    assert (2, "committed") in states
    assert states.index((2, "downloading")) < states.index((2, "probation"))
    assert states.index((2, "probation")) < states.index((2, "committed"))

    # The registry: v2 is champion, its gate decision recorded; v1 was trained on winter only.
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{workdir / 'mlflow' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    champion = client.get_model_version_by_alias("weather-rain-4h", "champion")
    assert int(champion.version) >= 2
    assert champion.tags.get("gate.promote") == "true"
    assert client.get_model_version("weather-rain-4h", "2").tags.get("release.id")

    # Both agents served; the camera with the registered edge model, telling visits (a pet
    # came and left between empty stretches of its footage), not frames.
    assert "park-cam-01  first prediction from catdog" in out.stdout
    visits = [line for line in out.stdout.splitlines() if "park-cam-01  visit: " in line]
    assert visits and all((" cat for " in v or " dog for " in v) for v in visits), log[-3000:]
    assert "visits park-cam-01: " in out.stdout
    assert "port-ws-01   first prediction from weather-rain-4h v2" in out.stdout


def test_demo_on_the_shipped_samples_alone(tmp_path: Path) -> None:
    """A machine without ../shared: the demo still runs every step and ends with a verdict."""
    from cloud_trainer.catdog.cli import sample_path as pets_sample
    from cloud_trainer.weather.settings import sample_path as weather_sample

    out = subprocess.run(
        [
            sys.executable, "-m", "cloud_trainer", "demo", "--workdir", str(tmp_path / "demo"),
            "--weather-data", str(weather_sample()), "--pets", str(pets_sample()),
        ],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, (out.stdout + out.stderr)[-6000:]
    assert "loop closed: " in out.stdout
    assert "drift raised by features (v1)" in out.stdout
    assert "gate: " in out.stdout
