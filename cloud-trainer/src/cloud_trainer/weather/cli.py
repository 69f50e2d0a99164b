"""``cloud-trainer weather train|evaluate``: the weather forecaster's two jobs."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cloud_trainer.errors import UserError

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    weather = subparsers.add_parser("weather", help="weather-station model: rain in 4 hours")
    verbs = weather.add_subparsers(dest="weather_command", required=True, metavar="VERB")

    train = verbs.add_parser("train", help="clean, train, evaluate, export, register and gate")
    train.add_argument("--data", type=Path, help="station CSV (default: shared history or sample)")
    train.add_argument("--store", help="MLflow folder or URI (default: $EDGE_MLOPS_MLFLOW, ...)")
    train.add_argument("--quick", action="store_true", help="one small configuration, few epochs")
    train.add_argument("--work-dir", type=Path, help="keep the model, reports and plots here")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--model",
        dest="model_kind",
        choices=("gbt", "keras"),
        default="gbt",
        help="gradient-boosted trees (default, better on every rolling-origin test year) "
        "or the Keras MLP",
    )
    train.add_argument(
        "--normalisation",
        choices=("auto", "graph", "spec"),
        default="auto",
        help="Keras only: in the ONNX graph, in the spec, or in the graph unless parity fails "
        "(default); trees take raw rows",
    )
    train.add_argument(
        "--no-register", action="store_true", help="train and export only, no MLflow"
    )
    train.set_defaults(func=run_train)

    evaluate = verbs.add_parser("evaluate", help="score a model on a station CSV")
    evaluate.add_argument("--data", type=Path, required=True, help="station CSV (plain or gzip)")
    evaluate.add_argument(
        "--model", required=True, help="ONNX path, models:/NAME/VERSION or models:/NAME@ALIAS"
    )
    evaluate.add_argument("--store", help="MLflow folder or URI for models:/ references")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(func=run_evaluate)


def run_train(args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException

    from cloud_trainer.export import ExportError
    from cloud_trainer.registry import RegistryError
    from cloud_trainer.weather.ingest import WeatherDataError
    from cloud_trainer.weather.pipeline import STEPS, train_weather
    from cloud_trainer.weather.settings import TrainSettings, default_data_path

    console = Console(stderr=True)
    data = args.data
    if data is None:
        data, origin = default_data_path()
        console.print(f"data: {data} ({origin})")
    settings = TrainSettings(
        data=data,
        store=args.store,
        quick=args.quick,
        model_kind=args.model_kind,
        seed=args.seed,
        work_dir=args.work_dir,
        register_model=not args.no_register,
        normalisation=args.normalisation,
    )
    started = time.monotonic()
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("starting", total=len(STEPS))
        seen: list[str] = []

        def on_step(name: str) -> None:
            if seen:
                progress.advance(task)
            seen.append(name)
            progress.update(task, description=name)

        try:
            outcome = train_weather(settings, on_step)
        except (WeatherDataError, ExportError, RegistryError) as e:
            raise UserError(str(e), exit_code=2 if isinstance(e, WeatherDataError) else 1) from e
        except MlflowException as e:
            raise UserError(f"MLflow store {settings.store or '(default)'}: {e.message}") from e
        progress.update(task, completed=len(STEPS), description="done")

    table = Table(title=f"test split: {outcome.test_metrics['n_rows']} rows (last year)")
    for column in ("model", "accuracy", "macro-F1", "ROC-AUC"):
        table.add_column(column)
    table.add_row(
        f"{settings.model_kind} → onnx",
        f"{outcome.test_metrics['accuracy']:.4f}",
        f"{outcome.test_metrics['macro_f1']:.4f}",
        f"{outcome.test_metrics['roc_auc']:.4f}",
    )
    for name, figures in outcome.baselines.items():
        auc = figures.get("roc_auc")
        table.add_row(
            name,
            f"{figures['accuracy']:.4f}",
            f"{figures['macro_f1']:.4f}",
            "-" if auc is None or math.isnan(auc) else f"{auc:.4f}",
        )
    out = Console()
    out.print(table)
    out.print(f"data version {outcome.data_version}; files in {outcome.work_dir}")
    out.print(
        f"ONNX {outcome.export.path} sha256 {outcome.export.sha256[:16]}… "
        f"{outcome.export.size} bytes, parity max abs diff {outcome.export.max_abs_diff:.2e}"
    )
    if outcome.registered is not None and outcome.decision is not None:
        verdict = "promoted to champion" if outcome.decision.promote else "stays challenger"
        out.print(f"registered {outcome.registered.uri}: {verdict}")
        for reason in outcome.decision.reasons:
            out.print(f"  - {reason}")
    out.print(f"took {time.monotonic() - started:.0f} s")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from cloud_trainer.export import ExportError
    from cloud_trainer.registry import RegistryError, model_for_command
    from cloud_trainer.weather.ingest import WeatherDataError
    from cloud_trainer.weather.scoring import IncompatibleModelError, evaluate_csv

    started = time.monotonic()
    try:
        with model_for_command(args.model, args.store, prefix="weather-eval-") as model:
            result, report = evaluate_csv(args.data, model.path)
    except WeatherDataError as e:
        raise UserError(str(e), exit_code=2) from e
    except (RegistryError, ExportError, IncompatibleModelError) as e:
        raise UserError(str(e), exit_code=1) from e
    result["model_ref"] = str(args.model)
    result["model_sha256"] = model.sha256
    result["model_version"] = model.version
    result["data_report"] = report.model_dump(mode="json")
    result["seconds"] = round(time.monotonic() - started, 3)
    if args.json:
        sys.stdout.write(json.dumps(_finite(result), sort_keys=True) + "\n")
        return 0
    out = Console()
    out.print(f"{result['n_rows']} rows from {result['first_hour']} to {result['last_hour']}")
    out.print(
        f"model      accuracy {result['accuracy']:.4f}  macro-F1 {result['macro_f1']:.4f}  "
        f"ROC-AUC {result['roc_auc']:.4f}"
    )
    out.print(
        f"persistence accuracy {result['persistence_accuracy']:.4f}  "
        f"macro-F1 {result['persistence_macro_f1']:.4f}"
    )
    return 0


def _finite(value: Any) -> Any:
    """JSON has no NaN: undefined figures (e.g. ROC-AUC on one class) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
