"""Opt-in capture of samples worth retraining on, kept on disk within a file/byte budget.

Each sample is a metadata file (``.json``) plus, for a camera, its frame (``.jpg``).
Names start with the capture time, so the oldest are evicted first and the order
survives a restart. Files are written to a temporary name and renamed, so a power cut
never leaves half a sample to upload.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.drift.config import CaptureConfig
from edge_agent.drift.inputs import PredictionLike, SampleLike

log = logging.getLogger(__name__)

HOUR_S = 3600.0

_STEM = re.compile(r"^\d{16}-\d{6}-[a-z_]+$")
Jpeg = bytes  # the class below has a ``bytes`` property that hides the builtin there


class CaptureError(Exception):
    """A sample could not be stored (full disk, unwritable folder, frame not encodable)."""


@dataclass(frozen=True)
class CapturedSample:
    stem: str
    meta_path: Path
    data_path: Path | None
    size: int

    @property
    def paths(self) -> list[Path]:
        return [self.meta_path] + ([self.data_path] if self.data_path else [])


class CaptureStore:
    """Bounded folder of captured samples, oldest evicted beyond the budget."""

    def __init__(
        self,
        config: CaptureConfig,
        directory: Path | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        # Draws for the random sample; tests pass a seeded one.
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - not security
        self.directory = Path(directory if directory is not None else config.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.counters: Counter[str] = Counter()
        self._recent: deque[float] = deque()  # monotonic times of the last hour's captures
        self._lock = threading.Lock()
        self._seq = 0
        self._since_drift = 0
        self._index: dict[str, CapturedSample] = {}
        self._bytes = 0
        self._load()

    def _load(self) -> None:
        for meta in sorted(self.directory.glob("*.json")):
            if not _STEM.match(meta.stem):
                continue
            data = meta.with_suffix(".jpg")
            data_path = data if data.exists() else None
            size = meta.stat().st_size + (data.stat().st_size if data_path else 0)
            self._index[meta.stem] = CapturedSample(meta.stem, meta, data_path, size)
            self._bytes += size
        for tmp in self.directory.glob("*.tmp"):
            tmp.unlink(missing_ok=True)

    @property
    def files(self) -> int:
        return len(self._index)

    @property
    def bytes(self) -> int:
        return self._bytes

    def pending(self, limit: int | None = None) -> list[CapturedSample]:
        """Oldest first."""
        with self._lock:
            items = [self._index[k] for k in sorted(self._index)]
        return items if limit is None else items[:limit]

    def consider(
        self,
        sample: SampleLike,
        prediction: PredictionLike,
        raised: Sequence[str],
        model_name: str,
        model_version: int,
        capture_below: float | None = None,
    ) -> CapturedSample | None:
        """Keep the sample if the config asks for it: low confidence, drift raised, or drawn
        at random (``random_sample_rate``); every kept sample counts against the file and
        byte budgets like any other.

        ``capture_below`` is the serving model's own level (its spec's ``capture_below``);
        the config's ``low_confidence_below`` wins over it when set.
        """
        if not self.config.enabled:
            return None
        rate = self.config.random_sample_rate
        # Drawn for every sample, so one sample in 1/rate is kept whatever its confidence;
        # a sample kept for another reason keeps that reason (the queue ranks it first).
        drawn = rate > 0 and self._rng.random() < rate
        reason = None
        if self.config.low_confidence and prediction.confidence < (
            self.config.low_confidence_level(capture_below)
        ):
            reason = "low_confidence"
        elif self.config.drift_windows and raised:
            self._since_drift += 1
            if self._since_drift >= self.config.drift_every:
                self._since_drift = 0
                reason = "drift"
        if reason is None and drawn:
            reason = "random"
        if reason is None:
            return None
        if not self._within_hourly_limit():
            self.counters["rate_limited"] += 1
            return None
        try:
            return self.save(sample, prediction, reason, model_name, model_version, raised)
        except CaptureError as e:
            # Capture is best effort: a full disk must never stop inference.
            self.counters["failed"] += 1
            log.warning("capture of %s skipped: %s", sample.input_id, e)
            return None

    def _within_hourly_limit(self) -> bool:
        limit = self.config.max_per_hour
        if limit == 0:
            return True
        now = time.monotonic()
        with self._lock:
            recent = self._recent
            while recent and now - recent[0] >= HOUR_S:
                recent.popleft()
            if len(recent) >= limit:
                return False
            recent.append(now)
            return True

    def save(
        self,
        sample: SampleLike,
        prediction: PredictionLike,
        reason: str,
        model_name: str,
        model_version: int,
        detectors: Sequence[str] = (),
    ) -> CapturedSample:
        jpeg: bytes | None = None
        if sample.frame is not None:
            import cv2  # a frame comes from a camera, which has OpenCV; a station never gets here

            ok, buf = cv2.imencode(
                ".jpg", sample.frame, [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality]
            )
            if not ok:
                raise CaptureError(f"frame of {sample.input_id} could not be encoded as JPEG")
            jpeg = buf.tobytes()
        meta = {
            "input_id": sample.input_id,
            "captured_at": sample.ts.isoformat(),
            "reason": reason,
            "detectors": list(detectors),
            "model_name": model_name,
            "model_version": model_version,
            "label": prediction.label,
            "confidence": float(prediction.confidence),
            "scores": {k: float(v) for k, v in prediction.scores.items()},
            "features": _finite(sample.features),
            "observed_label": sample.observed_label,
        }
        return self._keep(reason, jpeg, meta)

    def keep_jpeg(self, jpeg: Jpeg, meta: dict[str, object], reason: str) -> CapturedSample:
        """Keep an image encoded elsewhere (a visit's snapshot), byte for byte, so the
        uploaded sample has the sha256 the device reported; ``meta`` holds its provenance
        (``captured_at``, ``model_name``, ``model_version``, ``label`` ...)."""
        return self._keep(reason, jpeg, {**meta, "reason": reason})

    def _keep(self, reason: str, jpeg: Jpeg | None, meta: dict[str, object]) -> CapturedSample:
        with self._lock:
            self._seq = (self._seq + 1) % 1_000_000
            stem = f"{time.time_ns() // 1000:016d}-{self._seq:06d}-{reason}"
        body = json.dumps(meta, sort_keys=True, allow_nan=False).encode()
        meta_path = self.directory / f"{stem}.json"
        data_path = self.directory / f"{stem}.jpg" if jpeg is not None else None
        # Data first, metadata last: a sample exists once its .json does.
        if data_path is not None and jpeg is not None:
            write_atomic(data_path, jpeg)
        try:
            write_atomic(meta_path, body)
        except CaptureError:
            if data_path is not None:
                data_path.unlink(missing_ok=True)
            raise
        item = CapturedSample(stem, meta_path, data_path, len(body) + len(jpeg or b""))
        with self._lock:
            self._index[stem] = item
            self._bytes += item.size
            self.counters[reason] += 1
            self._evict()
        return item

    def _evict(self) -> None:
        while self._index and (
            len(self._index) > self.config.max_files or self._bytes > self.config.max_bytes
        ):
            oldest = min(self._index)
            self._drop(oldest)
            self.counters["evicted"] += 1

    def _drop(self, stem: str) -> None:
        item = self._index.pop(stem)
        self._bytes -= item.size
        for path in item.paths:
            path.unlink(missing_ok=True)

    def remove(self, item: CapturedSample) -> None:
        """Forget a sample (after a successful upload)."""
        with self._lock:
            if item.stem in self._index:
                self._drop(item.stem)


def _finite(features: object) -> dict[str, float] | None:
    if not isinstance(features, dict):
        return None
    return {str(k): float(v) for k, v in features.items() if np.isfinite(v)}


def write_atomic(path: Path, data: bytes, error: type[Exception] = CaptureError) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary sibling and a rename; a
    failure (a full disk named as such) raises ``error`` and leaves nothing half-written."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        why = "disk full" if e.errno == errno.ENOSPC else e.strerror or str(e)
        raise error(f"cannot write {path.name}: {why}") from e
