"""The FastAPI application of the fleet service, wrapped in its request guards."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI

from cloud_trainer.fleet.api.deps import (
    OPEN_ROUTES,
    READ_ROUTES,
    SAFE_METHODS,
    FleetContext,
    authorize,
    bearer_scheme,
)
from cloud_trainer.fleet.api.fleet_routes import router as fleet_router
from cloud_trainer.fleet.api.guards import RequestGuard
from cloud_trainer.fleet.api.ops_routes import router as ops_router
from cloud_trainer.fleet.api.responses import (
    HTTP_METHODS,
    Problem,
    method_not_allowed,
    refusals,
)

# Multipart framing around a sample: boundaries and the provenance fields.
MULTIPART_OVERHEAD = 64 * 1024


def create_app(context: FleetContext) -> FastAPI:
    app = FastAPI(
        title="Fleet service",
        description="Devices, telemetry, predictions, drift alerts, releases and commands.",
        version="1",
        # On the app, so every route (those added later too) needs a token unless listed open.
        dependencies=[Depends(bearer_scheme), Depends(authorize)],
    )
    app.state.fleet = context
    app.add_exception_handler(405, method_not_allowed)
    app.include_router(fleet_router)
    app.include_router(ops_router)
    from cloud_trainer.fleet.web import mount_dashboard  # web builds on api.deps: import late

    mount_dashboard(app, context)
    _document_access(app)
    settings = context.settings

    def limit_for(path: str) -> int:
        if path == "/api/samples":
            return settings.max_sample_bytes + MULTIPART_OVERHEAD
        return settings.max_json_bytes

    context.metrics.gauge(
        "fleet_devices_online",
        lambda: float(sum(1 for d in context.store.devices() if d["online"])),
    )
    app.add_middleware(
        RequestGuard,
        metrics=context.metrics,
        limit_for=limit_for,
        max_concurrent=settings.max_concurrent_requests,
    )
    return app


def _document_access(app: FastAPI) -> None:
    """The Open API document says what ``authorize`` does: which operations need a token
    (401 without one) and which an operator's (403 for a viewer); the open ones need none."""
    generate = app.openapi
    problem = {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    unauthorized = {**refusals(401)[401], "content": problem}
    unauthorized.pop("model", None)
    forbidden = {
        "description": "The token is a viewer's: it may read but not change the fleet.",
        "content": problem,
    }

    def openapi() -> dict[str, Any]:
        schema = generate()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault("Problem", Problem.model_json_schema())
        for path, item in schema.get("paths", {}).items():
            for method, operation in item.items():
                key = (method.upper(), path)
                if key[0] not in HTTP_METHODS:
                    continue
                if key in OPEN_ROUTES:
                    operation.pop("security", None)
                    continue
                responses = operation.setdefault("responses", {})
                responses.setdefault("401", unauthorized)
                if key[0] not in SAFE_METHODS and key not in READ_ROUTES:
                    responses.setdefault("403", forbidden)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
