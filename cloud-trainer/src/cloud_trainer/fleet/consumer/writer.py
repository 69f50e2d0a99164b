"""The batch writer: drains the ingest queue into the store, retrying rather than losing."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from cloud_trainer.fleet.metrics import FleetMetrics
from cloud_trainer.fleet.store import Envelope, FleetStore, IngestResult, StoredAlert
from edge_agent.comms.mqtt import Ack
from edge_agent.protocol import ReleaseManifest, RolloutRecord

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ReleaseSeen:
    manifest: ReleaseManifest
    seen_at: float


@dataclass(frozen=True, slots=True)
class RolloutSeen:
    record: RolloutRecord
    seen_at: float


@dataclass(frozen=True, slots=True)
class Received:
    """One message taken from the broker, with the acknowledgement to send once stored."""

    item: Envelope | ReleaseSeen | RolloutSeen
    ack: Ack


@dataclass(frozen=True)
class WriterSettings:
    batch_max: int = 500
    linger_s: float = 0.1
    # A batch closes early when nothing arrives for this long: with acknowledgements sent
    # after the commit, the broker sends no more than its in-flight window until we commit.
    idle_gap_s: float = 0.01
    retry_min_s: float = 0.2
    retry_max_s: float = 10.0
    prune_every_s: float = 300.0
    telemetry_retention_s: float = 14 * 86400.0
    predictions_retention_s: float = 90 * 86400.0
    dedupe_retention_s: float = 30 * 86400.0


class BatchWriter:
    """One thread; a batch is a single transaction, so a crash mid-batch stores none of it.

    A database that is down is retried with capped backoff, holding the batch (and, through
    the full queue, the broker). A batch the database refuses for its content is split, so
    one bad message is counted and dropped while the rest are stored.

    Each message's broker acknowledgement is sent only after its batch committed: a
    process killed before that gets the messages again from its persistent session, and
    the ``(device_id, type, seq)`` key stores a re-sent one once.
    """

    def __init__(
        self,
        store: FleetStore,
        source: queue.Queue[Received],
        metrics: FleetMetrics,
        settings: WriterSettings,
        on_alerts: Callable[[list[StoredAlert]], None] | None = None,
    ) -> None:
        self.store = store
        self.source = source
        self.metrics = metrics
        self.settings = settings
        self.on_alerts = on_alerts
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._busy = False
        self._thread: threading.Thread | None = None
        self._next_prune = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fleet-writer", daemon=True)
        self._thread.start()

    def stop(self, drain_timeout: float = 10.0) -> None:
        self.flush(drain_timeout)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(drain_timeout + 5)
            self._thread = None

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy or not self.source.empty():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.05))
        return True

    def _take(self) -> list[Received]:
        try:
            first = self.source.get(timeout=0.2)
        except queue.Empty:
            return []
        with self._idle:
            self._busy = True
        items = [first]
        deadline = time.monotonic() + self.settings.linger_s
        while len(items) < self.settings.batch_max:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                items.append(self.source.get(timeout=min(left, self.settings.idle_gap_s)))
            except queue.Empty:
                break
        return items

    def _run(self) -> None:
        while not (self._stop.is_set() and self.source.empty()):
            items = self._take()
            if items:
                stored = False
                try:
                    stored = self._write([r.item for r in items])
                except Exception:  # supervisor loop: the writer thread must survive
                    log.exception("batch of %s messages could not be written", len(items))
                    self.metrics.inc(
                        "fleet_messages_rejected_total", len(items), reason="write_failed"
                    )
                    # Acknowledged all the same: a batch that broke the code, not the
                    # database, would break it again each time the broker re-sent it.
                    stored = True
                if stored:
                    for received in items:
                        received.ack()
            with self._idle:
                self._busy = False
                self._idle.notify_all()
            self._maybe_prune()

    def _write(self, items: list[Envelope | ReleaseSeen | RolloutSeen]) -> bool:
        """Store the batch; False when it was given up at shutdown (not acknowledged, so
        the broker sends it again to the next instance that takes the session)."""
        envelopes = [i for i in items if isinstance(i, Envelope)]
        releases = [i for i in items if isinstance(i, ReleaseSeen)]
        for seen in releases:
            if self._retrying(self._release_writer(seen)) is None:
                return False
        for step in [i for i in items if isinstance(i, RolloutSeen)]:
            if self._retrying(self._rollout_writer(step)) is None:
                return False
        if not envelopes:
            return True
        started = time.perf_counter()
        result = self._retrying(lambda: self._ingest_splitting(envelopes))
        self.metrics.inc("fleet_batch_write_seconds_total", time.perf_counter() - started)
        self.metrics.inc("fleet_batches_written_total")
        if result is None:
            return False
        for kind, n in result.stored.items():
            self.metrics.inc("fleet_messages_stored_total", n, type=kind)
        self.metrics.inc("fleet_messages_duplicate_total", result.duplicates)
        if result.alerts and self.on_alerts is not None:
            self.on_alerts(result.alerts)
        return True

    def _release_writer(self, seen: ReleaseSeen) -> Callable[[], bool]:
        def write() -> bool:
            self.store.record_release(seen.manifest, seen.seen_at)
            return True

        return write

    def _rollout_writer(self, seen: RolloutSeen) -> Callable[[], bool]:
        def write() -> bool:
            self.store.record_rollout(seen.record, seen.seen_at)
            return True

        return write

    def _ingest_splitting(self, batch: list[Envelope]) -> IngestResult:
        try:
            return self.store.ingest(batch)
        except IntegrityError as e:
            if len(batch) == 1:
                self.metrics.inc("fleet_messages_rejected_total", reason="store_refused")
                log.error(
                    "store refused %s seq %s from %s: %s",
                    batch[0].kind,
                    batch[0].message.seq,
                    batch[0].message.device_id,
                    e.orig,
                )
                return IngestResult()
        middle = len(batch) // 2
        left = self._ingest_splitting(batch[:middle])
        right = self._ingest_splitting(batch[middle:])
        left.stored.update(right.stored)
        left.duplicates += right.duplicates
        left.alerts.extend(right.alerts)
        return left

    def _retrying(self, write: Callable[[], T]) -> T | None:
        delay = self.settings.retry_min_s
        while True:
            try:
                return write()
            except (DBAPIError, SQLAlchemyError) as e:
                self.metrics.inc("fleet_store_errors_total")
                if self._stop.is_set():
                    log.error("giving up a batch at shutdown: %s", e)
                    return None
                log.warning("store write failed, retrying in %.1fs: %s", delay, e)
                self._stop.wait(delay)
                delay = min(delay * 2, self.settings.retry_max_s)

    def _maybe_prune(self) -> None:
        now = time.time()
        if now < self._next_prune:
            return
        self._next_prune = now + self.settings.prune_every_s
        try:
            self.store.prune(
                now,
                telemetry_s=self.settings.telemetry_retention_s,
                predictions_s=self.settings.predictions_retention_s,
                dedupe_s=self.settings.dedupe_retention_s,
            )
        except SQLAlchemyError as e:
            log.warning("retention pruning failed (will retry): %s", e)
