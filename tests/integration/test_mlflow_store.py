"""The throwaway MLflow store fixture is a real store: runs, artefacts, registry and aliases."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_trainer.stack.mlflow_store import MlflowStore

pytestmark = pytest.mark.integration


def test_run_artifact_registry_alias(mlflow_store: MlflowStore, tmp_path: Path) -> None:
    import mlflow
    from mlflow import MlflowClient

    experiment_id = mlflow_store.experiment("fixture-check")
    note = tmp_path / "note.txt"
    note.write_text("hello")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_param("alpha", 0.5)
        mlflow.log_metric("f1", 0.81)
        mlflow.log_artifact(str(note))
    client = MlflowClient()
    client.create_registered_model("fixture-model")
    version = client.create_model_version(
        "fixture-model", f"runs:/{run.info.run_id}/note.txt", run_id=run.info.run_id
    )
    client.set_registered_model_alias("fixture-model", "champion", version.version)
    got = client.get_model_version_by_alias("fixture-model", "champion")
    assert got.version == version.version
    fetched = client.get_run(run.info.run_id)
    assert fetched.data.params["alpha"] == "0.5"
    assert fetched.data.metrics["f1"] == pytest.approx(0.81)
    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="note.txt", dst_path=str(tmp_path / "dl")
    )
    assert Path(local).read_text() == "hello"
    assert mlflow_store.tracking_uri.startswith("sqlite:///")
