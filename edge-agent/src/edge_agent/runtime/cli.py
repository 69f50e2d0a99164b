"""``edge-agent run`` and ``edge-agent doctor``: exit 0 ok, 1 runtime failure, 2 bad config."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from edge_agent.comms.mqtt import LinkError
from edge_agent.config.device import DeviceConfig, SecretError
from edge_agent.config.extras import ExtraMissing, opencv_user, require_opencv
from edge_agent.config.loader import ConfigError, load_config
from edge_agent.drift.service import DriftService
from edge_agent.health.service import SensorHealthService
from edge_agent.inference import InferenceEngine, ModelLoadError
from edge_agent.outbox import OutboxError
from edge_agent.protocol import DeviceKind
from edge_agent.runtime.agent import EdgeAgent
from edge_agent.runtime.doctor import run_checks
from edge_agent.runtime.logs import configure_logging
from edge_agent.sources import SourceError, open_source
from edge_agent.updater.agent_link import DeferredSink, attach, build_updater
from edge_agent.updater.errors import UpdateError
from edge_agent.updater.service import ModelUpdater

if TYPE_CHECKING:
    from edge_agent.api import ApiServer

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    run_parser = subparsers.add_parser("run", help="run the agent until SIGTERM")
    run_parser.add_argument("--config", type=Path, required=True, metavar="FILE")
    run_parser.add_argument(
        "--exit-at-end",
        action="store_true",
        help="stop (flushing the outbox) when a finite source such as a replay ends",
    )
    run_parser.set_defaults(func=run)
    doctor_parser = subparsers.add_parser("doctor", help="check source, broker, model, disk")
    doctor_parser.add_argument("--config", type=Path, required=True, metavar="FILE")
    doctor_parser.set_defaults(func=doctor)


def _load(path: Path) -> DeviceConfig | None:
    try:
        return load_config(path)
    except ConfigError as e:
        for issue in e.issues:
            print(issue)  # noqa: T201 - CLI output
        return None


def doctor(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    results = run_checks(config)
    for result in results:
        print(result)  # noqa: T201 - CLI output
    return 0 if all(r.ok for r in results) else 1


class StartupError(Exception):
    """The config leaves the agent nothing it can serve."""


def _serving_engine(
    config: DeviceConfig,
) -> tuple[InferenceEngine, tuple[ModelUpdater, DeferredSink] | None]:
    """The engine to serve first; with updates on, the updater picks it (never one on probation)."""
    path, threads = config.model.path, config.model.threads
    if config.updates is None:
        if path is None:
            raise StartupError("model.path is not set and updates are off: nothing to serve")
        return InferenceEngine.load(path, threads=threads), None
    name = config.model.name
    if name is None:
        if path is None:
            raise StartupError("set model.name (or model.path) so the updater knows its model")
        name = InferenceEngine.load(path, threads=threads).spec.name
    updater, engine, sink = build_updater(
        config.updates,
        model=name,
        device_id=config.device_id,
        groups=list(config.groups),
        provisioned=path,
        provisioned_version=config.model.version,
    )
    return engine, (updater, sink)


def _start_api(config: DeviceConfig, agent: EdgeAgent) -> ApiServer:
    # Imported here: FastAPI and uvicorn cost memory that a device without the API need not pay.
    from edge_agent.api import ApiServer, create_app
    from edge_agent.api.server import ApiServerError

    app = create_app(
        agent,
        token=config.api.token(),
        max_request_bytes=int(config.api.max_request_mb * 2**20),
        max_concurrent_predict=config.api.max_concurrent_predict,
    )
    api = ApiServer(app, config.api.host, config.api.port)
    try:
        api.start()
    except ApiServerError as e:
        raise StartupError(str(e)) from e
    return api


def run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    configure_logging(config.logging.level, config.logging.json_lines)
    updater: tuple[ModelUpdater, DeferredSink] | None = None
    drift: DriftService | None = None
    try:
        if (user := opencv_user(config)) is not None:
            require_opencv(user)  # a camera without edge-agent[camera] stops here, in one line
        engine, updater = _serving_engine(config)
        if config.model.warm_up:
            engine.warm_up()
        agent = EdgeAgent(config, engine, None)
        agent.source = open_source(config.source, mqtt=agent.link)
        if updater is not None:
            attach(agent, *updater)
        if config.sensor_health.enabled:
            SensorHealthService(agent, config.sensor_health).attach()
        if config.drift is not None and config.drift.enabled:
            drift = DriftService(agent, config.drift, config.limits.outbox_path.parent).attach()
            drift.start_uploads()
        if config.kind is DeviceKind.CAMERA and config.visits.enabled:
            from edge_agent.visits.service import VisitService  # OpenCV: cameras only

            capture = drift.capture if drift is not None else None
            data_dir = config.limits.outbox_path.parent
            VisitService(agent, config.visits, data_dir, capture).attach()
    except (
        StartupError,
        ExtraMissing,
        ModelLoadError,
        UpdateError,
        SourceError,
        OutboxError,
        SecretError,
        OSError,
    ) as e:
        log.error("cannot start: %s", e)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    api: ApiServer | None = None
    try:
        if config.api.enabled:
            api = _start_api(config, agent)
        agent.start(connect_timeout=None)
        while not stop.wait(0.2):
            if args.exit_at_end and agent.supervisor.workers["inference"].finished:
                log.info("source finished: stopping")
                break
    except (StartupError, LinkError, SecretError) as e:
        log.error("cannot start: %s", e)
        agent.stop()
        return 1
    finally:
        if api is not None:
            api.stop()
    if drift is not None:
        drift.stop()
    if updater is not None:
        updater[0].stop()
    flushed = agent.stop()
    if not flushed:
        log.warning("outbox not empty at exit: the rest is sent on the next start")
    return 0
