"""Motion gate: skip inference on still scenes by comparing a small grey copy of each frame."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.sources.camera_config import MotionGateConfig

__all__ = ["MotionGate", "MotionGateConfig"]


class MotionGate:
    """Compares against the last frame that *passed*, so slow changes add up and trigger."""

    def __init__(self, config: MotionGateConfig) -> None:
        self.config = config
        self._reference: npt.NDArray[np.uint8] | None = None
        self._reference_t = 0.0
        self.last_changed_fraction = 1.0

    def _small_grey(self, frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        h, w = frame.shape[:2]
        width = min(self.config.width, w)
        height = max(1, round(h * width / w))
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        small = cv2.resize(grey, (width, height), interpolation=cv2.INTER_AREA)
        return np.asarray(cv2.GaussianBlur(small, (3, 3), 0), dtype=np.uint8)

    def is_still(self, frame: npt.NDArray[np.uint8], t: float) -> bool:
        """True when ``frame`` (seen at time ``t``, seconds) should be skipped."""
        small = self._small_grey(frame)
        ref = self._reference
        if ref is None or ref.shape != small.shape:
            self._pass(small, t, 1.0)
            return False
        diff = cv2.absdiff(small, ref)
        changed = float(np.count_nonzero(diff > self.config.pixel_delta)) / diff.size
        max_still = self.config.max_still_s
        if changed >= self.config.min_changed_fraction or (
            max_still is not None and t - self._reference_t >= max_still
        ):
            self._pass(small, t, changed)
            return False
        self.last_changed_fraction = changed
        return True

    def _pass(self, small: npt.NDArray[np.uint8], t: float, changed: float) -> None:
        self._reference = small
        self._reference_t = t
        self.last_changed_fraction = changed

    def reset(self) -> None:
        self._reference = None
