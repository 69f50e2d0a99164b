"""Feeding drift code without a model: a stand-in Prediction and the camera model's spec."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge_agent.drift.baseline import feature_baselines
from edge_agent.protocol import TensorSpec
from edge_agent.protocol.bundle import DriftBaseline, ModelSpec


@dataclass(frozen=True)
class Prediction:
    """The fields the drift monitor and sample capture read; scores and stats are optional so
    a test states only what its case is about."""

    label: str
    confidence: float
    scores: dict[str, float] = field(default_factory=dict)
    latency_ms: float = 1.0
    embedding: np.ndarray | None = None
    input_stats: dict[str, float] = field(default_factory=dict)


def camera_spec(columns: Mapping[str, npt.ArrayLike]) -> ModelSpec:
    """The cat/dog camera model's spec with image-statistics baselines from ``columns``
    (statistic name → values): drift code needs the spec, not an ONNX file."""
    return ModelSpec(
        name="catdog",
        task="image_classification",
        labels=["cat", "dog"],
        inputs=[TensorSpec(name="image", dtype="float32", shape=[None, 224, 224, 3])],
        outputs=[TensorSpec(name="probs", dtype="float32", shape=[None, 2])],
        probabilities_output="probs",
        preprocessing={"kind": "image", "height": 224, "width": 224},
        drift=DriftBaseline(features=feature_baselines(columns)),
    )
