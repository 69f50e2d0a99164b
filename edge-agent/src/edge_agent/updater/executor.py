"""The executor: runs the planner's steps against the disk, the network and the model slot."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edge_agent.inference import InferenceEngine, ModelSlot
from edge_agent.protocol.manifest import ReleaseManifest
from edge_agent.protocol.messages import UpdateState
from edge_agent.updater.boot import load_stored
from edge_agent.updater.checks import smoke_test, verify_candidate
from edge_agent.updater.config import UpdaterConfig
from edge_agent.updater.download import HttpDownloader, StagedDownload
from edge_agent.updater.errors import (
    DiskBudgetExceeded,
    DownloadCancelled,
    DownloadError,
    ProbationFailed,
    StoreError,
    UpdateError,
)
from edge_agent.updater.events import EventEmitter
from edge_agent.updater.plan import Step, StepKind
from edge_agent.updater.probation import Outcome, ProbationMonitor
from edge_agent.updater.state import StateStore, UpdaterState
from edge_agent.updater.store import ModelStore

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 5.0


@dataclass
class Attempt:
    """What one run of steps carries between them."""

    manifest: ReleaseManifest | None
    started: float = field(default_factory=time.monotonic)
    downloaded_before: bool = False
    candidate: InferenceEngine | None = None

    def ms(self) -> float:
        return (time.monotonic() - self.started) * 1000.0


class StepExecutor:
    """Carries out steps one by one, persisting state before each visible change.

    Order on activation in ``live`` probation: state says ``activating`` → pointer renamed →
    slot swapped → state says ``probation``. In ``shadow`` probation (the default) the slot
    and pointer stay on the committed model until probation passes; the candidate only runs
    beside it (``shadow_engine``), and commit swaps it in. Whatever point a power cut hits,
    boot finds a complete state and a complete pointer, and ``plan_recovery`` knows what to
    do from the phase.
    """

    def __init__(
        self,
        config: UpdaterConfig,
        store: ModelStore,
        states: StateStore,
        events: EventEmitter,
        state: UpdaterState,
        cancelled: Callable[[ReleaseManifest], str | None],
    ) -> None:
        self.config = config
        self.store = store
        self.states = states
        self.events = events
        self.state = state
        self.cancelled = cancelled
        self.downloader = HttpDownloader(config.download)
        self.slot: ModelSlot | None = None
        self.monitor: ProbationMonitor | None = None
        self.previous_engine: InferenceEngine | None = None  # kept in memory for rollback
        self.shadow_engine: InferenceEngine | None = None  # the candidate, not yet serving
        self.stopping = False

    # -- state ---------------------------------------------------------------------------

    def save(self, **changes: object) -> None:
        self.state = self.state.model_copy(update=changes)
        self.states.save(self.state)

    def _emit(self, state: UpdateState, attempt: Attempt, reason: str | None = None) -> None:
        manifest = attempt.manifest
        active = self.state.active
        self.events.emit(
            state,
            to_version=manifest.version if manifest else (active.version if active else 0),
            from_version=active.version if active else None,
            release_id=manifest.release_id if manifest else None,
            reason=reason,
            duration_ms=attempt.ms(),
        )

    # -- the loop ------------------------------------------------------------------------

    def run(self, steps: list[Step], manifest: ReleaseManifest | None) -> None:
        attempt = Attempt(manifest)
        try:
            for step in steps:
                self._step(step, attempt)
        except DownloadCancelled as e:
            self._abandon(attempt, UpdateState.IDLE, str(e), remember=False)
        except DiskBudgetExceeded as e:
            state = UpdateState.FAILED if attempt.downloaded_before else UpdateState.REFUSED
            self._abandon(attempt, state, f"disk budget: {e}", remember=True)
        except DownloadError as e:
            self._abandon(attempt, UpdateState.FAILED, f"download: {e}", remember=not e.retryable)
        except ProbationFailed as e:
            self._rollback(attempt, str(e))
        except UpdateError as e:
            if self.state.trial is not None:
                self._rollback(attempt, str(e))
            else:
                self._abandon(attempt, UpdateState.FAILED, str(e), remember=True)

    def _step(self, step: Step, attempt: Attempt) -> None:
        kind = step.kind
        if kind is StepKind.IGNORE:
            log.debug("nothing to do: %s", step.reason)
        elif kind is StepKind.REFUSE:
            assert attempt.manifest is not None
            self._emit(UpdateState.REFUSED, attempt, step.reason)
            self.state = self.state.remember_refused(attempt.manifest.release_id)
            self.save()
        elif kind is StepKind.DOWNLOAD:
            self._download(attempt)
        elif kind is StepKind.VERIFY:
            self._verify(attempt)
        elif kind is StepKind.SMOKE:
            self._smoke(attempt)
        elif kind is StepKind.ACTIVATE:
            self._activate(attempt)
        elif kind is StepKind.PROBATION:
            self._probation(attempt)
        elif kind is StepKind.COMMIT:
            self._commit(attempt)
        elif kind is StepKind.ROLLBACK:
            self._rollback(attempt, step.reason or "rollback")
        elif kind is StepKind.PRUNE:
            self._prune()
        elif kind is StepKind.SWITCH:
            assert step.version is not None
            self._switch(attempt, step.version, step.reason or "switch")
        elif kind is StepKind.PIN:
            self.save(pinned=step.version)
        elif kind is StepKind.UNPIN:
            self.save(pinned=None)
        else:
            raise AssertionError(f"step {kind} is handled by the updater service")

    # -- before activation ---------------------------------------------------------------

    def _check_superseded(self, manifest: ReleaseManifest) -> None:
        reason = self.cancelled(manifest)
        if reason is not None:
            raise DownloadCancelled(reason)

    def _download(self, attempt: Attempt) -> None:
        manifest = attempt.manifest
        assert manifest is not None
        staged = StagedDownload(self.store.staging_dir, manifest)
        self.store.clear_staging(keep=manifest.release_id + ".part")
        kept = self.store.prune(
            [self.state.active, self.state.trial],
            self.state.previous,
            self.config.keep_versions,
            reserve=manifest.size,
        )
        self.save(previous=kept)
        self.store.check_room(manifest.size, [self.state.active, self.state.trial, *kept])
        self.save(phase=UpdateState.DOWNLOADING, candidate=manifest)
        self._emit(UpdateState.DOWNLOADING, attempt)
        attempt.downloaded_before = True
        budget = self.store.budget_bytes

        def room() -> int:
            return budget - self.store.usage_bytes()

        def cancelled() -> bool:
            return self.stopping or self.cancelled(manifest) is not None

        try:
            self.downloader.fetch(staged, room, cancelled)
        except DownloadCancelled as e:
            reason = self.cancelled(manifest)
            if self.stopping and reason is None:
                raise  # a shutdown: the partial file stays for the restart to resume
            staged.discard()
            raise DownloadCancelled(reason or str(e)) from e

    def _verify(self, attempt: Attempt) -> None:
        manifest = attempt.manifest
        assert manifest is not None
        self._check_superseded(manifest)
        self.save(phase=UpdateState.VERIFYING)
        self._emit(UpdateState.VERIFYING, attempt)
        staged = StagedDownload(self.store.staging_dir, manifest)
        running = self.slot.current.spec if self.slot is not None else None
        try:
            attempt.candidate = verify_candidate(
                manifest, staged.part, running, self.config.threads
            )
        except UpdateError:
            staged.discard()
            raise

    def _smoke(self, attempt: Attempt) -> None:
        manifest = attempt.manifest
        assert manifest is not None and attempt.candidate is not None
        self._check_superseded(manifest)
        self.save(phase=UpdateState.SMOKE)
        self._emit(UpdateState.SMOKE, attempt)
        try:
            smoke_test(attempt.candidate, self.config.smoke)
        except UpdateError:
            StagedDownload(self.store.staging_dir, manifest).discard()
            attempt.candidate = None
            raise

    # -- activation and after ------------------------------------------------------------

    def _activate(self, attempt: Attempt) -> None:
        manifest, candidate = attempt.manifest, attempt.candidate
        assert manifest is not None and candidate is not None and self.slot is not None
        staged = StagedDownload(self.store.staging_dir, manifest)
        record = self.store.install(staged.part, manifest)
        staged.discard()
        candidate.path = self.store.path_of(record)  # the same bytes, now in versions/
        self.save(phase=UpdateState.ACTIVATING, trial=record)
        self._emit(UpdateState.ACTIVATING, attempt)
        self.monitor = ProbationMonitor(self.config.probation, candidate.spec.latency_budget_ms)
        attempt.candidate = None
        if self.config.probation.mode == "shadow":
            self.shadow_engine = candidate
            active = self.state.active
            reason = f"in shadow beside the serving version {active.version if active else '?'}"
        else:
            self.store.write_pointer(record)
            self.previous_engine = self.slot.swap(candidate)
            reason = "serving live inputs"
        self.save(phase=UpdateState.PROBATION)
        self._emit(UpdateState.PROBATION, attempt, reason)

    def _probation(self, attempt: Attempt) -> None:
        monitor = self.monitor
        assert monitor is not None
        while True:
            verdict = monitor.wait(0.5)
            if verdict.outcome is Outcome.PASSED:
                log.info("probation passed: %s", verdict.reason)
                return
            if verdict.outcome is Outcome.FAILED:
                raise ProbationFailed(f"probation failed: {verdict.reason}")
            if self.stopping:
                raise ProbationFailed("agent stopping during probation")

    def _commit(self, attempt: Attempt) -> None:
        trial, active = self.state.trial, self.state.active
        assert trial is not None
        shadow, self.shadow_engine = self.shadow_engine, None
        if shadow is not None and self.slot is not None:
            # Probation passed in shadow: only now does the candidate answer.
            self.store.write_pointer(trial)
            self.previous_engine = self.slot.swap(shadow)
        previous = [r for r in [active, *self.state.previous] if r is not None and r != trial]
        self.save(
            phase=UpdateState.IDLE, active=trial, trial=None, previous=previous, candidate=None
        )
        self.events.emit(
            UpdateState.COMMITTED,
            to_version=trial.version,
            from_version=active.version if active else None,
            release_id=trial.release_id,
            duration_ms=attempt.ms(),
        )
        self._release_previous_engine()

    def _rollback(self, attempt: Attempt, reason: str) -> None:
        """Put the last committed version back: memory first (stops bad outputs), then disk."""
        active, trial = self.state.active, self.state.trial
        manifest = attempt.manifest or self.state.candidate
        if self.monitor is not None:
            self.monitor.abort(reason)
        self.shadow_engine = None  # a candidate in shadow never served: nothing to swap back
        if self.previous_engine is not None and self.slot is not None:
            self.slot.swap(self.previous_engine)
            self.previous_engine = None
        if active is not None:
            self.store.write_pointer(active)
        failed = trial.release_id if trial else (manifest.release_id if manifest else None)
        state = self.state.remember_failed(failed) if failed else self.state
        self.state = state
        self.save(phase=UpdateState.IDLE, trial=None, candidate=None)
        self.monitor = None
        version = trial.version if trial else (manifest.version if manifest else 0)
        self.events.emit(
            UpdateState.ROLLED_BACK,
            to_version=version,
            from_version=active.version if active else None,
            release_id=failed,
            reason=f"{reason}; serving version {active.version if active else '?'} again",
            duration_ms=attempt.ms(),
        )

    def _switch(self, attempt: Attempt, version: int, reason: str) -> None:
        """Serve another stored, committed version (operator rollback or pin)."""
        record = self.state.record_for(version)
        active = self.state.active
        assert record is not None and self.slot is not None
        engine = load_stored(self.store, record, self.config.threads)
        if engine is None:
            raise StoreError(f"stored version {version} does not load")
        old = self.slot.swap(engine)
        self.store.write_pointer(record)
        previous = [r for r in [active, *self.state.previous] if r is not None and r != record]
        state = self.state
        if active is not None and active.release_id is not None and version < active.version:
            state = state.remember_failed(active.release_id)
        self.state = state
        self.save(active=record, previous=previous)
        going_back = active is not None and version < active.version
        self.events.emit(
            UpdateState.ROLLED_BACK if going_back else UpdateState.COMMITTED,
            to_version=version,
            from_version=active.version if active else None,
            release_id=active.release_id if going_back and active else record.release_id,
            reason=reason,
            duration_ms=attempt.ms(),
        )
        if not self.slot.drain(old, DRAIN_TIMEOUT_S):
            log.warning("replaced model still had calls in flight after %.0f s", DRAIN_TIMEOUT_S)

    def _abandon(
        self, attempt: Attempt, state: UpdateState, reason: str, *, remember: bool
    ) -> None:
        manifest = attempt.manifest
        attempt.candidate = None
        if manifest is not None and not self.stopping:
            StagedDownload(self.store.staging_dir, manifest).discard()
        updated = self.state
        if manifest is not None and remember:
            if state is UpdateState.REFUSED:
                updated = updated.remember_refused(manifest.release_id)
            else:
                updated = updated.remember_failed(manifest.release_id)
        self.state = updated
        if self.stopping and state is UpdateState.IDLE:
            return  # leave phase and candidate for the restart to resume
        self.save(phase=UpdateState.IDLE, candidate=None)
        self._emit(state, attempt, reason)

    def _prune(self) -> None:
        kept = self.store.prune(
            [self.state.active, self.state.trial], self.state.previous, self.config.keep_versions
        )
        if kept != self.state.previous:
            self.save(previous=kept)

    def _release_previous_engine(self) -> None:
        old, self.previous_engine = self.previous_engine, None
        self.monitor = None
        if old is not None and self.slot is not None and not self.slot.drain(old, DRAIN_TIMEOUT_S):
            log.warning("previous model still had calls in flight after %.0f s", DRAIN_TIMEOUT_S)
