"""The device updater: one worker thread taking releases and commands, feeding the executor."""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass

from edge_agent.comms.mqtt import MqttLink
from edge_agent.inference import InferenceEngine, ModelSlot, OutputError, Prediction
from edge_agent.protocol.codec import decode_manifest
from edge_agent.protocol.errors import ProtocolError
from edge_agent.protocol.manifest import ReleaseManifest
from edge_agent.protocol.messages import ArgValue, UpdateState
from edge_agent.protocol.signing import key_id, load_public_key
from edge_agent.protocol.topics import TopicTree
from edge_agent.sources.sample import Sample
from edge_agent.updater.boot import ProvisionedModel, boot_engine
from edge_agent.updater.config import UpdaterConfig
from edge_agent.updater.events import ClockSequence, EventEmitter, EventSink, TransitionHook
from edge_agent.updater.executor import StepExecutor
from edge_agent.updater.plan import (
    DeviceFacts,
    StepKind,
    plan_command,
    plan_recovery,
    plan_release,
    refusal,
)
from edge_agent.updater.probation import ProbationMonitor
from edge_agent.updater.state import StateStore, UpdaterState
from edge_agent.updater.store import ModelStore

log = logging.getLogger(__name__)

CommandResult = tuple[str, str | None]  # ("done" | "rejected" | "failed", detail)


@dataclass(frozen=True)
class _Job:
    kind: str  # "recover" | "release" | "command"
    manifest: ReleaseManifest | None = None
    action: str = ""
    args: Mapping[str, ArgValue] | None = None
    reply: Future[CommandResult] | None = None


