"""The device's drift monitor: the detectors a model's baselines allow, behind one call."""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter, deque
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from edge_agent.drift.accuracy import (
    AccuracyDetector,
    ErrorRateDetector,
    ForecastJoin,
    Outcome,
    labelled_accuracy,
)
from edge_agent.drift.alerts import AlertGate, DriftVerdict, Evaluation, rank
from edge_agent.drift.capture import CaptureStore
from edge_agent.drift.config import DriftConfig
from edge_agent.drift.detectors import (
    ClassRatioDetector,
    Detector,
    DetectorSnapshot,
    EmbeddingDetector,
    FeatureDriftDetector,
)
from edge_agent.drift.inputs import PredictionLike, SampleLike
from edge_agent.protocol.bundle import (
    FeatureBaseline,
    HistogramBaseline,
    ModelSpec,
    SeasonalFeature,
    SeasonalHistogram,
)
from edge_agent.protocol.messages import LabelledAccuracy

log = logging.getLogger(__name__)


class DriftSnapshot(BaseModel):
    """Current scores against thresholds per detector: the body of the local ``/drift``."""

    model_config = ConfigDict(frozen=True)

    model_name: str
    model_version: int
    samples: int
    raised: list[str]
    detectors: list[DetectorSnapshot]
    counters: dict[str, int]
    absent_label: str | None = None
    absent_rate: float | None = None
    absent_n: int = 0


def subject_ratio(ratio: Mapping[str, float], labels: Sequence[str]) -> dict[str, float]:
    """The class ratio over the subject labels only: a baseline measured with the absent
    label in it is renormalised, one measured on subjects alone is left as it is."""
    kept = {label: float(ratio.get(label, 0.0)) for label in labels}
    total = sum(kept.values())
    return {k: v / total for k, v in kept.items()} if total > 0 else kept


