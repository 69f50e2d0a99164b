"""Low-confidence capture with the shipped camera model: the default level is the one the
training pipeline measured and stored in the model's spec, so real pet photos are captured
(the old fixed 0.6 caught next to none); a random share is kept as well; an explicit config
level wins; a hot swap brings the new model's level; a random capture reaches the fleet."""

from __future__ import annotations

import json
import math
import random
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from cloud_trainer.catdog.ingest import read_image, scan_folder
from cloud_trainer.catdog.model_spec import CAPTURE_QUANTILE
from cloud_trainer.catdog.pipeline import PipelineSettings, run_pipeline
from cloud_trainer.catdog.split import split_records
from cloud_trainer.catdog.train import TrainSettings
from cloud_trainer.export.quantize import write_metadata
from cloud_trainer.fleet.service import FleetService
from cloud_trainer.fleet.settings import FleetSettings, parse_tokens
from cloud_trainer.fleet.store import sqlite_url
from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.config.device import DeviceConfig
from edge_agent.drift.capture import CaptureStore
from edge_agent.drift.config import FALLBACK_LOW_CONFIDENCE, CaptureConfig, DriftConfig
from edge_agent.drift.monitor import DriftMonitor
from edge_agent.drift.service import DriftService
from edge_agent.drift.upload import SampleUploader
from edge_agent.inference import InferenceEngine
from edge_agent.inference.engine import Prediction
from edge_agent.sources.sample import Sample
from tests.integration.agent_fixtures import build_agent, camera_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = datetime(2024, 6, 1, tzinfo=UTC)
TOKEN = "operator-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Frames = list[tuple[Sample, Prediction]]


