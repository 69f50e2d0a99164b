"""Running due retrainings (or describing them, in a dry run) with their causes on the run."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from cloud_trainer.fleet.policy import PolicyDecision
from cloud_trainer.fleet.store import FleetStore
from cloud_trainer.fleet.store import schema as fleet
from cloud_trainer.governance.errors import GovernanceError
from cloud_trainer.governance.labelling.export import LabelExport, export_labelled
from cloud_trainer.governance.labelling.queue import LabelQueue
from cloud_trainer.governance.registry_facts import TRIGGER_TAG_PREFIX, log_governance_json
from cloud_trainer.governance.triggers.plan import (
    Cause,
    DriftRequest,
    ModelState,
    ModelTrigger,
    TriggerConfig,
    TriggerDecision,
    plan_triggers,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TriggerOutcome:
    model: str
    causes: str
    dry_run: bool
    plan: list[str]
    version: int | None = None
    run_id: str | None = None
    promoted: bool | None = None


def last_trained(model: str) -> float | None:
    """When the newest registered version was created (seconds), None when there is none."""
    from mlflow import MlflowClient

    versions = MlflowClient().search_model_versions(f"name = '{model}'")
    stamps = [float(v.creation_timestamp) / 1000.0 for v in versions]
    return max(stamps, default=None)


def read_states(
    config: TriggerConfig, fleet_store: FleetStore | None, queue: LabelQueue | None
) -> dict[str, ModelState]:
    unused = 0 if queue is None else queue.counts()["unused_for_training"]
    states = {}
    for trigger in config.models:
        drift: tuple[DriftRequest, ...] = ()
        if fleet_store is not None:
            p = fleet.policy_actions.c
            query = (
                select(p.id, p.alert_id, p.decided_at, p.detail)
                .where(p.model_name == trigger.name, p.action == "retrain")
                .order_by(p.decided_at)
            )
            drift = tuple(
                DriftRequest(int(r.id), int(r.alert_id), float(r.decided_at), str(r.detail or ""))
                for r in fleet_store.read(lambda c: c.execute(query).all())  # noqa: B023
            )
        states[trigger.name] = ModelState(
            last_trained=last_trained(trigger.name),
            unused_labels=unused if trigger.pipeline == "catdog" else 0,
            drift=drift,
        )
    return states


def describe(decision: TriggerDecision, config: TriggerConfig, unused_labels: int) -> list[str]:
    """The dry run's answer: what would be trained on what, registered, gated and released."""
    t = decision.trigger
    lines = [f"retrain {t.name} with the {t.pipeline} pipeline" + (" (quick)" if t.quick else "")]
    lines += [f"  because: {c.kind}: {c.detail}" for c in decision.causes]
    data = str(t.data) if t.data else "the pipeline's default data"
    if t.pipeline == "catdog" and unused_labels:
        lines.append(f"  data: {data} plus {unused_labels} labelled fleet frames (export recorded)")
    else:
        lines.append(f"  data: {data}")
    lines.append(f"  then: register a new version of {t.name}, gate it against the champion")
    lines.append(
        f"  if promoted: release to channel {config.release.channel} in waves "
        f"{config.release.waves} (cloud-trainer release rollout --model models:/{t.name}/<new>)"
    )
    return lines