class ModelUpdater:
    """Applies signed releases to the model slot; everything slow happens on its own thread.

    Wiring: ``boot()`` gives the engine to serve, the runtime builds a ``ModelSlot`` and
    calls ``start(slot)``; releases come through ``offer_payload`` (from MQTT), commands
    through ``command``; live calls go through ``predict`` (or are reported to
    ``observe``) so probation sees them.
    """

    def __init__(
        self,
        config: UpdaterConfig,
        *,
        model: str,
        device_id: str,
        groups: Iterable[str] = (),
        sink: EventSink,
        next_seq: Callable[[], int] | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.device_id = device_id
        key = load_public_key(config.fleet_public_key)
        self.facts = DeviceFacts(
            device_id=device_id,
            groups=frozenset(groups),
            channels=frozenset(config.channels),
            trusted_publishers=frozenset(config.trusted_publishers),
            trusted_keys={key_id(key): key},
            max_model_bytes=config.max_model_bytes,
        )
        self.store = ModelStore(config.models_dir, config.staging, config.disk_budget_bytes)
        self.states = StateStore(self.store.state_path)
        self.events = EventEmitter(device_id, model, sink, next_seq or ClockSequence())
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._latest: ReleaseManifest | None = None
        self._latest_acceptable: ReleaseManifest | None = None
        self._reported_payloads: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._executor: StepExecutor | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def boot(self, provisioned: ProvisionedModel | None = None) -> InferenceEngine:
        """The engine to serve now: the committed version, never one left on probation."""
        engine, state = boot_engine(
            self.store, self.states, self.model, self.config.threads, provisioned
        )
        self._executor = StepExecutor(
            self.config, self.store, self.states, self.events, state, self._superseded
        )
        return engine

    def start(self, slot: ModelSlot) -> None:
        executor = self._require_executor()
        executor.slot = slot
        self._jobs.put(_Job("recover"))
        self._thread = threading.Thread(target=self._work, name="model-updater", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        executor = self._require_executor()
        executor.stopping = True
        if executor.monitor is not None:
            executor.monitor.abort("agent stopping during probation")
        self._jobs.put(_Job("stop"))
        if self._thread is not None:
            self._thread.join(timeout)

    def add_transition_hook(self, hook: TransitionHook) -> None:
        """Called with every UpdateEvent after it was sent (status pages, tests)."""
        self.events.hooks.append(hook)

    @property
    def state(self) -> UpdaterState:
        return self._require_executor().state

    def subscribe(self, link: MqttLink, tree: TopicTree) -> None:
        """Take releases from the model's retained release topic."""
        link.subscribe(
            tree.release(self.model), lambda _topic, payload: self.offer_payload(payload)
        )

    # -- inputs --------------------------------------------------------------------------

    def offer_payload(self, payload: bytes) -> None:
        """A raw manifest from MQTT; safe to call on paho's network thread."""
        try:
            manifest = decode_manifest(payload)
        except ProtocolError as e:
            digest = hashlib.sha256(payload).hexdigest()
            if digest not in self._reported_payloads:
                self._reported_payloads.add(digest)
                active = self.state.active
                self.events.emit(
                    UpdateState.REFUSED,
                    to_version=0,
                    from_version=active.version if active else None,
                    release_id=None,
                    reason=f"unreadable release manifest: {e}",
                )
            return
        self.offer(manifest)

    def offer(self, manifest: ReleaseManifest) -> None:
        with self._lock:
            self._latest = manifest
            # Only an acceptable manifest may cancel a download in progress.
            acceptable = refusal(self.state, manifest, self.facts) is None
            self._latest_acceptable = manifest if acceptable else None
        self._jobs.put(_Job("release", manifest=manifest))

    def command(
        self, action: str, args: Mapping[str, ArgValue] | None = None, timeout: float = 30.0
    ) -> CommandResult:
        """Run ``rollback``/``pin``/``unpin``/``update_check``; returns (result, detail)."""
        executor = self._require_executor()
        if action == "rollback" and executor.monitor is not None and not (args or {}):
            # Leaving a model on probation is exactly the rollback asked for.
            executor.monitor.abort("rollback command")
            return "done", "probation aborted; rolling back"
        reply: Future[CommandResult] = Future()
        self._jobs.put(_Job("command", action=action, args=dict(args or {}), reply=reply))
        try:
            return reply.result(timeout)
        except TimeoutError:
            return "accepted", f"still running after {timeout:.0f} s"

    # -- live calls ----------------------------------------------------------------------

    def predict(self, slot: ModelSlot, sample: Sample) -> tuple[Prediction, InferenceEngine]:
        """``slot.predict`` with probation watching; raises what the engine raised."""
        engine = slot.current
        try:
            prediction, engine = slot.predict(sample)
        except OutputError:
            self.observe(engine, None, nan=True)
            raise
        except Exception:
            self.observe(engine, None, error=True)
            raise
        self.observe(engine, prediction, sample=sample)
        return prediction, engine

    def observe(
        self,
        engine: InferenceEngine,
        prediction: Prediction | None,
        *,
        error: bool = False,
        nan: bool = False,
        sample: Sample | None = None,
    ) -> None:
        """Report one live call; only calls served by the model on probation count.

        In shadow probation the call was served by the committed model: the candidate is
        run on the same input here and judged on its own result and its agreement.
        """
        executor = self._executor
        monitor = executor.monitor if executor is not None else None
        if monitor is None or executor is None or executor.slot is None:
            return
        candidate = executor.shadow_engine
        if candidate is not None:
            if engine is executor.slot.current and sample is not None:
                self._shadow_call(monitor, candidate, engine, prediction, sample)
            return
        if engine is not executor.slot.current or engine is executor.previous_engine:
            return
        agreed: bool | None = None
        old = executor.previous_engine
        if self.config.probation.shadow and prediction is not None and sample and old:
            try:
                agreed = old.predict(sample).label == prediction.label
            except Exception:  # the old model's trouble is not the new model's fault
                log.debug("shadow call on the previous model failed", exc_info=True)
        monitor.record(
            error=error,
            nan=nan,
            latency_ms=prediction.latency_ms if prediction is not None else None,
            agreed=agreed,
        )

    def _shadow_call(
        self,
        monitor: ProbationMonitor,
        candidate: InferenceEngine,
        serving: InferenceEngine,
        served: Prediction | None,
        sample: Sample,
    ) -> None:
        """Run the candidate beside the serving model on one live input and judge it."""
        try:
            shadow = candidate.predict(sample, with_stats=False)
        except OutputError:
            monitor.record(nan=True)
            return
        except Exception:  # the candidate's fault, counted against it
            log.debug("shadow call on the candidate failed", exc_info=True)
            monitor.record(error=True)
            return
        # Labels are only compared between models that answer in the same terms.
        agreed = None
        if served is not None and candidate.spec.labels == serving.spec.labels:
            agreed = shadow.label == served.label
        monitor.record(latency_ms=shadow.latency_ms, agreed=agreed)

    # -- the worker ----------------------------------------------------------------------

    def _require_executor(self) -> StepExecutor:
        if self._executor is None:
            raise RuntimeError("ModelUpdater.boot() must run first")
        return self._executor

    def _superseded(self, manifest: ReleaseManifest) -> str | None:
        with self._lock:
            newer = self._latest_acceptable
        if newer is not None and newer.release_id != manifest.release_id:
            return f"superseded by release {newer.release_id}"
        return None

    def _work(self) -> None:
        executor = self._require_executor()
        while True:
            job = self._jobs.get()
            if job.kind == "stop":
                return
            try:
                self._handle(executor, job)
            except Exception as e:  # the supervisor loop: one bad job must not end updates
                log.exception("updater job %s failed", job.kind)
                if job.reply is not None and not job.reply.done():
                    job.reply.set_result(("failed", f"{type(e).__name__}: {e}"))

    def _handle(self, executor: StepExecutor, job: _Job) -> None:
        if job.kind == "recover":
            steps = plan_recovery(executor.state, self.facts)
            executor.run(steps, executor.state.candidate)
        elif job.kind == "release":
            with self._lock:
                latest = self._latest
            if job.manifest is not latest:
                return  # a newer manifest is queued behind this one
            assert latest is not None
            executor.run(plan_release(executor.state, latest, self.facts), latest)
        elif job.kind == "command":
            assert job.reply is not None
            job.reply.set_result(self._run_command(executor, job.action, job.args or {}))

    def _run_command(
        self, executor: StepExecutor, action: str, args: Mapping[str, ArgValue]
    ) -> CommandResult:
        steps = plan_command(executor.state, action, args)
        for step in steps:
            if step.kind is StepKind.REJECT:
                return "rejected", step.reason
        executor.run([s for s in steps if s.kind is not StepKind.CHECK], None)
        if any(s.kind is StepKind.CHECK for s in steps):
            with self._lock:
                latest = self._latest
            if latest is not None:
                executor.run(plan_release(executor.state, latest, self.facts), latest)
        active = executor.state.active
        serving = f"serving version {active.version}" if active else "no model committed"
        wanted = next((s.version for s in steps if s.kind is StepKind.SWITCH), None)
        if wanted is not None and (active is None or active.version != wanted):
            return "failed", f"could not switch to version {wanted}; {serving}"
        return "done", serving
