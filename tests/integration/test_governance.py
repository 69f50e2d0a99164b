"""Governance end to end: a real MLflow store, fleet service, broker and quick trainings.

One weather model is trained on the shipped sample; a drift alert makes the policy engine
retrain it (v2, cause recorded); both are analysed; the audit report of v2 is checked fact by
fact against MLflow and the fleet store; camera frames go through the labelling queue over
the fleet API into a camera training run, with their provenance on the run.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import httpx
import pytest
from mlflow import MlflowClient

from cloud_trainer.catdog.cli import sample_path as pets_sample
from cloud_trainer.cli import main
from cloud_trainer.fleet.policy.rules import PolicyConfig, PolicyRule
from cloud_trainer.fleet.service import FleetService
from cloud_trainer.fleet.settings import FleetSettings, parse_tokens
from cloud_trainer.fleet.sim import SimulatedFleet
from cloud_trainer.fleet.store import queries, sqlite_url
from cloud_trainer.governance.analysis import analyse_version
from cloud_trainer.governance.labelling.queue import LabelQueue
from cloud_trainer.governance.registry_facts import artifact_json
from cloud_trainer.governance.report.build import write_report
from cloud_trainer.governance.report.html import FACTS_ELEMENT_ID
from cloud_trainer.governance.triggers.plan import TriggerConfig
from cloud_trainer.governance.triggers.run import RetrainHandler, run_due
from cloud_trainer.stack.mlflow_store import MlflowStore
from cloud_trainer.stack.mosquitto import MosquittoBroker
from cloud_trainer.weather.pipeline import train_weather
from cloud_trainer.weather.settings import TrainSettings, sample_path
from edge_agent.features.weather import FEATURE_NAMES
from edge_agent.protocol import FeatureDrift, UpdateState, encode
from tests.support.samples import sample_manifest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "operator-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
VIEWER = "viewer-token-0123456789ab"  # reads (and explanations) need a token, a viewer's
WEATHER = "rain4h"


@dataclass
class World:
    store_dir: Path
    store: MlflowStore
    service: FleetService
    fleet: SimulatedFleet
    root: str
    config: TriggerConfig
    work: Path

    @property
    def http(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.service.base_url,
            headers={"Authorization": f"Bearer {VIEWER}"},
            timeout=30,
        )


def wait_until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def world(mosquitto: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    work = tmp_path_factory.mktemp("governance")
    store_dir = work / "mlflow"
    store = MlflowStore.local(store_dir)
    store.activate()
    config = TriggerConfig.model_validate(
        {"models": [
            {"name": WEATHER, "pipeline": "weather", "quick": True, "data": str(sample_path()),
             "every_days": 1e-6},
            {"name": "catdog", "pipeline": "catdog", "quick": True, "arch": "small-cnn",
             "data": str(pets_sample()), "min_new_labels": 2, "retrain_on_drift": False},
        ]}
    )  # fmt: skip
    train_weather(
        TrainSettings(data=sample_path(), store=str(store_dir), quick=True, model_name=WEATHER,
                      work_dir=work / "wx1")
    )  # fmt: skip
    policy = work / "policy.yaml"
    rules = PolicyConfig(
        rules=[PolicyRule(name="retrain-rain", model=WEATHER, actions=["retrain"])]
    )
    policy.write_text(json.dumps(rules.model_dump(mode="json")))
    root = f"gov{uuid.uuid4().hex[:6]}"
    settings = FleetSettings(
        database_url=sqlite_url(work / "fleet.db"),
        broker_host=mosquitto.host,
        broker_port=mosquitto.port,
        root=root,
        http_port=0,
        api_tokens=parse_tokens(f"operator={TOKEN}"),
        viewer_tokens=parse_tokens(f"analyst={VIEWER}"),
        samples_dir=work / "samples",
        policy_file=policy,
    )
    handler = RetrainHandler(config, store=str(store_dir))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGE_MLOPS_MLFLOW", str(store_dir))
        service = FleetService(settings, handlers={"retrain": handler}).start()
        fleet = SimulatedFleet.build(service.consumer.link.endpoint, root, cameras=2, stations=2)
        fleet.start()
        for device_id, device in fleet.devices.items():
            fleet.publish(device_id, device.status())
        yield World(store_dir, store, service, fleet, root, config, work)
        fleet.stop()
        service.stop()


@pytest.fixture(autouse=True)
def _active_store(world: World) -> None:
    world.store.activate()


def _versions(name: str) -> list[int]:
    return sorted(int(v.version) for v in MlflowClient().search_model_versions(f"name = '{name}'"))


def test_triggers_dry_run_shows_what_would_be_retrained_and_released(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    (outcome,) = run_due(world.config, dry_run=True, fleet_store=world.service.store)
    assert outcome.model == WEATHER and outcome.causes == "schedule" and outcome.dry_run
    text = "\n".join(outcome.plan)
    assert "retrain rain4h with the weather pipeline (quick)" in text
    assert "release to channel stable in waves 10,50,100" in text
    assert _versions(WEATHER) == [1]  # a dry run trains nothing
    config = world.work / "triggers.yaml"
    config.write_text(json.dumps(world.config.model_dump(mode="json")))
    argv = [
        "governance",
        "triggers",
        "--config",
        str(config),
        "--dry-run",
        "--store",
        str(world.store_dir),
        "--fleet-db",
        world.service.settings.database_url,
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "because: schedule" in out and "catdog" not in out
    assert _versions(WEATHER) == [1]


def _drift(world: World, device_id: str, version: int, features: list[FeatureDrift]) -> int:
    device = world.fleet.devices[device_id]
    device.model_version = version
    alert = device.drift("raised", score=0.9).model_copy(update={"features": features})
    before = world.service.store.counts()["drift_alerts"]
    world.fleet.publish(device_id, alert)
    wait_until(lambda: world.service.store.counts()["drift_alerts"] == before + 1)
    (latest,) = world.service.store.read(lambda c: queries.list_alerts(c, limit=1))
    return int(latest["id"])


def test_drift_alert_retrains_through_the_policy_engine_with_its_cause(world: World) -> None:
    features = [FeatureDrift(name="humidity", metric="psi", score=0.9, threshold=0.25)]
    alert_id = _drift(world, "wx-00", 1, features)
    wait_until(lambda: bool(world.service.store.read(lambda c: queries.list_policy_actions(c))))
    assert world.service.policy.wait(timeout=240)
    (action,) = world.service.store.read(lambda c: queries.list_policy_actions(c, WEATHER))
    assert action["status"] == "done", action["detail"]
    assert action["detail"].startswith("retrained rain4h v2")
    assert _versions(WEATHER) == [1, 2]
    run = MlflowClient().get_run(str(MlflowClient().get_model_version(WEATHER, "2").run_id))
    assert run.data.tags["trigger.cause"] == "drift"
    assert run.data.tags["trigger.alert_ids"] == str(alert_id)
    assert "policy rule retrain-rain" in run.data.tags["trigger.detail"]


def test_importance_is_stable_and_compared_between_versions(world: World) -> None:
    first = analyse_version(WEATHER, 1)
    again = analyse_version(WEATHER, 1)
    assert first.importance is not None and again.importance is not None
    assert first.importance.ranking() == again.importance.ranking()
    assert sorted(first.importance.ranking()) == sorted(FEATURE_NAMES)
    second = analyse_version(WEATHER, 2)
    assert second.previous_version == 1 and second.importance is not None
    by_name = {c.feature: c for c in second.importance_change}
    old, new = first.importance.by_feature(), second.importance.by_feature()
    for name in FEATURE_NAMES:
        assert by_name[name].change == pytest.approx(new[name].mean_drop - old[name].mean_drop)
    assert second.local_example is not None
    assert len(second.local_example.contributions) == len(FEATURE_NAMES)
    assert {s.kind for s in second.slices.slices} == {"class", "season", "time of day"}


def _seed_fleet_history(world: World) -> dict[str, Any]:
    """v2 released, one device committed, one rolled back, drift on v2, v2 predictions."""
    fleet, store = world.fleet, world.service.store
    release = sample_manifest(release_id="rain4h-v2-wave", model=WEATHER, version=2,
                              publisher="release-bot")  # fmt: skip
    fleet.publish_raw("wx-00", f"{world.root}/releases/{WEATHER}", encode(release), retain=True)
    wx0, wx1 = fleet.devices["wx-00"], fleet.devices["wx-01"]
    wx0.model_version = wx1.model_version = 1
    fleet.publish("wx-00", wx0.event(UpdateState.COMMITTED, 2, "rain4h-v2-wave"))
    fleet.publish("wx-01", wx1.event(UpdateState.ROLLED_BACK, 2, "rain4h-v2-wave"))
    wx0.model_version = 2
    for _ in range(12):
        fleet.publish("wx-00", wx0.prediction("rain"))
    wait_until(lambda: store.counts()["update_events"] >= 2 and store.counts()["releases"] >= 1)
    wait_until(lambda: store.counts()["prediction_buckets"] >= 1)
    features = [
        FeatureDrift(name="humidity", metric="psi", score=0.6, threshold=0.25),
        FeatureDrift(name="pressure_hpa", metric="psi", score=0.5, threshold=0.25),
    ]
    return {"alert_id": _drift(world, "wx-00", 2, features)}


def test_report_states_the_facts_of_the_stores(world: World, tmp_path: Path) -> None:
    seeded = _seed_fleet_history(world)
    store = world.service.store
    # Render time is a benchmark figure (benchmarks/bench_report.py), not a test assertion.
    outcome = write_report(WEATHER, 2, tmp_path / "report.html", store, "fleet.db")
    html = outcome.html.read_text()
    found = re.search(
        rf'<script type="application/json" id="{FACTS_ELEMENT_ID}">(.*?)</script>', html
    )
    assert found is not None
    facts = json.loads(found.group(1))

    client = MlflowClient()
    mv = client.get_model_version(WEATHER, "2")
    run = client.get_run(str(mv.run_id))
    reg = facts["registry"]
    assert reg["run_id"] == mv.run_id
    assert reg["data_version"] == run.data.tags["data_version"]
    assert reg["git_commit"] == run.data.tags["git_commit"] and reg["git_commit"] in html
    assert reg["params"] == run.data.params
    assert reg["metrics"] == pytest.approx(run.data.metrics)
    assert reg["gate"]["promote"] == (mv.tags["gate.promote"] == "true")
    assert reg["gate"]["decided"] == mv.tags["gate.decided"]
    decision = artifact_json(str(mv.run_id), "gate/decision.json")
    assert reg["gate"]["reasons"] == decision["reasons"]
    assert all(reason in html for reason in decision["reasons"])
    assert reg["trigger_tags"]["trigger.cause"] == "drift"

    releases = store.read(lambda c: queries.list_releases(c, WEATHER))
    assert [r["release_id"] for r in facts["fleet"]["releases"]] == [
        r["release_id"] for r in releases
    ]
    (rel,) = facts["fleet"]["releases"]
    assert rel["publisher"] == "release-bot" and "release-bot" in html
    assert rel["outcomes"] == {d["device_id"]: d["state"] for d in releases[0]["devices"]}
    assert [r["device_id"] for r in facts["fleet"]["rollbacks"]] == ["wx-01"]
    alerts = store.read(lambda c: queries.list_alerts(c, model=WEATHER))
    v2_alerts = sorted(a["id"] for a in alerts if a["model_version"] == 2)
    assert [a["alert_id"] for a in facts["fleet"]["alerts"]] == v2_alerts
    assert seeded["alert_id"] in v2_alerts

    analysis = facts["analysis"]
    rank = {f["feature"]: f["rank"] for f in analysis["importance"]["features"]}
    linked = {x["feature"]: x for x in facts["alert_importance"]}
    assert linked["humidity"]["importance_rank"] == rank["humidity"]
    assert linked["pressure_hpa"]["importance_rank"] is None
    assert f"{rank['humidity']} of {len(FEATURE_NAMES)}" in html and "not a model input" in html
    production = {(s["kind"], s["name"]) for s in facts["production"]["slices"]}
    assert ("device", "wx-00") in production and ("site", "site-0") in production
    assert "data:image/png;base64," in html and "<link" not in html
    if outcome.pdf is not None:
        assert outcome.pdf.read_bytes().startswith(b"%PDF")
    else:
        assert outcome.pdf_note.startswith("no PDF")


def test_dashboard_serves_the_report_importance_and_explanations(world: World) -> None:
    with world.http as http:
        page = http.get(f"/api/governance/models/{WEATHER}/versions/2/report")
        assert page.status_code == 200 and "rain4h v2: model audit report" in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert http.get(f"/api/governance/models/{WEATHER}/versions/9/report").status_code == 404
        (alert,) = http.get("/api/alerts", params={"model": WEATHER, "limit": 1}).json()["alerts"]
        linked = http.get(f"/api/governance/alerts/{alert['id']}/importance").json()
        assert linked["analysed"] and linked["n_features"] == len(FEATURE_NAMES)
        humidity = next(f for f in linked["features"] if f["name"] == "humidity")
        assert isinstance(humidity["importance_rank"], int)
        row = {name: 0.0 for name in FEATURE_NAMES} | {"humidity": 0.95, "pressure_mb": 1000.0}
        url = f"/api/governance/models/{WEATHER}/versions/2/explain"
        explained = http.post(url, json={"features": row})
        assert explained.status_code == 200, explained.text
        body = explained.json()
        assert 0.0 <= body["probability"] <= 1.0
        assert {c["feature"] for c in body["contributions"]} == set(FEATURE_NAMES)
        missing = http.post(url, json={"features": {"humidity": 0.9}})
        assert missing.status_code == 422 and "missing feature" in missing.text
        index = http.get("/dashboard/").text
        assert 'href="#/governance"' in index and 'href="#/labelling"' in index


def _frames(count_per_class: int) -> list[tuple[str, bytes]]:
    """Camera-like frames: sample photos mirrored and re-encoded (new bytes, same content)."""
    frames = []
    for label in ("cat", "dog"):
        for path in sorted((pets_sample() / label).glob("*.jpg"))[4 : 4 + count_per_class]:
            image = cv2.imread(str(path))
            if image is None:
                continue
            ok, data = cv2.imencode(".jpg", cv2.flip(image, 1), [cv2.IMWRITE_JPEG_QUALITY, 85])
            assert ok
            frames.append((label, data.tobytes()))
    return frames


def test_labelling_queue_end_to_end_into_a_training_run(world: World) -> None:
    frames = _frames(3)
    ids: dict[int, str] = {}
    with world.http as http:
        for i, (truth, data) in enumerate(frames):
            reason = "low_confidence" if i % 2 == 0 else "drift"
            form = {"device_id": "cam-00", "model_name": "catdog", "model_version": "1",
                    "label": "cat", "reason": reason}  # fmt: skip
            sent = http.post("/api/samples", data=form, headers=AUTH,
                             files={"file": (f"f{i}.jpg", data, "image/jpeg")})  # fmt: skip
            assert sent.status_code == 201, sent.text
            ids[sent.json()["id"]] = truth
        csv = http.post("/api/samples", data={"device_id": "wx-00"}, headers=AUTH,
                        files={"file": ("r.csv", b"a,b\n1,2\n", "text/csv")})  # fmt: skip
        assert csv.status_code == 201
        queue = http.get("/api/labelling/queue").json()
        listed = [s["id"] for s in queue["samples"]]
        assert sorted(listed) == sorted(ids) and "path" not in queue["samples"][0]
        assert [s["reason"] for s in queue["samples"]][:3] == ["low_confidence"] * 3
        assert queue["counts"]["pending"] == len(ids)
        first = listed[0]
        image = http.get(f"/api/labelling/samples/{first}/image")
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
        assert http.get(f"/api/labelling/samples/{csv.json()['id']}/image").status_code == 415
        url = f"/api/labelling/samples/{first}"
        assert http.post(url, json={"label": "cat"}).status_code == 403  # a viewer's token
        assert http.post(url, json={"label": "horse"}, headers=AUTH).status_code == 422
        assert http.post("/api/labelling/samples/99999", json={"label": "cat"},
                         headers=AUTH).status_code == 404  # fmt: skip
        neither = listed[-1]
        for sample_id, truth in ids.items():
            label = "neither" if sample_id == neither else truth
            done = http.post(f"/api/labelling/samples/{sample_id}", json={"label": label},
                             headers=AUTH)  # fmt: skip
            assert done.status_code == 200 and done.json()["labelled_by"] == "operator"
        again = http.post(f"/api/labelling/samples/{neither}", json={"label": "neither"},
                          headers=AUTH).json()  # fmt: skip
        assert again["previous_label"] == "neither"
        counts = http.get("/api/labelling/queue").json()["counts"]
    assert counts["pending"] == 0 and counts["neither"] == 1
    # "neither" is a frame without a pet: the camera model's no_pet class trains on it.
    assert counts["unused_for_training"] == len(ids)

    (outcome,) = [
        o for o in run_due(world.config, dry_run=False, fleet_store=world.service.store,
                           store=str(world.store_dir)) if o.model == "catdog"
    ]  # fmt: skip
    assert outcome.causes == "labels" and outcome.run_id is not None
    run = MlflowClient().get_run(outcome.run_id)
    assert run.data.tags["trigger.labels_count"] == str(len(ids))
    provenance = artifact_json(outcome.run_id, "governance/labelled_samples.json")
    used = {s["sample_id"]: s for s in provenance["samples"]}
    assert set(used) == set(ids)
    assert used[neither]["label"] == "neither" and used[neither]["file"].startswith("none/")
    assert all(used[i]["label"] == ids[i] for i in used if i != neither)
    assert all(used[i]["labelled_by"] == "operator" for i in used)
    assert provenance["excluded"] == []
    assert provenance["base_files"] == 56  # the sample's cats, dogs and none/ frames
    assert LabelQueue(world.service.store).counts()["unused_for_training"] == 0

    analysis = analyse_version("catdog", outcome.version or 0)
    assert {s.kind for s in analysis.slices.slices} >= {"class", "breed"}
    assert analysis.saliency and all(s.artifact.endswith(".png") for s in analysis.saliency)
    report = write_report("catdog", outcome.version or 0, world.work / "catdog.html", pdf=False)
    text = report.html.read_text()
    assert "Occlusion saliency" in text and "governance/roc.png" in text