def _tags(decision: TriggerDecision, export: LabelExport | None) -> dict[str, str]:
    alert_ids = sorted({a for c in decision.causes for a in c.alert_ids})
    tags = {
        f"{TRIGGER_TAG_PREFIX}cause": decision.cause_kinds,
        f"{TRIGGER_TAG_PREFIX}detail": " | ".join(c.detail for c in decision.causes)[:5000],
        f"{TRIGGER_TAG_PREFIX}at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if alert_ids:
        tags[f"{TRIGGER_TAG_PREFIX}alert_ids"] = ",".join(map(str, alert_ids))
    if export is not None:
        tags[f"{TRIGGER_TAG_PREFIX}labels_export"] = export.export_id
        tags[f"{TRIGGER_TAG_PREFIX}labels_count"] = str(len(export.samples))
    return tags


def _train(
    t: ModelTrigger, data: Path | None, store: str | None, work: Path
) -> tuple[int, str, bool]:
    """(version, run id, promoted) of one pipeline run."""
    from mlflow import MlflowClient

    if t.pipeline == "weather":
        from cloud_trainer.weather.pipeline import train_weather
        from cloud_trainer.weather.settings import TrainSettings, default_data_path

        weather = TrainSettings(
            data=data or default_data_path()[0],
            store=store,
            quick=t.quick,
            model_name=t.name,
            work_dir=work,
        )
        outcome = train_weather(weather)
        if outcome.registered is None or outcome.decision is None or outcome.run_id is None:
            raise GovernanceError(f"{t.name}: the weather pipeline registered nothing")
        return outcome.registered.version, outcome.run_id, outcome.decision.promote
    from cloud_trainer.catdog.cli import default_data_path as pets_default
    from cloud_trainer.catdog.cli import default_negatives
    from cloud_trainer.catdog.pipeline import PipelineSettings, run_pipeline
    from cloud_trainer.catdog.train import TrainSettings as CatdogTrain

    train = CatdogTrain(
        arch=t.arch,
        size=160 if t.quick else 224,
        feature_views=2 if t.quick else 4,
        cnn_epochs=4 if t.quick else 40,
    )
    pets = data or pets_default()[0]
    settings = PipelineSettings(
        data=pets,
        negatives=default_negatives(pets),
        work_dir=work,
        model_name=t.name,
        train=train,
        calibration_images=32 if t.quick else 200,
        store=store,
    )
    report = run_pipeline(settings)
    if report.fp32.registered is None:
        raise GovernanceError(f"{t.name}: the catdog pipeline registered nothing")
    version = int(report.fp32.registered.rsplit("/", 1)[1])
    run_id = str(MlflowClient().get_model_version(t.name, str(version)).run_id)
    return version, run_id, bool(report.fp32.promoted)


def execute(
    decision: TriggerDecision,
    config: TriggerConfig,
    *,
    dry_run: bool,
    store: str | None = None,
    queue: LabelQueue | None = None,
    work_dir: Path | None = None,
) -> TriggerOutcome:
    """Train (unless ``dry_run``), then record every cause as ``trigger.*`` tags on the run."""
    from mlflow import MlflowClient

    t = decision.trigger
    unused = 0
    if queue is not None and t.pipeline == "catdog":
        unused = queue.counts()["unused_for_training"]
    plan = describe(decision, config, unused)
    if dry_run:
        return TriggerOutcome(t.name, decision.cause_kinds, True, plan)
    work = work_dir or Path(tempfile.mkdtemp(prefix=f"trigger-{t.name}-"))
    export: LabelExport | None = None
    data = t.data
    if queue is not None and t.pipeline == "catdog" and unused:
        from cloud_trainer.catdog.cli import default_data_path as pets_default

        base = data or pets_default()[0]
        export = export_labelled(queue, work / "dataset", base=base)
        data = work / "dataset"
    version, run_id, promoted = _train(t, data, store, work / "run")
    client = MlflowClient()
    for key, value in _tags(decision, export).items():
        client.set_tag(run_id, key, value)
    if export is not None and queue is not None:
        log_governance_json(run_id, "labelled_samples.json", export.model_dump(mode="json"))
        queue.mark_used(export.export_id, run_id)
    log.info(
        "retrained %s → v%s (%s) because %s",
        t.name,
        version,
        "promoted" if promoted else "not promoted",
        decision.cause_kinds,
    )
    return TriggerOutcome(t.name, decision.cause_kinds, False, plan, version, run_id, promoted)


def run_due(
    config: TriggerConfig,
    *,
    dry_run: bool,
    fleet_store: FleetStore | None = None,
    store: str | None = None,
    now: float | None = None,
) -> list[TriggerOutcome]:
    """Plan with the stores' state and run (or describe) every due retraining."""
    queue = LabelQueue(fleet_store) if fleet_store is not None else None
    decisions = plan_triggers(config, read_states(config, fleet_store, queue), now or time.time())
    return [execute(d, config, dry_run=dry_run, store=store, queue=queue) for d in decisions]


class RetrainHandler:
    """The fleet policy engine's ``retrain`` action: one retraining with the alert as cause."""

    def __init__(
        self,
        config: TriggerConfig,
        *,
        dry_run: bool = False,
        store: str | None = None,
        fleet_store: FleetStore | None = None,
    ) -> None:
        self.config = config
        self.dry_run = dry_run
        self.store = store
        self.queue = LabelQueue(fleet_store) if fleet_store is not None else None

    def __call__(self, decision: PolicyDecision) -> str:
        trigger = self.config.model(decision.model_name)
        if trigger is None:
            raise GovernanceError(f"no trigger configured for model {decision.model_name}")
        cause = Cause(
            "drift", f"policy rule {decision.rule}: {decision.reason}", (decision.alert_id,)
        )
        outcome = execute(
            TriggerDecision(trigger, (cause,)),
            self.config,
            dry_run=self.dry_run,
            store=self.store,
            queue=self.queue,
        )
        if outcome.dry_run:
            return "dry run: " + "; ".join(line.strip() for line in outcome.plan)
        verdict = "promoted" if outcome.promoted else "not promoted"
        return f"retrained {outcome.model} v{outcome.version} (run {outcome.run_id}): {verdict}"
