"""The Keras EfficientNet-Lite0 port reproduces the reference implementation's outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.catdog.backbone.efficientnet_lite import build_lite0, load_lite0_weights

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "backbones"
REFERENCE_NPZ = REFERENCE / "efficientnet_lite0_reference.npz"


@pytest.mark.slow
def test_port_reproduces_reference_features_and_logits() -> None:
    ref = np.load(REFERENCE_NPZ)
    weights = load_lite0_weights()
    model = build_lite0(224, weights, normalise_in_graph=False, include_logits=True)
    pooled, logits = model.predict(np.transpose(ref["inputs_nchw"], (0, 2, 3, 1)), verbose=0)
    np.testing.assert_allclose(pooled, ref["pooled_features"], atol=1e-3)
    np.testing.assert_allclose(logits, ref["logits"], atol=1e-3)
    assert int(np.argmax(logits[0])) == 285  # the first cat: ImageNet "Egyptian cat"

    # The product graph takes raw 0-255 pixels and normalises inside.
    raw = build_lite0(224, weights, normalise_in_graph=True)
    pooled_raw = raw.predict(ref["images_uint8_nhwc"].astype(np.float32), verbose=0)
    np.testing.assert_allclose(pooled_raw, ref["pooled_features"], atol=1e-3)
