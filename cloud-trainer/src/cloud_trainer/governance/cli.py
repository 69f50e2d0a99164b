"""``cloud-trainer report`` and ``cloud-trainer governance analyse|labels|triggers``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from cloud_trainer.errors import UserError

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    report = subparsers.add_parser("report", help="model audit report (HTML, PDF if possible)")
    report.add_argument("--model", required=True, help="registered model name")
    report.add_argument("--version", type=int, required=True, help="registered version")
    report.add_argument("--out", type=Path, help="HTML file (default: NAME-vV-report.html)")
    report.add_argument("--fleet-db", help="fleet store URL (sqlite:///fleet.db, postgresql://…)")
    report.add_argument("--store", help="MLflow folder or URI (default: $EDGE_MLOPS_MLFLOW, ...)")
    report.add_argument("--no-pdf", action="store_true", help="HTML only")
    report.set_defaults(func=run_report)

    gov = subparsers.add_parser("governance", help="explanations, slices, labels, triggers")
    verbs = gov.add_subparsers(dest="governance_command", required=True, metavar="VERB")

    analyse = verbs.add_parser("analyse", help="importance, slices and examples for a version")
    analyse.add_argument("--model", required=True)
    analyse.add_argument("--version", type=int, required=True)
    analyse.add_argument("--data", type=Path, help="the training data (default: as recorded)")
    analyse.add_argument("--store", help="MLflow folder or URI")
    analyse.add_argument("--seed", type=int, default=0, help="permutation seed")
    analyse.add_argument("--margin", type=float, default=0.2, help="slice warning margin")
    analyse.set_defaults(func=run_analyse)

    labels = verbs.add_parser("labels", help="the labelling queue: status or export")
    labels.add_argument("action", choices=("status", "export"))
    labels.add_argument("--fleet-db", required=True, help="fleet store URL")
    labels.add_argument("--out", type=Path, help="export: a new folder for the class folders")
    labels.add_argument("--base", type=Path, help="export: existing class folders to include")
    labels.add_argument("--all", action="store_true", help="export: include frames used before")
    labels.set_defaults(func=run_labels)

    triggers = verbs.add_parser("triggers", help="retrain what is due (schedule, labels, drift)")
    triggers.add_argument("--config", type=Path, required=True, help="trigger YAML file")
    triggers.add_argument("--fleet-db", help="fleet store URL (labels and drift requests)")
    triggers.add_argument("--store", help="MLflow folder or URI")
    triggers.add_argument("--dry-run", action="store_true", help="show what would run")
    triggers.set_defaults(func=run_triggers)


def _fleet(url: str | None) -> Any:
    if url is None:
        return None
    from cloud_trainer.fleet.store import FleetStore, StoreError

    try:
        return FleetStore(url)
    except StoreError as e:
        raise UserError(str(e), exit_code=2) from e


def _registry(store: str | None) -> None:
    from cloud_trainer.registry import open_store

    open_store(store)


def run_report(args: argparse.Namespace) -> int:
    from cloud_trainer.governance.errors import GovernanceError, VersionNotFoundError
    from cloud_trainer.governance.report.build import write_report

    _registry(args.store)
    fleet = _fleet(args.fleet_db)
    out = args.out or Path(f"{args.model}-v{args.version}-report.html")
    try:
        outcome = write_report(
            args.model, args.version, out, fleet, args.fleet_db, pdf=not args.no_pdf
        )
    except VersionNotFoundError as e:
        raise UserError(str(e), exit_code=2) from e
    except GovernanceError as e:
        raise UserError(str(e)) from e
    finally:
        if fleet is not None:
            fleet.close()
    console = Console()
    console.print(f"report {outcome.html} ({outcome.seconds:.2f} s); {outcome.pdf_note}")
    for warning in _warnings(outcome.facts):
        console.print(f"[yellow]warning[/yellow] {warning}")
    return 0


def _warnings(facts: Any) -> list[str]:
    found = list(facts.analysis.slices.warnings) if facts.analysis is not None else []
    return found + (list(facts.production.warnings) if facts.production is not None else [])


def run_analyse(args: argparse.Namespace) -> int:
    from cloud_trainer.governance.analysis import analyse_version
    from cloud_trainer.governance.errors import (
        AnalysisDataError,
        GovernanceError,
        VersionNotFoundError,
    )

    _registry(args.store)
    try:
        analysis = analyse_version(
            args.model, args.version, args.data, seed=args.seed, margin=args.margin
        )
    except (VersionNotFoundError, AnalysisDataError) as e:
        raise UserError(str(e), exit_code=2) from e
    except GovernanceError as e:
        raise UserError(str(e)) from e
    console = Console()
    console.print(
        f"{args.model} v{args.version}: {analysis.n_rows} test rows, {analysis.seconds:.1f} s"
    )
    if analysis.importance is not None:
        top = ", ".join(f"{f.feature} {f.mean_drop:.4f}" for f in analysis.importance.features[:5])
        console.print(f"most important ({analysis.importance.metric} drop): {top}")
    for warning in analysis.slices.warnings:
        console.print(f"[yellow]warning[/yellow] {warning}")
    return 0


def run_labels(args: argparse.Namespace) -> int:
    from cloud_trainer.governance.errors import LabellingError
    from cloud_trainer.governance.labelling.export import export_labelled
    from cloud_trainer.governance.labelling.queue import LabelQueue

    fleet = _fleet(args.fleet_db)
    try:
        queue = LabelQueue(fleet)
        if args.action == "status":
            sys.stdout.write(json.dumps(queue.counts(), sort_keys=True) + "\n")
            return 0
        if args.out is None:
            raise UserError("labels export needs --out FOLDER", exit_code=2)
        export = export_labelled(queue, args.out, args.base, include_used=args.all)
    except LabellingError as e:
        raise UserError(str(e), exit_code=2) from e
    finally:
        fleet.close()
    Console().print(
        f"{export.export_id}: {len(export.samples)} labelled frames in {args.out} "
        f"({export.base_files} base files linked, {len(export.excluded)} left out)"
    )
    return 0


def run_triggers(args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException

    from cloud_trainer.catdog.ingest import DatasetError
    from cloud_trainer.export import ExportError
    from cloud_trainer.governance.errors import GovernanceError
    from cloud_trainer.governance.triggers.plan import TriggerConfig
    from cloud_trainer.governance.triggers.run import run_due
    from cloud_trainer.registry import RegistryError
    from cloud_trainer.weather.ingest import WeatherDataError

    try:
        config = TriggerConfig.load(args.config)
    except GovernanceError as e:
        raise UserError(str(e), exit_code=2) from e
    _registry(args.store)
    fleet = _fleet(args.fleet_db)
    try:
        outcomes = run_due(config, dry_run=args.dry_run, fleet_store=fleet, store=args.store)
    except (WeatherDataError, DatasetError) as e:
        raise UserError(str(e), exit_code=2) from e
    except (GovernanceError, MlflowException, ExportError, RegistryError) as e:
        raise UserError(str(e)) from e
    finally:
        if fleet is not None:
            fleet.close()
    out = Console()
    if not outcomes:
        out.print("nothing is due")
    for outcome in outcomes:
        if outcome.dry_run:
            out.print("[bold]dry run[/bold]: " + "\n".join(outcome.plan))
        else:
            verdict = "promoted" if outcome.promoted else "not promoted"
            out.print(f"{outcome.model} v{outcome.version} ({outcome.causes}): {verdict}")
    return 0
