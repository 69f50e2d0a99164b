"""Gathering a report's facts: the registry, the stored analysis and the fleet store, read once."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cloud_trainer.fleet.store import FleetStore
from cloud_trainer.governance.analysis import Analysis, stored_analysis
from cloud_trainer.governance.fleet_facts import FleetRecord, load_fleet_record
from cloud_trainer.governance.registry_facts import (
    VersionRecord,
    artifact_bytes,
    artifact_json,
    load_version,
)
from cloud_trainer.governance.slices import SliceReport, production_slices

log = logging.getLogger(__name__)

# Run artefacts shown as tables when present (weather: test_onnx.json; both: data_report.json).
EVALUATION_JSON = ("reports/test_onnx.json", "reports/test.json")
DATA_REPORT_JSON = "reports/data_report.json"


class AlertImportance(BaseModel):
    """A drifting feature of an alert and how much the model relies on it."""

    model_config = ConfigDict(extra="forbid")

    alert_id: int
    feature: str
    metric: str
    score: float
    threshold: float
    importance_rank: int | None
    importance: float | None
    n_features: int | None


class ReportFacts(BaseModel):
    """Every fact the report states; embedded in the HTML so it can be checked by machine."""

    model_config = ConfigDict(extra="forbid")

    generated_at: str
    registry: VersionRecord
    evaluation: dict[str, Any] | None = None
    data_report: dict[str, Any] | None = None
    analysis: Analysis | None = None
    fleet_source: str | None = None
    fleet: FleetRecord | None = None
    production: SliceReport | None = None
    alert_importance: list[AlertImportance] = Field(default_factory=list)
    plots: list[str] = Field(default_factory=list, description="Run artefacts shown as images.")


def alert_importance(fleet: FleetRecord, analysis: Analysis | None) -> list[AlertImportance]:
    """Each drifting feature of each alert, with its permutation importance when known."""
    ranked = (
        {} if analysis is None or analysis.importance is None else analysis.importance.by_feature()
    )
    total = len(ranked) or None
    rows = []
    for alert in fleet.alerts:
        for feature in alert.features:
            known = ranked.get(str(feature.get("name")))
            rows.append(
                AlertImportance(
                    alert_id=alert.alert_id,
                    feature=str(feature.get("name")),
                    metric=str(feature.get("metric")),
                    score=float(feature.get("score", 0.0)),
                    threshold=float(feature.get("threshold", 0.0)),
                    importance_rank=None if known is None else known.rank,
                    importance=None if known is None else known.mean_drop,
                    n_features=total if known is not None else None,
                )
            )
    return rows


def _first_json(record: VersionRecord, paths: tuple[str, ...]) -> dict[str, Any] | None:
    for path in paths:
        if path in record.artifacts:
            found = artifact_json(record.run_id, path)
            return found if isinstance(found, dict) else None
    return None


def collect_facts(
    model_name: str,
    version: int,
    fleet_store: FleetStore | None = None,
    fleet_source: str | None = None,
) -> ReportFacts:
    """Read everything once; the active MLflow URIs point at the registry."""
    record = load_version(model_name, version)
    analysis = stored_analysis(record)
    facts = ReportFacts(
        generated_at=datetime.now(UTC).isoformat(),
        registry=record,
        evaluation=_first_json(record, EVALUATION_JSON),
        data_report=_first_json(record, (DATA_REPORT_JSON,)),
        analysis=analysis,
        plots=[
            p
            for p in record.artifacts
            if p.endswith(".png") and not p.startswith("governance/saliency")
        ],
    )
    if fleet_store is not None:
        fleet = load_fleet_record(fleet_store, model_name, version)
        facts.fleet = fleet
        facts.fleet_source = fleet_source
        facts.alert_importance = alert_importance(fleet, analysis)
        if analysis is not None and analysis.validation_class_ratio and fleet.traffic:
            facts.production = production_slices(
                fleet.traffic, analysis.validation_class_ratio, analysis.margin
            )
    return facts


def load_images(facts: ReportFacts) -> dict[str, bytes]:
    """The PNG artefacts the report embeds, by artefact path."""
    wanted = list(facts.plots)
    if facts.analysis is not None:
        wanted += [s.artifact for s in facts.analysis.saliency]
    return {path: artifact_bytes(facts.registry.run_id, path) for path in wanted}
