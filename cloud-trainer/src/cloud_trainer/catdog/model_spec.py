"""The cat/dog ModelSpec: input contract, labels and the drift baselines measured at training."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypedDict

import numpy as np
import numpy.typing as npt

from cloud_trainer.catdog.ingest import ImageRecord, read_image
from edge_agent.drift.baseline import (
    capture_threshold,
    class_ratio,
    feature_baselines,
    histogram_baseline,
)
from edge_agent.features.image import IMAGE_STAT_NAMES, image_statistics
from edge_agent.protocol.bundle import (
    DriftBaseline,
    EmbeddingBaseline,
    FeatureBaseline,
    ImagePreprocessing,
    ModelSpec,
    PresenceRule,
)
from edge_agent.protocol.manifest import TensorSpec

INPUT_NAME = "image"
PROBABILITIES = "probabilities"
EMBEDDING = "embedding"
LATENCY_BUDGET_MS = 100.0
# The device captures frames less sure than the 10th percentile of held-out confidence:
# about one in-distribution frame in ten before the capture budget, enough to keep the
# labelling queue fed from every camera, few enough that the 500-file budget holds hours
# of a site's least sure frames rather than minutes of ordinary ones.
CAPTURE_QUANTILE = 0.1


def image_stat_baselines(
    records: Sequence[ImageRecord], progress: Callable[[int, int], None] | None = None
) -> list[FeatureBaseline]:
    """Histogram of each ``image_statistics`` value over the training photos."""
    columns: dict[str, list[float]] = {name: [] for name in IMAGE_STAT_NAMES}
    for i, record in enumerate(records):
        stats = image_statistics(read_image(record.path))
        for name in IMAGE_STAT_NAMES:
            columns[name].append(stats[name])
        if progress is not None:
            progress(i + 1, len(records))
    return feature_baselines(columns)


def embedding_distance(
    embeddings: npt.NDArray[np.float32], mean: npt.NDArray[np.float64], std: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Root-mean-square standardised distance of each embedding from the validation mean."""
    safe = np.where(std > 1e-12, std, 1.0)
    z = (embeddings.astype(np.float64) - mean) / safe
    return np.asarray(np.sqrt(np.mean(z * z, axis=1)), dtype=np.float64)


def prediction_baseline(
    probabilities: npt.NDArray[np.float32],
    embeddings: npt.NDArray[np.float32] | None,
    labels: list[str],
    features: list[FeatureBaseline],
) -> DriftBaseline:
    """Class ratio, confidence histogram and embedding statistics of validation outputs."""
    predicted = [labels[i] for i in probabilities.argmax(axis=1)]
    embedding = None
    if embeddings is not None:
        mean = embeddings.astype(np.float64).mean(axis=0)
        std = embeddings.astype(np.float64).std(axis=0)
        embedding = EmbeddingBaseline(
            output=EMBEDDING,
            mean=[float(v) for v in mean],
            std=[float(v) for v in std],
            n=len(embeddings),
            distance=histogram_baseline(embedding_distance(embeddings, mean, std)),
        )
    return DriftBaseline(
        features=features,
        class_ratio=class_ratio(predicted, labels),
        confidence=histogram_baseline(probabilities.max(axis=1)),
        embedding=embedding,
    )


class CaptureFields(TypedDict):
    capture_below: float
    capture_quantile: float


def capture_fields(
    probabilities: npt.NDArray[np.float32], quantile: float = CAPTURE_QUANTILE
) -> CaptureFields:
    """The spec's ``capture_below`` (and the quantile it is) from held-out probabilities."""
    return {
        "capture_below": capture_threshold(probabilities, quantile),
        "capture_quantile": quantile,
    }


def build_spec(
    name: str,
    labels: list[str],
    preprocessing: ImagePreprocessing,
    embedding_dim: int,
    drift: DriftBaseline,
    *,
    data_version: str | None = None,
    git_commit: str | None = None,
    capture_below: float | None = None,
    capture_quantile: float | None = None,
    presence: PresenceRule | None = None,
) -> ModelSpec:
    size = [None, preprocessing.height, preprocessing.width, 3]
    return ModelSpec(
        name=name,
        task="image_classification",
        labels=labels,
        inputs=[TensorSpec(name=INPUT_NAME, dtype="float32", shape=size)],
        outputs=[
            TensorSpec(name=PROBABILITIES, dtype="float32", shape=[None, len(labels)]),
            TensorSpec(name=EMBEDDING, dtype="float32", shape=[None, embedding_dim]),
        ],
        probabilities_output=PROBABILITIES,
        embedding_output=EMBEDDING,
        preprocessing=preprocessing,
        drift=drift,
        capture_below=capture_below,
        capture_quantile=capture_quantile,
        presence=presence,
        data_version=data_version,
        latency_budget_ms=LATENCY_BUDGET_MS,
        git_commit=git_commit,
    )
