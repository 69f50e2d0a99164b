"""Visit snapshots on the device: JPEGs under their byte cap, kept within a file and byte
budget (oldest first), written atomically, found again after a restart."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.visits.snapshots import MIN_QUALITY, SnapshotError, SnapshotStore, encode_capped


def noisy_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Noise compresses badly: the worst case for a byte cap."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_a_small_frame_is_kept_at_full_size_and_quality() -> None:
    frame = np.full((120, 160, 3), (40, 90, 160), np.uint8)
    snap = encode_capped(frame, 200_000, 1280, 85)
    assert (snap.width, snap.height, snap.quality) == (160, 120, 85)
    assert snap.sha256 == hashlib.sha256(snap.jpeg).hexdigest()
    decoded = cv2.imdecode(np.frombuffer(snap.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.shape == (120, 160, 3)


@pytest.mark.parametrize("cap", [200_000, 60_000, 20_000])
def test_the_byte_cap_holds_by_lower_quality_then_smaller_size(cap: int) -> None:
    frame = noisy_frame(720, 1280)
    snap = encode_capped(frame, cap, 1280, 85)
    assert len(snap.jpeg) <= cap
    # Noise at full size does not fit even at the lowest quality: the frame was shrunk.
    ok, lowest = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, MIN_QUALITY])
    assert ok and len(lowest) > cap
    assert snap.width < 1280 and snap.width / snap.height == pytest.approx(16 / 9, rel=0.02)
    decoded = cv2.imdecode(np.frombuffer(snap.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.shape[:2] == (snap.height, snap.width)


def test_a_large_frame_is_shrunk_to_the_longest_side_first() -> None:
    frame = np.full((2160, 3840, 3), 128, np.uint8)
    snap = encode_capped(frame, 200_000, 640, 85)
    assert (snap.width, snap.height) == (640, 360) and snap.quality == 85


def test_an_impossible_cap_is_an_error_not_a_loop() -> None:
    with pytest.raises(SnapshotError, match="does not fit"):
        encode_capped(noisy_frame(240, 320), 100, 1280, 85)


def _snap(seed: int, side: int = 64) -> object:
    return encode_capped(noisy_frame(side, side, seed), 200_000, 1280, 90)


def test_retention_by_count_removes_the_oldest_first(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_files=3, max_bytes=10**9)
    for i in range(5):
        store.save(f"visit-{i}", {"visit_id": f"visit-{i}"}, _snap(i))  # type: ignore[arg-type]
    assert store.files == 3 and store.counters["evicted"] == 2
    assert [r["visit_id"] for r in store.recent(10)] == ["visit-4", "visit-3", "visit-2"]
    assert store.snapshot("visit-0") is None and store.snapshot("visit-4") is not None
    assert len(list(tmp_path.glob("*.jpg"))) == 3 and len(list(tmp_path.glob("*.json"))) == 3


def test_retention_by_bytes_removes_the_oldest_first(tmp_path: Path) -> None:
    snaps = [_snap(i) for i in range(6)]
    biggest = max(len(s.jpeg) for s in snaps)  # type: ignore[attr-defined]
    budget = 3 * biggest + 3 * 100  # three visits and their records, never four
    store = SnapshotStore(tmp_path, max_files=100, max_bytes=budget)
    for i, snap in enumerate(snaps):
        store.save(f"visit-{i}", {"visit_id": f"visit-{i}"}, snap)  # type: ignore[arg-type]
        assert store.total_bytes <= budget
    on_disk = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert on_disk == store.total_bytes
    kept = [r["visit_id"] for r in store.recent(10)]
    assert kept == ["visit-5", "visit-4", "visit-3"]  # the newest, newest first
    assert store.counters["evicted"] == 3


def test_a_record_without_a_snapshot_is_kept_too(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_files=10, max_bytes=10**6)
    store.save("visit-a", {"visit_id": "visit-a", "label": "cat"}, None)
    assert store.recent(5) == [{"visit_id": "visit-a", "label": "cat"}]
    assert store.snapshot("visit-a") is None


def test_a_restart_finds_the_visits_and_clears_leftovers(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_files=10, max_bytes=10**6)
    first = store.save("visit-a", {"visit_id": "visit-a"}, _snap(1))  # type: ignore[arg-type]
    store.save("visit-b", {"visit_id": "visit-b"}, _snap(2))  # type: ignore[arg-type]
    jpeg = store.snapshot("visit-a")
    # A write cut short (its temporary file) and a snapshot whose record never came.
    (tmp_path / "0000000000000009-visit-c.jpg.tmp").write_bytes(b"half")
    (tmp_path / "0000000000000010-visit-d.jpg").write_bytes(b"\xff\xd8\xff orphan")
    again = SnapshotStore(tmp_path, max_files=10, max_bytes=10**6)
    assert [r["visit_id"] for r in again.recent(10)] == ["visit-b", "visit-a"]
    assert again.snapshot("visit-a") == jpeg and first.snapshot_path is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for s in again._index.values() for p in s.paths
    )
    assert again.total_bytes == store.total_bytes


def test_saving_a_visit_again_replaces_it(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_files=10, max_bytes=10**6)
    store.save("visit-a", {"visit_id": "visit-a", "n": 1}, _snap(1))  # type: ignore[arg-type]
    store.save("visit-a", {"visit_id": "visit-a", "n": 2}, None)
    assert store.recent(5) == [{"visit_id": "visit-a", "n": 2}] and store.files == 1
    assert list(tmp_path.glob("*.jpg")) == []
