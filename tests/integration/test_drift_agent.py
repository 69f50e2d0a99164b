"""The drift service inside a real agent: real onnxruntime predictions feed the monitor,
alerts land in the agent's outbox with the device's id and seq, ``/drift`` shows scores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.config.device import DeviceConfig
from edge_agent.drift.baseline import class_ratio
from edge_agent.drift.service import DriftService
from edge_agent.protocol.bundle import DriftBaseline
from edge_agent.protocol.codec import decode_message
from edge_agent.protocol.messages import DriftAlert
from edge_agent.sources.sample import Sample
from tests.integration.agent_fixtures import build_agent, camera_config
from tests.support.onnx_models import blue_frame, image_classifier, red_frame

pytestmark = pytest.mark.integration
T0 = datetime(2024, 7, 1, tzinfo=UTC)


def test_class_ratio_alert_reaches_the_outbox_and_drift_endpoint(tmp_path: Path) -> None:
    # Validation saw as many cats as dogs; the camera now sees only cats.
    image_classifier(
        tmp_path / "catdog.onnx",
        drift=DriftBaseline(class_ratio=class_ratio(["cat", "dog"], ["cat", "dog"])),
    )
    base = camera_config(tmp_path, 1)
    config = DeviceConfig.model_validate(
        {**base.model_dump(mode="json", exclude_none=True), "drift": {"detectors": ["class_ratio"]}}
    )
    assert config.drift is not None
    agent = build_agent(config, with_source=False)
    try:
        service = DriftService(agent, config.drift, tmp_path).attach()
        assert service.snapshot()["samples"] == 0
        for k in range(200):
            frame = red_frame() if k % 2 or k >= 100 else blue_frame()
            sample = Sample(T0 + timedelta(seconds=30 * k), f"f{k}", frame=frame)
            prediction, engine = agent.slot.predict(sample)
            service.observe(sample, prediction, engine)
        rows = agent.store.fetch(0, 1000)
        drift = [(r, decode_message(r.payload)) for r in rows if r.topic.endswith("/drift")]
        assert [m.state for _, m in drift if isinstance(m, DriftAlert)] == ["raised"]
        row, alert = drift[0]
        assert isinstance(alert, DriftAlert)
        assert alert.device_id == "cam-01" and alert.model_version == 3 and alert.seq == row.seq
        assert alert.features[0].name in ("cat", "dog") and alert.features[0].metric == "ratio"
        snap = service.snapshot()
        assert snap["raised"] == ["class_ratio"] and snap["samples"] == 200
    finally:
        agent.store.close()
