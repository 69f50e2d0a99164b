"""The outbox on a real SQLite file: durable seq, budget policy, disk full."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from edge_agent.outbox import OutboxStore, Priority
from edge_agent.outbox.store import COMMIT_ROWS


def _fill(store: OutboxStore, priority: Priority, n: int, size: int = 200) -> list[int]:
    seqs = [store.append("t", lambda s: b"x" * size, priority) for _ in range(n)]
    assert all(s is not None for s in seqs), "the outbox refused a message"
    return [s for s in seqs if s is not None]


def test_seq_is_monotonic_and_survives_reopen_even_when_empty(tmp_path: Path):
    store = OutboxStore(tmp_path / "o.db")
    seqs = _fill(store, Priority.PREDICTION, 5)
    assert seqs == list(range(seqs[0], seqs[0] + 5))
    assert store.ack(seqs) == 5 and store.depth == 0
    store.close()
    reopened = OutboxStore(tmp_path / "o.db")
    assert reopened.next_seq == seqs[-1] + 1
    reserved = reopened.reserve_seq()
    reopened.close()
    assert OutboxStore(tmp_path / "o.db").next_seq == reserved + 1


def test_fresh_outbox_counts_above_anything_sent_before(tmp_path: Path):
    old = OutboxStore(tmp_path / "old.db")
    last = _fill(old, Priority.PREDICTION, 3)[-1]
    # The file is lost (a new SD card): the new one still counts upwards.
    new = OutboxStore(tmp_path / "new.db")
    assert new.next_seq > last


def test_budget_drops_oldest_telemetry_before_predictions_and_never_events(tmp_path: Path):
    store = OutboxStore(tmp_path / "o.db", budget_bytes=100_000)
    events = _fill(store, Priority.EVENT, 20)
    telemetry = _fill(store, Priority.TELEMETRY, 100)
    predictions = _fill(store, Priority.PREDICTION, 300)
    assert store.size_bytes <= 100_000
    dropped = store.dropped()
    assert dropped["telemetry"] > 0 and "prediction" not in dropped
    kept = {row.seq for row in store.fetch(-1, 10_000)}
    assert telemetry[0] not in kept and telemetry[-1] in kept  # oldest first
    # More predictions: every telemetry row goes, then the oldest predictions; events stay.
    later = _fill(store, Priority.PREDICTION, 400)
    depth = store.depth_by_priority()
    assert depth["telemetry"] == 0 and depth["event"] == 20
    assert store.dropped()["prediction"] > 0
    kept = {row.seq for row in store.fetch(-1, 10_000)}
    assert set(events) <= kept and later[-1] in kept and predictions[0] not in kept
    # Telemetry arriving when only more important messages are left is itself dropped.
    assert store.append("t", lambda s: b"x" * 60_000, Priority.TELEMETRY) is None
    assert store.dropped()["budget_telemetry"] == 1
    store.close()
    assert OutboxStore(tmp_path / "o.db", budget_bytes=100_000).dropped()["telemetry"] == 100


def test_disk_full_evicts_by_policy_and_keeps_committed_rows_intact(tmp_path: Path):
    # A hard page limit makes SQLite itself answer "database or disk is full".
    store = OutboxStore(tmp_path / "o.db", budget_bytes=10**9, hard_limit_bytes=96 * 1024)
    telemetry = _fill(store, Priority.TELEMETRY, 30, size=1000)
    events = _fill(store, Priority.EVENT, 150, size=1000)
    assert len(telemetry + events) == 180  # no crash, nothing refused
    dropped = store.dropped()
    assert dropped["telemetry"] == 30  # telemetry made room before any event went
    store.close()
    reopened = OutboxStore(tmp_path / "o.db", budget_bytes=10**9, hard_limit_bytes=96 * 1024)
    rows = reopened.fetch(-1, 1000)
    seqs = [r.seq for r in rows]
    assert seqs == sorted(seqs) and seqs[-1] == events[-1]
    assert all(r.payload == b"x" * 1000 for r in rows)
    assert (tmp_path / "o.db").stat().st_size <= 96 * 1024


def _on_disk(path: Path) -> list[int]:
    """Seqs in the outbox file, read by another connection (what a crash would leave)."""
    with sqlite3.connect(path) as db:
        return [int(seq) for (seq,) in db.execute("SELECT seq FROM outbox ORDER BY seq")]


def test_batched_appends_go_out_at_once_and_are_committed_in_one_batch(tmp_path: Path):
    store = OutboxStore(tmp_path / "o.db", commit_interval_s=60.0)
    first = store.durable_seq
    appended = [
        store.append("t", lambda s: b"p%d" % s, Priority.PREDICTION, wait=False) for _ in range(3)
    ]
    batched = [s for s in appended if s is not None]
    assert len(batched) == 3
    # Queued (counted, budgeted) and ready to send, but neither on disk nor acknowledged.
    assert store.depth == 3 and store.durable_seq == first
    assert [r.seq for r in store.fetch(first, 100)] == batched
    assert _on_disk(tmp_path / "o.db") == []
    due = store.commit_due()
    assert due is not None and due > 0
    # An append that waits commits everything queued before it, in one transaction.
    event = store.append("t", lambda s: b"e%d" % s, Priority.EVENT)
    assert event is not None and store.durable_seq == event
    assert _on_disk(tmp_path / "o.db") == [*batched, event]
    rows = store.fetch(first, 100)
    assert [r.payload for r in rows] == [b"p%d" % s for s in batched] + [b"e%d" % event]
    assert store.commit_due() is None


def test_rows_the_broker_acknowledged_before_their_commit_are_never_written(tmp_path: Path):
    store = OutboxStore(tmp_path / "o.db", commit_interval_s=60.0)
    wal = tmp_path / "o.db-wal"
    seq = store.append("t", lambda s: b"x", Priority.PREDICTION, wait=False)
    assert seq is not None and store.ack([seq]) == 1  # the first one reserves seqs on disk
    size = wal.stat().st_size
    for _ in range(50):
        seq = store.append("t", lambda s: b"x" * 400, Priority.PREDICTION, wait=False)
        assert seq is not None and store.ack([seq]) == 1
        assert store.durable_seq == seq  # acknowledged by the broker: safe
    assert store.depth == 0 and store.commit_due() is None
    assert wal.stat().st_size == size and _on_disk(tmp_path / "o.db") == []
    store.close()
    # After a restart the outbox counts on above every seq it handed out before a commit.
    assert OutboxStore(tmp_path / "o.db").next_seq > seq


def test_a_full_batch_or_the_interval_commits(tmp_path: Path):
    store = OutboxStore(tmp_path / "o.db", commit_interval_s=60.0)
    seqs = [
        store.append("t", lambda s: b"x", Priority.TELEMETRY, wait=False)
        for _ in range(COMMIT_ROWS)
    ]
    assert store.durable_seq == seqs[-1]  # the 64th row committed the batch
    assert _on_disk(tmp_path / "o.db") == seqs
    short = OutboxStore(tmp_path / "short.db", commit_interval_s=0.01)
    seq = short.append("t", lambda s: b"x", Priority.PREDICTION, wait=False)
    assert seq is not None and short.durable_seq < seq
    deadline = time.monotonic() + 2
    while (short.commit_due() or 0) > 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert short.commit_due() == 0
    short.commit()  # what the publisher's loop does when commit_due() says 0
    assert short.durable_seq == seq and _on_disk(tmp_path / "short.db") == [seq]


def test_close_commits_what_waits_and_an_interval_of_0_commits_each_append(tmp_path: Path):
    store = OutboxStore(tmp_path / "o.db", commit_interval_s=60.0)
    seqs = [store.append("t", lambda s: b"x", Priority.PREDICTION, wait=False) for _ in range(5)]
    store.close()
    reopened = OutboxStore(tmp_path / "o.db")
    assert [r.seq for r in reopened.fetch(-1, 100)] == seqs
    seq = reopened.append("t", lambda s: b"y", Priority.PREDICTION, wait=False)
    assert reopened.durable_seq == seq  # commit_interval_s=0 (the store's default)


def test_budget_eviction_reaches_rows_still_waiting_for_their_commit(tmp_path: Path):
    store = OutboxStore(tmp_path / "o.db", budget_bytes=100_000, commit_interval_s=60.0)
    old = [
        store.append("t", lambda s: b"x" * 200, Priority.TELEMETRY, wait=False) for _ in range(30)
    ]
    _fill(store, Priority.PREDICTION, 400)  # over budget: the oldest telemetry goes first
    kept = {row.seq for row in store.fetch(-1, 10_000)}
    assert old[0] not in kept and store.dropped()["telemetry"] > 0
    assert store.size_bytes <= 100_000
