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
# Rows that wait for one commit at most, even before the commit interval has run out;
# above a publishing window (100), so on a healthy link the interval decides.
COMMIT_ROWS = 256
# Seqs reserved on disk at a time for rows sent before they are committed: after a crash
# the outbox counts on from above them, so no seq the broker may have seen is used again.
SEQ_BLOCK = 100_000


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


@dataclass(frozen=True, slots=True)
class _Pending:
    """A row appended but not committed yet: what the commit writes, and what it frees."""

    row: OutboxRow
    size: int
    created: float

    def values(self) -> tuple[object, ...]:
        r = self.row
        return (
            r.seq,
            int(r.priority),
            r.topic,
            r.payload,
            r.qos,
            int(r.retain),
            self.size,
            self.created,
        )


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
    the agent (it is in the WAL file before it is acknowledged) and the database stays
    consistent through a power cut, which may lose the last few commits. ``FULL`` adds an
    fsync per commit, which on SD cards costs milliseconds and wears the card; choose it
    where power cuts are common and every message matters more than throughput.

    Appends made with ``wait=False`` are batched: they can be sent at once, and what the
    broker has not acknowledged (PUBACK) by the time the batch is due is committed in one
    transaction: once ``commit_interval_s`` has passed since the oldest of them, once
    ``COMMIT_ROWS`` wait, or with the next ``wait=True`` append, whichever comes first
    (``commit_due`` tells the publisher when). A row the broker acknowledged first never
    touches the disk. Each commit writes whole pages to the WAL (an insert and its
    delete cost ~12 KB for a 500-byte message) and releases Python's GIL once, so on a
    healthy link a camera's predictions cost the SD card next to nothing and the
    producer one commit per batch at most. A row is acknowledged as queued once it is
    committed or acknowledged by the broker: ``append(wait=True)`` returns then, and
    ``durable_seq`` covers ``wait=False`` rows; a ``kill -9`` loses only rows never
    acknowledged. Their seqs are never reused: ``SEQ_BLOCK`` seqs at a time are reserved
    on disk before they are handed out.
    """

    def __init__(
        self,
        path: Path,
        *,
        budget_bytes: int = 64 * 1024 * 1024,
        synchronous: str = "NORMAL",
        hard_limit_bytes: int | None = None,
        commit_interval_s: float = 0.0,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        if commit_interval_s < 0:
            raise ValueError("commit_interval_s must not be negative")
        self.path = Path(path)
        self.budget_bytes = budget_bytes
        self.commit_interval_s = commit_interval_s
        # Rows appended with wait=False that are neither committed nor acknowledged by
        # the broker, by seq (in seq order), and when the oldest of them arrived.
        self._pending: dict[int, _Pending] = {}
        self._pending_since = 0.0
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
        self._reserved = int(stored)  # seqs below it may be handed out before a commit
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
        wait: bool = True,
    ) -> int | None:
        """Queue one message; ``make_payload(seq)`` encodes it with the seq it is given.

        With ``wait`` (the default) it returns the seq once the row is committed, with
        every row queued before it. Without, it returns the seq at once and the row joins
        the next batch (see the class notes); with ``commit_interval_s`` of 0 every append
        commits before it returns. Returns None when the message had to be dropped
        (budget full of more important messages, or disk full); drops are counted.
        """
        with self._lock:
            batched = not wait and self.commit_interval_s > 0
            seq = self._next_seq
            if batched and seq >= self._reserved:
                # Not reserved on disk (disk full): this row is committed before it is sent.
                batched = self._write_counter("next_seq", seq + SEQ_BLOCK)
                if batched:
                    self._reserved = seq + SEQ_BLOCK
            payload = make_payload(seq)
            size = len(payload) + len(topic) + ROW_OVERHEAD
            if not self._make_room(size, priority):
                self._count_drop(f"budget_{priority.name.lower()}", 1)
                return None
            row = OutboxRow(seq, topic, payload, qos, retain, priority)
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending[seq] = _Pending(row, size, time.time())
            self._next_seq = seq + 1
            self._count[priority] += 1
            self._bytes += size
            due = not batched or len(self._pending) >= COMMIT_ROWS
            try:
                if due and seq in self._commit_pending():
                    return None
            except OutboxError:
                # Not queued, as if never appended; batched rows before it stay pending.
                if self._pending.pop(seq, None) is not None:
                    self._count[priority] -= 1
                    self._bytes -= size
                raise
            self._tail.append(row)
            return seq

    def _commit_pending(self) -> set[int]:
        """Commit every pending row in one transaction; returns the seqs dropped instead
        (disk still full after eviction). Call with the lock held."""
        if not self._pending:
            return set()
        batch = list(self._pending.values())
        self._pending = {}
        try:
            self._insert(batch)
        except sqlite3.OperationalError as e:
            if not _is_disk_full(e):
                self._pending = {p.row.seq: p for p in batch}
                raise OutboxError(f"cannot write outbox {self.path}: {e}") from e
            self._warn("outbox %s is full on disk (%s); evicting", self.path, e)
            need = max(sum(p.size for p in batch), self.budget_bytes // 10)
            self._evict_lowest(need, max(p.row.priority for p in batch))
            try:
                self._insert(batch)
            except sqlite3.OperationalError as e2:
                if not _is_disk_full(e2):
                    raise OutboxError(f"cannot write outbox {self.path}: {e2}") from e2
                for p in batch:
                    self._count[p.row.priority] -= 1
                    self._bytes -= p.size
                    self._count_drop(f"disk_full_{p.row.priority.name.lower()}", 1)
                return {p.row.seq for p in batch}
        return set()

    def _insert(self, batch: list[_Pending]) -> None:
        sql = "INSERT INTO outbox VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        if len(batch) == 1:
            self._db.execute(sql, batch[0].values())
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(sql, [p.values() for p in batch])
            self._db.execute("COMMIT")
        except sqlite3.OperationalError:
            self._rollback()
            raise

    def commit_due(self) -> float | None:
        """Seconds until the pending rows must be committed (0: now); None when none wait."""
        if not self._pending:
            return None
        return max(0.0, self._pending_since + self.commit_interval_s - time.monotonic())

    def commit(self) -> None:
        """Commit the rows appended with ``wait=False`` now (the publisher calls it when
        ``commit_due`` says so, and ``close`` does)."""
        with self._lock:
            self._commit_pending()

    @property
    def durable_seq(self) -> int:
        """Every row up to this seq is committed or acknowledged by the broker (or was
        dropped and counted): acknowledged as queued, it survives a ``kill -9``."""
        with self._lock:
            return next(iter(self._pending), self._next_seq) - 1

    def reserve_seq(self) -> int:
        """A seq for a message sent outside the queue (the retained status), made durable."""
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
            self._write_counter("next_seq", self._seq_floor())
            return seq

    def _seq_floor(self) -> int:
        """The next_seq to persist: never below the seqs handed out before their commit."""
        return max(self._next_seq, self._reserved)

    def forget_acked(self, seqs: Iterable[int]) -> list[int]:
        """Forget acknowledged rows still waiting for their batch's commit (nothing is
        written); returns the other seqs, whose rows are on disk, for ``ack``."""
        with self._lock:
            return self._drop_pending(seqs)

    def _drop_pending(self, seqs: Iterable[int]) -> list[int]:
        """Forget the pending rows among ``seqs``; returns the others. Lock held."""
        if not self._pending:
            return list(seqs)
        on_disk = []
        for seq in seqs:
            waiting = self._pending.pop(seq, None)
            if waiting is None:
                on_disk.append(seq)
            else:
                self._count[waiting.row.priority] -= 1
                self._bytes -= waiting.size
        return on_disk

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete rows the broker acknowledged; returns how many were still there.

        A row still waiting for its batch's commit is only forgotten: it never touches
        the disk, and when every acknowledged row was one, nothing is written at all.
        """
        with self._lock:
            given = list(seqs)
            keys = self._drop_pending(given)
            forgotten = len(given) - len(keys)
            if not keys:
                return forgotten
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
                    "UPDATE counters SET value = ? WHERE name = 'next_seq'", (self._seq_floor(),)
                )
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as e:
                self._rollback()
                if _is_disk_full(e):
                    # Acked rows stay queued and are sent again later: a duplicate the
                    # receiver drops by seq, never a loss.
                    self._warn("cannot record acks, disk full: %s", e)
                    return forgotten
                raise OutboxError(f"cannot write outbox {self.path}: {e}") from e
            for priority, size in removed:
                self._count[Priority(priority)] -= 1
                self._bytes -= int(size)
            return forgotten + len(removed)

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
        if self._pending:
            self._commit_pending()  # pending rows are evicted like the others, oldest first
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
                    "UPDATE counters SET value = ? WHERE name = 'next_seq'", (self._seq_floor(),)
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

    def _write_counter(self, name: str, value: int) -> bool:
        """Persist a counter; False when the disk is full (warned, not raised)."""
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
            return False
        return True

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
            self._commit_pending()
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError as e:
                log.debug("checkpoint at close skipped: %s", e)
            self._db.close()
