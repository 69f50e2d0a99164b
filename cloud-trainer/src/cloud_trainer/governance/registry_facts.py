"""What the MLflow registry knows about one model version: lineage, gate, release tags, files."""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cloud_trainer.governance.errors import GovernanceError, VersionNotFoundError

log = logging.getLogger(__name__)

GATE_TAG_PREFIX = "gate."
RELEASE_TAG_PREFIX = "release."
TRIGGER_TAG_PREFIX = "trigger."
GOVERNANCE_ARTIFACTS = "governance"


class GateRecord(BaseModel):
    """The promotion gate's decision as recorded on the version (tags) and the run (JSON)."""

    model_config = ConfigDict(extra="forbid")

    promote: bool | None = None
    reasons: list[str] = Field(default_factory=list)
    decided: str | None = None
    primary_metric: str | None = None
    candidate: str | None = None
    baseline: str | None = None
    champion: str | None = None
    split: str | None = None
    decided_by: str | None = Field(
        default=None, description="The identity the training run (and so the gate) ran as."
    )


class VersionRecord(BaseModel):
    """One registered version and its run, exactly as the registry stores them."""

    model_config = ConfigDict(extra="forbid")

    model_name: str
    version: int
    run_id: str
    source: str
    registered_at: str
    aliases: list[str]
    version_tags: dict[str, str]
    experiment: str
    run_user: str | None
    run_status: str
    started_at: str
    ended_at: str | None
    training_seconds: float | None
    params: dict[str, str]
    metrics: dict[str, float]
    run_tags: dict[str, str]
    data_version: str | None
    git_commit: str | None
    onnx_sha256: str | None
    gate: GateRecord
    release_tags: dict[str, str]
    trigger_tags: dict[str, str]
    artifacts: list[str]


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000.0, UTC).isoformat()


def _list_artifacts(client: Any, run_id: str, path: str | None = None) -> list[str]:
    found: list[str] = []
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            found.extend(_list_artifacts(client, run_id, item.path))
        else:
            found.append(str(item.path))
    return found


def artifact_bytes(run_id: str, path: str) -> bytes:
    """One file of a run's artefacts, read into memory (plots, JSON reports)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="gov-artifact-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=path, dst_path=tmp
            )
            return Path(local).read_bytes()
        except (MlflowException, OSError) as e:
            raise GovernanceError(f"run {run_id}: cannot read artefact {path}: {e}") from e


def artifact_json(run_id: str, path: str) -> Any:
    raw = artifact_bytes(run_id, path)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise GovernanceError(f"run {run_id}: artefact {path} is not JSON: {e}") from e


def _gate(
    version_tags: dict[str, str], run_id: str, artifacts: list[str], user: str | None
) -> GateRecord:
    record = GateRecord(
        promote=None
        if "gate.promote" not in version_tags
        else version_tags["gate.promote"] == "true",
        reasons=[r for r in version_tags.get("gate.reasons", "").split("; ") if r],
        decided=version_tags.get("gate.decided"),
        primary_metric=version_tags.get("gate.primary_metric"),
        candidate=version_tags.get("gate.candidate"),
        baseline=version_tags.get("gate.baseline"),
        champion=version_tags.get("gate.champion"),
        split=version_tags.get("gate.split"),
        decided_by=user if "gate.promote" in version_tags else None,
    )
    if "gate/decision.json" in artifacts:
        # The JSON keeps every reason intact; the tag is truncated for MLflow's limits.
        decision = artifact_json(run_id, "gate/decision.json")
        record = record.model_copy(
            update={"reasons": list(decision.get("reasons", record.reasons))}
        )
    return record


def load_version(model_name: str, version: int) -> VersionRecord:
    """Everything the registry holds about ``model_name`` v``version`` (active MLflow URIs)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        mv = client.get_model_version(model_name, str(version))
    except MlflowException as e:
        raise VersionNotFoundError(f"{model_name} v{version} is not in the registry") from e
    if not mv.run_id:
        raise GovernanceError(f"{model_name} v{version} has no training run recorded")
    try:
        run = client.get_run(mv.run_id)
        experiment = client.get_experiment(run.info.experiment_id)
        registered = client.get_registered_model(model_name)
    except MlflowException as e:
        raise GovernanceError(f"{model_name} v{version}: run {mv.run_id} unreadable: {e}") from e
    artifacts = sorted(_list_artifacts(client, mv.run_id))
    aliases = sorted(a for a, v in (registered.aliases or {}).items() if str(v) == str(version))
    version_tags = dict(mv.tags or {})
    run_tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
    start, end = run.info.start_time, run.info.end_time
    user = run.data.tags.get("mlflow.user") or run.info.user_id or None
    return VersionRecord(
        model_name=model_name,
        version=version,
        run_id=mv.run_id,
        source=str(mv.source),
        registered_at=_iso(mv.creation_timestamp) or "",
        aliases=aliases,
        version_tags=version_tags,
        experiment=str(experiment.name),
        run_user=user,
        run_status=str(run.info.status),
        started_at=_iso(start) or "",
        ended_at=_iso(end),
        training_seconds=None if end is None else (end - start) / 1000.0,
        params=dict(run.data.params),
        metrics={k: float(v) for k, v in run.data.metrics.items()},
        run_tags=run_tags,
        data_version=run_tags.get("data_version"),
        git_commit=run_tags.get("git_commit"),
        onnx_sha256=version_tags.get("onnx_sha256") or run_tags.get("onnx_sha256"),
        gate=_gate(version_tags, mv.run_id, artifacts, user),
        release_tags={k: v for k, v in version_tags.items() if k.startswith(RELEASE_TAG_PREFIX)},
        trigger_tags={k: v for k, v in run_tags.items() if k.startswith(TRIGGER_TAG_PREFIX)},
        artifacts=artifacts,
    )


def model_versions(model_name: str) -> list[int]:
    """Registered versions of a model, oldest first (empty when the model is unknown)."""
    from mlflow import MlflowClient

    found = MlflowClient().search_model_versions(f"name = '{model_name}'")
    return sorted(int(v.version) for v in found)


def log_governance_json(run_id: str, name: str, content: Any) -> str:
    """Store an analysis beside the run's own reports, under ``governance/``."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    path = f"{GOVERNANCE_ARTIFACTS}/{name}"
    try:
        MlflowClient().log_text(run_id, json.dumps(content, indent=1, sort_keys=True), path)
    except MlflowException as e:
        raise GovernanceError(f"cannot record {path} on run {run_id}: {e}") from e
    return path


def log_governance_file(run_id: str, source: Path) -> str:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient().log_artifact(run_id, str(source), GOVERNANCE_ARTIFACTS)
    except MlflowException as e:
        raise GovernanceError(f"cannot record {source.name} on run {run_id}: {e}") from e
    return f"{GOVERNANCE_ARTIFACTS}/{source.name}"
