"""The outbox on a real SQLite file: durable seq, budget policy, disk full."""

from __future__ import annotations

from pathlib import Path

from edge_agent.outbox import OutboxStore, Priority


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
