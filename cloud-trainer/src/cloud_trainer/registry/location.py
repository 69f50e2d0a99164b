"""Where the registry lives when a command is not told: one rule for every CLI verb."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cloud_trainer.registry.resolve import ResolvedModel, resolve_model
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


@contextmanager
def model_for_command(
    ref: str | Path, store: str | Path | None, *, prefix: str
) -> Iterator[ResolvedModel]:
    """The model a verb was given, for the length of the ``with``: a registry download lives
    in a temporary folder (named ``prefix…``) that goes with it, and the store is only opened
    when the reference needs one, so a plain ONNX path works without any registry."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        if str(ref).startswith("models:/"):
            open_store(store)
        yield resolve_model(ref, Path(tmp))
