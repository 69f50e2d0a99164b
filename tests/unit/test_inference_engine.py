"""InferenceEngine on real onnxruntime sessions of tiny ONNX models: predictions and load errors."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge_agent.features.image import IMAGE_STAT_NAMES
from edge_agent.features.weather import FEATURE_NAMES
from edge_agent.inference import InferenceEngine, InputError, ModelLoadError, OutputError
from edge_agent.protocol.bundle import SPEC_METADATA_KEY
from edge_agent.sources import CameraSourceConfig, Sample, SourceClosed, open_source
from tests.support.media import pet_frames, write_video
from tests.support.onnx_models import (
    blue_frame,
    image_classifier,
    red_frame,
    weather_classifier,
    write_not_onnx,
    write_without_spec,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def frame_sample(frame: np.ndarray, input_id: str = "frame-000001") -> Sample:
    return Sample(ts=NOW, input_id=input_id, frame=frame)


def tinted(blue_minus_red: float) -> np.ndarray:
    """A grey BGR frame with a slight blue (or red) cast."""
    frame = np.full((40, 40, 3), 128, np.uint8)
    frame[..., 0] = np.uint8(128 + 255 * blue_minus_red / 2)
    frame[..., 2] = np.uint8(128 - 255 * blue_minus_red / 2)
    return frame


@pytest.fixture
def catdog(tmp_path: Path) -> Path:
    path = tmp_path / "catdog.onnx"
    image_classifier(path)
    return path


def test_image_model_predicts_from_frames(catdog: Path) -> None:
    engine = InferenceEngine.load(catdog)
    cat = engine.predict(frame_sample(red_frame()))
    dog = engine.predict(frame_sample(blue_frame()))
    assert (cat.label, dog.label) == ("cat", "dog")
    assert cat.confidence > 0.95 and dog.confidence > 0.95
    assert sum(cat.scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert cat.embedding is not None and cat.embedding.shape == (8,)
    assert dog.embedding is not None
    assert not np.allclose(cat.embedding, dog.embedding)
    assert set(cat.input_stats) == set(IMAGE_STAT_NAMES)
    assert cat.input_stats["red"] > 0.8 and cat.input_stats["blue"] == 0.0
    assert cat.latency_ms > 0
    assert engine.latency.count == 2
    assert engine.sha256 == hashlib.sha256(catdog.read_bytes()).hexdigest()
    assert engine.spec.name == "catdog" and engine.path == catdog


def test_threads_setting_reaches_the_session(catdog: Path) -> None:
    engine = InferenceEngine.load(catdog, threads=2)
    options = engine.session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.inter_op_num_threads == 1
    assert engine.session.get_providers() == ["CPUExecutionProvider"]


def test_decision_threshold_on_the_positive_label(tmp_path: Path) -> None:
    plain, strict = tmp_path / "plain.onnx", tmp_path / "strict.onnx"
    image_classifier(plain)
    image_classifier(strict, positive_label="dog", threshold=0.8)
    frame = frame_sample(tinted(0.1))  # P(dog) a little above one half
    loose = InferenceEngine.load(plain).predict(frame)
    assert loose.label == "dog" and 0.5 < loose.scores["dog"] < 0.8
    decided = InferenceEngine.load(strict).predict(frame)
    assert decided.scores == pytest.approx(loose.scores)
    assert decided.label == "cat"
    assert decided.confidence == pytest.approx(decided.scores["cat"])


def test_weather_model_predicts_from_feature_row(tmp_path: Path) -> None:
    path = tmp_path / "rain.onnx"
    weather_classifier(path)
    engine = InferenceEngine.load(path)
    row = dict.fromkeys(FEATURE_NAMES, 0.0)
    dry = engine.predict(Sample(ts=NOW, input_id="2026-11-28T12:00Z", features=row))
    wet = engine.predict(
        Sample(ts=NOW, input_id="h", features={**row, "humidity": 0.98, "cond_rain": 1.0})
    )
    assert (dry.label, wet.label) == ("no_rain", "rain")
    assert dry.input_stats == row
    assert dry.embedding is None


def test_normalisation_outside_the_graph(tmp_path: Path) -> None:
    inside, outside = tmp_path / "in.onnx", tmp_path / "out.onnx"
    weather_classifier(inside)
    weather_classifier(outside, normalised_in_graph=False)
    row = {name: 0.1 * i for i, name in enumerate(FEATURE_NAMES)}
    sample = Sample(ts=NOW, input_id="h", features=row)
    a = InferenceEngine.load(inside).predict(sample)
    b = InferenceEngine.load(outside).predict(sample)
    assert a.scores == pytest.approx(b.scores)


def test_bad_inputs_are_refused_by_name(tmp_path: Path, catdog: Path) -> None:
    image = InferenceEngine.load(catdog)
    with pytest.raises(InputError, match="no frame"):
        image.predict(Sample(ts=NOW, input_id="x", features={"a": 1.0}))
    with pytest.raises(InputError, match="HxWx3 uint8"):
        image.predict(frame_sample(np.zeros((10, 10), np.uint8)))
    path = tmp_path / "rain.onnx"
    weather_classifier(path)
    tabular = InferenceEngine.load(path)
    row = dict.fromkeys(FEATURE_NAMES, 0.0)
    del row["pressure_mb"]
    with pytest.raises(InputError, match=r"lacks feature.*pressure_mb"):
        tabular.predict(Sample(ts=NOW, input_id="h", features=row))
    with pytest.raises(InputError, match=r"non-finite.*humidity"):
        tabular.predict(
            Sample(
                ts=NOW,
                input_id="h",
                features={**dict.fromkeys(FEATURE_NAMES, 0.0), "humidity": float("nan")},
            )
        )


def test_nan_output_is_an_error_not_a_prediction(tmp_path: Path) -> None:
    path = tmp_path / "nan.onnx"
    image_classifier(path, nan_output=True)
    engine = InferenceEngine.load(path)
    with pytest.raises(OutputError, match="not finite"):
        engine.predict(frame_sample(red_frame()))


def test_run_raw_returns_every_output(catdog: Path) -> None:
    engine = InferenceEngine.load(catdog)
    out = engine.run_raw(engine.example_feeds())
    assert set(out) == {"probs", "embedding"}
    assert out["probs"].shape == (1, 2) and out["embedding"].shape == (1, 8)
    assert engine.warm_up() > 0


def _with_metadata(src: Path, dst: Path, value: str) -> None:
    model = onnx.load(str(src))
    for prop in model.metadata_props:
        if prop.key == SPEC_METADATA_KEY:
            prop.value = value
    onnx.save(model, str(dst))


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("missing", "model file not found"),
        ("empty", "model file is empty"),
        ("not_onnx", "not a loadable ONNX model"),
        ("no_spec", "no 'edge_mlops.spec' metadata"),
        ("bad_json", "model spec is not valid JSON"),
        ("bad_spec", "invalid model spec"),
        ("wrong_input", "input image axis 1 is 16 in the graph, 32 in the spec"),
        ("renamed_output", "output probs is not in the graph"),
    ],
)
def test_load_errors_name_file_and_problem(
    tmp_path: Path, catdog: Path, case: str, problem: str
) -> None:
    path = tmp_path / f"{case}.onnx"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "not_onnx":
        write_not_onnx(path)
    elif case == "no_spec":
        write_without_spec(path)
    elif case == "bad_json":
        _with_metadata(catdog, path, "{not json")
    elif case == "bad_spec":
        _with_metadata(catdog, path, '{"name": "catdog"}')
    elif case == "wrong_input":
        image_classifier(path, graph_size=16)
    elif case == "renamed_output":
        model = onnx.load(str(catdog))
        model.graph.output[0].name = "scores"
        model.graph.node[-1].output[0] = "scores"
        onnx.save(model, str(path))
    with pytest.raises(ModelLoadError) as info:
        InferenceEngine.load(path)
    assert str(path) in str(info.value)
    assert problem in str(info.value)


def test_statistics_can_be_skipped_per_call(catdog: Path) -> None:
    engine = InferenceEngine.load(catdog)
    full = engine.predict(frame_sample(red_frame()))
    lean = engine.predict(frame_sample(red_frame()), with_stats=False)
    assert lean.input_stats == {} and set(full.input_stats) == set(IMAGE_STAT_NAMES)
    assert lean.scores == pytest.approx(full.scores)


def test_pet_video_through_camera_source_and_engine(
    tmp_path: Path, catdog: Path, shared_data: Path
) -> None:
    video = write_video(tmp_path / "pets.avi", pet_frames(shared_data, 12, (320, 240)), fps=5)
    source = open_source(
        CameraSourceConfig(type="camera", uri=str(video), fps=5, pace="fast", on_end="close")
    )
    engine = InferenceEngine.load(catdog)
    predictions = []
    for _ in range(100):
        try:
            sample = source.read(1.0)
        except SourceClosed:
            break
        if sample is not None:
            predictions.append(engine.predict(sample))
    assert len(predictions) == 12
    assert {p.label for p in predictions} <= {"cat", "dog"}
    assert all(0.5 <= p.confidence <= 1.0 for p in predictions)
    brightness = [p.input_stats["brightness"] for p in predictions]
    assert len(set(brightness)) > 6  # real, different photos
