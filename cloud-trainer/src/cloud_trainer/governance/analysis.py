"""Analysing a registered version once (importance, slices, examples) and storing it on its run.

The report only reads what is stored, so it renders in well under a second and states
nothing that was not computed from the registered model and the data it was trained on.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cloud_trainer.export import ExportError
from cloud_trainer.governance.errors import AnalysisDataError, GovernanceError
from cloud_trainer.governance.explain.importance import (
    ImportanceChange,
    ImportanceResult,
    importance_change,
    permutation_importance,
)
from cloud_trainer.governance.explain.local import LocalExplanation, explain_row
from cloud_trainer.governance.registry_facts import (
    VersionRecord,
    artifact_json,
    load_version,
    log_governance_file,
    log_governance_json,
    model_versions,
)
from cloud_trainer.governance.slices import DEFAULT_MARGIN, SliceReport
from cloud_trainer.registry import RegistryError, resolve_model
from edge_agent.protocol.bundle import ImagePreprocessing

log = logging.getLogger(__name__)

ANALYSIS_FILE = "analysis.json"
ANALYSIS_ARTIFACT = f"governance/{ANALYSIS_FILE}"
SALIENCY_FRAMES = 3


class SaliencyExample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str
    true_label: str
    predicted: str
    probability: float
    artifact: str
    peak_cell: tuple[int, int]


class Analysis(BaseModel):
    """Everything ``governance analyse`` computed for one version."""

    model_config = ConfigDict(extra="forbid")

    model_name: str
    version: int
    kind: Literal["tabular", "image"]
    data_source: str
    data_version: str | None
    n_rows: int
    seed: int
    margin: float
    validation_class_ratio: dict[str, float] = Field(
        default_factory=dict, description="Predicted-label mix on validation (from the spec)."
    )
    importance: ImportanceResult | None = None
    previous_version: int | None = None
    importance_change: list[ImportanceChange] = Field(default_factory=list)
    local_example: LocalExplanation | None = None
    local_example_hour: str | None = None
    slices: SliceReport
    saliency: list[SaliencyExample] = Field(default_factory=list)
    computed_at: float
    seconds: float


def stored_analysis(record: VersionRecord) -> Analysis | None:
    """The analysis stored on the version's run, or None when it was never analysed."""
    if ANALYSIS_ARTIFACT not in record.artifacts:
        return None
    return Analysis.model_validate(artifact_json(record.run_id, ANALYSIS_ARTIFACT))


def _previous_importance(model: str, version: int) -> tuple[int, ImportanceResult] | None:
    earlier = [v for v in model_versions(model) if v < version]
    for v in reversed(earlier):
        analysis = stored_analysis(load_version(model, v))
        if analysis is not None and analysis.importance is not None:
            return v, analysis.importance
    return None


def _weather(
    record: VersionRecord, model_path: Path, data: Path | None, seed: int, margin: float
) -> dict[str, Any]:
    from cloud_trainer.governance.slices import weather_slices
    from cloud_trainer.weather.dataset import (
        LABELS,
        SplitBoundaries,
        apply_split,
        data_version,
        labelled_rows,
    )
    from cloud_trainer.weather.ingest import WeatherDataError, load_station_history
    from cloud_trainer.weather.scoring import IncompatibleModelError, WeatherScorer
    from edge_agent.features.weather import FEATURE_NAMES

    source = data or Path(record.params.get("data_source", ""))
    try:
        bounds = SplitBoundaries(
            rule=record.params["split_rule"],
            validation_start=record.params["validation_start"],
            test_start=record.params["test_start"],
        )
    except KeyError as e:
        raise AnalysisDataError(f"run {record.run_id} does not record its split ({e})") from e
    try:
        history, _ = load_station_history(source)
        version = data_version(history, bounds)
        split = apply_split(labelled_rows(history), bounds)
        scorer = WeatherScorer.load(model_path)
    except WeatherDataError as e:
        raise AnalysisDataError(str(e)) from e
    except (IncompatibleModelError, ExportError) as e:
        raise GovernanceError(str(e)) from e
    if record.data_version and version != record.data_version:
        raise AnalysisDataError(
            f"{source} has data version {version}, but {record.model_name} v{record.version} "
            f"was trained on {record.data_version}: pass the data it was trained on (--data)"
        )
    test = split.test
    importance = permutation_importance(
        scorer.prob_positive, test.x, test.y, FEATURE_NAMES, seed=seed
    )
    prob = scorer.prob_positive(test.x)
    pred = (prob >= scorer.threshold).astype(np.int64)
    # The example is the test hour the model was most sure would bring rain: the forecast
    # a person is most likely to ask about.
    pick = int(np.argmax(prob))
    return {
        "data_source": str(source),
        "data_version": version,
        "n_rows": len(test),
        "importance": importance,
        "local_example": explain_row(scorer, test.x[pick : pick + 1]),
        "local_example_hour": str(test.hours[pick]),
        "slices": weather_slices(test.y, pred, test.hours, LABELS, margin),
    }


