"""Camera footage for the loop: a real video file made from photos with OpenCV."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from cloud_trainer.errors import UserError

_PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}


def _photos(folder: Path) -> list[Path]:
    """The folder's photos, less those known to show something else than their folder says."""
    from cloud_trainer.catdog.ingest import KNOWN_MISLABELLED

    return sorted(
        f
        for f in folder.iterdir()
        if f.suffix.lower() in _PHOTO_SUFFIXES
        and hashlib.sha256(f.read_bytes()).hexdigest() not in KNOWN_MISLABELLED
    )


def _frames(paths: list[Path], size: tuple[int, int]) -> list[np.ndarray]:
    out = []
    for path in paths:
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is not None:
            out.append(np.ascontiguousarray(cv2.resize(frame, size, interpolation=cv2.INTER_AREA)))
    return out


def park_footage(
    photo_dir: Path,
    dst: Path,
    *,
    empty_dir: Path | None = None,
    size: tuple[int, int] = (320, 240),
    fps: float = 10.0,
    visits: int = 6,
    visit_s: float = 1.5,
    empty_s: float = 3.0,
) -> int:
    """Write an MJPG AVI of a park gate: empty scenes for ``empty_s`` between pet visits of
    ``visit_s`` (one pet photo each, the pet classes in turn). Empty scenes come from
    ``empty_dir`` (default ``photo_dir/none``), pets from ``photo_dir``'s other class
    folders. Returns the number of visits in the file.
    """
    empty_dir = empty_dir or photo_dir / "none"
    if not empty_dir.is_dir():
        raise UserError(f"no folder of empty scenes at {empty_dir} for the camera footage")
    classes = [p for p in sorted(photo_dir.iterdir()) if p.is_dir() and p != empty_dir]
    classes = [p for p in classes if p.name != "none"]
    per_class = [_frames(_photos(folder)[::3], size) for folder in classes]
    pets = [f for group in zip(*per_class, strict=False) for f in group][:visits]
    empty = _frames(_photos(empty_dir), size)
    if not pets or not empty:
        raise UserError(f"no decodable pet photos under {photo_dir} or scenes under {empty_dir}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter.fourcc(*"MJPG"), fps, size)
    hold_empty = max(1, round(empty_s * fps / 2))
    hold_pet = max(1, round(visit_s * fps))
    try:
        for i, pet in enumerate(pets):
            for scene in (empty[(2 * i) % len(empty)], empty[(2 * i + 1) % len(empty)]):
                for _ in range(hold_empty):
                    writer.write(scene)
            for _ in range(hold_pet):
                writer.write(pet)
        for _ in range(hold_empty * 2):  # the last visit ends inside the file
            writer.write(empty[0])
    finally:
        writer.release()
    return len(pets)
