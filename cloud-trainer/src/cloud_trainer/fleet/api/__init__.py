"""The fleet service's HTTP API (FastAPI)."""

from cloud_trainer.fleet.api.app import create_app
from cloud_trainer.fleet.api.deps import FleetContext

__all__ = ["FleetContext", "create_app"]
