"""The promotion gate: the only way a version becomes ``champion``, with its reasons on record."""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from cloud_trainer.registry.errors import RegistryError
from cloud_trainer.registry.resolve import resolve_model
from cloud_trainer.registry.runs import CHAMPION, alias_version
from edge_agent.protocol.messages import utc_now

log = logging.getLogger(__name__)

GATE_ARTIFACT = "gate/decision.json"


class GateInputs(BaseModel):
    """Everything the decision depends on; every score is on the same split of the same data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str
    version: int = Field(ge=1)
    primary_metric: str = Field(description="e.g. 'macro_f1'; higher is better.")
    split: str = Field(description="Which data the scores come from, e.g. 'test'.")
    data_version: str | None = None
    candidate: float
    parity_ok: bool
    max_abs_diff: float | None = None
    baseline_name: str
    baseline: float
    min_gain_over_baseline: float = Field(default=0.0, ge=0)
    champion_version: int | None = None
    champion: float | None = Field(
        default=None, description="The current champion's score on the same split."
    )
    champion_error: str | None = Field(
        default=None, description="Why the current champion could not be scored, if it could not."
    )
    min_gain_over_champion: float = Field(default=0.0, ge=0)


class GateDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    promote: bool
    reasons: list[str]
    inputs: GateInputs
    decided: datetime


def decide(inputs: GateInputs) -> GateDecision:
    """Promote only when parity holds and the candidate strictly beats baseline and champion.

    Failing to score the champion blocks promotion: replacing a model we cannot compare
    against would make the gate a formality.
    """
    reasons: list[str] = []
    ok = True
    metric = inputs.primary_metric
    if not math.isfinite(inputs.candidate):
        ok = False
        reasons.append(f"candidate {metric} is not a number")
    if inputs.parity_ok:
        reasons.append(f"parity ok (max abs diff {inputs.max_abs_diff})")
    else:
        ok = False
        reasons.append(f"parity failed (max abs diff {inputs.max_abs_diff})")
    needed = inputs.baseline + inputs.min_gain_over_baseline
    if inputs.candidate > needed:
        reasons.append(
            f"{metric} {inputs.candidate:.4f} beats {inputs.baseline_name} {inputs.baseline:.4f}"
        )
    else:
        ok = False
        reasons.append(
            f"{metric} {inputs.candidate:.4f} does not beat {inputs.baseline_name} "
            f"{inputs.baseline:.4f} (+{inputs.min_gain_over_baseline} required)"
        )
    if inputs.champion_version is None:
        reasons.append("no current champion")
    elif inputs.champion_error is not None or inputs.champion is None:
        ok = False
        reasons.append(
            f"champion v{inputs.champion_version} could not be scored on {inputs.split}: "
            f"{inputs.champion_error or 'no score'}"
        )
    elif inputs.candidate > inputs.champion + inputs.min_gain_over_champion:
        reasons.append(
            f"{metric} {inputs.candidate:.4f} beats champion v{inputs.champion_version} "
            f"{inputs.champion:.4f}"
        )
    else:
        ok = False
        reasons.append(
            f"{metric} {inputs.candidate:.4f} does not beat champion "
            f"v{inputs.champion_version} {inputs.champion:.4f}"
        )
    return GateDecision(promote=ok, reasons=reasons, inputs=inputs, decided=utc_now())


def score_champion(
    model_name: str, score: Callable[[Path], float]
) -> tuple[int | None, float | None, str | None]:
    """(version, score, error) of the current champion, scored by ``score(onnx_path)``.

    ``score`` runs the caller's evaluation on the same split as the candidate; any error it
    raises is captured as text so the gate can record why it refused.
    """
    version = alias_version(model_name, CHAMPION)
    if version is None:
        return None, None, None
    with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
        try:
            resolved = resolve_model(f"models:/{model_name}/{version}", Path(tmp))
            return version, float(score(resolved.path)), None
        except Exception as e:  # noqa: BLE001 - any failure to score is a recorded gate input
            log.warning("champion %s v%s could not be scored: %s", model_name, version, e)
            return version, None, f"{type(e).__name__}: {e}"


def apply_gate(decision: GateDecision, run_id: str | None = None) -> GateDecision:
    """Record the decision on the model version (tags) and the run (artefact); promote if due."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    inputs = decision.inputs
    client = MlflowClient()
    tags = {
        "gate.promote": str(decision.promote).lower(),
        "gate.primary_metric": inputs.primary_metric,
        "gate.split": inputs.split,
        "gate.candidate": f"{inputs.candidate:.6f}",
        "gate.baseline": f"{inputs.baseline_name}={inputs.baseline:.6f}",
        "gate.champion": (
            "none"
            if inputs.champion_version is None
            else f"v{inputs.champion_version}={inputs.champion}"
        ),
        "gate.parity_ok": str(inputs.parity_ok).lower(),
        "gate.reasons": "; ".join(decision.reasons)[:5000],
        "gate.decided": decision.decided.isoformat(),
    }
    try:
        for key, value in tags.items():
            client.set_model_version_tag(inputs.model_name, str(inputs.version), key, value)
        if run_id is not None:
            client.log_text(
                run_id, json.dumps(decision.model_dump(mode="json"), indent=2), GATE_ARTIFACT
            )
        if decision.promote:
            client.set_registered_model_alias(inputs.model_name, CHAMPION, str(inputs.version))
    except MlflowException as e:
        raise RegistryError(f"could not record the gate decision: {e}") from e
    if decision.promote:
        log.info("%s v%s promoted to champion", inputs.model_name, inputs.version)
    else:
        log.info("%s v%s not promoted: %s", inputs.model_name, inputs.version, decision.reasons)
    return decision
