"""Recording a cat/dog run in MLflow and gating both variants through the shared registry gate."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cloud_trainer.catdog.evaluate import OnnxClassifier, evaluate_model
from cloud_trainer.catdog.ingest import NO_PET
from cloud_trainer.catdog.split import Split
from cloud_trainer.export.quantize import FlipCheck
from cloud_trainer.registry import (
    GateDecision,
    GateInputs,
    apply_gate,
    decide,
    git_commit,
    log_onnx_model,
    log_run_context,
    open_store,
    register_version,
    score_champion,
)

if TYPE_CHECKING:
    from cloud_trainer.catdog.pipeline import PipelineSettings, TrainReport, VariantResult

log = logging.getLogger(__name__)

PRIMARY_METRIC = "balanced_accuracy"


def _headline(variant: VariantResult) -> dict[str, object]:
    return variant.test.model_dump(
        include={"accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "ms_per_image"}
    )


def _test_score(split: Split) -> Callable[[Path], float]:
    """The champion is scored by the same code on the same test split as the candidate."""

    def score(path: Path) -> float:
        model = OnnxClassifier.load(path)
        records = split.test
        if NO_PET not in model.spec.labels:  # a champion from before no_pet: its pets only
            records = [r for r in records if r.label != NO_PET]
        evaluation, _ = evaluate_model(model, records)
        return evaluation.balanced_accuracy

    return score


def _gate(
    name: str,
    variant: VariantResult,
    run_id: str,
    split: Split,
    settings: PipelineSettings,
    n_labels: int,
    *,
    parity_ok: bool,
    max_abs_diff: float,
    model_uri: str,
) -> None:
    registered = register_version(
        name, model_uri, run_id, tags={"data_version": split.version, "split": "test"}
    )
    champion_version, champion, champion_error = score_champion(name, _test_score(split))
    # Always answering the majority class scores 1/k balanced accuracy; the gate asks for the
    # configured floor above that.
    majority = 1.0 / n_labels
    inputs = GateInputs(
        model_name=name,
        version=registered.version,
        primary_metric=PRIMARY_METRIC,
        split="test",
        data_version=split.version,
        candidate=variant.test.balanced_accuracy,
        parity_ok=parity_ok,
        max_abs_diff=max_abs_diff,
        baseline_name="majority-class",
        baseline=majority,
        min_gain_over_baseline=max(0.0, settings.min_balanced_accuracy - majority),
        champion_version=champion_version,
        champion=champion,
        champion_error=champion_error,
    )
    decision = apply_gate(with_presence_floors(decide(inputs), variant, settings), run_id)
    variant.registered = registered.uri
    variant.promoted = decision.promote
    variant.gate_reasons = decision.reasons


def with_presence_floors(
    decision: GateDecision, variant: VariantResult, settings: PipelineSettings
) -> GateDecision:
    """A model with a no_pet outcome must also find pets and reject empty scenes."""
    test = variant.test
    if test.pet_recall is None and test.no_pet_recall is None:
        return decision
    reasons = list(decision.reasons)
    promote = decision.promote
    for name, value, floor in (
        ("pet_recall", test.pet_recall, settings.min_pet_recall),
        ("no_pet_recall", test.no_pet_recall, settings.min_no_pet_recall),
    ):
        if value is None:
            promote = False
            reasons.append(f"{name} not measured: the test split needs pets and empty scenes")
        elif value < floor:
            promote = False
            reasons.append(f"{name} {value:.4f} below its floor {floor:.2f}")
        else:
            reasons.append(f"{name} {value:.4f} meets its floor {floor:.2f}")
    return decision.model_copy(update={"promote": promote, "reasons": reasons})


def register_report(
    report: TrainReport,
    settings: PipelineSettings,
    split: Split,
    max_abs_diff: float,
    check: FlipCheck,
) -> None:
    """One MLflow run; the fp32 model as ``<name>`` and the int8 one as ``<name>-int8``.

    The int8 variant's parity input is its flip check against fp32 (the recorded difference
    is the upper bound of its flip rate).
    """
    import mlflow

    store = open_store(settings.store)
    with mlflow.start_run(experiment_id=store.experiment(settings.experiment)) as run:
        log_run_context(
            params={
                "arch": settings.train.arch,
                "size": settings.train.size,
                "train": settings.train.model_dump(mode="json", exclude={"cache_dir"}),
                "split": settings.split.model_dump(mode="json"),
                "data": str(settings.data),
                "calibration_images": settings.calibration_images,
            },
            metrics={
                "fp32": _headline(report.fp32),
                "int8": _headline(report.int8),
                "int8_flip_rate_upper": check.upper_bound,
                "int8_flips": check.flips,
                "parity_max_abs_diff": max_abs_diff,
                "training": report.training,
                "n_images": report.data.n_images,
            },
            data_version=split.version,
            commit=git_commit(),
            tags={"model": settings.model_name, "unseen_groups": ",".join(split.unseen_groups)},
        )
        for path in report.artefacts.values():
            mlflow.log_artifact(path, artifact_path="plots" if path.endswith(".png") else "reports")
        fp32_uri = log_onnx_model(Path(report.fp32.path), name="model")
        int8_uri = log_onnx_model(Path(report.int8.path), name="model-int8")
        run_id = run.info.run_id
    n_labels = len(report.data.labels)
    _gate(
        settings.model_name,
        report.fp32,
        run_id,
        split,
        settings,
        n_labels,
        parity_ok=True,
        max_abs_diff=max_abs_diff,
        model_uri=fp32_uri,
    )
    _gate(
        f"{settings.model_name}-int8",
        report.int8,
        run_id,
        split,
        settings,
        n_labels,
        parity_ok=check.passed,
        max_abs_diff=check.drop,
        model_uri=int8_uri,
    )
