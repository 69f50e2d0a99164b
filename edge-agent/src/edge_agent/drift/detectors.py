"""Window detectors: input features or image statistics, predicted-class ratio, confidence
and embeddings, each tested against the training-time baseline in the model spec."""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from edge_agent.drift.alerts import Evaluation, Severity, rank
from edge_agent.drift.config import FeatureMetric, Hysteresis, WindowConfig
from edge_agent.drift.inputs import PredictionLike, SampleLike
from edge_agent.drift.metrics import HistogramSet, relative_shift
from edge_agent.drift.seasons import SeasonalHistograms, blend_shares, month_weights
from edge_agent.drift.windows import HistogramWindow, MeanWindow
from edge_agent.protocol.bundle import (
    MONTHS,
    EmbeddingBaseline,
    HistogramBaseline,
    SeasonalHistogram,
)
from edge_agent.protocol.messages import DriftWindow, FeatureDrift


class DetectorSnapshot(BaseModel):
    """Where one detector stands now, for the local ``/drift`` API."""

    model_config = ConfigDict(frozen=True)

    detector: str
    raised: bool
    window: DriftWindow | None
    scores: list[FeatureDrift]
    detail: dict[str, float] = {}


class Detector(abc.ABC):
    """Consumes one sample and prediction at a time; now and then tests its window."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.last: Evaluation | None = None

    @abc.abstractmethod
    def update(self, sample: SampleLike, prediction: PredictionLike) -> Evaluation | None:
        """Take one sample; an evaluation when the window was tested, else None."""

    def detail(self) -> dict[str, float]:
        return {}


def judge(
    scores: list[FeatureDrift], levels: Hysteresis, window: DriftWindow, what: str
) -> Evaluation:
    """Place higher-is-worse scores against raise/clear levels and word the finding."""
    ranked = rank(scores)
    offending = [s for s in ranked if s.score >= levels.raise_at]
    under = all(s.score <= levels.clear_at for s in scores)
    severity: Severity = "warning"
    if ranked and ranked[0].score >= 2 * levels.raise_at:
        severity = "critical"
    return Evaluation.of(
        scores,
        bool(offending),
        under,
        window,
        offending,
        describe(what, window, offending or ranked),
        severity,
    )


def describe(what: str, window: DriftWindow, shown: list[FeatureDrift]) -> str:
    parts = [f"{s.name} {s.metric} {s.score:.3g} (raise {s.threshold:.3g})" for s in shown[:5]]
    return f"{what} over {window.n} samples: " + "; ".join(parts)


class FeatureDriftDetector(Detector):
    """Per-feature distance between the window and the baseline histograms.

    Reads ``prediction.input_stats`` (image statistics for a camera, the feature row for a
    tabular model) and falls back to ``sample.features``; a missing or NaN value only
    leaves that feature's histogram short of one sample. With seasonal baselines each test
    compares the window with the blend of the months its samples fall in.
    """

    def __init__(
        self,
        baselines: Sequence[HistogramBaseline] | Sequence[SeasonalHistogram],
        names: Sequence[str],
        metric: FeatureMetric,
        levels: Hysteresis,
        window: WindowConfig,
        name: str = "features",
        source: Literal["inputs", "confidence"] = "inputs",
    ) -> None:
        super().__init__(name)
        if len(baselines) != len(names) or not names:
            raise ValueError("need one baseline per feature name, and at least one")
        self.names = list(names)
        self.baselines: list[HistogramBaseline | SeasonalHistogram] = list(baselines)
        self.metric = metric
        self.levels = levels
        self.min_samples = window.min_samples
        self.source = source
        self.window = HistogramWindow(window, [b.edges for b in self.baselines])
        self.seasonal: SeasonalHistograms | None = None
        seasonal = [b for b in self.baselines if isinstance(b, SeasonalHistogram)]
        if seasonal:
            if len(seasonal) != len(self.baselines):
                raise ValueError("baselines must be all seasonal or all whole-period")
            self.seasonal = SeasonalHistograms(seasonal)
            probs, means, stds = self.seasonal.blend(np.ones(MONTHS))
            self._means = means
            self.histograms = HistogramSet(
                [b.edges for b in self.baselines],
                [list(p[: len(b.edges) - 1]) for p, b in zip(probs, seasonal, strict=True)],
                list(stds),
            )
        else:
            whole = [b for b in self.baselines if isinstance(b, HistogramBaseline)]
            self._means = np.array([b.mean for b in whole])
            self.histograms = HistogramSet(
                [b.edges for b in whole], [b.probs for b in whole], [b.std for b in whole]
            )
        self._values = np.full(len(self.names), np.nan)

    def _read(self, sample: SampleLike, prediction: PredictionLike) -> bool:
        if self.source == "confidence":
            self._values[0] = prediction.confidence
            return math.isfinite(prediction.confidence)
        stats: Mapping[str, float] | None = prediction.input_stats or sample.features
        if not stats:
            return False
        for i, name in enumerate(self.names):
            self._values[i] = stats.get(name, math.nan)
        return bool(np.isfinite(self._values).any())

    def update(self, sample: SampleLike, prediction: PredictionLike) -> Evaluation | None:
        if not self._read(sample, prediction):
            return None
        if self.source == "confidence":
            self.window.add_scalar(sample.ts, float(self._values[0]))
        else:
            self.window.add(sample.ts, self._values)
        if not self.window.due():
            return None
        evaluation = self.evaluate()
        self.window.tested()
        return evaluation

    def evaluate(self) -> Evaluation | None:
        counts = self.window.count_matrix()
        seen = counts.sum(axis=1) >= self.min_samples
        if not seen.any():
            return None
        probs = scales = None
        baseline_means = self._means
        if self.seasonal is not None:
            probs, baseline_means, scales = self.seasonal.blend(month_weights(self.window.epochs()))
        if self.metric == "psi":
            values = self.histograms.psi(counts, probs)
        elif self.metric == "js":
            values = self.histograms.jensen_shannon(counts, probs)
        else:
            values = self.histograms.wasserstein(counts, probs, scales)
        judged = values[seen]
        over = bool((judged >= self.levels.raise_at).any())
        under = bool((judged <= self.levels.clear_at).all())
        critical = bool((judged >= 2 * self.levels.raise_at).any())
        window = self.window.describe()
        means = self.window.means() if over or under else None

        def details() -> tuple[list[FeatureDrift], list[FeatureDrift], str, DriftWindow]:
            avg = means if means is not None else self.window.means()
            scores = [
                FeatureDrift(
                    name=name,
                    metric=self.metric,
                    score=float(values[i]),
                    threshold=self.levels.raise_at,
                    baseline=float(baseline_means[i]),
                    current=float(avg[i]) if math.isfinite(avg[i]) else None,
                )
                for i, name in enumerate(self.names)
                if seen[i]
            ]
            ranked = rank(scores)
            offending = [s for s in ranked if s.score >= self.levels.raise_at]
            what = "confidence histogram" if self.source == "confidence" else "input drift"
            return scores, offending, describe(what, window, offending or ranked), window

        return Evaluation(over, under, details, "critical" if critical else "warning")


class ClassRatioDetector(Detector):
    """Share of each predicted label in the window against its share on validation.

    With per-month ratios (``seasonal``) the expected share is the blend of the months the
    window covers, and ``inflation`` widens the binomial standard error by how much more
    a week's share varies when its hours come in spells of alike weather.
    """

    def __init__(
        self,
        labels: Sequence[str],
        ratio: Mapping[str, float],
        levels: Hysteresis,
        window: WindowConfig,
        min_share: float,
        min_z: float = 0.0,
        seasonal: Sequence[Mapping[str, float]] | None = None,
        inflation: float = 1.0,
    ) -> None:
        super().__init__("class_ratio")
        self.min_z = min_z
        self.labels = list(labels)
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.seasonal = list(seasonal) if seasonal else None
        self.inflation = max(inflation, 1.0)
        if self.seasonal is not None:
            ratio = blend_shares(self.seasonal, np.ones(MONTHS), self.labels)
        self.ratio = {label: float(ratio.get(label, 0.0)) for label in self.labels}
        self.watched = [label for label in self.labels if self.ratio[label] >= max(min_share, 1e-9)]
        if not self.watched:
            raise ValueError("no label is common enough on validation to watch its ratio")
        self.levels = levels
        edges = [i - 0.5 for i in range(len(self.labels) + 1)]
        self.window = HistogramWindow(window, [edges])
        self.unknown_labels = 0

    def update(self, sample: SampleLike, prediction: PredictionLike) -> Evaluation | None:
        i = self.index.get(prediction.label)
        if i is None:
            self.unknown_labels += 1
            return None
        self.window.add_scalar(sample.ts, float(i))
        if not self.window.due():
            return None
        counts = self.window.counts(0)
        n = float(counts.sum())
        expected = self.ratio
        if self.seasonal is not None:
            weights = month_weights(self.window.epochs())
            expected = blend_shares(self.seasonal, weights, self.labels)
        scores, significant = [], []
        for label in self.watched:
            base = max(expected[label], 1e-6)
            share = float(counts[self.index[label]]) / n
            error = math.sqrt(self.inflation * max(base * (1 - base), 1e-12) / n)
            significant.append(abs(share - base) / error)
            scores.append(
                FeatureDrift(
                    name=label,
                    metric="ratio",
                    score=relative_shift(share, base),
                    threshold=self.levels.raise_at,
                    baseline=base,
                    current=share,
                )
            )
        window = self.window.describe()
        self.window.tested()
        offending = rank(
            [
                s
                for s, z in zip(scores, significant, strict=True)
                if s.score >= self.levels.raise_at and z >= self.min_z
            ]
        )
        under = all(
            s.score <= self.levels.clear_at or z < self.min_z / 2
            for s, z in zip(scores, significant, strict=True)
        )
        summary = describe("predicted-class ratio", window, offending or rank(scores))
        return Evaluation.of(scores, bool(offending), under, window, offending, summary)

    def detail(self) -> dict[str, float]:
        return {"unknown_labels": float(self.unknown_labels)}


class EmbeddingDetector(Detector):
    """Shift of the window's mean embedding from validation, in validation std units.

    Reported as the root mean square over dimensions of (mean_window - mean_val) / std_val.
    Per dimension this is the 1-D Wasserstein distance between the two distributions when
    drift moves their location, hence the ``wasserstein`` metric on the wire.
    """

    def __init__(self, baseline: EmbeddingBaseline, levels: Hysteresis, window: WindowConfig):
        super().__init__("embedding")
        self.levels = levels
        self.mean = np.asarray(baseline.mean, dtype=np.float64)
        std = np.asarray(baseline.std, dtype=np.float64)
        if std.shape != self.mean.shape:
            raise ValueError("embedding baseline mean and std differ in length")
        # A dimension that never varied on validation must not divide by zero.
        self.std = np.where(std > 1e-12, std, 1.0)
        self.window = MeanWindow(window, self.mean.size)
        self.rejected = 0

    def update(self, sample: SampleLike, prediction: PredictionLike) -> Evaluation | None:
        emb = prediction.embedding
        if emb is None:
            return None
        vector = np.asarray(emb, dtype=np.float64).reshape(-1)
        if vector.size != self.mean.size or not np.all(np.isfinite(vector)):
            self.rejected += 1
            return None
        self.window.add(sample.ts, vector)
        if not self.window.due():
            return None
        z = (self.window.mean() - self.mean) / self.std
        shift = float(np.sqrt(np.mean(z * z)))
        score = FeatureDrift(
            name="embedding_mean",
            metric="wasserstein",
            score=shift,
            threshold=self.levels.raise_at,
            baseline=0.0,
            current=shift,
        )
        evaluation = judge([score], self.levels, self.window.describe(), "embedding shift")
        self.window.tested()
        return evaluation

    def detail(self) -> dict[str, float]:
        return {"rejected": float(self.rejected)}


def window_bounds(ts: datetime, n: int) -> DriftWindow:
    """A one-point window, for detectors that judge a stream rather than a window."""
    return DriftWindow(start=ts, end=ts, n=n)
