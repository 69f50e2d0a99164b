"""The weather training job: data → model → evaluation → ONNX → MLflow → gate, traceably."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cloud_trainer.export import ExportReport, read_spec
from cloud_trainer.registry import (
    GateDecision,
    GateInputs,
    RegisteredVersion,
    apply_gate,
    decide,
    git_commit,
    log_onnx_model,
    log_run_context,
    open_store,
    register_version,
    score_champion,
)
from cloud_trainer.stack.mlflow_store import MlflowStore
from cloud_trainer.weather.baselines import baseline_metrics
from cloud_trainer.weather.dataset import (
    HORIZON_HOURS,
    SplitRows,
    apply_split,
    data_version,
    labelled_rows,
    time_split,
)
from cloud_trainer.weather.evaluation import classification_metrics, save_plots
from cloud_trainer.weather.gbt import (
    GBT_QUICK_SPACE,
    GBT_SEARCH_SPACE,
    GbtCandidate,
    predict_rain_gbt,
    search_gbt,
)
from cloud_trainer.weather.ingest import DataReport, load_station_history
from cloud_trainer.weather.model import (
    QUICK_SPACE,
    SEARCH_SPACE,
    Candidate,
    predict_rain,
    search,
)
from cloud_trainer.weather.packaging import (
    drift_baseline,
    export_gbt_model,
    export_model,
    gbt_drift_baseline,
    model_spec,
    station_sensor_health,
)
from cloud_trainer.weather.scoring import WeatherScorer
from cloud_trainer.weather.settings import TrainSettings, repository_root
from edge_agent.features.weather import FEATURE_SET

log = logging.getLogger(__name__)

STEPS = (
    "load and clean data",
    "label and split",
    "baselines",
    "hyperparameter search",
    "evaluate on test",
    "export ONNX and check parity",
    "log, register and gate",
)


@dataclass(frozen=True)
class TrainOutcome:
    run_id: str | None
    registered: RegisteredVersion | None
    decision: GateDecision | None
    test_metrics: dict[str, Any]
    baselines: dict[str, dict[str, Any]]
    export: ExportReport
    data_report: DataReport
    data_version: str
    work_dir: Path
    best: dict[str, Any]


def _next_version(model_name: str) -> int:
    from mlflow import MlflowClient

    versions = MlflowClient().search_model_versions(f"name = '{model_name}'")
    return 1 + max((int(v.version) for v in versions), default=0)


def search_model(
    settings: TrainSettings, split: SplitRows
) -> tuple[Candidate | GbtCandidate, list[Candidate | GbtCandidate]]:
    """The configured model kind's search; both choose on the validation period only."""
    if settings.model_kind == "gbt":
        space = GBT_QUICK_SPACE if settings.quick else GBT_SEARCH_SPACE
        gbt_best, gbt_tried = search_gbt(space, split.train, split.validation, settings.seed)
        return gbt_best, list(gbt_tried)
    keras_space = QUICK_SPACE if settings.quick else SEARCH_SPACE
    best, tried = search(keras_space, split.train, split.validation, settings.seed)
    return best, list(tried)


def prob_rain(
    best: Candidate | GbtCandidate, x: npt.NDArray[np.float32]
) -> npt.NDArray[np.float64]:
    if isinstance(best, GbtCandidate):
        return predict_rain_gbt(best.model, x)
    return predict_rain(best.model, x)


