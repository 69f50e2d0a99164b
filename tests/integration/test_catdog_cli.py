"""The cat/dog CLI end to end on the shipped sample: train, export, quantise, register, evaluate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloud_trainer.catdog.cli import sample_path
from cloud_trainer.cli import main
from cloud_trainer.export import read_spec
from cloud_trainer.registry import CHAMPION, alias_version
from cloud_trainer.stack.mlflow_store import MlflowStore
from edge_agent.features.image import IMAGE_STAT_NAMES

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVALUATE_KEYS = {
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "n_images",
    "ms_per_image",
    "pet_recall",
    "no_pet_recall",
    "confusion",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One quick run on the sample photos, registered in its own MLflow store."""
    root = tmp_path_factory.mktemp("catdog-train")
    argv = ["catdog", "train", "--quick", "--data", str(sample_path())]
    argv += ["--store", str(root / "mlflow"), "--work-dir", str(root / "work")]
    argv += ["--cache-dir", str(root / "cache")]
    assert main(argv) == 0
    return root / "work", root / "mlflow"


def _evaluate(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    capsys.readouterr()
    assert main(["catdog", "evaluate", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_sample_ships_with_attribution_and_odd_files() -> None:
    text = (sample_path() / "ATTRIBUTION.md").read_text()
    assert "CC BY-SA 4.0" in text and "Oxford-IIIT Pet" in text
    assert len(list((sample_path() / "cat").iterdir())) == 20
    assert (sample_path() / "cat" / "Abyssinian_34.jpg").read_bytes()[:6] == b"GIF89a"


def test_train_writes_both_variants_and_reports(trained: tuple[Path, Path]) -> None:
    work, _ = trained
    report = json.loads((work / "report.json").read_text())
    fp32, int8 = Path(report["fp32"]["path"]), Path(report["int8"]["path"])
    assert fp32.stat().st_size <= 20e6 and int8.stat().st_size <= 6e6
    assert int8.stat().st_size < fp32.stat().st_size / 3
    assert report["parity_max_abs_diff"] <= 1e-3
    # int8 is checked answer by answer against fp32 on every photo, colour and grayscale,
    # with a confidence bound (a balanced-accuracy drop on 11 test photos moves in 1/8 steps).
    check = report["int8_check"]
    assert check["metric"] == "flip_rate" and check["n"] == 2 * report["data"]["n_images"]
    assert 0 <= check["flips"] <= check["n"] and check["upper_bound"] > check["rate"]
    assert check["balanced_accuracy_drop"]["drop"] == pytest.approx(
        report["fp32"]["test"]["balanced_accuracy"] - report["int8"]["test"]["balanced_accuracy"]
    )
    # The sample's none/ photos give the model its no_pet outcome, scored beside the
    # untrained "ImageNet pet mass" rule on the same test frames.
    presence = report["presence"]
    assert presence["n_test_no_pet"] >= 3 and presence["n_test_pets"] >= 8
    assert 0.1 <= presence["threshold"] <= 0.9
    assert presence["absent_at"] == pytest.approx(1 - presence["threshold"], abs=1e-6)
    assert presence["fp32"]["pet_recall"] >= 0.75 and presence["fp32"]["no_pet_recall"] >= 0.66
    assert presence["baseline_pet_mass"]["threshold"] == 0.2
    assert presence["fp32"]["grayscale_pet_recall"] is not None
    assert report["data"]["converted"]["gif-named-jpeg"] == 1
    assert report["data"]["converted"]["alpha"] == 1
    assert report["unseen_groups"] and report["fp32"]["unseen_groups"]["n_images"] > 0
    # Transfer learning gets even the 26 training photos of the sample mostly right.
    assert report["fp32"]["test"]["balanced_accuracy"] >= 0.75
    for name in ("confusion_fp32", "confusion_int8", "worst_errors"):
        image = cv2.imread(report["artefacts"][name])
        assert image is not None and image.shape[0] > 50 and image.shape[1] > 50
    split = json.loads((work / "split.json").read_text())
    assert {row["split"] for row in split["files"]} == {"train", "val", "test"}


def test_specs_carry_contract_and_drift_baselines(trained: tuple[Path, Path]) -> None:
    work, _ = trained
    fp32 = read_spec(work / "catdog-fp32.onnx")
    int8 = read_spec(work / "catdog-int8.onnx")
    assert fp32.name == "catdog" and int8.name == "catdog-int8"
    for spec in (fp32, int8):
        assert spec.labels == ["cat", "dog", "no_pet"]
        assert spec.presence is not None and spec.presence.absent_label == "no_pet"
        assert 0.1 <= spec.presence.absent_at <= 0.9
        pre = spec.preprocessing
        assert pre.kind == "image" and pre.height == pre.width == 160
        assert pre.channel_order == "RGB" and pre.normalised_in_graph
        assert [o.name for o in spec.outputs] == ["probabilities", "embedding"]
        assert spec.embedding_output == "embedding"
        drift = spec.drift
        assert [f.name for f in drift.features] == list(IMAGE_STAT_NAMES)
        assert sum(drift.class_ratio.values()) == pytest.approx(1.0)
        assert set(drift.class_ratio) == {"cat", "dog"}  # pet frames are what drift watches
        assert drift.confidence is not None and drift.confidence.edges[0] >= 0.5
        assert drift.embedding is not None and len(drift.embedding.mean) == 1280
        assert drift.embedding.distance is not None
    assert fp32.data_version == int8.data_version and fp32.data_version


def test_both_variants_are_registered_and_gated(trained: tuple[Path, Path]) -> None:
    from mlflow import MlflowClient

    _, store_dir = trained
    MlflowStore.local(store_dir).activate()
    client = MlflowClient()
    for name in ("catdog", "catdog-int8"):
        version = client.get_model_version(name, "1")
        assert version.tags["gate.primary_metric"] == "balanced_accuracy"
        assert version.tags["gate.split"] == "test"
        promoted = version.tags["gate.promote"] == "true"
        assert (alias_version(name, CHAMPION) == 1) == promoted


def test_evaluate_runs_unchanged_on_fp32_int8_and_registry(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    work, store_dir = trained
    sample = str(sample_path())
    results = [
        _evaluate(capsys, "--data", sample, "--model", str(work / "catdog-fp32.onnx")),
        _evaluate(capsys, "--data", sample, "--model", str(work / "catdog-int8.onnx")),
        _evaluate(
            capsys, "--data", sample, "--model", "models:/catdog/1", "--store", str(store_dir)
        ),
    ]
    for result in results:
        assert set(result) >= EVALUATE_KEYS
        assert result["n_images"] == 56 and result["ms_per_image"] > 0
        assert 0.5 <= result["balanced_accuracy"] <= 1.0
        assert result["labels"] == ["cat", "dog", "no_pet"]
        confusion = np.array(result["confusion"])
        assert confusion.shape == (3, 3) and confusion.sum() == 56
        assert confusion[2].sum() == 16  # the none/ photos
        assert result["no_pet_recall"] == pytest.approx(confusion[2, 2] / 16)
        assert result["pet_recall"] == pytest.approx(1 - confusion[:2, 2].sum() / 40)
    assert results[2]["model_version"] == 1
    assert results[2]["model_sha256"] == results[0]["model_sha256"]
    assert results[0]["accuracy"] == results[2]["accuracy"]


def test_evaluate_takes_the_two_folder_form_and_a_none_folder_alone(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work, _ = trained
    model = str(work / "catdog-fp32.onnx")
    pets = tmp_path / "pets"
    for name in ("cat", "dog"):
        shutil.copytree(sample_path() / name, pets / name)
    two = _evaluate(capsys, "--data", str(pets), "--model", model)
    assert two["n_images"] == 40 and two["no_pet_recall"] is None
    assert two["pet_recall"] is not None
    empty = tmp_path / "empty"
    shutil.copytree(sample_path() / "none", empty / "none")
    scenes = _evaluate(capsys, "--data", str(empty), "--model", model)
    assert scenes["n_images"] == 16 and scenes["pet_recall"] is None
    assert scenes["no_pet_recall"] == pytest.approx(np.array(scenes["confusion"])[2, 2] / 16)


def test_evaluate_refuses_a_damaged_model(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work, _ = trained
    data = (work / "catdog-int8.onnx").read_bytes()
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(data[: len(data) // 2])
    code = main(["catdog", "evaluate", "--data", str(sample_path()), "--model", str(broken)])
    assert code == 1
    assert "not a loadable ONNX model" in capsys.readouterr().err


def test_evaluate_names_a_class_the_model_does_not_know(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work, _ = trained
    shutil.copytree(sample_path() / "dog", tmp_path / "horse")
    code = main(
        ["catdog", "evaluate", "--data", str(tmp_path), "--model", str(work / "catdog-fp32.onnx")]
    )
    assert code == 2
    assert "'horse'" in capsys.readouterr().err


def test_evaluate_of_one_class_folder_counts_the_bad_files(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work, _ = trained
    shutil.copytree(sample_path() / "cat", tmp_path / "cat")
    (tmp_path / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut")
    result = _evaluate(capsys, "--data", str(tmp_path), "--model", str(work / "catdog-int8.onnx"))
    assert result["n_images"] == 20
    assert result["data_report"]["skipped"] == {"truncated": 1}
    assert result["roc_auc"] is None  # undefined with one class present
    assert np.isfinite(result["balanced_accuracy"])
