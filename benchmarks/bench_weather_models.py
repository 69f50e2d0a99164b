"""Rain forecaster vs its baselines on rolling-origin years: gradient-boosted trees, Keras MLP,
persistence.

Usage:
    .venv/bin/python -m benchmarks.bench_weather_models [--data CSV] [--json OUT] [--quick]
        [--test-years 2012,2013,2014,2015] [--models gbt,keras] [--seed 0]

For each test year Y (default: the last four possible): train on every hour before Y-1, stop
early and calibrate the decision threshold (best macro-F1) on Y-1, and score Y, never seen by
training or selection. The 4 hours before each boundary are purged (their label lies past
it). The trees are exported to ONNX on every fold and scored through onnxruntime (what a
device runs), with the parity figure reported; the Keras figures come from Keras itself.
``--quick``: one small configuration per model, three test years, two training years each
(for the test suite; figures are lower than the full run's).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

MODELS = ("gbt", "keras")
QUICK_FOLDS = 3
QUICK_TRAIN_YEARS = 2


def _gbt_fold(split, quick: bool, seed: int, data: Path, work: Path) -> dict[str, Any]:
    from cloud_trainer.export.trees_onnx import export_hist_gbt
    from cloud_trainer.weather.gbt import GBT_QUICK_SPACE, GBT_SEARCH_SPACE, search_gbt
    from cloud_trainer.weather.model import INPUT_NAME
    from cloud_trainer.weather.packaging import model_spec
    from cloud_trainer.weather.rolling import forecast_figures
    from cloud_trainer.weather.scoring import WeatherScorer
    from cloud_trainer.weather.settings import TrainSettings
    from edge_agent.protocol.bundle import DriftBaseline

    started = time.perf_counter()
    space = GBT_QUICK_SPACE if quick else GBT_SEARCH_SPACE
    best, _ = search_gbt(space, split.train, split.validation, seed)
    train_s = time.perf_counter() - started
    spec = model_spec(TrainSettings(data=data), best, DriftBaseline(), "rolling-origin", None)
    export = export_hist_gbt(best.model, spec, work / "gbt.onnx", {INPUT_NAME: split.test.x})
    prob = WeatherScorer.load(export.path).prob_positive(split.test.x)
    figures = forecast_figures(split.test.y, prob, (prob >= best.threshold).astype(np.int64))
    return {
        **figures,
        "threshold": best.threshold,
        "best": best.summary(),
        "scored_with": "onnxruntime",
        "onnx_max_abs_diff": export.max_abs_diff,
        "onnx_bytes": export.size,
        "train_seconds": round(train_s, 1),
    }


def _keras_fold(split, quick: bool, seed: int) -> dict[str, Any]:
    from cloud_trainer.weather.model import QUICK_SPACE, SEARCH_SPACE, predict_rain, search
    from cloud_trainer.weather.rolling import forecast_figures

    started = time.perf_counter()
    best, _ = search(QUICK_SPACE if quick else SEARCH_SPACE, split.train, split.validation, seed)
    train_s = time.perf_counter() - started
    prob = predict_rain(best.model, split.test.x)
    figures = forecast_figures(split.test.y, prob, (prob >= best.threshold).astype(np.int64))
    return {
        **figures,
        "threshold": best.threshold,
        "best": best.summary(),
        "scored_with": "keras",
        "train_seconds": round(train_s, 1),
    }


def _summary(folds: list[dict[str, Any]], name: str) -> dict[str, Any]:
    from cloud_trainer.weather.rolling import meets_goals

    per_year = [f["models"][name] for f in folds if name in f["models"]]

    def mean(key: str) -> float:
        return float(statistics.fmean(m[key] for m in per_year))

    return {
        "mean_macro_f1": mean("macro_f1"),
        "min_macro_f1": float(min(m["macro_f1"] for m in per_year)),
        "mean_no_rain_recall": mean("no_rain_recall"),
        "mean_rain_recall": mean("rain_recall"),
        "mean_ece": mean("ece"),
        "years_meeting_all_goals": [
            f["test_year"]
            for f in folds
            if name in f["models"] and all(meets_goals(f["models"][name]).values())
        ],
    }


def run(
    data: Path,
    quick: bool = False,
    test_years: list[int] | None = None,
    models: tuple[str, ...] = MODELS,
    seed: int = 0,
) -> dict[str, Any]:
    """Every fold's figures for ``models`` and persistence, their means, and the winner."""
    from cloud_trainer.weather.dataset import labelled_rows
    from cloud_trainer.weather.ingest import load_station_history
    from cloud_trainer.weather.rolling import (
        GOALS,
        fold_rows,
        forecast_figures,
        meets_goals,
        rolling_origin_folds,
    )

    started = time.perf_counter()
    history, _ = load_station_history(data)
    rows = labelled_rows(history)
    folds = rolling_origin_folds(
        rows.hours,
        n_folds=QUICK_FOLDS if quick else 4,
        test_years=test_years,
        train_years=QUICK_TRAIN_YEARS if quick else None,
    )
    work = Path(tempfile.mkdtemp(prefix="bench-weather-models-"))
    results: list[dict[str, Any]] = []
    for fold in folds:
        split = fold_rows(rows, fold)
        figures: dict[str, dict[str, Any]] = {
            "persistence": forecast_figures(split.test.y, None, split.test.persistence)
        }
        if "gbt" in models:
            figures["gbt"] = _gbt_fold(split, quick, seed, data, work)
        if "keras" in models:
            figures["keras"] = _keras_fold(split, quick, seed)
        for name in figures:
            figures[name]["goals_met"] = meets_goals(figures[name])
        results.append(
            {
                "test_year": fold.test_year,
                "boundaries": fold.model_dump(),
                "rows": {
                    "train": len(split.train),
                    "validation": len(split.validation),
                    "test": len(split.test),
                },
                "models": figures,
            }
        )
        _print_fold(results[-1])
    names = [*(m for m in MODELS if m in models), "persistence"]
    summary = {name: _summary(results, name) for name in names}
    contenders = [m for m in MODELS if m in models]
    winner = max(contenders, key=lambda m: summary[m]["mean_macro_f1"]) if contenders else None
    return {
        "data": str(data),
        "quick": quick,
        "seed": seed,
        "goals": GOALS,
        "folds": results,
        "summary": summary,
        "winner": winner,
        "winner_rule": "highest mean macro-F1 over the test years at the validation threshold",
        "seconds": round(time.perf_counter() - started, 1),
    }


