"""Recording a training run in MLflow and registering its ONNX model as a new version."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud_trainer.registry.errors import RegistryError

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"
MODEL_ARTIFACT = "model"
TAG_DATA_VERSION = "data_version"
TAG_GIT_COMMIT = "git_commit"


@dataclass(frozen=True)
class RegisteredVersion:
    """A model version created from a run: where it came from and how to load it."""

    name: str
    version: int
    run_id: str
    model_uri: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def git_commit(repo: Path | None = None) -> str | None:
    """The commit the code was trained from (with ``-dirty`` if uncommitted), or None."""
    cwd = str(repo) if repo else None
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=cwd
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            cwd=cwd,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}-dirty" if dirty else head


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def log_run_context(
    *,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    data_version: str,
    commit: str | None,
    tags: Mapping[str, str] | None = None,
) -> None:
    """Params, numeric metrics (nested dicts flattened with dots), data hash and commit.

    Called inside an active run; non-numeric metric values are skipped rather than failing
    a long training job at its very end.
    """
    import mlflow

    flat_params: dict[str, Any] = {}
    _flatten("", dict(params), flat_params)
    mlflow.log_params({k: str(v)[:6000] for k, v in flat_params.items()})
    flat_metrics: dict[str, Any] = {}
    _flatten("", dict(metrics), flat_metrics)
    numeric = {
        k: float(v)
        for k, v in flat_metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    mlflow.log_metrics(numeric)
    all_tags = {TAG_DATA_VERSION: data_version, **(tags or {})}
    if commit:
        all_tags[TAG_GIT_COMMIT] = commit
    mlflow.set_tags(all_tags)


def log_onnx_model(onnx_path: Path, name: str = MODEL_ARTIFACT) -> str:
    """Log the ONNX file as the run's model, as one file (no external data); its model URI."""
    import mlflow
    import mlflow.onnx
    import onnx

    try:
        proto = onnx.load_model(str(onnx_path))
    except (OSError, onnx.onnx_cpp2py_export.checker.ValidationError) as e:
        raise RegistryError(f"{onnx_path}: cannot load ONNX model: {e}") from e
    info = mlflow.onnx.log_model(
        proto,
        name=name,
        save_as_external_data=False,
        onnx_execution_providers=["CPUExecutionProvider"],
    )
    return str(info.model_uri)


def register_version(
    model_name: str,
    model_uri: str,
    run_id: str,
    *,
    tags: Mapping[str, str] | None = None,
    alias: str | None = CHALLENGER,
) -> RegisteredVersion:
    """A new registered version of ``model_name``; it becomes the ``challenger`` by default."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(model_name)
    mv = client.create_model_version(model_name, model_uri, run_id=run_id, tags=dict(tags or {}))
    version = int(mv.version)
    if alias:
        client.set_registered_model_alias(model_name, alias, str(version))
    log.info("registered %s version %s (%s)", model_name, version, alias or "no alias")
    return RegisteredVersion(model_name, version, run_id, model_uri)


def alias_version(model_name: str, alias: str) -> int | None:
    """Version currently holding ``alias``, or None when no version does."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return int(MlflowClient().get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None
