"""Where the registry lives when a command is not told: one rule for every CLI verb."""

from __future__ import annotations

import os
from pathlib import Path

from cloud_trainer.stack.mlflow_store import MlflowStore

STORE_ENV = "EDGE_MLOPS_MLFLOW"
DEFAULT_STORE_DIR = Path.home() / ".local" / "share" / "edge-mlops" / "mlflow"


def open_store(location: str | Path | None = None) -> MlflowStore:
    """An activated store for a folder or an MLflow URI.

    ``None`` means ``$EDGE_MLOPS_MLFLOW``, else ``$MLFLOW_TRACKING_URI``, else
    ``~/.local/share/edge-mlops/mlflow`` (SQLite + local artefacts). Anything with ``:/``
    (``sqlite:///…``, ``http://…``, ``postgresql://…``) is a URI; anything else a folder.
    """
    text = str(location) if location is not None else ""
    if not text:
        text = os.environ.get(STORE_ENV) or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if not text:
        store = MlflowStore.local(DEFAULT_STORE_DIR)
    elif ":/" in text:
        store = MlflowStore(tracking_uri=text)
    else:
        store = MlflowStore.local(Path(text).expanduser())
    store.activate()
    return store