def _print_fold(fold: dict[str, Any]) -> None:
    print(
        f"test year {fold['test_year']} ({fold['rows']['test']} rows, trained on "
        f"{fold['rows']['train']}, calibrated on {fold['rows']['validation']})"
    )
    print(f"  {'model':<12} {'macro-F1':>8} {'no_rain R':>9} {'rain R':>7} {'ECE':>6} {'thr':>5}")
    for name, m in fold["models"].items():
        threshold = f"{m['threshold']:.2f}" if "threshold" in m else "-"
        print(
            f"  {name:<12} {m['macro_f1']:>8.4f} {m['no_rain_recall']:>9.3f} "
            f"{m['rain_recall']:>7.3f} {m['ece']:>6.3f} {threshold:>5}"
        )
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="station CSV (default: the shared history)")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    parser.add_argument("--quick", action="store_true", help="small and fast (tests)")
    parser.add_argument("--test-years", help="comma-separated, e.g. 2013,2014,2015")
    parser.add_argument("--models", default=",".join(MODELS), help="gbt,keras or one of them")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from cloud_trainer.weather.settings import default_data_path

    data = args.data or default_data_path()[0]
    years = [int(y) for y in args.test_years.split(",")] if args.test_years else None
    models = tuple(m for m in args.models.split(",") if m)
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    result = run(data, args.quick, years, models, args.seed)
    print("\nmeans over test years " + ", ".join(str(f["test_year"]) for f in result["folds"]))
    for name, s in result["summary"].items():
        print(
            f"  {name:<12} macro-F1 {s['mean_macro_f1']:.4f} (min {s['min_macro_f1']:.4f}), "
            f"no_rain recall {s['mean_no_rain_recall']:.3f}, rain recall "
            f"{s['mean_rain_recall']:.3f}, ECE {s['mean_ece']:.3f}; all goals met in "
            f"{s['years_meeting_all_goals'] or 'no year'}"
        )
    print(f"winner: {result['winner']} ({result['winner_rule']}); took {result['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
        print(f"figures in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
