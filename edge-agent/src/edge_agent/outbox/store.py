"""The on-disk outbox: an SQLite queue (WAL) that assigns sequence numbers and keeps a budget."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

log = logging.getLogger(__name__)

# Bytes SQLite spends per row besides topic and payload (rowid, header, index entry), so
# the budget tracks the file size rather than just the payloads.
ROW_OVERHEAD = 48
# Seconds between two "outbox full" warnings, so a long outage does not flood the log.
_WARN_EVERY_S = 30.0
# Recently queued rows kept in memory, so the live lane is published without a read back.
_TAIL_ROWS = 1024


class OutboxError(RuntimeError):
    """The outbox file cannot be opened or written for a reason other than a full disk."""


class Priority(IntEnum):
    """What is dropped first when the budget is exhausted: the lowest priority, oldest first."""

    TELEMETRY = 0
    PREDICTION = 1
    EVENT = 2  # drift alerts, update/visit/stream events, acks: rare and what the fleet acts on


_PRIORITY_OF_TYPE = {
    "telemetry": Priority.TELEMETRY,
    "status": Priority.TELEMETRY,
    "prediction": Priority.PREDICTION,
    "drift": Priority.EVENT,
    "event": Priority.EVENT,
    "cmd_ack": Priority.EVENT,
    "sensor_fault": Priority.EVENT,
    "visit": Priority.EVENT,
    "stream": Priority.EVENT,
}


def priority_of(message_type: str) -> Priority:
    """The drop class of a wire message type (unknown types are kept like events)."""
    return _PRIORITY_OF_TYPE.get(message_type, Priority.EVENT)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    priority: Priority


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    priority INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def _is_disk_full(error: sqlite3.OperationalError) -> bool:
    return "full" in str(error).lower()


def fresh_seq_floor() -> int:
    """First sequence number of a new outbox: milliseconds since the epoch times 1000.

    A device whose outbox file was lost or replaced still counts upwards from any seq it
    sent before (that would need 1000 messages per millisecond), so receivers that
    de-duplicate by seq never mistake new messages for old ones. Stays below 2**53.
    """
    return time.time_ns() // 1_000_000 * 1000


class OutboxStore:
    """Thread-safe queue of encoded messages, in seq order, bounded by ``budget_bytes``.

    ``synchronous=NORMAL`` in WAL mode is the default: a commit survives ``kill -9`` of
    the agent (it is in the WAL file before ``append`` returns) and the database stays
    consistent through a power cut, which may lose the last few commits. ``FULL`` adds an
    fsync per message, which on SD cards costs milliseconds and wears the card; choose it
    where power cuts are common and every message matters more than throughput.
    """

    def __init__(
        self,
        path: Path,
        *,
        budget_bytes: int = 64 * 1024 * 1024,
        synchronous: str = "NORMAL",
        hard_limit_bytes: int | None = None,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        self.path = Path(path)
        self.budget_bytes = budget_bytes
        self._lock = threading.Lock()
        self._last_warning = 0.0
        self._tail: deque[OutboxRow] = deque(maxlen=_TAIL_ROWS)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.executescript(_SCHEMA)
            page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
            # A hard ceiling for the file itself: the budget is enforced by eviction; this
            # stops a runaway from filling the disk and turns it into a "full" error.
            limit = hard_limit_bytes or budget_bytes * 2 + 1024 * 1024
            self._db.execute(f"PRAGMA max_page_count={max(limit // page_size, 16)}")
            self._load_state()
        except sqlite3.DatabaseError as e:
            raise OutboxError(f"cannot open outbox {self.path}: {e}") from e

    def _load_state(self) -> None:
        rows = self._db.execute(
            "SELECT priority, COUNT(*), COALESCE(SUM(size), 0), MAX(seq) FROM outbox "
            "GROUP BY priority"
        ).fetchall()
        self._count = {p: 0 for p in Priority}
        self._bytes = 0
        max_seq = -1
        for priority, count, size, top in rows:
            self._count[Priority(priority)] = int(count)
            self._bytes += int(size)
            max_seq = max(max_seq, int(top))
        counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        stored = counters.get("next_seq")
        if stored is None:
            stored = fresh_seq_floor()
            self._db.execute("INSERT INTO counters VALUES ('next_seq', ?)", (stored,))
        self._next_seq = max(int(stored), max_seq + 1)
        self._dropped = {
            name.removeprefix("dropped."): int(v)
            for name, v in counters.items()
            if name.startswith("dropped.")
        }

    # -- writing ------------------------------------------------------------------------

    def append(
        self,
        topic: str,
        make_payload: Callable[[int], bytes],
        priority: Priority,
        *,
        qos: int = 1,
        retain: bool = False,
    ) -> int | None:
        """Queue one message; ``make_payload(seq)`` encodes it with the seq it is given.

        Returns the seq once the row is committed, or None when the message had to be
        dropped (budget full of more important messages, or disk full); drops are counted.
        """
        with self._lock:
            seq = self._next_seq
            payload = make_payload(seq)
            size = len(payload) + len(topic) + ROW_OVERHEAD
            if not self._make_room(size, priority):
                self._count_drop(f"budget_{priority.name.lower()}", 1)
                return None
            row = (seq, int(priority), topic, payload, qos, int(retain), size, time.time())
            try:
                self._insert(row)
            except sqlite3.OperationalError as e:
                if not _is_disk_full(e):
                    raise OutboxError(f"cannot write outbox {self.path}: {e}") from e
                self._warn("outbox %s is full on disk (%s); evicting", self.path, e)
                self._evict_lowest(max(size, self.budget_bytes // 10), priority)
                try:
                    self._insert(row)
                except sqlite3.OperationalError as e2:
                    if not _is_disk_full(e2):
                        raise OutboxError(f"cannot write outbox {self.path}: {e2}") from e2
                    self._count_drop(f"disk_full_{priority.name.lower()}", 1)
                    return None
            self._next_seq = seq + 1
            self._tail.append(OutboxRow(seq, topic, payload, qos, retain, priority))
            self._count[priority] += 1
            self._bytes += size
            return seq

    def _insert(self, row: tuple[object, ...]) -> None:
        self._db.execute("INSERT INTO outbox VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)

    def reserve_seq(self) -> int:
        """A seq for a message sent outside the queue (the retained status), made durable."""
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
            self._write_counter("next_seq", self._next_seq)
            return seq

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete rows the broker acknowledged; returns how many were still there."""
        keys = list(seqs)
        if not keys:
            return 0
        with self._lock:
            removed: list[tuple[int, int]] = []
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for i in range(0, len(keys), 500):
                    chunk = keys[i : i + 500]
                    marks = ",".join("?" * len(chunk))
                    cur = self._db.execute(
                        f"DELETE FROM outbox WHERE seq IN ({marks}) RETURNING priority, size",  # noqa: S608
                        chunk,
                    )
                    removed.extend(cur.fetchall())
                self._db.execute(
                    "UPDATE counters SET value = ? WHERE name = 'next_seq'", (self._next_seq,)
                )
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as e:
                self._rollback()
                if _is_disk_full(e):
                    # Acked rows stay queued and are sent again later: a duplicate the
                    # receiver drops by seq, never a loss.
                    self._warn("cannot record acks, disk full: %s", e)
                    return 0
                raise OutboxError(f"cannot write outbox {self.path}: {e}") from e
            for priority, size in removed:
                self._count[Priority(priority)] -= 1
                self._bytes -= int(size)
            return len(removed)

    # -- budget -------------------------------------------------------------------------

    def _make_room(self, size: int, priority: Priority) -> bool:
        if self._bytes + size <= self.budget_bytes:
            return True
        if size > self.budget_bytes:
            return False
        # Free a little more than needed so eviction runs once per batch, not per message.
        need = self._bytes + size - self.budget_bytes + self.budget_bytes // 50
        self._evict_lowest(need, priority)
        return self._bytes + size <= self.budget_bytes

    def _evict_lowest(self, need: int, ceiling: Priority) -> None:
        """Drop the oldest rows of the lowest class present, never above ``ceiling``."""
        for priority in Priority:
            if priority > ceiling or need <= 0:
                return
            if self._count[priority] == 0:
                continue
            freed, count, last = 0, 0, None
            for seq, size in self._db.execute(
                "SELECT seq, size FROM outbox WHERE priority = ? ORDER BY seq", (int(priority),)
            ):
                freed += int(size)
                count += 1
                last = int(seq)
                if freed >= need:
                    break
            if last is None:
                continue
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "DELETE FROM outbox WHERE priority = ? AND seq <= ?", (int(priority), last)
                )
                self._bump_counter(f"dropped.{priority.name.lower()}", count)
                self._db.execute(
                    "UPDATE counters SET value = ? WHERE name = 'next_seq'", (self._next_seq,)
                )
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as e:
                self._rollback()
                self._warn("cannot evict from outbox %s: %s", self.path, e)
                return
            self._tail.clear()
            name = priority.name.lower()
            self._dropped[name] = self._dropped.get(name, 0) + count
            self._count[priority] -= count
            self._bytes -= freed
            need -= freed
            self._warn("outbox over budget: dropped %s oldest %s messages", count, name)

    def _count_drop(self, name: str, n: int) -> None:
        self._dropped[name] = self._dropped.get(name, 0) + n
        try:
            self._bump_counter(f"dropped.{name}", n)
        except sqlite3.OperationalError as e:
            log.debug("drop counter not persisted: %s", e)
        self._warn("outbox dropped an incoming message (%s)", name)

    def _bump_counter(self, name: str, n: int) -> None:
        self._db.execute(
            "INSERT INTO counters VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, n),
        )

    def _write_counter(self, name: str, value: int) -> None:
        try:
            self._db.execute(
                "INSERT INTO counters VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, value),
            )
        except sqlite3.OperationalError as e:
            if not _is_disk_full(e):
                raise OutboxError(f"cannot write outbox {self.path}: {e}") from e
            self._warn("seq counter not persisted, disk full: %s", e)

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def _warn(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = now
            log.warning(msg, *args)

    # -- reading ------------------------------------------------------------------------

    def fetch(self, after: int, limit: int, upto: int | None = None) -> list[OutboxRow]:
        """Rows with ``after < seq <= upto`` in seq order."""
        with self._lock:
            if upto is None and self._tail and self._tail[0].seq <= after + 1:
                newer: list[OutboxRow] = []
                for row in reversed(self._tail):
                    if row.seq <= after:
                        break
                    newer.append(row)
                newer.reverse()
                return newer[:limit]
            cur = self._db.execute(
                "SELECT seq, topic, payload, qos, retain, priority FROM outbox "
                "WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (after, upto if upto is not None else 2**63 - 1, limit),
            )
            return [
                OutboxRow(s, t, bytes(p), int(q), bool(r), Priority(pr))
                for s, t, p, q, r, pr in cur.fetchall()
            ]

    @property
    def depth(self) -> int:
        return sum(self._count.values())

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def last_seq(self) -> int:
        """The highest seq handed out so far (queued or not)."""
        return self._next_seq - 1

    def dropped(self) -> dict[str, int]:
        """Drop counters since the outbox was created (persisted across restarts)."""
        with self._lock:
            return dict(self._dropped)

    def depth_by_priority(self) -> dict[str, int]:
        return {p.name.lower(): n for p, n in self._count.items()}

    def close(self) -> None:
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError as e:
                log.debug("checkpoint at close skipped: %s", e)
            self._db.close()
