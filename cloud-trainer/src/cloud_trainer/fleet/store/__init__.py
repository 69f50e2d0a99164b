"""Persistence of the fleet's state: devices, time series, alerts, releases, commands, samples."""

from cloud_trainer.fleet.store import queries
from cloud_trainer.fleet.store.engine import StoreError, sqlite_url
from cloud_trainer.fleet.store.fleet_store import FleetStore
from cloud_trainer.fleet.store.ingest import Envelope, IngestResult, StoredAlert

__all__ = [
    "Envelope",
    "FleetStore",
    "IngestResult",
    "StoreError",
    "StoredAlert",
    "queries",
    "sqlite_url",
]
