"""The dashboard's routes: its static page, sign-in check, live events and release actions."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from cloud_trainer.fleet.api.deps import Caller, FleetContext
from cloud_trainer.fleet.web.governance_routes import build_governance_router
from cloud_trainer.fleet.web.live import LiveFeed
from cloud_trainer.fleet.web.release_actions import ReleaseActionError, ReleaseActions
from edge_agent.protocol import ReleaseManifest, SigningKey, TopicTree
from edge_agent.protocol.topics import IDENT_PATTERN

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"

# Everything the page loads comes from the service itself; uPlot sets inline styles.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class DashboardFiles(StaticFiles):
    """Static files with the page's security headers; ``no-cache`` so upgrades show at once."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        response.headers["Cache-Control"] = "no-cache"
        return response


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    percent: float = Field(gt=0, le=100, description="Share of the fleet the next wave reaches.")


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to_version: int = Field(ge=0, description="Earlier version to release again.")


def _summary(manifest: ReleaseManifest) -> dict[str, Any]:
    return {
        "release_id": manifest.release_id,
        "model": manifest.model,
        "version": manifest.version,
        "wave": manifest.rollout.wave,
        "percent": manifest.rollout.percent,
        "allow_downgrade": manifest.allow_downgrade,
    }


def build_router(context: FleetContext, actions: ReleaseActions | None) -> APIRouter:
    router = APIRouter(prefix="/api")
    feed = LiveFeed(context.store)

    @router.get("/session")
    def capabilities() -> dict[str, Any]:
        """What the page may offer before anyone signs in."""
        return {
            "release_actions": actions is not None and actions.enabled,
            "commands": context.commands is not None,
        }

    @router.post("/session")
    def sign_in(caller: Caller) -> dict[str, Any]:
        """Checks a token; the page keeps it in sessionStorage and sends it as a bearer."""
        return {"name": caller}

    @router.get("/events")
    async def events(request: Request) -> StreamingResponse:
        return StreamingResponse(
            feed.stream(request.is_disconnected),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def _act(action: Any) -> dict[str, Any]:
        if actions is None:
            raise HTTPException(503, "release actions need a broker connection")
        try:
            return _summary(action(actions))
        except ReleaseActionError as e:
            raise HTTPException(e.status_code, str(e)) from e

    @router.post("/releases/{release_id}/promote", status_code=202)
    def promote(release_id: str, body: PromoteRequest, caller: Caller) -> Any:
        return _act(lambda a: a.promote(release_id, body.percent, caller))

    @router.post("/models/{model}/rollback", status_code=202)
    def rollback(
        model: Annotated[str, PathParam(pattern=IDENT_PATTERN)],
        body: RollbackRequest,
        caller: Caller,
    ) -> Any:
        return _act(lambda a: a.rollback(model, body.to_version, caller))

    return router


def mount_dashboard(app: FastAPI, context: FleetContext) -> None:
    """Adds the page at ``/dashboard/`` and its API routes; the signing key is optional."""
    key_path = context.settings.release_signing_key
    key = None if key_path is None else SigningKey.load(key_path)
    actions = None
    if context.commands is not None:
        actions = ReleaseActions(
            context.store, context.commands.link, TopicTree(context.settings.root), key
        )
    app.include_router(build_router(context, actions))
    app.include_router(build_governance_router(context))

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/dashboard/")

    app.mount("/dashboard", DashboardFiles(directory=STATIC, html=True), name="dashboard")
