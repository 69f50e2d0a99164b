"""The weather CLI end to end: quick train on the shipped sample, evaluate a defective CSV."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.cli import main
from cloud_trainer.export import read_spec
from cloud_trainer.registry import CHAMPION, alias_version
from cloud_trainer.stack.mlflow_store import MlflowStore
from cloud_trainer.weather.settings import MODEL_NAME, sample_path
from edge_agent.features.weather import FEATURE_NAMES, FEATURE_SET
from tests.support.weather_csv import HEADER, write_csv

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVALUATE_KEYS = {
    "accuracy",
    "macro_f1",
    "roc_auc",
    "persistence_accuracy",
    "persistence_macro_f1",
    "n_rows",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MlflowStore]:
    """One quick training run on the sample, registered in its own MLflow store."""
    root = tmp_path_factory.mktemp("weather-train")
    store = MlflowStore.local(root / "mlflow")
    argv = ["weather", "train", "--quick", "--data", str(sample_path())]
    argv += ["--store", str(root / "mlflow"), "--work-dir", str(root / "work")]
    assert main(argv) == 0
    return root / "work", store


def sample_rows() -> list[dict[str, str]]:
    with gzip.open(sample_path(), "rt", newline="") as f:
        return list(csv.DictReader(f))


def test_sample_ships_with_its_licence() -> None:
    assert (sample_path().parent / "LICENSE.EngineeringMLOps").is_file()
    rows = sample_rows()
    assert list(rows[0]) == HEADER and 2000 < len(rows) < 10000


def test_quick_train_registers_exports_and_gates(trained: tuple[Path, MlflowStore]) -> None:
    import mlflow
    from mlflow import MlflowClient

    work, store = trained
    store.activate()
    onnx_path = work / f"{MODEL_NAME}.onnx"
    spec = read_spec(onnx_path)
    assert spec.preprocessing.kind == "tabular"
    assert spec.preprocessing.feature_set == FEATURE_SET
    assert spec.preprocessing.features == list(FEATURE_NAMES)
    assert spec.labels == ["no_rain", "rain"] and spec.positive_label == "rain"
    assert spec.horizon_s == 4 * 3600 and spec.data_version
    assert {f.name for f in spec.drift.features} == set(FEATURE_NAMES)
    assert set(spec.drift.class_ratio) == {"no_rain", "rain"}
    export = json.loads((work / "export.json").read_text())
    assert export["max_abs_diff"] <= 1e-4
    report = json.loads((work / "data_report.json").read_text())
    assert report["implausible_values"]["pressure_mb"] > 0  # the sample's sensor faults
    for name in ("confusion_matrix.png", "roc.png", "reliability.png"):
        assert (work / "plots" / name).read_bytes()[:4] == b"\x89PNG"

    client = MlflowClient()
    version = client.get_model_version(MODEL_NAME, "1")
    assert version.tags["gate.primary_metric"] == "macro_f1"
    assert version.run_id is not None
    run = client.get_run(version.run_id)
    assert run.data.tags["data_version"] == spec.data_version
    assert spec.git_commit and run.data.tags["git_commit"] == spec.git_commit
    assert 0.0 < run.data.metrics["test.macro_f1"] <= 1.0
    assert "baseline.persistence.macro_f1" in run.data.metrics
    artefacts = {a.path for a in mlflow.artifacts.list_artifacts(run_id=run.info.run_id)}
    assert {"plots", "reports", "gate"} <= artefacts
    promoted = version.tags["gate.promote"] == "true"
    assert (alias_version(MODEL_NAME, CHAMPION) == 1) == promoted


def defective_copy(path: Path) -> Path:
    """The sample with every known defect added: shuffled, duplicated, faulty, untidy."""
    rows = sample_rows()[:1500]
    rng = np.random.default_rng(5)
    for i in rng.choice(len(rows), 40, replace=False):
        rows[i]["Pressure_millibars"] = "0"
    for i in rng.choice(len(rows), 10, replace=False):
        rows[i]["Weather_conditions"] = ""
    rows[3]["Timestamp"] = "not a time"
    rows[4]["Humidity"] = "n/a"
    rows[5]["Weather_conditions"] = "Drizzle"
    del rows[100:104]  # lost hours
    rows += rows[200:210]  # duplicates
    order = rng.permutation(len(rows))
    return write_csv(path, [rows[i] for i in order])


def run_evaluate(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["weather", "evaluate", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_evaluate_defective_csv_by_path_and_alias(
    trained: tuple[Path, MlflowStore], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work, store = trained
    data = defective_copy(tmp_path / "defective.csv.gz")
    code, out, _ = run_evaluate(
        capsys, "--data", str(data), "--model", str(work / f"{MODEL_NAME}.onnx"), "--json"
    )
    assert code == 0
    result = json.loads(out)
    assert set(result) >= EVALUATE_KEYS
    assert 1300 < result["n_rows"] < 1500
    assert 0.5 < result["accuracy"] <= 1.0 and 0.0 < result["persistence_accuracy"] <= 1.0
    assert result["data_report"]["duplicate_hours_identical"] == 10
    assert result["data_report"]["implausible_values"]["pressure_mb"] >= 40
    assert result["data_report"]["unknown_conditions"] == {"drizzle": 1}

    alias = f"models:/{MODEL_NAME}/1"
    code, out, _ = run_evaluate(
        capsys, "--data", str(data), "--model", alias, "--store", store.tracking_uri, "--json"
    )
    assert code == 0
    by_alias = json.loads(out)
    assert by_alias["model_version"] == 1
    assert by_alias["macro_f1"] == pytest.approx(result["macro_f1"])


def test_evaluate_refuses_bad_input_with_one_line(
    trained: tuple[Path, MlflowStore], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work, _ = trained
    model = str(work / f"{MODEL_NAME}.onnx")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("when,temp\n2015-01-01,3\n")
    code, out, err = run_evaluate(capsys, "--data", str(wrong), "--model", model, "--json")
    assert code == 2 and out == ""
    assert "missing column(s) Timestamp" in err
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x01garbage")
    data = write_csv(tmp_path / "ok.csv", [])
    code, _, err = run_evaluate(capsys, "--data", str(data), "--model", str(corrupt))
    assert code == 1 and "not a loadable ONNX model" in err
    code, _, err = run_evaluate(capsys, "--data", str(data), "--model", "models:/bad ref")
    assert code == 1 and "bad model reference" in err


def test_evaluate_text_output(
    trained: tuple[Path, MlflowStore], capsys: pytest.CaptureFixture[str]
) -> None:
    work, _ = trained
    code, out, _ = run_evaluate(
        capsys, "--data", str(sample_path()), "--model", str(work / f"{MODEL_NAME}.onnx")
    )
    assert code == 0 and "persistence accuracy" in out
    assert io.StringIO(out).readline().strip().endswith("+00:00")
