"""Settings of a fleet service run for real by a test: a private broker, a free HTTP port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloud_trainer.fleet.settings import FleetSettings, parse_tokens
from cloud_trainer.fleet.store import sqlite_url
from cloud_trainer.stack.mosquitto import MosquittoBroker


def fleet_settings(
    broker: MosquittoBroker,
    workdir: Path,
    root: str,
    *,
    operators: str,
    viewers: str = "",
    database_url: str | None = None,
    **more: Any,
) -> FleetSettings:
    """The service on ``broker`` under topic ``root``, HTTP on a free loopback port.

    Its SQLite store (unless ``database_url``) and samples live in ``workdir``; ``operators``
    and ``viewers`` are tokens as ``parse_tokens`` reads them (``name=token``); ``more`` sets
    any other setting.
    """
    return FleetSettings(
        database_url=database_url or sqlite_url(workdir / "fleet.db"),
        broker_host=broker.host,
        broker_port=broker.port,
        root=root,
        http_port=0,
        api_tokens=parse_tokens(operators),
        viewer_tokens=parse_tokens(viewers),
        samples_dir=workdir / "samples",
        **more,
    )
