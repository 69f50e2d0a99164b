"""Training-time augmentation: fixed views for cached features, random ones for pixel training."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

# Deterministic views whose backbone features are cached per image: the frozen-backbone head
# sees each photo mirrored and closer up without paying for random augmentation every run.
FEATURE_VIEWS = ("plain", "flip", "crop", "crop-flip")
CROP_SHARE = 0.8


def feature_view(bgr: npt.NDArray[np.uint8], view: str) -> npt.NDArray[np.uint8]:
    """One named deterministic view of a frame."""
    if view not in FEATURE_VIEWS:
        raise ValueError(f"unknown view {view!r}; known: {FEATURE_VIEWS}")
    out: npt.NDArray[np.uint8] = bgr
    if view.startswith("crop"):
        h, w = bgr.shape[:2]
        ch, cw = max(1, round(h * CROP_SHARE)), max(1, round(w * CROP_SHARE))
        top, left = (h - ch) // 2, (w - cw) // 2
        out = bgr[top : top + ch, left : left + cw]
    if view.endswith("flip"):
        out = np.asarray(cv2.flip(out, 1), dtype=np.uint8)
    return np.ascontiguousarray(out)


def random_augment(batch: npt.NDArray[np.uint8], rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """Random flip, resized crop, small rotation and brightness/contrast jitter, per image.

    Works on prepared square frames (N, S, S, 3) so a whole epoch is cheap to re-augment.
    """
    n, size = batch.shape[0], batch.shape[1]
    out = np.empty_like(batch)
    for i in range(n):
        scale = rng.uniform(0.75, 1.0)
        angle = rng.uniform(-12.0, 12.0)
        cx = size / 2 + rng.uniform(-0.1, 0.1) * size
        cy = size / 2 + rng.uniform(-0.1, 0.1) * size
        matrix = cv2.getRotationMatrix2D((cx, cy), angle, 1.0 / scale)
        matrix[:, 2] += (size / 2 - cx, size / 2 - cy)
        img = cv2.warpAffine(
            batch[i], matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        if rng.random() < 0.5:
            img = cv2.flip(img, 1)
        gain = rng.uniform(0.8, 1.2)
        bias = rng.uniform(-20.0, 20.0)
        out[i] = np.clip(img.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
    return out
