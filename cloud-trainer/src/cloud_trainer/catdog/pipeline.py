"""The cat/dog training job: ingest → split → train → export fp32 + int8 → evaluate → register."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cloud_trainer.catdog.evaluate import (
    Evaluation,
    OnnxClassifier,
    Predictions,
    evaluate_model,
    predict,
    subset,
)
from cloud_trainer.catdog.evaluate import score as score_predictions
from cloud_trainer.catdog.ingest import DataReport, scan_folder
from cloud_trainer.catdog.model_spec import (
    INPUT_NAME,
    build_spec,
    capture_fields,
    image_stat_baselines,
    prediction_baseline,
)
from cloud_trainer.catdog.plots import confusion_png, worst_errors_png
from cloud_trainer.catdog.split import Split, SplitSettings, split_records
from cloud_trainer.catdog.train import TrainedModel, TrainSettings, pixel_arrays, train_model
from cloud_trainer.export import export_keras
from cloud_trainer.export.quantize import (
    DEFAULT_MAX_DROP,
    check_accuracy_drop,
    quantize_int8,
    write_metadata,
)
from cloud_trainer.registry import git_commit
from edge_agent.protocol.bundle import ModelSpec
from edge_agent.protocol.messages import utc_now

log = logging.getLogger(__name__)

STEPS = ("ingest", "train", "baselines", "export fp32", "quantise int8", "evaluate", "register")
PARITY_TOLERANCE = 1e-3
Progress = Callable[[str, int, int], None]


class PipelineSettings(BaseModel):
    """One run of ``cloud-trainer catdog train``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: Path
    work_dir: Path
    model_name: str = "catdog"
    train: TrainSettings = Field(default_factory=TrainSettings)
    split: SplitSettings = Field(default_factory=SplitSettings)
    calibration_images: int = Field(default=200, ge=1)
    max_int8_drop: float = Field(default=DEFAULT_MAX_DROP, ge=0)
    min_balanced_accuracy: float = Field(default=0.80, ge=0, le=1)
    store: str | None = None
    register_model: bool = True
    experiment: str = "catdog"


class VariantResult(BaseModel):
    """One exported file and how it scored on the test split (and on unseen groups alone)."""

    model_config = ConfigDict(extra="forbid")

    path: str
    sha256: str
    size_bytes: int
    test: Evaluation
    unseen_groups: Evaluation | None = None
    registered: str | None = None
    promoted: bool | None = None
    gate_reasons: list[str] = Field(default_factory=list)


class TrainReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_name: str
    arch: str
    size: int
    data: DataReport
    split_version: str
    n_train: int
    n_val: int
    n_test: int
    unseen_groups: list[str]
    training: dict[str, float]
    parity_max_abs_diff: float
    fp32: VariantResult
    int8: VariantResult
    int8_check: dict[str, Any]
    artefacts: dict[str, str]


@dataclass
class _Stage:
    progress: Progress | None

    def __call__(self, step: str, i: int = 0, n: int = 0) -> None:
        if self.progress is not None:
            self.progress(step, i, n)


def _keras_outputs(trained: TrainedModel, split: Split) -> tuple[Any, Any]:
    x = pixel_arrays(split.val, trained.preprocessing).astype(np.float32)
    probs, embs = trained.model.predict(x, batch_size=32, verbose=0)
    return np.asarray(probs, np.float32), np.asarray(embs, np.float32)


def _int8_spec(
    spec: ModelSpec, int8: OnnxClassifier, split: Split, settings: PipelineSettings
) -> ModelSpec:
    """The int8 file's own spec: same contract, baselines and capture level from its own
    validation outputs."""
    predictions = predict(int8, split.val)
    drift = prediction_baseline(
        predictions.probabilities, predictions.embeddings, spec.labels, spec.drift.features
    )
    update = {
        **spec.model_dump(),
        "name": f"{settings.model_name}-int8",
        "drift": drift.model_dump(),
        **capture_fields(predictions.probabilities),
    }
    return ModelSpec.model_validate(update)


def _variant(path: Path, model: OnnxClassifier, split: Split) -> tuple[VariantResult, Predictions]:
    from cloud_trainer.export import file_digest

    evaluation, predictions = evaluate_model(model, split.test)
    unseen = set(split.unseen_groups)
    held = subset(predictions, lambda r: r.group in unseen)
    unseen_eval = score_predictions(held, model.spec.labels) if held is not None else None
    sha256, size = file_digest(path)
    return (
        VariantResult(
            path=str(path),
            sha256=sha256,
            size_bytes=size,
            test=evaluation,
            unseen_groups=unseen_eval,
        ),
        predictions,
    )


