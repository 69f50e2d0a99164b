"""The FastAPI application of the fleet service, wrapped in its request guards."""

from __future__ import annotations

from fastapi import FastAPI

from cloud_trainer.fleet.api.deps import FleetContext
from cloud_trainer.fleet.api.fleet_routes import router as fleet_router
from cloud_trainer.fleet.api.guards import RequestGuard
from cloud_trainer.fleet.api.ops_routes import router as ops_router
from cloud_trainer.fleet.api.responses import method_not_allowed

# Multipart framing around a sample: boundaries and the provenance fields.
MULTIPART_OVERHEAD = 64 * 1024


def create_app(context: FleetContext) -> FastAPI:
    app = FastAPI(
        title="Fleet service",
        description="Devices, telemetry, predictions, drift alerts, releases and commands.",
        version="1",
    )
    app.state.fleet = context
    app.add_exception_handler(405, method_not_allowed)
    app.include_router(fleet_router)
    app.include_router(ops_router)
    from cloud_trainer.fleet.web import mount_dashboard  # web builds on api.deps: import late

    mount_dashboard(app, context)
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
