"""One fleet service instance: store, MQTT (and JetStream) consumer, policy, HTTP API, wired."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from types import TracebackType

import uvicorn

from cloud_trainer.fleet.api import FleetContext, create_app
from cloud_trainer.fleet.commands import CommandPublisher
from cloud_trainer.fleet.consumer import (
    ConsumerSettings,
    FleetConsumer,
    WriterSettings,
    consumer_client_id,
)
from cloud_trainer.fleet.consumer.jetstream import JetStreamSettings, JetStreamSource
from cloud_trainer.fleet.metrics import FleetMetrics
from cloud_trainer.fleet.policy import ActionHandler, PolicyConfig, PolicyEngine
from cloud_trainer.fleet.policy.rules import ActionName
from cloud_trainer.fleet.settings import FleetSettings
from cloud_trainer.fleet.store import FleetStore
from edge_agent.protocol import load_public_key

log = logging.getLogger(__name__)


class FleetService:
    """Start with ``start()`` (or as a context manager), stop with ``stop()``.

    ``handlers`` supply the ``retrain`` and ``rollback`` actions (and may replace
    ``notify``); the closed loop passes its pipeline and release callables here.
    """

    def __init__(
        self,
        settings: FleetSettings,
        handlers: Mapping[ActionName, ActionHandler] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = FleetMetrics()
        self.store = FleetStore(
            settings.database_url,
            bucket_s=settings.bucket_s,
            offline_after_s=settings.offline_after_s,
        )
        policy = (
            PolicyConfig.load(settings.policy_file)
            if settings.policy_file is not None
            else PolicyConfig.default()
        )
        self.policy = PolicyEngine(self.store, policy, self.metrics, handlers)
        keys = tuple(load_public_key(p) for p in settings.release_public_keys)
        self.consumer = FleetConsumer(
            settings.broker_nodes(),
            self.store,
            self.metrics,
            ConsumerSettings(
                root=settings.root,
                group=settings.group,
                client_id=consumer_client_id(settings.root, settings.group, settings.instance),
                subscription=settings.subscription,
                device_channels=settings.source == "mqtt",
                release_keys=keys,
            ),
            WriterSettings(
                telemetry_retention_s=settings.telemetry_retention_s,
                predictions_retention_s=settings.predictions_retention_s,
            ),
            on_alerts=self.policy.on_alerts,
        )
        self.jetstream: JetStreamSource | None = None
        if settings.source == "jetstream":
            self.jetstream = JetStreamSource(
                self.consumer,
                JetStreamSettings(
                    urls=tuple(settings.nats_urls),
                    stream=settings.jetstream_stream,
                    durable=settings.group,
                    replicas=settings.jetstream_replicas,
                    max_age_s=settings.jetstream_max_age_s,
                    max_bytes=settings.jetstream_max_bytes,
                    ack_wait_s=settings.jetstream_ack_wait_s,
                ),
            )
        self.commands = CommandPublisher(
            self.consumer.link, self.store, self.consumer.tree, self.metrics
        )
        if self.jetstream is not None and settings.jetstream_resend_on_leader_move:
            self.jetstream.on_leader_moved = self._ask_for_resend
        self.context = FleetContext(
            settings=settings,
            store=self.store,
            metrics=self.metrics,
            commands=self.commands,
            broker_connected=lambda: self.consumer.connected,
        )
        self.app = create_app(self.context)
        self._server: uvicorn.Server | None = None
        self._http_thread: threading.Thread | None = None

    def _ask_for_resend(self, within_s: float, rounds: int = 3, answer_s: float = 10.0) -> None:
        """The stream lost its leader: devices send again what their broker acknowledged
        in that time (see ``JetStreamSource._watch_leader``).

        The request can itself be lost (the broker's own streams move too, and a device may
        be between nodes): devices that have not answered within ``answer_s`` are asked
        again, with the window grown by the time since, up to ``rounds`` times. A device
        that is offline answers none; it resends by itself when it reconnects.
        """
        began = time.monotonic()
        targets: list[tuple[str, str]] | None = None  # every device heard from lately
        try:
            for _ in range(rounds):
                within = within_s + (time.monotonic() - began)
                sent = self.commands.broadcast(
                    "resend", {"within_s": round(within, 1)}, "fleet", devices=targets
                )
                if not sent:
                    return
                time.sleep(answer_s)
                targets = list(self.commands.unanswered(sent).values())
                if not targets:
                    return
                log.info("resend: %s devices have not answered; asking again", len(targets))
        except Exception:  # a failed broadcast must not end the service; devices that
            # reconnect resend by themselves
            log.exception("asking the devices to resend failed")

    @property
    def http_port(self) -> int:
        """The bound port (useful when the settings asked for port 0)."""
        if self._server is None or not self._server.servers:
            return self.settings.http_port
        sockets = self._server.servers[0].sockets
        return int(sockets[0].getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.http_host}:{self.http_port}"

    def start(self, broker_timeout: float | None = 10.0) -> FleetService:
        """Start consuming, then serve HTTP on a background thread."""
        self.consumer.start(timeout=broker_timeout)
        if self.jetstream is not None:
            self.jetstream.start()
        config = uvicorn.Config(
            self.app,
            host=self.settings.http_host,
            port=self.settings.http_port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._http_thread = threading.Thread(
            target=self._server.run, name="fleet-http", daemon=True
        )
        self._http_thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._http_thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"HTTP server did not start on {self.settings.http_host}:"
                    f"{self.settings.http_port}"
                )
            time.sleep(0.02)
        log.info("fleet service at %s", self.base_url)
        return self

    @property
    def serving(self) -> bool:
        return self._http_thread is not None and self._http_thread.is_alive()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._http_thread is not None:
            self._http_thread.join(10)
        if self.jetstream is not None:
            self.jetstream.stop()
        self.consumer.stop()
        self.policy.close()
        self.store.close()

    def __enter__(self) -> FleetService:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
