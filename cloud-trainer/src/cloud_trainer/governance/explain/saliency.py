"""Occlusion saliency for the camera model: which parts of a frame the decision rests on."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from cloud_trainer.catdog.evaluate import OnnxClassifier
from edge_agent.features.image import prepare_image

BATCH = 16


@dataclass(frozen=True)
class SaliencyMap:
    """Per grid cell: how much the predicted class's probability falls when it is hidden."""

    label: str
    probability: float
    drops: npt.NDArray[np.float32]  # grid x grid, row-major over the frame

    @property
    def peak_cell(self) -> tuple[int, int]:
        row, col = np.unravel_index(int(np.argmax(self.drops)), self.drops.shape)
        return int(row), int(col)


def occlusion_map(model: OnnxClassifier, bgr: npt.NDArray[np.uint8], grid: int = 7) -> SaliencyMap:
    """Grey out each of ``grid`` x ``grid`` patches of the prepared input in turn.

    The patch takes the input's own per-channel mean, so it hides detail without adding a
    colour the model never saw. Only onnxruntime is used: no gradients, no framework.
    """
    pre = model.preprocessing
    x = prepare_image(bgr, pre)[0]
    nchw = pre.layout == "NCHW"
    h, w = pre.height, pre.width
    fill = x.mean(axis=(1, 2) if nchw else (0, 1), keepdims=True)
    variants = []
    ys = np.linspace(0, h, grid + 1).round().astype(int)
    xs = np.linspace(0, w, grid + 1).round().astype(int)
    for r in range(grid):
        for c in range(grid):
            v = x.copy()
            if nchw:
                v[:, ys[r] : ys[r + 1], xs[c] : xs[c + 1]] = fill
            else:
                v[ys[r] : ys[r + 1], xs[c] : xs[c + 1], :] = fill
            variants.append(v)
    batch = np.stack([x, *variants]).astype(np.float32)
    probs = np.concatenate(
        [model.run(batch[i : i + BATCH])[0] for i in range(0, len(batch), BATCH)]
    )
    if not np.isfinite(probs).all():
        raise ValueError("model produced non-finite probabilities during occlusion")
    k = int(np.argmax(probs[0]))
    drops = (probs[0, k] - probs[1:, k]).reshape(grid, grid).astype(np.float32)
    return SaliencyMap(model.spec.labels[k], float(probs[0, k]), drops)


def overlay_png(bgr: npt.NDArray[np.uint8], saliency: SaliencyMap, height: int = 160) -> bytes:
    """The frame and its heat map side by side, as PNG bytes for a report."""
    scale = height / bgr.shape[0]
    frame = cv2.resize(bgr, (max(1, round(bgr.shape[1] * scale)), height))
    drops = np.clip(saliency.drops, 0.0, None)
    peak = float(drops.max())
    norm = (drops / peak * 255.0) if peak > 0 else np.zeros_like(drops)
    heat = cv2.resize(
        norm.astype(np.uint8), (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_NEAREST
    )
    coloured = cv2.applyColorMap(heat, cv2.COLORMAP_JET)
    blended = cv2.addWeighted(frame, 0.55, coloured, 0.45, 0)
    side = np.concatenate([frame, blended], axis=1)
    ok, encoded = cv2.imencode(".png", side)
    if not ok:
        raise ValueError("could not encode the saliency image")
    return bytes(encoded.tobytes())
