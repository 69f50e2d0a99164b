"""What every source yields, and the small protocol the agent runtime reads sources through."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Sample:
    """One model input: a camera frame, or an hour of weather turned into a feature row.

    ``observed_label`` is the condition a weather station saw at ``ts``: the truth for the
    forecasts it made ``horizon`` earlier, so the device can score itself online.
    """

    ts: datetime
    input_id: str
    frame: npt.NDArray[np.uint8] | None = None
    features: dict[str, float] | None = None
    observed_label: str | None = None


class SourceClosed(Exception):
    """A finite source (a replay, a file set to close at its end) has nothing more to give."""


class SourceError(Exception):
    """A source cannot be opened as configured (no MQTT link for an MQTT source, bad path)."""


class Source(Protocol):
    """Read by one capture thread; ``counters`` may be read from others for telemetry.

    Counter names in use: ``samples``; weather: ``readings``, ``hours``, ``warming_up``,
    ``rejected_nan``, ``out_of_range`` (and ``out_of_range:<field>``), ``stale``, ``future``,
    ``out_of_order``, ``duplicate``, ``late``, ``malformed``, ``queue_overflow``,
    ``line_drops``; camera: ``frames_grabbed``, ``rate_skipped``, ``undecodable_frame``,
    ``motion_skipped``, ``stream_ends``, ``loops``; both: ``open_failures``, ``reconnects``,
    ``reconnect_failures``.
    """

    name: str
    counters: collections.Counter[str]

    def read(self, timeout: float) -> Sample | None:
        """The next sample, or None when none came within ``timeout`` seconds.

        Raises SourceClosed once a finite source is exhausted.
        """
        ...

    def close(self) -> None: ...
