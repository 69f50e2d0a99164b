"""Camera footage for the loop: a real video file made from photos with OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cloud_trainer.errors import UserError

_PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}


def video_from_photos(
    photo_dir: Path,
    dst: Path,
    *,
    size: tuple[int, int] = (320, 240),
    hold_frames: int = 3,
    fps: float = 10.0,
    limit: int = 60,
) -> int:
    """Write an MJPG AVI showing each decodable photo for ``hold_frames`` frames.

    Photos are interleaved across class folders so both classes appear early; files OpenCV
    cannot decode are skipped. Returns the number of photos used.
    """
    folders = sorted(p for p in photo_dir.iterdir() if p.is_dir())
    per_class = [
        sorted(f for f in folder.iterdir() if f.suffix.lower() in _PHOTO_SUFFIXES)
        for folder in folders
    ]
    order = [f for group in zip(*per_class, strict=False) for f in group][:limit]
    dst.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter.fourcc(*"MJPG"), fps, size)
    used = 0
    try:
        for photo in order:
            frame = cv2.imread(str(photo), cv2.IMREAD_COLOR)
            if frame is None:
                continue
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            for _ in range(hold_frames):
                writer.write(np.ascontiguousarray(frame))
            used += 1
    finally:
        writer.release()
    if used == 0:
        raise UserError(f"no decodable photos under {photo_dir}")
    return used
