"""The dashboard's routes: its static page, sign-in check, live events and release actions."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from cloud_trainer.fleet.api.deps import (
    DASHBOARD_COOKIE,
    Caller,
    FleetContext,
    Reader,
    dashboard_cookie,
)
from cloud_trainer.fleet.api.responses import refusals
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


class Capabilities(BaseModel):
    release_actions: bool = Field(description="Promote and roll back are possible.")
    commands: bool = Field(description="Commands can be sent to devices.")


class SignedIn(BaseModel):
    name: str = Field(description="The token's owner.")
    role: Literal["operator", "viewer"] = Field(
        description="operator: may change the fleet; viewer: may only read."
    )


class ReleaseSummary(BaseModel):
    """The manifest just published."""

    release_id: str
    model: str
    version: int
    wave: int
    percent: float
    allow_downgrade: bool


class EventStream(StreamingResponse):
    media_type = "text/event-stream"


class LiveEvent(BaseModel):
    """One server-sent event of ``/api/events``: which part of the fleet changed."""

    event: Literal["hello", "devices", "alerts", "releases", "commands", "unavailable"]
    data: str = Field(description="A JSON object: the changed device ids, the newest alert, ...")


def _summary(manifest: ReleaseManifest) -> ReleaseSummary:
    return ReleaseSummary(
        release_id=manifest.release_id,
        model=manifest.model,
        version=manifest.version,
        wave=manifest.rollout.wave,
        percent=manifest.rollout.percent,
        allow_downgrade=manifest.allow_downgrade,
    )


def build_router(context: FleetContext, actions: ReleaseActions | None) -> APIRouter:
    router = APIRouter(prefix="/api")
    feed = LiveFeed(context.store)

    @router.get("/session", responses=refusals(503))
    def capabilities() -> Capabilities:
        """What the page may offer before anyone signs in."""
        return Capabilities(
            release_actions=actions is not None and actions.enabled,
            commands=context.commands is not None,
        )

    @router.post("/session", responses=refusals(401, 503))
    def sign_in(caller: Reader, request: Request, response: Response) -> SignedIn:
        """Checks a token (viewer or operator); the page keeps it in sessionStorage and sends
        it as a bearer. The cookie set here, derived from the token, serves only what the
        browser loads without script: the live stream and labelling images."""
        header = request.headers.get("authorization", "")
        response.set_cookie(
            DASHBOARD_COOKIE,
            dashboard_cookie(header.partition(" ")[2].strip()),
            path="/api",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return SignedIn(name=caller.name, role=caller.role)

    @router.delete("/session", status_code=204)
    def sign_out(request: Request) -> Response:
        """Forgets the dashboard cookie; the page forgets its token itself."""
        response = Response(status_code=204)
        response.delete_cookie(
            DASHBOARD_COOKIE,
            path="/api",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @router.get(
        "/events",
        response_class=EventStream,
        # Before Open API 3.2 a stream's schema describes each of its events.
        responses={
            200: {
                "description": "Server-sent events until the client leaves (or 10 minutes).",
                "content": {EventStream.media_type: {"schema": LiveEvent.model_json_schema()}},
            }
        },
    )
    async def events(request: Request) -> EventStream:
        return EventStream(
            feed.stream(request.is_disconnected),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def _act(action: Any) -> ReleaseSummary:
        if actions is None:
            raise HTTPException(503, "release actions need a broker connection")
        try:
            return _summary(action(actions))
        except ReleaseActionError as e:
            raise HTTPException(e.status_code, str(e)) from e

    # 500 only if a stored manifest no longer validates; 503 without a key or a broker.
    acted = refusals(400, 401, 404, 409, 413, 500, 503)

    @router.post("/releases/{release_id}/promote", status_code=202, responses=acted)
    def promote(release_id: str, body: PromoteRequest, caller: Caller) -> ReleaseSummary:
        return _act(lambda a: a.promote(release_id, body.percent, caller))

    @router.post("/models/{model}/rollback", status_code=202, responses=acted)
    def rollback(
        model: Annotated[str, PathParam(pattern=IDENT_PATTERN)],
        body: RollbackRequest,
        caller: Caller,
    ) -> ReleaseSummary:
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