class DriftMonitor:
    """Feeds every sample and prediction to the detectors and reports state changes.

    Frames answered with the model's absent label (a camera's no_pet) feed no detector:
    an empty scene would look like drift of the subject's images, confidence and class
    ratio. Their share of the last ``prediction_window.size`` frames is its own figure,
    ``absent_rate``.

    ``observe`` runs on the inference thread and ``snapshot`` on the API's; a lock keeps
    them apart. One monitor serves one model version: build a new one after a swap.
    """

    def __init__(
        self,
        detectors: Sequence[Detector],
        config: DriftConfig,
        model_name: str,
        model_version: int,
        join: ForecastJoin | None = None,
        capture: CaptureStore | None = None,
        capture_below: float | None = None,
        absent_label: str | None = None,
    ) -> None:
        self.detectors = list(detectors)
        self.absent_label = absent_label
        self._absent: deque[bool] = deque(maxlen=config.prediction_window.size)
        self._absent_count = 0
        self.config = config
        self.model_name = model_name
        self.model_version = model_version
        self.join = join
        self.capture = capture
        # The model's own low-confidence level (spec.capture_below); the config may override.
        self.capture_below = capture_below
        self.gates = {
            d.name: AlertGate(
                d.name, 1 if isinstance(d, ErrorRateDetector) else config.confirm, config.cooldown_s
            )
            for d in self.detectors
        }
        self.samples = 0
        self.counters: Counter[str] = Counter()
        # The last ``accuracy_window`` joined forecasts, for telemetry (whichever detectors run).
        self._labelled: deque[Outcome] = deque(maxlen=config.accuracy_window)
        self._lock = threading.Lock()

    @classmethod
    def from_spec(
        cls,
        spec: ModelSpec,
        config: DriftConfig,
        *,
        model_version: int = 0,
        capture: CaptureStore | None = None,
    ) -> DriftMonitor:
        """Detectors for whatever baselines the spec carries and the config enables."""
        wanted = set(config.detectors) if config.enabled else set()
        base = spec.drift
        seasonal = base.seasonal if config.seasonal else None
        detectors: list[Detector] = []
        available: Sequence[FeatureBaseline] | Sequence[SeasonalFeature] = base.features
        seasonal_features = seasonal is not None and bool(seasonal.features)
        if seasonal is not None and seasonal.features:
            available = seasonal.features
        if "features" in wanted and available:
            chosen = available
            if config.features is not None:
                known = {f.name for f in available}
                missing = sorted(set(config.features) - known)
                if missing:
                    log.warning("drift: model %s has no baseline for %s", spec.name, missing)
                chosen = [f for f in available if f.name in set(config.features)]  # type: ignore[assignment]
            if chosen:
                detectors.append(
                    FeatureDriftDetector(
                        chosen,
                        [f.name for f in chosen],
                        config.feature_metric,
                        config.thresholds.seasonal_wasserstein
                        if seasonal_features and config.feature_metric == "wasserstein"
                        else getattr(config.thresholds, config.feature_metric),
                        config.image_window
                        if spec.task == "image_classification"
                        else config.feature_window,
                    )
                )
        if "class_ratio" in wanted and base.class_ratio:
            subjects = spec.present_labels()
            detectors.append(
                ClassRatioDetector(
                    subjects,
                    subject_ratio(base.class_ratio, subjects)
                    if spec.presence is not None
                    else base.class_ratio,
                    config.thresholds.class_ratio,
                    config.prediction_window,
                    config.class_ratio_min_share,
                    config.class_ratio_min_z,
                    seasonal.class_ratio if seasonal is not None else None,
                    seasonal.class_ratio_inflation if seasonal is not None else 1.0,
                )
            )
        confidence: HistogramBaseline | SeasonalHistogram | None = base.confidence
        confidence_levels = config.thresholds.confidence
        if seasonal is not None and seasonal.confidence is not None:
            confidence = seasonal.confidence
            confidence_levels = config.thresholds.seasonal_confidence
        if "confidence" in wanted and confidence is not None:
            detectors.append(
                FeatureDriftDetector(
                    [confidence],  # type: ignore[arg-type]
                    ["confidence"],
                    "psi",
                    confidence_levels,
                    config.prediction_window,
                    name="confidence",
                    source="confidence",
                )
            )
        if "embedding" in wanted and base.embedding is not None and spec.embedding_output:
            detectors.append(
                EmbeddingDetector(
                    base.embedding, config.thresholds.embedding, config.prediction_window
                )
            )
        join = None
        if {"accuracy", "errors"} & wanted and spec.horizon_s:
            join = ForecastJoin(
                spec.labels,
                spec.horizon_s,
                config.join_tolerance_s,
                config.max_pending_forecasts,
                spec.positive_label,
            )
            if "accuracy" in wanted:
                detectors.append(
                    AccuracyDetector(
                        join,
                        config.thresholds.accuracy,
                        config.thresholds.f1,
                        config.accuracy_window,
                        config.accuracy_min_samples,
                        config.prediction_window.step,
                    )
                )
            if "errors" in wanted:
                expected = seasonal.error_rate if seasonal is not None else None
                detectors.append(ErrorRateDetector(join, config.streaming, expected or None))
        log.info(
            "drift monitor for %s v%s: %s",
            spec.name,
            model_version,
            ", ".join(d.name for d in detectors) or "no detectors",
        )
        if capture is not None:
            log.info(
                "capture for %s v%s: confidence below %.4f (%s)",
                spec.name,
                model_version,
                config.capture.low_confidence_level(spec.capture_below),
                "config"
                if config.capture.low_confidence_below is not None
                else "model spec"
                if spec.capture_below is not None
                else "fallback",
            )
        absent = spec.presence.absent_label if spec.presence is not None else None
        return cls(
            detectors,
            config,
            spec.name,
            model_version,
            join,
            capture,
            spec.capture_below,
            absent,
        )

    def observe(self, sample: SampleLike, prediction: PredictionLike) -> list[DriftVerdict]:
        """Feed one sample; the alerts (raised or cleared) it caused, usually none."""
        with self._lock:
            self.samples += 1
            absent = self.absent_label is not None and self._count_absent(prediction.label)
            verdicts = [] if absent else self._feed(sample, prediction)
            raised = [name for name, gate in self.gates.items() if gate.raised]
        self._consider_capture(sample, prediction, raised)
        return verdicts

    def _feed(self, sample: SampleLike, prediction: PredictionLike) -> list[DriftVerdict]:
        verdicts: list[DriftVerdict] = []
        if self.join is not None:
            try:
                self.join.update(sample, prediction)
            except ValueError as e:
                self.counters["rejected_samples"] += 1
                log.warning("drift: sample %s not joined: %s", sample.input_id, e)
            else:
                self._labelled.extend(self.join.joined)
        for detector in self.detectors:
            try:
                evaluation = detector.update(sample, prediction)
            except ValueError as e:
                self.counters[f"{detector.name}_rejected"] += 1
                log.warning("drift: %s rejected sample %s: %s", detector.name, sample.input_id, e)
                continue
            if evaluation is None:
                continue
            detector.last = evaluation
            state = self.gates[detector.name].step(evaluation, sample.ts)
            if state is not None:
                verdicts.append(self._verdict(detector.name, state, evaluation))
        return verdicts

    def _count_absent(self, label: str) -> bool:
        """Slide the absent-share window by one frame; True when this frame is absent."""
        absent = label == self.absent_label
        window = self._absent
        if len(window) == window.maxlen and window[0]:
            self._absent_count -= 1
        window.append(absent)
        self._absent_count += absent
        if absent:
            self.counters["absent_frames"] += 1
        return absent

    def absent_rate(self) -> float | None:
        """Share of the recent frames answered with the absent label; None for a model
        without one, or before the first frame."""
        with self._lock:
            if self.absent_label is None or not self._absent:
                return None
            return self._absent_count / len(self._absent)

    def _consider_capture(
        self, sample: SampleLike, prediction: PredictionLike, raised: list[str]
    ) -> None:
        if self.capture is not None:
            self.capture.consider(
                sample,
                prediction,
                raised,
                self.model_name,
                self.model_version,
                self.capture_below,
            )

    def _verdict(self, detector: str, state: str, evaluation: Evaluation) -> DriftVerdict:
        features = evaluation.offending if state == "raised" else []
        features = features or rank(evaluation.scores)
        return DriftVerdict(
            detector=detector,
            state="raised" if state == "raised" else "cleared",
            severity=evaluation.severity if state == "raised" else "info",
            model_name=self.model_name,
            model_version=self.model_version,
            window=evaluation.window,
            features=features,
            summary=evaluation.summary,
        )

    def labelled(self) -> LabelledAccuracy | None:
        """Accuracy and macro-F1 over the last ``accuracy_window`` forecasts whose observation
        arrived; None before the first one (or for a model that does not forecast)."""
        if self.join is None:
            return None
        with self._lock:
            return labelled_accuracy(list(self._labelled), len(self.join.labels))

    @property
    def raised(self) -> list[str]:
        with self._lock:
            return [name for name, gate in self.gates.items() if gate.raised]

    def snapshot(self) -> DriftSnapshot:
        """Scores of each detector's latest test and whether it is raised."""
        with self._lock:
            items = []
            for d in self.detectors:
                last = d.last
                detail = {k: v for k, v in d.detail().items() if math.isfinite(v)}
                items.append(
                    DetectorSnapshot(
                        detector=d.name,
                        raised=self.gates[d.name].raised,
                        window=last.window if last else None,
                        scores=last.scores if last else [],
                        detail=detail,
                    )
                )
            counters = dict(self.counters)
            if self.capture is not None:
                counters.update({f"capture_{k}": v for k, v in self.capture.counters.items()})
            return DriftSnapshot(
                model_name=self.model_name,
                model_version=self.model_version,
                samples=self.samples,
                raised=[name for name, gate in self.gates.items() if gate.raised],
                detectors=items,
                counters=counters,
                absent_label=self.absent_label,
                absent_rate=self._absent_count / len(self._absent) if self._absent else None,
                absent_n=len(self._absent),
            )
