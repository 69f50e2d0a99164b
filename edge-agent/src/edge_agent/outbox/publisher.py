"""Moves queued messages from the outbox to the broker and deletes them once acknowledged."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from edge_agent.comms.mqtt import MqttLink, PublishResult
from edge_agent.outbox.store import OutboxRow, OutboxStore

log = logging.getLogger(__name__)


@dataclass
class PublisherStats:
    published: int = 0
    acked: int = 0
    replayed: int = 0
    republished: int = 0
    resent: int = 0  # acknowledged rows sent again after a reconnection (resend window)


def _acked(result: PublishResult) -> bool | None:
    """True once PUBACK arrived, False while pending, None when paho refused the publish."""
    if result.refused:
        return None
    return result.done


class OutboxPublisher:
    """One thread that keeps up to ``window`` messages in flight, live ones first.

    Two lanes share the window. *Live* rows are those queued while connected; the
    *backlog* is what piled up during an outage or before a restart. Each round live rows
    take the free slots first and the backlog gets the rest, so a long replay delays a
    fresh prediction by at most one window, never by the whole backlog. Both lanes go out
    in seq order; receivers order and de-duplicate by ``(device_id, seq)``.

    Rows appended with ``wait=False`` go out before they are committed; the loop commits
    the store's batch of them when ``commit_due`` says so (what the broker acknowledged
    by then is never written) and never sleeps past that moment.

    Rows leave the outbox only when the broker acknowledged them (PUBACK). Messages in
    flight when the link drops stay in paho's queue and are re-sent on reconnection;
    one paho refused is re-sent from the outbox. A crash re-sends at most one window:
    a duplicate, never a loss.

    A PUBACK means the broker has the message in memory, not on disk: Mosquitto saves its
    queues every ``autosave_interval``, so a broker killed in between forgets what it
    acknowledged since. Rows acknowledged in the last ``resend_window_s`` are therefore kept
    in memory (up to ``resend_max_bytes``) and sent again after every reconnection;
    receivers drop the duplicates by ``(device_id, seq)``.
    """

    def __init__(
        self,
        store: OutboxStore,
        link: MqttLink,
        *,
        window: int = 100,
        replay_rate: float = 0.0,
        ack_batch: int = 64,
        ack_delay_s: float = 0.05,
        resend_window_s: float = 30.0,
        resend_max_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.store = store
        self.link = link
        self.window = window
        self.replay_rate = replay_rate  # messages/s for the backlog; 0 = as the window allows
        self.ack_batch = ack_batch
        self.ack_delay_s = ack_delay_s
        self.stats = PublisherStats()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._inflight: deque[tuple[int, PublishResult, OutboxRow]] = deque()
        self._inflight_seqs: set[int] = set()
        self._acked: list[int] = []
        self._acked_since = 0.0  # when the oldest acknowledgement in _acked arrived
        self._retry: list[OutboxRow] = []
        self.resend_window_s = resend_window_s
        self.resend_max_bytes = resend_max_bytes
        self._recent: deque[tuple[float, OutboxRow]] = deque()  # acked, in ack order
        self._resend: deque[OutboxRow] = deque()  # the recent ones, after a reconnection
        self._recent_bytes = 0
        self._resend_asked: list[float] = []  # windows asked for by ``request_resend``
        self._resend_lock = threading.Lock()
        # Everything queued before we start is backlog; later rows are live.
        self._live_cursor = store.last_seq
        self._backlog_cursor = -1
        self._backlog_end = store.last_seq
        self._connected_before = False
        self._replay_budget = 0.0
        self._replay_clock = time.monotonic()
        self._thread: threading.Thread | None = None

    # -- control ------------------------------------------------------------------------

    def notify(self) -> None:
        """Wake the publisher: a row was queued."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="outbox-publisher", daemon=True)
        self._thread.start()

    def stop(self, flush_timeout: float = 5.0) -> bool:
        """Stop after trying for up to ``flush_timeout`` s to empty the outbox.

        Returns True when nothing was left unacknowledged.
        """
        deadline = time.monotonic() + flush_timeout
        while time.monotonic() < deadline and self.link.connected.is_set():
            if self.store.depth == 0:
                break
            self._wake.set()
            time.sleep(0.02)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(1.0, deadline - time.monotonic() + 1.0))
        self._flush_acks()
        return self.store.depth == 0

    def request_resend(self, within_s: float | None = None) -> int:
        """Send again what the broker acknowledged in the last ``within_s`` seconds (the
        whole resend window when None), on the publisher's thread.

        For a loss the device cannot see: a clustered broker that acknowledged messages
        while the stream capturing them had no leader. Returns how many rows the window
        holds now (what will go out at most).
        """
        window = self.resend_window_s if within_s is None else min(within_s, self.resend_window_s)
        with self._resend_lock:
            self._resend_asked.append(max(0.0, window))
            held = len(self._recent)
        self._wake.set()
        return held

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def backlog(self) -> int:
        """Rows still to replay from the backlog lane (an estimate, for telemetry)."""
        return max(0, self._backlog_end - self._backlog_cursor) if self._backlog_open else 0

    @property
    def _backlog_open(self) -> bool:
        return self._backlog_cursor < self._backlog_end

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        while not self._stop.is_set():
            due = self._commit_due()
            if not self.link.connected.is_set():
                self._connected_before = False
                self._collect_acks()
                self._flush_acks()
                # Rows queued meanwhile wait here for their commit: look again that often.
                self.link.connected.wait(min(0.2, due, self.store.commit_interval_s or 0.2))
                continue
            if not self._connected_before:
                self._on_connected()
            if self._resend_asked:
                with self._resend_lock:
                    within_s, self._resend_asked = max(self._resend_asked), []
                self._resend_recent(within_s)
            self._wake.clear()
            self._collect_acks()
            sent = self._fill_window()
            if self._acks_due(sent):
                self._flush_acks()
            if sent:
                continue
            if len(self._inflight) >= self.window:
                # Window full: wait for the oldest ack (acks return in publish order).
                self._inflight[0][1].wait(min(0.05, due))
            elif self._inflight:
                self._wake.wait(min(0.002, due))
            else:
                self._wake.wait(min(0.2, due))
        self._collect_acks()

    def _commit_due(self) -> float:
        """Commit the store's pending batch if it is due; seconds the loop may sleep."""
        due = self.store.commit_due()
        if due is None:
            return float("inf")
        if due <= 0:
            # Acknowledgements first: a row the broker has is forgotten, never written.
            self._collect_acks()
            self._flush_acks()
            self.store.commit()
            return float("inf")
        return due

    def _on_connected(self) -> None:
        """After (re)connecting: what queued up meanwhile becomes backlog, and what the
        broker acknowledged within the resend window goes out again."""
        self._connected_before = True
        self._resend_recent()
        self.store.commit()  # the backlog is read back from the database
        top = self.store.last_seq
        if top > self._live_cursor:
            if not self._backlog_open:
                self._backlog_cursor = self._live_cursor
            self._backlog_end = top
            self._live_cursor = top
        if self._backlog_open:
            log.info("replaying outbox backlog up to seq %s", self._backlog_end)

    def _collect_acks(self) -> None:
        first = len(self._acked)
        while self._inflight:
            seq, result, row = self._inflight[0]
            state = _acked(result)
            if state is False:
                break
            self._inflight.popleft()
            self._inflight_seqs.discard(seq)
            if state is None:
                self._retry.append(row)
                continue
            if not self._acked:
                self._acked_since = time.monotonic()
            self._acked.append(seq)
            self.stats.acked += 1
            self._remember(row)
        if len(self._acked) > first:
            # Rows never committed are forgotten at once (no write); deletes are batched.
            self._acked[first:] = self.store.forget_acked(self._acked[first:])

    def _remember(self, row: OutboxRow) -> None:
        if self.resend_window_s <= 0:
            return
        now = time.monotonic()
        self._recent.append((now, row))
        self._recent_bytes += len(row.payload)
        horizon = now - self.resend_window_s
        while self._recent and (
            self._recent[0][0] < horizon or self._recent_bytes > self.resend_max_bytes
        ):
            _t, old = self._recent.popleft()
            self._recent_bytes -= len(old.payload)

    def _resend_recent(self, within_s: float | None = None) -> None:
        """Queue again the rows acknowledged in the last ``within_s`` seconds (default: the
        resend window); older ones are forgotten, newer ones come back as they are acked."""
        horizon = time.monotonic() - (self.resend_window_s if within_s is None else within_s)
        rows = [row for at, row in self._recent if at >= horizon]
        self._recent.clear()
        self._recent_bytes = 0
        if rows:
            self._resend.extend(rows)
            log.info("re-sending %s messages the broker acknowledged recently", len(rows))

    def _acks_due(self, sent: int) -> bool:
        """Whether to delete the acknowledged rows now: each delete is a commit the
        producers' appends wait behind, so it waits for ``ack_batch`` rows, for
        ``ack_delay_s``, or for a pause in publishing."""
        if not self._acked:
            return False
        if len(self._acked) >= self.ack_batch or not (sent or self._inflight):
            return True
        return time.monotonic() - self._acked_since >= self.ack_delay_s

    def _flush_acks(self) -> None:
        if self._acked:
            self.store.ack(self._acked)
            self._acked = []

    def _fill_window(self) -> int:
        room = self.window - len(self._inflight)
        if room <= 0:
            return 0
        sent = 0
        while self._retry and sent < room:
            self._send(self._retry.pop(0))
            self.stats.republished += 1
            sent += 1
        if sent < room:
            rows = self.store.fetch(self._live_cursor, room - sent)
            for row in rows:
                self._send(row)
                self._live_cursor = row.seq
            sent += len(rows)
        while self._resend and sent < room:  # after live rows, like the backlog
            self._send(self._resend.popleft())
            self.stats.resent += 1
            sent += 1
        if sent < room and self._backlog_open:
            sent += self._replay(room - sent)
        return sent

    def _replay(self, room: int) -> int:
        if self.replay_rate > 0:
            now = time.monotonic()
            self._replay_budget = min(
                self.replay_rate,
                self._replay_budget + (now - self._replay_clock) * self.replay_rate,
            )
            self._replay_clock = now
            room = min(room, int(self._replay_budget))
            if room <= 0:
                return 0
        rows = self.store.fetch(self._backlog_cursor, room, upto=self._backlog_end)
        if not rows:
            self._backlog_cursor = self._backlog_end
            log.info("outbox backlog replayed")
            return 0
        sent = 0
        for row in rows:
            self._backlog_cursor = row.seq
            if row.seq in self._inflight_seqs:
                continue
            self._send(row)
            sent += 1
        self.stats.replayed += sent
        self._replay_budget -= sent
        return sent

    def _send(self, row: OutboxRow) -> None:
        result = self.link.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)
        self._inflight.append((row.seq, result, row))
        self._inflight_seqs.add(row.seq)
        self.stats.published += 1
