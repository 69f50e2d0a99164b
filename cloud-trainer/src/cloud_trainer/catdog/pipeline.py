"""The cat/dog training job: ingest → split → train → export fp32 + int8 → evaluate → register."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from cloud_trainer.catdog.evaluate import (
    Evaluation,
    OnnxClassifier,
    Predictions,
    decisions,
    evaluate_model,
    predict,
    subset,
)
from cloud_trainer.catdog.evaluate import score as score_predictions
from cloud_trainer.catdog.features import frame_input
from cloud_trainer.catdog.ingest import NO_PET, DataReport, ImageRecord, read_image, scan_folder
from cloud_trainer.catdog.model_spec import (
    INPUT_NAME,
    build_spec,
    capture_fields,
    image_stat_baselines,
    prediction_baseline,
)
from cloud_trainer.catdog.plots import confusion_png, worst_errors_png
from cloud_trainer.catdog.presence import (
    BASELINE_MASS,
    METHOD,
    STAMP_VIEWS,
    grayscale,
    load_stamps,
    pet_mass,
    softmax,
    view_of,
)
from cloud_trainer.catdog.split import Split, SplitSettings, split_records
from cloud_trainer.catdog.train import TrainedModel, TrainSettings, pixel_arrays, train_model
from cloud_trainer.export import export_keras
from cloud_trainer.export.quantize import (
    DEFAULT_MAX_DROP,
    DEFAULT_MAX_FLIP_RATE,
    check_accuracy_drop,
    check_flips,
    quantize_int8,
    write_metadata,
)
from cloud_trainer.registry import git_commit
from edge_agent.protocol.bundle import ModelSpec, PresenceRule
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
    negatives: Path | None = Field(
        default=None,
        description="A folder of frames without a pet, added to ``data/none/`` if any.",
    )
    calibration_images: int = Field(default=200, ge=1)
    max_int8_drop: float = Field(
        default=DEFAULT_MAX_DROP, ge=0, description="Reported; the int8 check is on flips."
    )
    max_int8_flip_rate: float = Field(
        default=DEFAULT_MAX_FLIP_RATE,
        gt=0,
        lt=1,
        description="int8 passes when the 95 % upper bound of the share of test frames "
        "whose answer differs from fp32's is at most this.",
    )
    min_balanced_accuracy: float = Field(default=0.80, ge=0, le=1)
    min_pet_recall: float = Field(default=0.95, ge=0, le=1)
    min_no_pet_recall: float = Field(default=0.95, ge=0, le=1)
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
    presence: dict[str, Any] | None = None
    artefacts: dict[str, str]


@dataclass
class _Stage:
    progress: Progress | None

    def __call__(self, step: str, i: int = 0, n: int = 0) -> None:
        if self.progress is not None:
            self.progress(step, i, n)


def _keras_outputs(trained: TrainedModel, records: list[ImageRecord]) -> tuple[Any, Any]:
    x = pixel_arrays(records, trained.preprocessing).astype(np.float32)
    probs, embs = trained.model.predict(x, batch_size=32, verbose=0)
    return np.asarray(probs, np.float32), np.asarray(embs, np.float32)


def _pets(records: list[ImageRecord]) -> list[ImageRecord]:
    return [r for r in records if r.label != NO_PET]


def _pet_view(
    probabilities: npt.NDArray[np.float32], labels: list[str]
) -> tuple[npt.NDArray[np.float32], list[str]]:
    """Probabilities over the pet labels alone (renormalised) and those labels: the drift
    baselines describe pet frames, which is what the device compares them with."""
    if NO_PET not in labels:
        return probabilities, labels
    keep = [i for i, label in enumerate(labels) if label != NO_PET]
    pets = probabilities[:, keep]
    pets = pets / np.clip(pets.sum(axis=1, keepdims=True), 1e-12, None)
    return np.asarray(pets, np.float32), [labels[i] for i in keep]


def _int8_spec(
    spec: ModelSpec, int8: OnnxClassifier, split: Split, settings: PipelineSettings
) -> ModelSpec:
    """The int8 file's own spec: same contract, baselines and capture level from its own
    validation outputs."""
    predictions = predict(int8, _pets(split.val))
    probs, labels = _pet_view(predictions.probabilities, spec.labels)
    drift = prediction_baseline(probs, predictions.embeddings, labels, spec.drift.features)
    update = {
        **spec.model_dump(),
        "name": f"{settings.model_name}-int8",
        "drift": drift.model_dump(),
        **capture_fields(probs),
    }
    return ModelSpec.model_validate(update)


def _variant(path: Path, model: OnnxClassifier, split: Split) -> tuple[VariantResult, Predictions]:
    from cloud_trainer.export import file_digest

    evaluation, predictions = evaluate_model(model, split.test)
    unseen = set(split.unseen_groups)
    held = subset(predictions, lambda r: r.group in unseen)
    absent = model.spec.presence.absent_label if model.spec.presence is not None else None
    unseen_eval = (
        score_predictions(held, model.spec.labels, absent=absent) if held is not None else None
    )
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
    records, data_report = scan_folder(
        settings.data, lambda i, n: stage("ingest", i, n), negatives=settings.negatives
    )
    if settings.train.arch == "small-cnn" and any(r.label == NO_PET for r in records):
        log.warning(
            "small-cnn has no ImageNet classifier to decide no_pet: training on the pet "
            "photos only, without the %s frames without a pet",
            sum(r.label == NO_PET for r in records),
        )
        records = [r for r in records if r.label != NO_PET]
        data_report = data_report.model_copy(
            update={
                "labels": [label for label in data_report.labels if label != NO_PET],
                "per_class": {k: v for k, v in data_report.per_class.items() if k != NO_PET},
            }
        )
    split = split_records(records, settings.split)
    (work / "data_report.json").write_text(data_report.model_dump_json(indent=1))
    split.write(work / "split.json")
    labels = data_report.labels

    stage("train")
    trained = train_model(split, labels, settings.train, progress)

    stage("baselines")
    labels = trained.labels
    features = image_stat_baselines(_pets(split.train), lambda i, n: stage("baselines", i, n))
    val_probs, val_embs = _keras_outputs(trained, _pets(split.val))
    pet_probs, pet_labels = _pet_view(val_probs, labels)
    commit = git_commit()
    presence = None
    if trained.presence is not None:
        presence = PresenceRule(
            absent_label=NO_PET, absent_at=trained.presence.absent_at, method=METHOD
        )
    spec = build_spec(
        settings.model_name,
        labels,
        trained.preprocessing,
        int(val_embs.shape[1]),
        prediction_baseline(pet_probs, val_embs, pet_labels, features),
        data_version=split.version,
        git_commit=commit,
        presence=presence,
        **capture_fields(pet_probs),
    ).model_copy(update={"created": utc_now()})

    stage("export fp32")
    fp32_path = work / f"{settings.model_name}-fp32.onnx"
    parity_x = pixel_arrays(split.val[:8], trained.preprocessing).astype(np.float32)
    exported = export_keras(
        trained.model, spec, fp32_path, {INPUT_NAME: parity_x}, tolerance=PARITY_TOLERANCE
    )

    stage("quantise int8")
    rng = np.random.default_rng(settings.train.seed)
    # The same photos in the same order every run: sorted by content, then a seeded draw.
    # The small heads (cat/dog logits, presence score) stay in float: a few thousand
    # multiply-adds, and quantising them flipped one answer in five on the sample photos.
    ordered = sorted(split.train, key=lambda r: r.sha256)
    pick = sorted(rng.permutation(len(ordered))[: settings.calibration_images].tolist())
    calibration = pixel_arrays([ordered[i] for i in pick], trained.preprocessing)
    int8_path = work / f"{settings.model_name}-int8.onnx"
    quantize_int8(
        fp32_path,
        int8_path,
        calibration.astype(np.float32),
        exclude_nodes_containing=("/logits", "presence", "probabilities"),
    )
    int8_model = OnnxClassifier.load(int8_path)
    write_metadata(int8_path, _int8_spec(spec, int8_model, split, settings).to_metadata())

    stage("evaluate")
    fp32_model = OnnxClassifier.load(fp32_path)
    int8_model = OnnxClassifier.load(int8_path)
    fp32_result, fp32_pred = _variant(fp32_path, fp32_model, split)
    int8_result, int8_pred = _variant(int8_path, int8_model, split)
    drop = check_accuracy_drop(
        "balanced_accuracy",
        fp32_result.test.balanced_accuracy,
        int8_result.test.balanced_accuracy,
        settings.max_int8_drop,
    )
    flipped, compared = count_flips(fp32_model, int8_model, split)
    check = check_flips(flipped, compared, settings.max_int8_flip_rate)
    int8_check = {
        **check.as_dict(),
        "balanced_accuracy_drop": drop.as_dict(),
        "flipped_vs_fp32": flipped,
        "n_compared": compared,
        "flipped_on_test": int((fp32_pred.y_pred != int8_pred.y_pred).sum()),
    }
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
        presence=(
            presence_report(trained, split, fp32_model, fp32_result, int8_result)
            if trained.presence is not None
            else None
        ),
        artefacts=artefacts,
    )
    if settings.register_model:
        stage("register")
        from cloud_trainer.catdog.registration import register_report

        register_report(report, settings, split, exported.max_abs_diff, check)
    (work / "report.json").write_text(report.model_dump_json(indent=1))
    log.info("catdog report written to %s", work / "report.json")
    return report


def count_flips(fp32: OnnxClassifier, int8: OnnxClassifier, split: Split) -> tuple[int, int]:
    """(answers that differ, frames compared) between the two files on every photo of the
    split, in colour and in grayscale: agreement is a property of the two files, not of
    held-out data, and a few hundred frames bound its rate far tighter than a test split."""
    records = sorted(split.train + split.val + split.test, key=lambda r: r.sha256)
    flips = compared = 0
    for start in range(0, len(records), 32):
        images = [read_image(r.path) for r in records[start : start + 32]]
        frames = [frame_input(img, fp32.preprocessing) for img in images]
        frames += [frame_input(grayscale(img), fp32.preprocessing) for img in images]
        x = np.stack(frames).astype(np.float32)
        a = decisions(fp32.spec, fp32.run(x)[0])
        b = decisions(int8.spec, int8.run(x)[0])
        flips += int((a != b).sum())
        compared += len(x)
    return flips, compared


def presence_report(
    trained: TrainedModel,
    split: Split,
    fp32: OnnxClassifier,
    fp32_result: VariantResult,
    int8_result: VariantResult,
) -> dict[str, Any]:
    """The shipped no_pet decision beside the untrained rule "ImageNet pet mass >= 0.2" on
    the same test frames: in colour, as grayscale (an infrared camera's) frames, and, when
    the stamps are installed, the test scenes with another animal, a person or a vehicle
    pasted in (each test scene four times)."""
    import keras

    assert trained.presence is not None
    imagenet = keras.Model(trained.model.inputs, trained.model.get_layer("imagenet_logits").output)
    absent = fp32.spec.labels.index(NO_PET)
    pets = [r for r in split.test if r.label != NO_PET]
    scenes = [r for r in split.test if r.label == NO_PET]
    stamp_views = [v for v in STAMP_VIEWS if not v.endswith("-gray")] if load_stamps() else []

    def frames(records: list[ImageRecord], view: str) -> npt.NDArray[np.float32]:
        images = [view_of(read_image(r.path), view) for r in records]
        return np.stack([frame_input(img, trained.preprocessing) for img in images]).astype(
            np.float32
        )

    def found(x: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.bool_], npt.NDArray[Any]]:
        """(shipped model finds a pet, baseline pet mass) per frame."""
        probs = np.concatenate([fp32.run(x[i : i + 32])[0] for i in range(0, len(x), 32)])
        mass = pet_mass(softmax(imagenet.predict(x, batch_size=32, verbose=0)))
        return decisions(fp32.spec, probs) != absent, mass

    def share(values: npt.NDArray[Any]) -> float | None:
        return float(np.mean(values)) if len(values) else None

    shipped: dict[str, float | None] = {}
    baseline: dict[str, float | None] = {}
    for key, records, views in (
        ("pet_recall", pets, ["plain"]),
        ("grayscale_pet_recall", pets, ["gray"]),
        ("no_pet_recall", scenes, ["plain"]),
        ("no_pet_recall_other_animals", scenes, stamp_views),
    ):
        if not records or not views:
            shipped[key] = baseline[key] = None
            continue
        is_pet, mass = (
            np.concatenate(parts)
            for parts in zip(*(found(frames(records, v)) for v in views), strict=True)
        )
        pet_side = key.startswith(("pet", "grayscale"))
        shipped[key] = share(is_pet if pet_side else ~is_pet)
        baseline[key] = share(mass >= BASELINE_MASS if pet_side else mass < BASELINE_MASS)
    return {
        "method": METHOD,
        "threshold": trained.presence.threshold,
        "absent_at": trained.presence.absent_at,
        "n_test_pets": len(pets),
        "n_test_no_pet": len(scenes),
        "stamps": len(load_stamps()),
        "fp32": shipped,
        "int8": {
            "pet_recall": int8_result.test.pet_recall,
            "no_pet_recall": int8_result.test.no_pet_recall,
        },
        "baseline_pet_mass": {"threshold": BASELINE_MASS, **baseline},
        "validation": {k: v for k, v in trained.metrics.items() if k.startswith("presence")},
    }


def report_summary(report: TrainReport) -> dict[str, Any]:
    """The figures a person reads first, fp32 and int8 side by side."""

    def row(v: VariantResult) -> dict[str, Any]:
        return {
            "balanced_accuracy": v.test.balanced_accuracy,
            "unseen_groups_balanced_accuracy": (
                v.unseen_groups.balanced_accuracy if v.unseen_groups else None
            ),
            "pet_recall": v.test.pet_recall,
            "no_pet_recall": v.test.no_pet_recall,
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
        "presence": report.presence,
        "n_test": report.n_test,
        "data_version": report.split_version,
    }
