"""One registry and promotion gate for every model (MLflow): record, register, gate, resolve.

Public API:

- ``log_run_context(params=, metrics=, data_version=, commit=, tags=)`` inside an active run:
  params, numeric metrics (nested dicts flattened with dots), the data hash and git commit
  (``git_commit()`` finds it) as tags.
- ``log_onnx_model(path, name="model") -> model_uri``: the ONNX file as one file (no external
  data), CPU execution provider.
- ``register_version(model_name, model_uri, run_id, tags=, alias="challenger")
  -> RegisteredVersion``: a new version, aliased ``challenger``.
- ``GateInputs`` → ``decide(inputs) -> GateDecision`` (pure): promote only when parity holds
  and the primary metric strictly beats the baseline and the current champion on the same
  split. ``score_champion(model_name, score)`` scores the champion with the caller's own
  evaluation. ``apply_gate(decision, run_id)`` tags the version (``gate.*``), logs
  ``gate/decision.json`` on the run and moves the ``champion`` alias when due. Stages are
  not used; aliases are.
- ``resolve_model(ref, dst_dir=None) -> ResolvedModel(path, sha256, size, name, version)`` for
  ``models:/name@alias``, ``models:/name/3``, an ``.onnx`` path or a downloaded model folder.
- ``alias_version(model_name, alias)``; errors: ``RegistryError``, ``ModelNotFoundError``.

- ``open_store(location=None) -> MlflowStore`` (activated): a folder or an MLflow URI; by
  default ``$EDGE_MLOPS_MLFLOW``, ``$MLFLOW_TRACKING_URI`` or ``~/.local/share/edge-mlops/mlflow``.
- ``with model_for_command(ref, store, prefix=) as resolved``: what an ``evaluate`` verb
  needs: the store opened for ``models:/`` references, the download removed afterwards.

Everything else uses the active MLflow URIs (``cloud_trainer.stack.mlflow_store.MlflowStore``).
"""

from cloud_trainer.registry.errors import ModelNotFoundError, RegistryError
from cloud_trainer.registry.gate import (
    GATE_ARTIFACT,
    GateDecision,
    GateInputs,
    apply_gate,
    decide,
    score_champion,
)
from cloud_trainer.registry.location import model_for_command, open_store
from cloud_trainer.registry.resolve import ResolvedModel, parse_models_uri, resolve_model
from cloud_trainer.registry.runs import (
    CHALLENGER,
    CHAMPION,
    RegisteredVersion,
    alias_version,
    git_commit,
    log_onnx_model,
    log_run_context,
    register_version,
)

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "GATE_ARTIFACT",
    "GateDecision",
    "GateInputs",
    "ModelNotFoundError",
    "RegisteredVersion",
    "RegistryError",
    "ResolvedModel",
    "alias_version",
    "apply_gate",
    "decide",
    "git_commit",
    "log_onnx_model",
    "log_run_context",
    "model_for_command",
    "open_store",
    "parse_models_uri",
    "register_version",
    "resolve_model",
    "score_champion",
]
