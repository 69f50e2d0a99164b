"""Turning a model reference (registry URI or path) into one local ONNX file with its digest."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from cloud_trainer.registry.errors import ModelNotFoundError, RegistryError

_MODELS_URI = re.compile(
    r"^models:/(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,127})"
    r"(?:/(?P<version>[0-9]+)|@(?P<alias>[A-Za-z0-9_-]{1,64}))$"
)


@dataclass(frozen=True)
class ResolvedModel:
    """A local ONNX file and what it is: the release tooling publishes these fields."""

    path: Path
    sha256: str
    size: int
    name: str | None = None
    version: int | None = None
    source: str = ""


def parse_models_uri(ref: str) -> tuple[str, int | None, str | None]:
    """(name, version, alias) of ``models:/name/3`` or ``models:/name@alias``."""
    match = _MODELS_URI.match(ref)
    if match is None:
        raise ModelNotFoundError(
            f"bad model reference {ref!r}: expected models:/NAME/VERSION, models:/NAME@ALIAS "
            "or a path to an .onnx file"
        )
    version = match["version"]
    return match["name"], int(version) if version else None, match["alias"]


def _onnx_in_folder(folder: Path) -> Path:
    """The ONNX file of a downloaded MLflow model folder (named in its MLmodel file)."""
    mlmodel = folder / "MLmodel"
    if mlmodel.is_file():
        try:
            meta = yaml.safe_load(mlmodel.read_text())
            data = meta["flavors"]["onnx"]["data"]
        except (yaml.YAMLError, KeyError, TypeError) as e:
            raise RegistryError(f"{mlmodel}: not an ONNX model folder ({e})") from e
        candidate = (folder / str(data)).resolve()
        if candidate.is_file() and candidate.is_relative_to(folder.resolve()):
            return candidate
    found = sorted(folder.glob("*.onnx"))
    if len(found) != 1:
        raise ModelNotFoundError(f"{folder}: expected one .onnx file, found {len(found)}")
    return found[0]


def resolve_model(ref: str | Path, dst_dir: Path | None = None) -> ResolvedModel:
    """Local ONNX file, sha256 and size for a path, ``models:/name/N`` or ``models:/name@alias``.

    Registry models are downloaded into ``dst_dir`` (a new temporary folder when omitted,
    left for the caller); the active MLflow tracking/registry URI is used.
    """
    from cloud_trainer.export.keras_onnx import file_digest

    text = str(ref)
    if not text.startswith("models:/"):
        path = Path(text)
        if path.is_dir():
            path = _onnx_in_folder(path)
        if not path.is_file():
            raise ModelNotFoundError(f"model file not found: {path}")
        sha256, size = file_digest(path)
        return ResolvedModel(path=path, sha256=sha256, size=size, source=text)

    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    name, version, alias = parse_models_uri(text)
    client = MlflowClient()
    try:
        if alias is not None:
            version = int(client.get_model_version_by_alias(name, alias).version)
        else:
            client.get_model_version(name, str(version))
    except MlflowException as e:
        raise ModelNotFoundError(f"{text}: not in the registry ({e.message})") from e
    target = dst_dir or Path(tempfile.mkdtemp(prefix="model-"))
    target.mkdir(parents=True, exist_ok=True)
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}", dst_path=str(target)
        )
    except (MlflowException, OSError) as e:
        raise RegistryError(f"{text}: download failed: {e}") from e
    local_path = Path(local)
    onnx_path = _onnx_in_folder(local_path) if local_path.is_dir() else local_path
    sha256, size = file_digest(onnx_path)
    return ResolvedModel(
        path=onnx_path, sha256=sha256, size=size, name=name, version=version, source=text
    )
