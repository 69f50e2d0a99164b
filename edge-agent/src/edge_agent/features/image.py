"""Frame preparation and image statistics, identical on the device and in the cloud."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.protocol.bundle import ImagePreprocessing

IMAGE_STAT_NAMES = (
    "brightness",
    "contrast",
    "sharpness",
    "saturation",
    "red",
    "green",
    "blue",
)

_INTERPOLATION = {"bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}


def prepare_image(bgr: npt.NDArray[np.uint8], spec: ImagePreprocessing) -> npt.NDArray[np.float32]:
    """Turn one BGR uint8 frame (OpenCV's order) into a batch of one input tensor."""
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 BGR frame, got {bgr.shape} {bgr.dtype}")
    resized = cv2.resize(
        bgr, (spec.width, spec.height), interpolation=_INTERPOLATION[spec.interpolation]
    )
    if spec.channel_order == "RGB":
        resized = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
    x = resized.astype(np.float32)
    if not spec.normalised_in_graph:
        x *= np.float32(spec.scale)
        x -= np.asarray(spec.mean, dtype=np.float32)
        x /= np.asarray(spec.std, dtype=np.float32)
    if spec.layout == "NCHW":
        x = np.transpose(x, (2, 0, 1))
    return np.ascontiguousarray(x[np.newaxis, ...])


def image_statistics(bgr: npt.NDArray[np.uint8], size: int = 128) -> dict[str, float]:
    """Cheap per-frame statistics for drift: brightness, contrast, sharpness, colour means.

    Computed on a downscaled copy so the cost does not depend on the camera resolution.
    """
    h, w = bgr.shape[:2]
    scale = size / max(h, w)
    small = (
        cv2.resize(
            bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
        )
        if scale < 1
        else bgr
    )
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
    b, g, r = (float(c) / 255.0 for c in cv2.mean(small)[:3])
    return {
        "brightness": float(gray.mean()) / 255.0,
        "contrast": float(gray.std()) / 255.0,
        "sharpness": float(np.log1p(cv2.Laplacian(gray, cv2.CV_64F).var())),
        "saturation": float(hsv[..., 1].mean()) / 255.0,
        "red": r,
        "green": g,
        "blue": b,
    }
