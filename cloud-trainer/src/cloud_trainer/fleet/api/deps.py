"""What every route needs: the service context and, for changes, the caller's token."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cloud_trainer.fleet.commands import CommandPublisher
from cloud_trainer.fleet.metrics import FleetMetrics
from cloud_trainer.fleet.settings import FleetSettings
from cloud_trainer.fleet.store import FleetStore


@dataclass
class FleetContext:
    """The parts of a running service the API reads and drives."""

    settings: FleetSettings
    store: FleetStore
    metrics: FleetMetrics
    commands: CommandPublisher | None
    broker_connected: Callable[[], bool]


def get_context(request: Request) -> FleetContext:
    context: FleetContext = request.app.state.fleet
    return context


Context = Annotated[FleetContext, Depends(get_context)]

_bearer = HTTPBearer(auto_error=False)


def require_token(
    context: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The caller's name for a valid bearer token; 401 otherwise (no hint which part failed)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )
    owner = context.settings.token_owner(credentials.credentials)
    if owner is None:
        raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
    return owner


Caller = Annotated[str, Depends(require_token)]
