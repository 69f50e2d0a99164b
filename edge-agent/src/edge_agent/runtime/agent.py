"""The edge agent: reads samples, predicts, and publishes everything through the outbox."""

from __future__ import annotations

import collections
import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from edge_agent import __version__
from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink, Will
from edge_agent.config.device import DeviceConfig
from edge_agent.inference import InferenceEngine, InputError, ModelSlot, OutputError, Prediction
from edge_agent.outbox import OutboxPublisher, OutboxStore, Priority, priority_of
from edge_agent.protocol import (
    Channel,
    Command,
    CommandAck,
    LabelledAccuracy,
    MessageBase,
    PredictionMessage,
    StatusMessage,
    StreamEventMessage,
    TelemetryMessage,
    TopicTree,
    VisitCounters,
    canonical_json,
    encode,
    safe_decode,
    utc_now,
)
from edge_agent.protocol.messages import CommandAction
from edge_agent.runtime.commands import CommandHandler, CommandRejected, CommandRouter
from edge_agent.runtime.supervisor import Supervisor
from edge_agent.runtime.telemetry import HostSampler
from edge_agent.sources import Sample, Source, SourceClosed
from edge_agent.visits.config import publishes_prediction

log = logging.getLogger(__name__)

M = TypeVar("M", bound=MessageBase)
PredictionObserver = Callable[[Sample, Prediction, InferenceEngine], None]
Predictor = Callable[[ModelSlot, Sample], tuple[Prediction, InferenceEngine]]
VersionOf = Callable[[InferenceEngine], int]
DriftProvider = Callable[[], dict[str, object]]
LabelledProvider = Callable[[], LabelledAccuracy | None]
# Before each prediction: (flags for it, withhold it). See edge_agent.health.service.
SampleScreen = Callable[[Sample], tuple[list[str], bool]]
SensorFaultsProvider = Callable[[], list[str]]
AbsentRateProvider = Callable[[], float | None]


class VisitsView(Protocol):
    """What the agent, its telemetry and its local API read from the visit tracker."""

    def visit_counters(self) -> VisitCounters: ...

    def recent(self, limit: int = 50) -> list[dict[str, Any]]: ...

    def snapshot(self, visit_id: str) -> bytes | None: ...


def stream_message(event: object, device_id: str) -> StreamEventMessage:
    """A source's stream event (``edge_agent.sources.events.StreamEvent``: source, state,
    at, detail, down_s) as a wire message; read by attribute, so any such object will do."""
    at = getattr(event, "at", None)
    if isinstance(at, int | float):
        at = datetime.fromtimestamp(at, UTC)
    detail = getattr(event, "detail", None)
    return StreamEventMessage(
        device_id=device_id,
        ts=utc_now(),
        seq=0,
        source=str(getattr(event, "source", "")),
        state=getattr(event, "state", None),
        at=at if at is not None else utc_now(),
        detail=None if detail is None else str(detail)[:1024],
        down_s=getattr(event, "down_s", None),
    )


def broker_endpoints(config: DeviceConfig) -> list[BrokerEndpoint]:
    """Every broker node of the config, in the order the link tries them."""
    broker = config.broker
    tls = broker.tls
    password = broker.password()
    return [
        BrokerEndpoint(
            host=host,
            port=port,
            username=broker.username,
            password=password,
            ca_file=str(tls.ca_file) if tls else None,
            cert_file=str(tls.cert_file) if tls and tls.cert_file else None,
            key_file=str(tls.key_file) if tls and tls.key_file else None,
            keepalive_s=broker.keepalive_s,
        )
        for host, port in broker.addresses()
    ]


def broker_endpoint(config: DeviceConfig) -> BrokerEndpoint:
    """The first broker node: the only one without ``broker.endpoints``."""
    return broker_endpoints(config)[0]


