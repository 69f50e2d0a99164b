"""Frozen-backbone features per image, cached on disk by content hash so retraining is fast."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cloud_trainer.catdog.augment import FEATURE_VIEWS, feature_view
from cloud_trainer.catdog.ingest import ImageRecord, read_image
from edge_agent.features.image import prepare_image
from edge_agent.protocol.bundle import ImagePreprocessing

log = logging.getLogger(__name__)

BATCH = 32


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-mlops" / "catdog-features"


def frame_input(bgr: npt.NDArray[np.uint8], preprocessing: ImagePreprocessing) -> Any:
    """The model input for one frame, prepared exactly as the device prepares it."""
    return prepare_image(bgr, preprocessing)[0]


class FeatureCache:
    """``root/<backbone id>-<size>/<hash[:2]>/<hash>.npy`` holding (views, dim) float32.

    The backbone id is a hash of its weight file, so new weights never reuse stale features.
    """

    def __init__(self, root: Path, backbone_id: str, size: int, views: str = "") -> None:
        self.folder = root / (f"{backbone_id}-{size}" + (f"-{views}" if views else ""))
        self.hits = 0
        self.misses = 0

    def _path(self, sha256: str) -> Path:
        return self.folder / sha256[:2] / f"{sha256}.npy"

    def get(self, sha256: str, n_views: int) -> npt.NDArray[np.float32] | None:
        path = self._path(sha256)
        try:
            value = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            if path.exists():
                log.warning("feature cache entry %s unreadable (%s); recomputing", path, e)
            return None
        if value.ndim != 2 or value.shape[0] < n_views or not np.isfinite(value).all():
            return None
        return np.asarray(value[:n_views], dtype=np.float32)

    def put(self, sha256: str, value: npt.NDArray[np.float32]) -> None:
        path = self._path(sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        try:
            with partial.open("wb") as f:
                np.save(f, value.astype(np.float32), allow_pickle=False)
            partial.replace(path)
        except OSError as e:  # a full or read-only cache slows training, it never fails it
            log.warning("could not cache features at %s: %s", path, e)
            partial.unlink(missing_ok=True)


def backbone_id(weights_file: Path) -> str:
    digest = hashlib.sha256(weights_file.read_bytes()).hexdigest()
    return f"lite0-{digest[:12]}"


def extract_features(
    backbone: Any,
    records: Sequence[ImageRecord],
    preprocessing: ImagePreprocessing,
    *,
    n_views: int = 1,
    cache: FeatureCache | None = None,
    progress: Callable[[int, int], None] | None = None,
    views: Sequence[str] = FEATURE_VIEWS,
    make_view: Callable[[npt.NDArray[np.uint8], str], npt.NDArray[np.uint8]] = feature_view,
) -> npt.NDArray[np.float32]:
    """(len(records), n_views, dim) backbone features of the first ``n_views`` of ``views``
    (``augment.FEATURE_VIEWS`` unless given; a cache holds one view list only)."""
    if not 1 <= n_views <= len(views):
        raise ValueError(f"n_views must be 1..{len(views)}, got {n_views}")
    results: list[npt.NDArray[np.float32] | None] = [
        cache.get(r.sha256, n_views) if cache else None for r in records
    ]
    todo = [i for i, v in enumerate(results) if v is None]
    if cache is not None:
        cache.hits += len(records) - len(todo)
        cache.misses += len(todo)
    done = len(records) - len(todo)
    if progress is not None:
        progress(done, len(records))
    for start in range(0, len(todo), BATCH):
        chunk = todo[start : start + BATCH]
        inputs: list[npt.NDArray[np.float32]] = []
        for i in chunk:
            bgr = read_image(records[i].path)
            inputs.extend(frame_input(make_view(bgr, v), preprocessing) for v in views[:n_views])
        feats = np.asarray(backbone.predict_on_batch(np.stack(inputs)), dtype=np.float32)
        feats = feats.reshape(len(chunk), n_views, -1)
        for j, i in enumerate(chunk):
            results[i] = feats[j]
            if cache is not None:
                cache.put(records[i].sha256, feats[j])
        done += len(chunk)
        if progress is not None:
            progress(done, len(records))
    return np.stack([r for r in results if r is not None])
