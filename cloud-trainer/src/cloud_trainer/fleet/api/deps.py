"""What every route needs: the service context and the caller's token (viewer or operator)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal

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
    # The device listing's answers: query -> (store generation, monotonic time, body).
    listing_cache: dict[tuple[object, ...], tuple[int, float, bytes]] = field(default_factory=dict)


def get_context(request: Request) -> FleetContext:
    context: FleetContext = request.app.state.fleet
    return context


Context = Annotated[FleetContext, Depends(get_context)]

_bearer = HTTPBearer(auto_error=False)

Role = Literal["operator", "viewer"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Routes anyone may call: probes, the redirect to the page, and the page's own start-up
# (what it may offer, signing out). Everything else needs a token, /metrics included.
OPEN_ROUTES = frozenset(
    {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/"),
        ("GET", "/api/session"),
        ("DELETE", "/api/session"),
    }
)
# Requests that change nothing although they are not GETs: a viewer may make them.
READ_ROUTES = frozenset(
    {
        ("POST", "/api/session"),
        ("POST", "/api/governance/models/{model}/versions/{version}/explain"),
    }
)
# What a browser loads without script (EventSource, <img>) cannot carry a bearer header:
# these reads also accept the dashboard cookie set at sign-in.
COOKIE_ROUTES = frozenset({"/api/events", "/api/labelling/samples/{sample_id}/image"})

DASHBOARD_COOKIE = "fleet_dashboard"
_COOKIE_LABEL = b"fleet-dashboard-cookie-v1"


@dataclass(frozen=True)
class Identity:
    """Who presented a valid token: its name (recorded in audit) and its role."""

    name: str
    role: Role


def dashboard_cookie(token: str) -> str:
    """The cookie value for a token: derived from it, so it is not the token itself.

    Removing the token from the settings invalidates the cookie with it.
    """
    return hmac.new(token.encode(), _COOKIE_LABEL, hashlib.sha256).hexdigest()


def _cookie_holder(settings: FleetSettings, value: str) -> Identity | None:
    presented = value.encode()
    found = None
    for role, tokens in (("viewer", settings.viewer_tokens), ("operator", settings.api_tokens)):
        for name, token in tokens.items():
            expected = dashboard_cookie(token.get_secret_value()).encode()
            if hmac.compare_digest(presented, expected):
                found = Identity(name, "operator" if role == "operator" else "viewer")
    return found


def _route_path(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", request.url.path))


def identify(request: Request, settings: FleetSettings) -> Identity | None:
    """The caller of this request, from its bearer token (or, where allowed, the cookie)."""
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        held = settings.token_holder(credentials.strip())
        return None if held is None else Identity(*held)
    cookie = request.cookies.get(DASHBOARD_COOKIE)
    if cookie and request.method == "GET" and _route_path(request) in COOKIE_ROUTES:
        return _cookie_holder(settings, cookie)
    return None


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def authenticate(request: Request, context: Context) -> Identity:
    """The caller's identity; 401 without a valid token (no hint which part failed)."""
    cached = getattr(request.state, "fleet_identity", None)
    if isinstance(cached, Identity):
        return cached
    header = request.headers.get("authorization")
    identity = identify(request, context.settings)
    if identity is None:
        if header is None and DASHBOARD_COOKIE not in request.cookies:
            raise _unauthorized("a bearer token is required")
        raise _unauthorized("invalid token")
    request.state.fleet_identity = identity
    return identity


def require_operator(identity: Annotated[Identity, Depends(authenticate)]) -> str:
    """The operator's name; 403 for a viewer token."""
    if identity.role != "operator":
        raise HTTPException(
            403, f"token {identity.name!r} is a viewer token: it may read but not change the fleet"
        )
    return identity.name


def authorize(request: Request, context: Context) -> None:
    """Applied to every route of the app: reads need any valid token, changes an operator's.

    New routes are covered by default; only OPEN_ROUTES answer without a token, and only
    READ_ROUTES let a viewer use a method other than GET.
    """
    key = (request.method, _route_path(request))
    if key in OPEN_ROUTES:
        return
    identity = authenticate(request, context)
    if request.method not in SAFE_METHODS and key not in READ_ROUTES:
        require_operator(identity)


# Kept for the HTTPBearer entry in the Open API document: the schema then says how to sign in.
def bearer_scheme(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Documents the bearer scheme; ``authorize`` does the checking."""


Caller = Annotated[str, Depends(require_operator)]
"""The operator making a change (its token name, recorded in audit)."""

Reader = Annotated[Identity, Depends(authenticate)]
"""Whoever holds a valid token, viewer or operator."""