class EdgeAgent:
    """One device's agent. Extension points for other components:

    - ``on_prediction(fn)``: ``fn(sample, prediction, engine)`` after each published
      prediction (drift monitor, probation); runs on the inference thread, keep it quick.
    - ``command_handler(action, fn)``: answer ``rollback``, ``pin``, ``update_check``,
      ``capture`` ...; ``fn(command)`` returns a detail or raises CommandRejected.
    - ``publish_event(message)``: send a drift alert, update event or ack through the
      outbox; the agent stamps device id and seq.
    - ``set_predictor(fn)``, ``set_version_of(fn)``, ``set_drift_provider(fn)``: let the
      updater route calls during probation, name the serving version, fill ``/drift``.
    - ``set_labelled_provider(fn)``: accuracy on labelled predictions for telemetry (the
      drift service's forecast join); ``fn()`` returns None while nothing is labelled.
    - ``set_sample_screen(fn)``: ``fn(sample)`` runs before each prediction and returns
      (flags for the prediction, whether to withhold it): the sensor-health tests.
    - ``set_sensor_faults_provider(fn)``: the input sensors judged faulty now, for telemetry.
    - ``set_visits(view)``: the visit tracker, for telemetry counters and ``/visits``;
      ``set_absent_rate_provider(fn)``: the recent share of absent frames (drift monitor).
    - ``on_stop(fn)``: ``fn()`` runs once inference has stopped and before the outbox's
      last flush, so what it publishes then still goes out (an open visit ends).

    Which predictions are published follows ``visits.predictions``; observers see every one.
    """

    def __init__(
        self,
        config: DeviceConfig,
        engine: InferenceEngine,
        source: Source | None,
        *,
        link: MqttLink | None = None,
    ) -> None:
        self.config = config
        self.tree = TopicTree(config.broker.topic_root)
        self._topics: dict[Channel, str] = {}
        stats_every = config.drift.image_stats_every if config.drift is not None else 1
        self.slot = ModelSlot(engine, stats_every=stats_every)
        self.source = source
        self.counters: collections.Counter[str] = collections.Counter()
        self.store = OutboxStore(
            config.limits.outbox_path,
            budget_bytes=config.limits.outbox_budget_bytes,
            synchronous=config.limits.outbox_sync,
            commit_interval_s=config.limits.outbox_commit_interval_s,
        )
        self.host = HostSampler(config.limits.outbox_path.parent)
        self.router = CommandRouter(
            config.device_id, config.limits.outbox_path.with_suffix(".commands.json")
        )
        self.supervisor = Supervisor()
        self.started_at = time.monotonic()
        self.state = "starting"
        self.predictions = 0
        self.last_prediction_at: float | None = None
        self._observers: list[PredictionObserver] = []
        self._predictor: Predictor = lambda slot, sample: slot.predict(sample)
        self._version_of: VersionOf = lambda _engine: config.model.version
        self.drift_provider: DriftProvider | None = None
        self.labelled_provider: LabelledProvider | None = None
        self.sample_screen: SampleScreen | None = None
        self.sensor_faults_provider: SensorFaultsProvider | None = None
        self.visits: VisitsView | None = None
        self.absent_rate_provider: AbsentRateProvider | None = None
        self._stop_hooks: list[Callable[[], None]] = []
        self._commands: queue.Queue[Command] = queue.Queue(maxsize=256)
        self._min_interval = 1.0 / (config.limits.max_predictions_per_s or float("inf"))
        self._stopped = threading.Event()
        self.link = link or MqttLink(
            broker_endpoints(config),
            client_id=f"{config.device_id}-{uuid.uuid4().hex[:8]}",
            will=self._last_will,
            max_inflight=config.broker.max_inflight,
            # Jittered first delay: a fleet does not reconnect in lockstep after a restart.
            reconnect_min_s=random.uniform(1.0, 3.0),  # noqa: S311 - not security
            reconnect_max_s=config.broker.reconnect_max_s,
        )
        self.publisher = OutboxPublisher(
            self.store,
            self.link,
            window=config.broker.max_inflight,
            replay_rate=config.limits.replay_rate,
            resend_window_s=config.broker.resend_window_s,
        )
        self.router.register("resend", self._resend)

    def _resend(self, command: Command) -> str:
        """``resend`` (args: optional ``within_s``): what the broker acknowledged in the
        ``within_s`` before the command was issued goes out again (the whole resend window
        without it). The fleet asks when its clustered broker may have acknowledged messages
        it then lost (a stream leader moved); receivers drop the duplicates by seq."""
        within = command.args.get("within_s")
        if within is not None and (
            isinstance(within, bool) or not isinstance(within, int | float) or within <= 0
        ):
            raise CommandRejected(f"within_s must be a positive number of seconds, not {within!r}")
        if self.publisher.resend_window_s <= 0:
            raise CommandRejected(
                "broker.resend_window_s is 0: this device keeps nothing to resend"
            )
        window = self.publisher.resend_window_s
        if within is not None:
            # The request may have waited in a busy broker: what was sent in its window is
            # older now by the command's age (by this device's clock, never less than 0).
            age = (utc_now() - command.ts).total_seconds()
            window = float(within) + min(max(age, 0.0), 60.0)
        held = self.publisher.request_resend(window)
        return f"re-sending up to {held} messages acknowledged in the last {window:g} s"

    # -- extension points ---------------------------------------------------------------

    def on_prediction(self, observer: PredictionObserver) -> None:
        self._observers.append(observer)

    def command_handler(self, action: CommandAction, handler: CommandHandler) -> None:
        self.router.register(action, handler)

    def set_predictor(self, predictor: Predictor) -> None:
        self._predictor = predictor

    def set_version_of(self, version_of: VersionOf) -> None:
        self._version_of = version_of

    def model_version(self, engine: InferenceEngine) -> int:
        return self._version_of(engine)

    def set_drift_provider(self, provider: DriftProvider) -> None:
        self.drift_provider = provider

    def set_labelled_provider(self, provider: LabelledProvider) -> None:
        self.labelled_provider = provider

    def set_sample_screen(self, screen: SampleScreen) -> None:
        self.sample_screen = screen

    def set_sensor_faults_provider(self, provider: SensorFaultsProvider) -> None:
        self.sensor_faults_provider = provider

    def set_visits(self, view: VisitsView) -> None:
        self.visits = view

    def set_absent_rate_provider(self, provider: AbsentRateProvider) -> None:
        self.absent_rate_provider = provider

    def on_stop(self, hook: Callable[[], None]) -> None:
        self._stop_hooks.append(hook)

    def _screen(self, sample: Sample) -> tuple[list[str], bool]:
        if self.sample_screen is None:
            return [], False
        try:
            return self.sample_screen(sample)
        except Exception:  # a screen's bug must not stop inference
            self.counters["screen_errors"] += 1
            log.exception("sample screen failed")
            return [], False

    def _sensor_faults(self) -> list[str] | None:
        if self.sensor_faults_provider is None:
            return None
        try:
            return sorted(self.sensor_faults_provider())[:64] or None
        except Exception:  # a provider's bug must not stop telemetry
            self.counters["sensor_faults_errors"] += 1
            log.exception("sensor-faults provider failed")
            return None

    def _visit_counters(self) -> VisitCounters | None:
        if self.visits is None:
            return None
        try:
            return self.visits.visit_counters()
        except Exception:  # a provider's bug must not stop telemetry
            self.counters["visits_errors"] += 1
            log.exception("visit counters failed")
            return None

    def _absent_rate(self) -> float | None:
        if self.absent_rate_provider is None:
            return None
        try:
            return self.absent_rate_provider()
        except Exception:  # a provider's bug must not stop telemetry
            self.counters["absent_rate_errors"] += 1
            log.exception("absent-rate provider failed")
            return None

    def _labelled(self) -> LabelledAccuracy | None:
        if self.labelled_provider is None:
            return None
        try:
            return self.labelled_provider()
        except Exception:  # a provider's bug must not stop telemetry
            self.counters["labelled_errors"] += 1
            log.exception("labelled-accuracy provider failed")
            return None

    def publish_event(self, message: M) -> int | None:
        """Queue ``message`` on its channel; returns its seq, or None if the outbox dropped it."""
        channel = {
            "drift": Channel.DRIFT,
            "event": Channel.EVENTS,
            "cmd_ack": Channel.CMD_ACK,
            "telemetry": Channel.TELEMETRY,
            "prediction": Channel.PREDICTIONS,
            "sensor_fault": Channel.SENSOR_FAULTS,
            "visit": Channel.EVENTS,
            "stream": Channel.EVENTS,
        }.get(str(getattr(message, "type", "")))
        if channel is None:
            raise ValueError(f"cannot publish a {type(message).__name__} through the outbox")
        return self._queue(message, channel)

    # -- publishing -----------------------------------------------------------------------

    def _topic(self, channel: Channel) -> str:
        topic = self._topics.get(channel)
        if topic is None:
            topic = self.tree.device(self.config.site, self.config.device_id, channel)
            self._topics[channel] = topic
        return topic

    def _queue(self, message: MessageBase, channel: Channel) -> int | None:
        # The wire form of encode(message with device id and seq), serialised once here so
        # the outbox's lock is held only to stamp the seq.
        fields = message.model_dump(mode="json", exclude_none=True)
        fields["device_id"] = self.config.device_id

        def payload(seq: int) -> bytes:
            fields["seq"] = seq
            return canonical_json(fields)

        priority = priority_of(str(getattr(message, "type", "")))
        # Events (alerts, update events, command acks) are committed before this returns;
        # predictions and telemetry join the next batch commit (limits.outbox_commit_interval_s).
        seq = self.store.append(
            self._topic(channel), payload, priority, wait=priority >= Priority.EVENT
        )
        self.publisher.notify()
        return seq

    def _status(self, state: str, seq: int, detail: str | None = None) -> StatusMessage:
        engine = self.slot.current
        return StatusMessage(
            device_id=self.config.device_id,
            ts=utc_now(),
            seq=seq,
            state=state,
            site=self.config.site,
            kind=self.config.kind,
            agent_version=__version__,
            model_name=engine.spec.name,
            model_version=self._version_of(engine),
            detail=detail,
        )

    def _last_will(self) -> Will:
        """The offline status the broker sends if the next session dies; the link asks for
        one before every connection, so each session's will has a seq of its own. That seq
        is below the statuses the session sends, so it is flagged: a will applies on arrival.
        """
        offline = self._status("offline", self.store.reserve_seq(), "connection lost")
        return Will(
            self._topic(Channel.STATUS), encode(offline.model_copy(update={"last_will": True}))
        )

    def publish_status(self, state: str, detail: str | None = None) -> None:
        """The retained status goes straight to the broker: only the latest one matters."""
        self.state = state
        if self.link.connected.is_set():
            message = self._status(state, self.store.reserve_seq(), detail)
            self.link.publish(self._topic(Channel.STATUS), encode(message), qos=1, retain=True)

    # -- workers --------------------------------------------------------------------------

    def _inference_worker(self, stopping: threading.Event) -> None:
        if self.source is None:
            stopping.wait()
            return
        next_allowed = 0.0
        while not stopping.is_set():
            try:
                sample = self.source.read(0.5)
            except SourceClosed:
                log.info("source %s ended", self.source.name)
                self._forward_stream_events()
                return
            self._forward_stream_events()
            if sample is None:
                continue
            now = time.monotonic()
            if now < next_allowed:
                self.counters["rate_capped"] += 1
                continue
            next_allowed = now + self._min_interval
            self.handle_sample(sample)

    def _forward_stream_events(self) -> None:
        """Publish what the source noticed about its stream (lost, frozen, restored)."""
        pop = getattr(self.source, "pop_events", None)
        if pop is None:
            return
        try:
            events = list(pop())
        except Exception:  # a source's bug must not stop inference
            self.counters["stream_event_errors"] += 1
            log.exception("source %s: stream events unreadable", getattr(self.source, "name", "?"))
            return
        for event in events:
            try:
                message = stream_message(event, self.config.device_id)
            except ValueError as e:  # pydantic's ValidationError is one
                self.counters["stream_event_errors"] += 1
                log.warning("stream event %r not sent: %s", event, e)
                continue
            self._queue(message, Channel.EVENTS)

    def handle_sample(self, sample: Sample) -> int | None:
        """Predict on one sample and queue the prediction; returns its seq, or None when
        nothing was queued (withheld, rejected, or not published under
        ``visits.predictions``: a no_pet frame by default)."""
        flags, withhold = self._screen(sample)
        if withhold:
            self.counters["withheld_sensor_fault"] += 1
            return None
        try:
            prediction, engine = self._predictor(self.slot, sample)
        except InputError as e:
            self.counters["rejected_input"] += 1
            log.debug("sample %s rejected: %s", sample.input_id, e)
            return None
        except OutputError as e:
            self.counters["output_error"] += 1
            log.warning("model output refused for %s: %s", sample.input_id, e)
            return None
        spec = engine.spec
        absent = spec.presence.absent_label if spec.presence is not None else None
        seq = None
        if publishes_prediction(self.config.visits.predictions, absent, prediction.label):
            message = PredictionMessage(
                device_id=self.config.device_id,
                ts=utc_now(),
                seq=0,
                model_name=spec.name,
                model_version=self._version_of(engine),
                label=prediction.label,
                confidence=min(1.0, max(0.0, prediction.confidence)),
                scores=prediction.scores,
                latency_ms=prediction.latency_ms,
                input_ts=sample.ts,
                input_id=sample.input_id[:128] or None,
                horizon_s=spec.horizon_s,
                flags=flags[:32] or None,
            )
            seq = self._queue(message, Channel.PREDICTIONS)
        self.predictions += 1
        self.last_prediction_at = time.monotonic()
        for observer in self._observers:
            try:
                observer(sample, prediction, engine)
            except Exception:  # an observer's bug must not stop inference
                log.exception("prediction observer %r failed", observer)
        return seq

    def telemetry_message(self) -> TelemetryMessage:
        reading = self.host.read()
        engine = self.slot.current
        latency = engine.latency.snapshot()
        dropped = {f"outbox_{k}": v for k, v in self.store.dropped().items()}
        dropped.update({k: v for k, v in self.counters.items() if v > 0})
        if self.source is not None:
            dropped.update(
                {f"source_{k}"[:128]: int(v) for k, v in self.source.counters.items() if v > 0}
            )
        return TelemetryMessage(
            device_id=self.config.device_id,
            ts=utc_now(),
            seq=0,
            uptime_s=reading.uptime_s,
            cpu_percent=reading.cpu_percent,
            mem_percent=reading.mem_percent,
            disk_percent=reading.disk_percent,
            temperature_c=reading.temperature_c,
            rss_bytes=reading.rss_bytes,
            open_fds=reading.open_fds,
            inference_p50_ms=latency.p50_ms if latency.count else None,
            inference_p95_ms=latency.p95_ms if latency.count else None,
            fps=latency.fps,
            outbox_depth=self.store.depth,
            dropped=dropped,
            model_name=engine.spec.name,
            model_version=self._version_of(engine),
            labelled=self._labelled(),
            sensor_faults=self._sensor_faults(),
            visits=self._visit_counters(),
            absent_rate=self._absent_rate(),
        )

    def _telemetry_worker(self, stopping: threading.Event) -> None:
        interval = self.config.limits.telemetry_interval_s
        limit = self.config.limits.memory_limit_mb
        while not stopping.wait(interval):
            message = self.telemetry_message()
            self._queue(message, Channel.TELEMETRY)
            over = limit is not None and message.rss_bytes > limit * 1024 * 1024
            wanted = "degraded" if over or not self.supervisor.healthy else "online"
            if wanted != self.state:
                self.publish_status(wanted, "memory over limit" if over else None)

    def _command_worker(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                command = self._commands.get(timeout=0.5)
            except queue.Empty:
                continue
            self.run_command(command)

    def run_command(self, command: Command) -> CommandAck:
        outcome = self.router.handle(command)
        ack = CommandAck(
            device_id=self.config.device_id,
            ts=utc_now(),
            seq=0,
            cmd_id=command.cmd_id,
            result=outcome.result,
            detail=outcome.detail,
        )
        self._queue(ack, Channel.CMD_ACK)
        log.info("command %s %s: %s", command.action, outcome.result, outcome.detail)
        return ack

    def _on_cmd(self, topic: str, payload: bytes) -> None:
        decoded = safe_decode(payload)
        if not isinstance(decoded, Command):
            self.counters["bad_commands"] += 1
            log.warning("ignored payload on %s: %s", topic, decoded)
            return
        try:
            self._commands.put_nowait(decoded)
        except queue.Full:
            self.counters["commands_overflow"] += 1

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, connect_timeout: float | None = None) -> None:
        self.link.subscribe(self._topic(Channel.CMD), self._on_cmd)
        self.link.on_connect(lambda: self.publish_status(self.state))
        self.supervisor.add("inference", self._inference_worker)
        self.supervisor.add("telemetry", self._telemetry_worker)
        self.supervisor.add("commands", self._command_worker)
        self.supervisor.add("publisher", lambda _s: self.publisher.run())
        self.state = "online"
        self.link.start(timeout=connect_timeout)
        self.supervisor.start()
        log.info(
            "agent %s/%s started: model %s, outbox depth %s",
            self.config.site,
            self.config.device_id,
            self.slot.current.spec.name,
            self.store.depth,
        )

    def stop(self) -> bool:
        """Graceful stop: inference stops, the outbox is flushed (bounded), offline is sent."""
        if self._stopped.is_set():
            return self.store.depth == 0
        self._stopped.set()
        self.state = "stopping"
        # Producers first, so nothing is queued after the flush; the publisher last.
        self.supervisor.stop(timeout=5.0, only={"inference", "telemetry", "commands"})
        if self.source is not None:
            self._forward_stream_events()
        for hook in self._stop_hooks:
            try:
                hook()
            except Exception:  # one component's bug must not lose the rest of the flush
                log.exception("stop hook %r failed", hook)
        self.publish_status("stopping")
        flushed = self.publisher.stop(self.config.limits.flush_timeout_s)
        self.supervisor.stop(timeout=5.0)
        offline = self._status("offline", self.store.reserve_seq())
        self.link.stop(final=(self._topic(Channel.STATUS), encode(offline)))
        if self.source is not None:
            self.source.close()
        left = self.store.depth
        self.store.close()
        log.info("agent stopped; %s messages left in the outbox", left)
        return flushed