def _curves(run_id: str, y: Any, prob: Any, positive: str, work: Path) -> None:
    from cloud_trainer.governance.report.plots import reliability_png, roc_png

    for name, png in (
        ("roc.png", roc_png(y, prob, positive)),
        ("reliability.png", reliability_png(y, prob, positive)),
    ):
        path = work / name
        path.write_bytes(png)
        log_governance_file(run_id, path)


def _relocate(entry: dict[str, Any], data: Path | None) -> Path:
    original = Path(entry["file"])
    if data is None:
        return original
    return data / str(entry["label"]) / original.name


def _image(
    record: VersionRecord, model_path: Path, data: Path | None, margin: float, work: Path
) -> dict[str, Any]:
    from cloud_trainer.catdog.evaluate import ModelLoadError, OnnxClassifier, evaluate_model
    from cloud_trainer.catdog.ingest import DatasetError, ImageRecord, read_image
    from cloud_trainer.governance.explain.saliency import occlusion_map, overlay_png
    from cloud_trainer.governance.slices import image_slices

    if "reports/split.json" not in record.artifacts:
        raise AnalysisDataError(
            f"run {record.run_id} has no reports/split.json to find its test set"
        )
    split = artifact_json(record.run_id, "reports/split.json")
    tests = [e for e in split["files"] if e["split"] == "test"]
    records, missing = [], []
    for e in tests:
        path = _relocate(e, data)
        if not path.is_file():
            missing.append(str(path))
            continue
        records.append(ImageRecord(path, e["label"], e["sha256"], e["group"], 0, 0))
    if missing:
        raise AnalysisDataError(
            f"{len(missing)} test photo(s) of the run are not found (e.g. {missing[0]}); "
            "pass the training data folder with --data"
        )
    try:
        model = OnnxClassifier.load(model_path)
        _, predictions = evaluate_model(model, records)
    except (ModelLoadError, DatasetError) as e:
        raise GovernanceError(str(e)) from e
    labels = model.spec.labels
    breeds = [r.group for r in records]
    pred = predictions.y_pred
    if len(labels) == 2:
        _curves(record.run_id, predictions.y_true, predictions.probabilities[:, 1], labels[1], work)
    examples = []
    for i in range(min(SALIENCY_FRAMES, len(records))):
        r = records[i]
        saliency = occlusion_map(model, read_image(r.path))
        png = work / f"saliency_{i}.png"
        png.write_bytes(overlay_png(read_image(r.path), saliency))
        artifact = log_governance_file(record.run_id, png)
        examples.append(
            SaliencyExample(
                file=r.path.name,
                true_label=r.label,
                predicted=saliency.label,
                probability=saliency.probability,
                artifact=artifact,
                peak_cell=saliency.peak_cell,
            )
        )
    return {
        "data_source": str(data or Path(tests[0]["file"]).parent.parent),
        "data_version": split.get("version"),
        "n_rows": len(records),
        "slices": image_slices(predictions.y_true, pred, breeds, labels, margin),
        "saliency": examples,
    }


def analyse_version(
    model_name: str,
    version: int,
    data: Path | None = None,
    *,
    seed: int = 0,
    margin: float = DEFAULT_MARGIN,
) -> Analysis:
    """Compute and store ``governance/analysis.json`` (and images) on the version's run."""
    started = time.monotonic()
    record = load_version(model_name, version)
    with tempfile.TemporaryDirectory(prefix="gov-analyse-") as tmp:
        work = Path(tmp)
        try:
            resolved = resolve_model(f"models:/{model_name}/{version}", work / "model")
        except RegistryError as e:
            raise GovernanceError(str(e)) from e
        from cloud_trainer.export import read_spec

        spec = read_spec(resolved.path)
        kind: Literal["tabular", "image"]
        if isinstance(spec.preprocessing, ImagePreprocessing):
            kind = "image"
            parts = _image(record, resolved.path, data, margin, work)
        else:
            kind = "tabular"
            parts = _weather(record, resolved.path, data, seed, margin)
    analysis = Analysis(
        model_name=model_name,
        version=version,
        kind=kind,
        seed=seed,
        margin=margin,
        validation_class_ratio=dict(spec.drift.class_ratio),
        computed_at=time.time(),
        seconds=0.0,
        **parts,
    )
    if analysis.importance is not None:
        previous = _previous_importance(model_name, version)
        if previous is not None:
            analysis.previous_version = previous[0]
            analysis.importance_change = importance_change(previous[1], analysis.importance)
    analysis.seconds = round(time.monotonic() - started, 3)
    log_governance_json(record.run_id, ANALYSIS_FILE, analysis.model_dump(mode="json"))
    log.info("analysed %s v%s in %.1f s", model_name, version, analysis.seconds)
    return analysis
