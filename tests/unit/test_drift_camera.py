"""Camera drift on real photos: image statistics of the pet photos as the baseline, a
shuffled replay stays quiet, darkened frames raise an alert that names brightness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

from edge_agent.drift.config import DriftConfig
from edge_agent.drift.monitor import DriftMonitor
from edge_agent.features.image import IMAGE_STAT_NAMES, image_statistics
from edge_agent.sources.sample import Sample
from tests.support.drift import Prediction, camera_spec

T0 = datetime(2024, 6, 1, tzinfo=UTC)


def _frames(shared_data: Path) -> list[np.ndarray]:
    frames = []
    for path in sorted((shared_data / "pets").glob("*/*.jpg"))[::2]:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is not None:  # a few files are not JPEGs; a real camera skips them too
            scale = 160 / max(img.shape[:2])
            frames.append(cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    return frames


def test_image_statistics_drift_on_real_photos(shared_data: Path) -> None:
    rng = np.random.default_rng(4)
    frames = _frames(shared_data)
    order = rng.permutation(len(frames))
    base, live = order[: len(order) // 2], order[len(order) // 2 :]
    stats = [image_statistics(f) for f in frames]
    spec = camera_spec({n: [stats[i][n] for i in base] for n in IMAGE_STAT_NAMES})
    monitor = DriftMonitor.from_spec(spec, DriftConfig(), model_version=5)
    assert [d.name for d in monitor.detectors] == ["features"]

    def show(k: int, st: dict[str, float]) -> list:
        sample = Sample(T0 + timedelta(minutes=k), f"f{k}")
        return monitor.observe(sample, Prediction("cat", 0.9, input_stats=st))

    calm = [v for k, i in enumerate(rng.choice(live, 600)) for v in show(k, stats[i])]
    assert calm == []
    dark = {i: image_statistics(cv2.convertScaleAbs(frames[i], alpha=0.5)) for i in live}
    alerts = [(k, v) for k in range(600, 800) for v in show(k, dark[int(rng.choice(live))])]
    assert [v.state for _, v in alerts] == ["raised"]
    k, alert = alerts[0]
    assert k - 600 <= 96
    # The first statistics to cross are those darkening moves: brightness and colour means.
    named = {f.name for f in alert.features}
    assert named and named <= {"brightness", "contrast", "red", "green", "blue"}
    scores = monitor.snapshot().detectors[0].scores
    brightness = next(f for f in scores if f.name == "brightness")
    assert brightness.score >= brightness.threshold
    assert brightness.current is not None and brightness.baseline is not None
    assert brightness.current < 0.7 * brightness.baseline
    message = alert.to_message("cam-1", 3, T0)
    assert message.model_name == "catdog" and message.model_version == 5
    assert message.window.n == DriftConfig().image_window.size
