"""Governance in the fleet service: audit reports, explanations and the labelling queue."""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from cloud_trainer.fleet.api.deps import Caller, FleetContext
from cloud_trainer.fleet.api.responses import refusals
from cloud_trainer.fleet.store import queries
from cloud_trainer.governance.errors import GovernanceError, LabellingError, VersionNotFoundError
from cloud_trainer.governance.labelling.queue import LabelQueue

log = logging.getLogger(__name__)

# The report is self-contained: no script runs, images are data URIs, styles are inline.
REPORT_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
ModelName = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
VersionNumber = Annotated[int, PathParam(ge=1)]
# Row ids fit a signed 64-bit column: a larger number is a 422, not a database overflow.
RowId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]
# The image types an upload may have (see ``api.sample_files``): what the labelling page shows.
IMAGE_TYPES = ("image/jpeg", "image/png")


class LabelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: Literal["cat", "dog", "neither"]


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    features: dict[str, float] = Field(max_length=256, description="Feature name → value.")


class RegistryAccess:
    """The MLflow registry as the service reaches it, and the model files it has fetched.

    MLflow's client keeps its URIs in process globals, so every use re-activates the store
    under one lock; the service talks to one registry only.
    """

    def __init__(self, location: str | None) -> None:
        self.location = location
        self.lock = threading.Lock()
        self._models: dict[tuple[str, int], Path] = {}
        self._dir = Path(tempfile.mkdtemp(prefix="fleet-governance-"))

    def activate(self) -> None:
        from cloud_trainer.registry import open_store

        open_store(self.location)

    def model_file(self, model: str, version: int) -> Path:
        from cloud_trainer.registry import ModelNotFoundError, RegistryError, resolve_model

        key = (model, version)
        if key not in self._models:
            self.activate()
            try:
                resolved = resolve_model(
                    f"models:/{model}/{version}", self._dir / f"{model}-{version}"
                )
            except ModelNotFoundError as e:
                raise VersionNotFoundError(str(e)) from e
            except RegistryError as e:
                raise GovernanceError(str(e)) from e
            self._models[key] = resolved.path
        return self._models[key]


def _http(e: GovernanceError) -> HTTPException:
    if isinstance(e, LabellingError):
        return HTTPException(e.status_code, str(e))
    if isinstance(e, VersionNotFoundError):
        return HTTPException(404, str(e))
    return HTTPException(502, str(e))


def build_governance_router(context: FleetContext, registry: str | None = None) -> APIRouter:
    router = APIRouter(prefix="/api")
    access = RegistryAccess(registry)
    queue = LabelQueue(context.store)
    samples_dir = Path(context.settings.samples_dir)

    @router.get(
        "/governance/models/{model}/versions/{version}/report",
        response_class=HTMLResponse,
        responses=refusals(404, 502, 503, beside=HTMLResponse.media_type),
    )
    def report(model: ModelName, version: VersionNumber) -> HTMLResponse:
        from cloud_trainer.governance.report.build import render_report

        with access.lock:
            try:
                access.activate()
                text, _ = render_report(model, version, context.store, "this fleet service")
            except GovernanceError as e:
                raise _http(e) from e
        return HTMLResponse(text, headers=REPORT_HEADERS)

    @router.get(
        "/governance/models/{model}/versions/{version}/analysis",
        responses=refusals(404, 502, 503),
    )
    def analysis(model: ModelName, version: VersionNumber) -> dict[str, Any]:
        from cloud_trainer.governance.analysis import stored_analysis
        from cloud_trainer.governance.registry_facts import load_version

        with access.lock:
            try:
                access.activate()
                found = stored_analysis(load_version(model, version))
            except GovernanceError as e:
                raise _http(e) from e
        if found is None:
            raise HTTPException(404, f"{model} v{version} has not been analysed")
        return found.model_dump(mode="json")

    @router.get("/governance/alerts/{alert_id}/importance", responses=refusals(404, 502, 503))
    def alert_importance(alert_id: RowId) -> dict[str, Any]:
        """The alert's drifting features beside the model's importance of each."""
        from cloud_trainer.governance.analysis import stored_analysis
        from cloud_trainer.governance.registry_facts import load_version

        alert = context.store.read(lambda c: queries.get_alert(c, alert_id))
        if alert is None:
            raise HTTPException(404, f"no alert {alert_id}")
        ranked: dict[str, Any] = {}
        with access.lock:
            try:
                access.activate()
                found = stored_analysis(load_version(alert["model_name"], alert["model_version"]))
            except VersionNotFoundError:
                found = None
            except GovernanceError as e:
                raise _http(e) from e
        if found is not None and found.importance is not None:
            ranked = found.importance.by_feature()
        rows = []
        for feature in alert["features"]:
            known = ranked.get(feature.get("name"))
            rows.append(
                {
                    **feature,
                    "importance_rank": None if known is None else known.rank,
                    "importance": None if known is None else known.mean_drop,
                }
            )
        return {
            "alert_id": alert_id,
            "model_name": alert["model_name"],
            "model_version": alert["model_version"],
            "analysed": found is not None,
            "n_features": len(ranked),
            "features": rows,
        }

    @router.post(
        "/governance/models/{model}/versions/{version}/explain",
        responses=refusals(400, 404, 413, 422, 502, 503),
    )
    def explain(model: ModelName, version: VersionNumber, body: ExplainRequest) -> dict[str, Any]:
        """One forecast explained on request: each feature set back to its training mean."""
        from cloud_trainer.governance.explain.local import ExplainInputError, explain_file

        with access.lock:
            try:
                path = access.model_file(model, version)
            except GovernanceError as e:
                raise _http(e) from e
        try:
            return explain_file(path, body.features).model_dump(mode="json")
        except ExplainInputError as e:
            raise HTTPException(422, str(e)) from e
        except GovernanceError as e:
            raise HTTPException(422, f"{model} v{version}: {e}") from e

    @router.get("/labelling/queue", responses=refusals(503))
    def labelling_queue(
        limit: Annotated[int, Query(ge=1, le=500)] = 50, model: str | None = None
    ) -> dict[str, Any]:
        pending = queue.pending(limit, model)
        for row in pending:
            row.pop("path", None)  # the server's file layout is not the client's business
            row["image_url"] = f"/api/labelling/samples/{row['id']}/image"
        return {"samples": pending, "counts": queue.counts()}

    @router.get(
        "/labelling/samples/{sample_id}/image",
        response_class=FileResponse,
        responses={
            200: {
                "description": "The sample's image, as it was uploaded.",
                "content": {t: {"schema": {"type": "string"}} for t in IMAGE_TYPES},
            },
            **refusals(404, 410, 415, 503),
        },
    )
    def labelling_image(sample_id: RowId) -> FileResponse:
        try:
            path, content_type = queue.image_path(sample_id, samples_dir)
        except LabellingError as e:
            raise _http(e) from e
        return FileResponse(path, media_type=content_type, headers={"Cache-Control": "private"})

    @router.post("/labelling/samples/{sample_id}", responses=refusals(400, 401, 404, 409, 413, 503))
    def label_sample(sample_id: RowId, body: LabelRequest, caller: Caller) -> dict[str, Any]:
        try:
            return queue.label(sample_id, body.label, caller)
        except LabellingError as e:
            if e.status_code == 422:
                # The label was checked by LabelRequest already: what is left is a sample that
                # is not an image frame, a state of the sample and not a fault of the request.
                raise HTTPException(409, str(e)) from e
            raise _http(e) from e

    return router