@pytest.fixture(scope="module")
def shipped(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped int8 camera model, built as `cloud-trainer catdog train` builds it (default
    settings, the real pet photos), without registering it anywhere."""
    root = tmp_path_factory.mktemp("catdog-shipped")
    settings = PipelineSettings(
        data=shared_data / "pets",
        work_dir=root / "work",
        train=TrainSettings(cache_dir=root / "cache"),
        register_model=False,
    )
    report = run_pipeline(settings)
    return Path(report.int8.path)


@pytest.fixture(scope="module")
def held_out(shipped: Path, shared_data: Path) -> Frames:
    """The pipeline's test split (photos it never trained on) as camera frames, with the
    shipped model's real onnxruntime predictions."""
    records, _ = scan_folder(shared_data / "pets")
    engine = InferenceEngine.load(shipped)
    frames = []
    for k, record in enumerate(split_records(records).test):
        sample = Sample(T0 + timedelta(seconds=k), record.path.name, frame=read_image(record.path))
        frames.append((sample, engine.predict(sample)))
    return frames


def _below(frames: Frames, level: float) -> int:
    return sum(p.confidence < level for _, p in frames)


def _monitor(
    model: Path, capture: CaptureConfig, folder: Path
) -> tuple[DriftMonitor, CaptureStore]:
    store = CaptureStore(capture, folder)
    spec = InferenceEngine.load(model).spec
    return DriftMonitor.from_spec(spec, DriftConfig(capture=capture), capture=store), store


def test_default_level_is_the_models_and_captures_real_frames(
    shipped: Path, held_out: Frames, tmp_path: Path
) -> None:
    spec = InferenceEngine.load(shipped).spec
    assert spec.capture_below is not None and spec.capture_quantile == CAPTURE_QUANTILE
    # The measured level sits far above the old fixed 0.6: the model is rarely that unsure.
    assert FALLBACK_LOW_CONFIDENCE < spec.capture_below <= 1

    default = CaptureConfig(enabled=True)
    assert default.low_confidence_below is None
    monitor, store = _monitor(shipped, default, tmp_path / "default")
    assert monitor.capture_below == spec.capture_below
    for sample, prediction in held_out:
        monitor.observe(sample, prediction)
    captured = store.counters["low_confidence"]
    assert captured == _below(held_out, spec.capture_below)
    # Held-out photos include breeds never trained on: more than the quantile's share is
    # less sure than validation, and some frames are always caught.
    assert captured / len(held_out) >= CAPTURE_QUANTILE / 2
    metas = [json.loads(item.meta_path.read_text()) for item in store.pending()]
    low = [m for m in metas if m["reason"] == "low_confidence"]
    assert len(low) == captured
    assert all(m["confidence"] < spec.capture_below for m in low)
    assert all(m["model_name"] == spec.name for m in low)
    assert all(item.data_path is not None and item.data_path.exists() for item in store.pending())

    # The old fixed default on the same frames: next to nothing for the labelling queue.
    old, old_store = _monitor(
        shipped, CaptureConfig(enabled=True, low_confidence_below=0.6), tmp_path / "old"
    )
    for sample, prediction in held_out:
        old.observe(sample, prediction)
    assert old_store.counters["low_confidence"] == _below(held_out, 0.6)
    assert old_store.counters["low_confidence"] / len(held_out) < CAPTURE_QUANTILE / 2


def test_explicit_config_level_wins_over_the_spec(
    shipped: Path, held_out: Frames, tmp_path: Path
) -> None:
    spec = InferenceEngine.load(shipped).spec
    assert spec.capture_below is not None
    config = CaptureConfig(enabled=True, low_confidence_below=0.95, random_sample_rate=0)
    monitor, store = _monitor(shipped, config, tmp_path / "cap")
    for sample, prediction in held_out:
        monitor.observe(sample, prediction)
    assert store.counters["low_confidence"] == _below(held_out, 0.95)
    assert _below(held_out, 0.95) < _below(held_out, spec.capture_below)


def test_random_sample_is_kept_at_its_rate_within_the_budget(
    held_out: Frames, tmp_path: Path
) -> None:
    rate = CaptureConfig().random_sample_rate
    assert rate == 0.01
    config = CaptureConfig(
        enabled=True, low_confidence=False, drift_windows=False, max_files=25, max_bytes=10**9
    )
    store = CaptureStore(config, tmp_path / "random", rng=random.Random(7))
    rounds = 20
    for _ in range(rounds):
        for sample, prediction in held_out:
            store.consider(sample, prediction, [], "catdog-int8", 1)
    n = rounds * len(held_out)
    kept = store.counters["random"]
    spread = 4 * math.sqrt(n * rate * (1 - rate))
    assert n * rate - spread <= kept <= n * rate + spread
    # Random captures obey the file budget like any other: the oldest are evicted.
    assert store.files == min(kept, 25) and store.counters["evicted"] == max(kept - 25, 0)
    reasons = {json.loads(item.meta_path.read_text())["reason"] for item in store.pending()}
    assert reasons == {"random"}

    off = CaptureStore(config.model_copy(update={"random_sample_rate": 0.0}), tmp_path / "off")
    for sample, prediction in held_out:
        off.consider(sample, prediction, [], "catdog-int8", 1)
    assert off.files == 0

    # With low-confidence capture on, a frame kept for low confidence keeps that reason and
    # the random draw tops up the rest.
    both = CaptureStore(
        config.model_copy(update={"low_confidence": True, "max_files": 500}),
        tmp_path / "both",
        rng=random.Random(7),
    )
    for sample, prediction in held_out:
        both.consider(sample, prediction, [], "catdog-int8", 1, capture_below=0.999)
    assert both.counters["low_confidence"] == _below(held_out, 0.999)
    assert both.files == both.counters["low_confidence"] + both.counters["random"]


def _level(service: DriftService) -> float | None:
    """The low-confidence level of the monitor serving now (built per serving model)."""
    assert service.monitor is not None
    return service.monitor.capture_below


def test_hot_swap_brings_the_new_models_level(
    shipped: Path, held_out: Frames, tmp_path: Path
) -> None:
    spec = InferenceEngine.load(shipped).spec
    assert spec.capture_below is not None
    # The same model re-labelled as an older build whose spec has no capture level.
    older = tmp_path / "older.onnx"
    shutil.copyfile(shipped, older)
    write_metadata(
        older,
        spec.model_copy(update={"capture_below": None, "capture_quantile": None}).to_metadata(),
    )
    assert InferenceEngine.load(older).spec.capture_below is None

    shutil.copyfile(shipped, tmp_path / "catdog.onnx")
    base = camera_config(tmp_path, 1)
    config = DeviceConfig.model_validate(
        {
            **base.model_dump(mode="json", exclude_none=True),
            "drift": {"detectors": [], "capture": {"enabled": True, "random_sample_rate": 0}},
        }
    )
    assert config.drift is not None
    agent = build_agent(config, with_source=False)
    try:
        service = DriftService(agent, config.drift, tmp_path).attach()
        assert service.capture is not None
        for sample, _ in held_out:
            prediction, engine = agent.slot.predict(sample)
            service.observe(sample, prediction, engine)
        assert _level(service) == spec.capture_below
        first = service.capture.counters["low_confidence"]
        assert first == _below(held_out, spec.capture_below) > 0

        agent.slot.swap(InferenceEngine.load(older))
        for sample, _ in held_out:
            prediction, engine = agent.slot.predict(sample)
            service.observe(sample, prediction, engine)
        assert _level(service) is None
        # The older model has no level of its own: the fallback applies, not the last one.
        second = service.capture.counters["low_confidence"] - first
        assert second == _below(held_out, FALLBACK_LOW_CONFIDENCE) < first
    finally:
        agent.store.close()


@pytest.fixture
def fleet(mosquitto: MosquittoBroker, tmp_path: Path) -> Iterator[FleetService]:
    settings = FleetSettings(
        database_url=sqlite_url(tmp_path / "fleet.db"),
        broker_host=mosquitto.host,
        broker_port=mosquitto.port,
        root=f"cap{uuid.uuid4().hex[:6]}",
        http_port=0,
        api_tokens=parse_tokens(f"operator={TOKEN}"),
        samples_dir=tmp_path / "samples",
    )
    service = FleetService(settings).start()
    yield service
    service.stop()


def test_a_random_capture_reaches_the_fleet_with_its_reason(
    held_out: Frames, fleet: FleetService, tmp_path: Path
) -> None:
    config = CaptureConfig(
        enabled=True,
        low_confidence=False,
        random_sample_rate=1.0,
        upload_url=f"{fleet.base_url}/api/samples",
        token_env=None,
    )
    store = CaptureStore(config, tmp_path / "cap")
    sample, prediction = held_out[0]
    kept = store.consider(sample, prediction, [], "catdog-int8", 2)
    assert kept is not None and kept.stem.endswith("-random")
    assert SampleUploader(store, "cam-07", token=TOKEN).upload_pending() == 1
    with httpx.Client(base_url=fleet.base_url, headers=AUTH, timeout=10) as http:
        (row,) = http.get("/api/samples", params={"device": "cam-07"}).json()["samples"]
    assert row["reason"] == "random" and row["model_name"] == "catdog-int8"
    assert row["content_type"] == "image/jpeg"
