"""Visit records and their best-frame snapshots on the device, within a file and byte budget.

Each ended visit is a record (``.json``, the end event's fields) and, when a frame was kept,
its snapshot (``.jpg``). Names start with the time they were written, so the oldest are
evicted first and the order survives a restart; files are written to a temporary name,
fsynced and renamed, so a power cut never leaves half a snapshot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.drift.capture import write_atomic

log = logging.getLogger(__name__)

_STEM = re.compile(r"^(\d{16})-([a-z0-9][a-z0-9_-]{0,62})$")
MIN_QUALITY = 40
MIN_SIDE = 48


class SnapshotError(Exception):
    """A snapshot or record could not be stored (full disk, unwritable folder, bad frame)."""


@dataclass(frozen=True, slots=True)
class EncodedSnapshot:
    jpeg: bytes
    sha256: str
    width: int
    height: int
    quality: int


def encode_capped(
    frame: npt.NDArray[np.uint8], max_bytes: int, max_side: int, quality: int
) -> EncodedSnapshot:
    """JPEG of ``frame`` no larger than ``max_bytes``: quality is lowered first (to
    MIN_QUALITY), then the image is shrunk by a quarter at a time, until it fits."""
    image: npt.NDArray[Any] = frame
    h, w = image.shape[:2]
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    while True:
        q = quality
        while True:
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, q])
            if not ok:
                raise SnapshotError("frame could not be encoded as JPEG")
            data = buf.tobytes()
            if len(data) <= max_bytes or q <= MIN_QUALITY:
                break
            q = max(MIN_QUALITY, q - 15)
        h, w = image.shape[:2]
        if len(data) <= max_bytes:
            return EncodedSnapshot(data, hashlib.sha256(data).hexdigest(), w, h, q)
        if max(h, w) * 0.75 < MIN_SIDE:
            raise SnapshotError(f"frame does not fit in {max_bytes} bytes even at {w}x{h}")
        size = (max(1, round(w * 0.75)), max(1, round(h * 0.75)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)


@dataclass(frozen=True, slots=True)
class StoredVisit:
    stem: str
    visit_id: str
    record_path: Path
    snapshot_path: Path | None
    size: int

    @property
    def paths(self) -> list[Path]:
        return [self.record_path] + ([self.snapshot_path] if self.snapshot_path else [])


def _write(path: Path, data: bytes) -> None:
    write_atomic(path, data, SnapshotError)


class SnapshotStore:
    """Bounded folder of visit records and snapshots; the oldest go first beyond the budget.

    Written by the visit worker, read by the local API: a lock keeps the index consistent.
    """

    def __init__(self, directory: Path, max_files: int, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.counters: Counter[str] = Counter()
        self._index: dict[str, StoredVisit] = {}  # by stem: sorted = oldest first
        self._by_id: dict[str, str] = {}
        self._bytes = 0
        self._last_us = 0
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        for tmp in self.directory.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        for record in sorted(self.directory.glob("*.json")):
            match = _STEM.match(record.stem)
            if match is None:
                continue
            snapshot = record.with_suffix(".jpg")
            snapshot_path = snapshot if snapshot.exists() else None
            size = record.stat().st_size + (snapshot.stat().st_size if snapshot_path else 0)
            self._add(StoredVisit(record.stem, match.group(2), record, snapshot_path, size))
        with self._lock:
            self._evict()
        # A snapshot whose record never made it (power cut between the two) is an orphan.
        for jpg in self.directory.glob("*.jpg"):
            if jpg.stem not in self._index:
                jpg.unlink(missing_ok=True)

    def _add(self, item: StoredVisit) -> None:
        self._index[item.stem] = item
        self._by_id[item.visit_id] = item.stem
        self._bytes += item.size

    @property
    def files(self) -> int:
        return len(self._index)

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def _stem(self, visit_id: str) -> str:
        with self._lock:
            us = max(time.time_ns() // 1000, self._last_us + 1)
            self._last_us = us
        return f"{us:016d}-{visit_id}"

    def save(
        self, visit_id: str, record: dict[str, Any], snapshot: EncodedSnapshot | None
    ) -> StoredVisit:
        """Write the snapshot (if any), then the record: a visit exists once its record does."""
        stem = self._stem(visit_id)
        body = json.dumps(record, sort_keys=True, allow_nan=False).encode()
        record_path = self.directory / f"{stem}.json"
        snapshot_path = self.directory / f"{stem}.jpg" if snapshot is not None else None
        if snapshot_path is not None and snapshot is not None:
            _write(snapshot_path, snapshot.jpeg)
        try:
            _write(record_path, body)
        except SnapshotError:
            if snapshot_path is not None:
                snapshot_path.unlink(missing_ok=True)
            raise
        size = len(body) + (len(snapshot.jpeg) if snapshot is not None else 0)
        item = StoredVisit(stem, visit_id, record_path, snapshot_path, size)
        with self._lock:
            old = self._by_id.get(visit_id)
            if old is not None:
                self._drop(old)
            self._add(item)
            self.counters["saved"] += 1
            self._evict()
        return item

    def _evict(self) -> None:
        while self._index and (len(self._index) > self.max_files or self._bytes > self.max_bytes):
            self._drop(min(self._index))
            self.counters["evicted"] += 1

    def _drop(self, stem: str) -> None:
        item = self._index.pop(stem)
        if self._by_id.get(item.visit_id) == stem:
            del self._by_id[item.visit_id]
        self._bytes -= item.size
        for path in item.paths:
            path.unlink(missing_ok=True)

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` records, newest first (unreadable ones are skipped)."""
        with self._lock:
            items = [self._index[k] for k in sorted(self._index, reverse=True)[:limit]]
        out = []
        for item in items:
            try:
                out.append(json.loads(item.record_path.read_bytes()))
            except (OSError, json.JSONDecodeError) as e:  # evicted meanwhile, or damaged
                log.debug("visit record %s unreadable: %s", item.stem, e)
        return out

    def snapshot(self, visit_id: str) -> bytes | None:
        """The visit's JPEG, or None when the visit or its snapshot is not (or no longer) kept."""
        with self._lock:
            stem = self._by_id.get(visit_id)
            item = self._index.get(stem) if stem is not None else None
        if item is None or item.snapshot_path is None:
            return None
        try:
            return item.snapshot_path.read_bytes()
        except OSError:
            return None
