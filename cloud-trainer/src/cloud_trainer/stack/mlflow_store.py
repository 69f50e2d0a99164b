"""A local MLflow store (SQLite + artefact folder): the embedded default registry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MlflowStore:
    """Where runs and registered models live; a URL for a server, or a local folder.

    ``tracking_uri`` may be any MLflow URI (``http://mlflow:5000``,
    ``postgresql://...``); ``local(root)`` builds the embedded SQLite default.
    """

    tracking_uri: str
    artifact_location: str | None = None

    @classmethod
    def local(cls, root: Path) -> MlflowStore:
        root = root.resolve()
        (root / "artifacts").mkdir(parents=True, exist_ok=True)
        return cls(
            tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
            artifact_location=(root / "artifacts").as_uri(),
        )

    def activate(self) -> None:
        """Point the mlflow client library at this store (tracking and registry)."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)

    def experiment(self, name: str) -> str:
        """Id of experiment ``name``, created with this store's artefact location if new."""
        import mlflow

        self.activate()
        found = mlflow.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        return str(mlflow.create_experiment(name, artifact_location=self.artifact_location))