def run_pipeline(settings: PipelineSettings, progress: Progress | None = None) -> TrainReport:
    """Everything short of a release: the registered versions carry their gate decisions."""
    stage = _Stage(progress)
    work = settings.work_dir
    work.mkdir(parents=True, exist_ok=True)

    stage("ingest")
    records, data_report = scan_folder(settings.data, lambda i, n: stage("ingest", i, n))
    split = split_records(records, settings.split)
    (work / "data_report.json").write_text(data_report.model_dump_json(indent=1))
    split.write(work / "split.json")
    labels = data_report.labels

    stage("train")
    trained = train_model(split, labels, settings.train, progress)

    stage("baselines")
    features = image_stat_baselines(split.train, lambda i, n: stage("baselines", i, n))
    val_probs, val_embs = _keras_outputs(trained, split)
    commit = git_commit()
    spec = build_spec(
        settings.model_name,
        labels,
        trained.preprocessing,
        int(val_embs.shape[1]),
        prediction_baseline(val_probs, val_embs, labels, features),
        data_version=split.version,
        git_commit=commit,
        **capture_fields(val_probs),
    ).model_copy(update={"created": utc_now()})

    stage("export fp32")
    fp32_path = work / f"{settings.model_name}-fp32.onnx"
    parity_x = pixel_arrays(split.val[:8], trained.preprocessing).astype(np.float32)
    exported = export_keras(
        trained.model, spec, fp32_path, {INPUT_NAME: parity_x}, tolerance=PARITY_TOLERANCE
    )

    stage("quantise int8")
    rng = np.random.default_rng(settings.train.seed)
    pick = rng.permutation(len(split.train))[: settings.calibration_images]
    calibration = pixel_arrays([split.train[i] for i in pick], trained.preprocessing)
    int8_path = work / f"{settings.model_name}-int8.onnx"
    quantize_int8(fp32_path, int8_path, calibration.astype(np.float32))
    int8_model = OnnxClassifier.load(int8_path)
    write_metadata(int8_path, _int8_spec(spec, int8_model, split, settings).to_metadata())

    stage("evaluate")
    fp32_model = OnnxClassifier.load(fp32_path)
    int8_model = OnnxClassifier.load(int8_path)
    fp32_result, fp32_pred = _variant(fp32_path, fp32_model, split)
    int8_result, int8_pred = _variant(int8_path, int8_model, split)
    check = check_accuracy_drop(
        "balanced_accuracy",
        fp32_result.test.balanced_accuracy,
        int8_result.test.balanced_accuracy,
        settings.max_int8_drop,
    )
    flipped = int((fp32_pred.y_pred != int8_pred.y_pred).sum())
    int8_check = {**check.as_dict(), "flipped_vs_fp32": flipped, "n_compared": len(split.test)}
    artefacts = {
        "confusion_fp32": str(confusion_png(fp32_result.test, work / "confusion_fp32.png")),
        "confusion_int8": str(confusion_png(int8_result.test, work / "confusion_int8.png")),
        "worst_errors": str(worst_errors_png(fp32_pred, labels, work / "worst_errors.png")[0]),
        "data_report": str(work / "data_report.json"),
        "split": str(work / "split.json"),
    }
    report = TrainReport(
        model_name=settings.model_name,
        arch=settings.train.arch,
        size=settings.train.size,
        data=data_report,
        split_version=split.version,
        n_train=len(split.train),
        n_val=len(split.val),
        n_test=len(split.test),
        unseen_groups=split.unseen_groups,
        training=trained.metrics,
        parity_max_abs_diff=exported.max_abs_diff,
        fp32=fp32_result,
        int8=int8_result,
        int8_check=int8_check,
        artefacts=artefacts,
    )
    if settings.register_model:
        stage("register")
        from cloud_trainer.catdog.registration import register_report

        register_report(report, settings, split, exported.max_abs_diff, check)
    (work / "report.json").write_text(report.model_dump_json(indent=1))
    log.info("catdog report written to %s", work / "report.json")
    return report


def report_summary(report: TrainReport) -> dict[str, Any]:
    """The figures a person reads first, fp32 and int8 side by side."""

    def row(v: VariantResult) -> dict[str, Any]:
        return {
            "balanced_accuracy": v.test.balanced_accuracy,
            "unseen_groups_balanced_accuracy": (
                v.unseen_groups.balanced_accuracy if v.unseen_groups else None
            ),
            "macro_f1": v.test.macro_f1,
            "roc_auc": v.test.roc_auc,
            "ms_per_image": v.test.ms_per_image,
            "size_mb": v.size_bytes / 1e6,
            "registered": v.registered,
            "promoted": v.promoted,
        }

    return {
        "fp32": row(report.fp32),
        "int8": row(report.int8),
        "int8_check": report.int8_check,
        "n_test": report.n_test,
        "data_version": report.split_version,
    }
