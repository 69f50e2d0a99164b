"""The visit tracker: when a visit starts and ends, what its end says, and the shutdown flush."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.visits.config import publishes_prediction
from edge_agent.visits.tracker import Visit, VisitTracker

T0 = datetime(2026, 5, 1, 18, 0, tzinfo=UTC)
MODEL = ("catdog", 4)


def tracker(min_frames: int = 2, quiet_s: float = 10.0) -> VisitTracker:
    ids = count(1)
    return VisitTracker(min_frames, quiet_s, new_id=lambda _ts: f"v{next(ids)}")


def feed(t: VisitTracker, frames: Sequence[tuple[float, str, float]]) -> list[Visit]:
    """Frames as (seconds after T0, label, confidence); ``no_pet`` is the absent label.
    The payload of each frame is its index, so the best frame can be named."""
    changes: list[Visit] = []
    for i, (s, label, conf) in enumerate(frames):
        seen = t.observe(T0 + timedelta(seconds=s), label, conf, label != "no_pet", *MODEL, i)
        changes += seen.changes
    return changes


def test_a_visit_starts_after_min_frames_consecutive_subject_frames() -> None:
    t = tracker(min_frames=3)
    stray = [(0, "cat", 0.9), (1, "no_pet", 0.9), (2, "cat", 0.9), (3, "cat", 0.8)]
    assert feed(t, stray) == []  # one stray frame, then only two in a row
    (start,) = feed(t, [(4, "cat", 0.95)])
    assert start.phase == "start" and start.visit_id == "v1"
    assert start.started_at == T0 + timedelta(seconds=2)  # the run's first frame
    assert (start.subject_frames, start.frames, start.label) == (3, 3, "cat")
    assert start.best is None  # the frame is handed over at the end only
    assert t.open_visit is not None and t.counts.started == 1


def test_the_visit_ends_quiet_s_after_the_last_subject_frame() -> None:
    t = tracker(min_frames=2, quiet_s=10)
    frames = [(0, "dog", 0.7), (1, "dog", 0.9), (2, "no_pet", 0.99), (5, "dog", 0.8)]
    frames += [(s, "no_pet", 0.99) for s in (7, 9, 11, 14)]  # 14 - 5 < 10: still open
    changes = feed(t, frames)
    assert [c.phase for c in changes] == ["start"]
    (end,) = feed(t, [(15, "no_pet", 0.99)])
    assert (end.phase, end.ended_by) == ("end", "quiet")
    assert end.started_at == T0 and end.ended_at == T0 + timedelta(seconds=5)
    # Frames from the first to the last subject frame: the absent one at 2 s counts, those
    # after the last subject frame do not.
    assert (end.subject_frames, end.frames) == (3, 4)
    assert t.open_visit is None and (t.counts.started, t.counts.ended) == (1, 1)


def test_a_subject_frame_after_a_long_gap_ends_the_visit_and_begins_another() -> None:
    t = tracker(min_frames=1, quiet_s=10)
    changes = feed(t, [(0, "cat", 0.9), (3, "cat", 0.9), (30, "dog", 0.8)])
    assert [(c.phase, c.visit_id) for c in changes] == [
        ("start", "v1"),
        ("end", "v1"),
        ("start", "v2"),
    ]
    assert changes[1].ended_at == T0 + timedelta(seconds=3) and changes[2].label == "dog"


def test_label_is_the_majority_and_confidence_the_best_frame() -> None:
    t = tracker(min_frames=2)
    frames = [(0, "cat", 0.6), (1, "dog", 0.99), (2, "cat", 0.7), (3, "cat", 0.95)]
    feed(t, [*frames, (4, "dog", 0.5)])
    (end,) = t.flush()
    assert end.label == "cat" and end.label_frames == {"cat": 3, "dog": 2}
    assert end.confidence == 0.99 and end.best == 1  # the best frame is the dog's, 1 s in
    assert end.best_at == T0 + timedelta(seconds=1)


def test_a_tied_majority_goes_to_the_more_confident_label() -> None:
    t = tracker(min_frames=1)
    feed(t, [(0, "cat", 0.6), (1, "dog", 0.9), (2, "cat", 0.6), (3, "dog", 0.9)])
    (end,) = t.flush()
    assert end.label == "dog" and end.label_frames == {"cat": 2, "dog": 2}


def test_the_first_of_equally_confident_frames_stays_the_best() -> None:
    t = tracker(min_frames=1)
    observed = [t.observe(T0 + timedelta(seconds=s), "cat", 0.9, True, *MODEL, s) for s in range(3)]
    assert [o.best for o in observed] == [True, False, False]
    assert t.flush()[0].best == 0


def test_shutdown_ends_the_open_visit_and_drops_a_candidate() -> None:
    t = tracker(min_frames=2)
    feed(t, [(0, "cat", 0.9), (1, "cat", 0.8)])
    (end,) = t.flush()
    assert (end.phase, end.ended_by) == ("end", "shutdown")
    assert end.ended_at == T0 + timedelta(seconds=1)
    assert t.flush() == []
    feed(t, [(5, "cat", 0.9)])  # a candidate only
    assert t.flush() == [] and t.counts.ended == 1


def test_tick_ends_a_visit_when_frames_stop_coming() -> None:
    t = tracker(min_frames=2, quiet_s=10)
    feed(t, [(0, "cat", 0.9), (1, "cat", 0.9)])
    assert t.tick(T0 + timedelta(seconds=10.5)) == []
    (end,) = t.tick(T0 + timedelta(seconds=11))
    assert (end.ended_by, end.ended_at) == ("quiet", T0 + timedelta(seconds=1))
    assert t.tick(T0 + timedelta(seconds=60)) == []


def test_time_going_back_ends_the_visit() -> None:
    t = tracker(min_frames=2)
    changes = feed(t, [(100, "cat", 0.9), (101, "cat", 0.9), (0, "cat", 0.9)])
    assert [c.phase for c in changes] == ["start", "end"]
    assert t.open_visit is None  # the frame at 0 begins a candidate, not yet a visit


def test_counts_cover_every_frame() -> None:
    t = tracker()
    feed(t, [(0, "no_pet", 0.9), (1, "cat", 0.9), (2, "cat", 0.9), (3, "no_pet", 0.9)])
    assert (t.counts.frames, t.counts.absent_frames, t.counts.started) == (4, 2, 1)


@given(
    st.lists(
        st.tuples(st.floats(0, 30), st.sampled_from(["cat", "dog", "no_pet"]), st.floats(0, 1)),
        max_size=60,
    )
)
def test_starts_and_ends_pair_up_in_order(steps: list[tuple[float, str, float]]) -> None:
    t = tracker(min_frames=2, quiet_s=10)
    clock = 0.0
    frames = []
    for gap, label, conf in steps:
        clock += gap
        frames.append((clock, label, conf))
    changes = feed(t, frames) + t.flush()
    phases = [c.phase for c in changes]
    assert phases == ["start", "end"] * (len(phases) // 2)
    for start, end in zip(changes[::2], changes[1::2], strict=True):
        assert start.visit_id == end.visit_id
        assert end.ended_at is not None and end.ended_at >= end.started_at
        assert 2 <= end.subject_frames <= end.frames
        assert sum(end.label_frames.values()) == end.subject_frames
        assert end.label != "no_pet" and end.label in end.label_frames


@pytest.mark.parametrize(
    ("mode", "absent", "label", "published"),
    [
        ("auto", "no_pet", "no_pet", False),
        ("auto", "no_pet", "cat", True),
        ("auto", None, "rain", True),  # a model without a presence rule: as before
        ("pets_only", "no_pet", "no_pet", False),
        ("pets_only", None, "cat", True),
        ("all", "no_pet", "no_pet", True),
        ("none", "no_pet", "cat", False),
        ("none", None, "rain", False),
    ],
)
def test_predictions_mode(mode: str, absent: str | None, label: str, published: bool) -> None:
    assert publishes_prediction(mode, absent, label) is published  # type: ignore[arg-type]