def train_weather(
    settings: TrainSettings, on_step: Callable[[str], None] | None = None
) -> TrainOutcome:
    """Run the whole job; every figure it reports is on the held-out last year."""
    step = on_step or (lambda _name: None)
    work_dir = settings.work_dir or Path(tempfile.mkdtemp(prefix="weather-train-"))
    work_dir.mkdir(parents=True, exist_ok=True)

    step(STEPS[0])
    history, report = load_station_history(settings.data)
    step(STEPS[1])
    rows = labelled_rows(history)
    bounds = time_split(rows.hours)
    split = apply_split(rows, bounds)
    version = data_version(history, bounds)
    step(STEPS[2])
    baselines = baseline_metrics(split, settings.seed)

    step(STEPS[3])
    best, tried = search_model(settings, split)

    step(STEPS[4])
    prob = prob_rain(best, split.test.x)
    test_metrics = classification_metrics(
        split.test.y, (prob >= best.threshold).astype(np.int64), prob
    )
    plots = save_plots(work_dir / "plots", split.test.y, prob, best.threshold)

    step(STEPS[5])
    commit = git_commit(repository_root())
    drift = (
        gbt_drift_baseline(split, best)
        if isinstance(best, GbtCandidate)
        else drift_baseline(split, best)
    )
    sensor_health = station_sensor_health(history, bounds)
    store = open_store(settings.store) if settings.register_model else None
    expected_version = _next_version(settings.model_name) if store else None
    extra = {"edge_mlops.data_version": version}
    if expected_version is not None:
        extra["edge_mlops.model_version"] = str(expected_version)
    onnx_path = work_dir / f"{settings.model_name}.onnx"
    # A parity failure raises ParityError here: nothing is written, logged or registered.
    if isinstance(best, GbtCandidate):
        gbt_spec = model_spec(settings, best, drift, version, commit, sensor_health=sensor_health)
        export = export_gbt_model(settings, best, split, onnx_path, gbt_spec, extra)
    else:
        keras_best = best
        export = export_model(
            settings,
            keras_best,
            split,
            onnx_path,
            lambda norm: model_spec(
                settings, keras_best, drift, version, commit, norm, sensor_health=sensor_health
            ),
            extra,
        )
    spec = read_spec(onnx_path)
    parity_ok = export.max_abs_diff <= export.tolerance
    onnx_metrics = WeatherScorer.load(onnx_path).metrics(split.test)

    summary = {
        "data_report": report.model_dump(mode="json"),
        "split": {
            **bounds.model_dump(),
            "train_rows": len(split.train),
            "validation_rows": len(split.validation),
            "test_rows": len(split.test),
            "dropped_incomplete_features": rows.dropped_incomplete_features,
            "dropped_no_label": rows.dropped_no_label,
        },
        "data_version": version,
        "search": [c.summary() for c in tried],
        "best": best.summary(),
        "test": test_metrics,
        "test_onnx": onnx_metrics,
        "baselines": baselines,
        "export": {
            **export.as_dict(),
            "normalised_in_graph": spec.preprocessing.kind == "tabular"
            and spec.preprocessing.normalised_in_graph,
        },
    }
    for name, content in summary.items():
        (work_dir / f"{name}.json").write_text(json.dumps(content, indent=2, default=str))
    (work_dir / "spec.json").write_text(spec.model_dump_json(indent=2))

    step(STEPS[6])
    registered: RegisteredVersion | None = None
    decision: GateDecision | None = None
    run_id: str | None = None
    if store is not None:
        registered, decision, run_id = _record(
            settings,
            store,
            summary,
            work_dir,
            plots,
            onnx_path,
            export,
            commit,
            version,
            parity_ok,
            onnx_metrics,
            baselines,
            split,
            expected_version,
        )
    return TrainOutcome(
        run_id,
        registered,
        decision,
        test_metrics,
        baselines,
        export,
        report,
        version,
        work_dir,
        best.summary(),
    )


def _record(
    settings: TrainSettings,
    store: MlflowStore,
    summary: dict[str, Any],
    work_dir: Path,
    plots: list[Path],
    onnx_path: Path,
    export: ExportReport,
    commit: str | None,
    version: str,
    parity_ok: bool,
    onnx_metrics: dict[str, Any],
    baselines: dict[str, dict[str, Any]],
    split: SplitRows,
    expected_version: int | None,
) -> tuple[RegisteredVersion, GateDecision, str]:
    import mlflow

    with mlflow.start_run(experiment_id=store.experiment(settings.experiment)) as run:
        run_id = run.info.run_id
        baseline_flat = {
            name: {k: v for k, v in figures.items() if k in ("accuracy", "macro_f1", "roc_auc")}
            for name, figures in baselines.items()
        }
        log_run_context(
            params={
                "quick": settings.quick,
                "model_kind": settings.model_kind,
                "seed": settings.seed,
                "data_source": str(settings.data),
                "feature_set": FEATURE_SET,
                "horizon_hours": HORIZON_HOURS,
                "split_rule": summary["split"]["rule"],
                "validation_start": summary["split"]["validation_start"],
                "test_start": summary["split"]["test_start"],
                "best": summary["best"],
            },
            metrics={
                "test": {k: v for k, v in onnx_metrics.items() if not isinstance(v, list | dict)},
                "baseline": baseline_flat,
                "parity_max_abs_diff": export.max_abs_diff,
                "rows": {k: v for k, v in summary["split"].items() if k.endswith("rows")},
            },
            data_version=version,
            commit=commit,
            tags={"model_name": settings.model_name, "onnx_sha256": export.sha256},
        )
        for path in sorted(work_dir.glob("*.json")):
            mlflow.log_artifact(str(path), artifact_path="reports")
        for path in plots:
            mlflow.log_artifact(str(path), artifact_path="plots")
        model_uri = log_onnx_model(onnx_path)
    registered = register_version(
        settings.model_name,
        model_uri,
        run_id,
        tags={"data_version": version, "onnx_sha256": export.sha256},
    )
    if expected_version is not None and registered.version != expected_version:
        log.warning(
            "registered as version %s but the file says %s (concurrent registration)",
            registered.version,
            expected_version,
        )

    def champion_score(path: Path) -> float:
        return float(WeatherScorer.load(path).metrics(split.test)["macro_f1"])

    champion_version, champion, champion_error = score_champion(settings.model_name, champion_score)
    decision = apply_gate(
        decide(
            GateInputs(
                model_name=settings.model_name,
                version=registered.version,
                primary_metric="macro_f1",
                split=f"test from {summary['split']['test_start']} ({len(split.test)} rows)",
                data_version=version,
                candidate=onnx_metrics["macro_f1"],
                parity_ok=parity_ok,
                max_abs_diff=export.max_abs_diff,
                baseline_name="persistence",
                baseline=baselines["persistence"]["macro_f1"],
                min_gain_over_baseline=settings.min_gain_over_persistence,
                champion_version=champion_version,
                champion=champion,
                champion_error=champion_error,
                min_gain_over_champion=settings.min_gain_over_champion,
            )
        ),
        run_id,
    )
    return registered, decision, run_id
