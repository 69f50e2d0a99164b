"""What a live source tells the agent about its stream: lost, frozen, restored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One change of a stream's health, kept by the source until the agent pops it.

    An outage gives one ``lost`` (the stream stopped) or ``frozen`` (the connection stayed
    up but frames stopped), however many reconnects fail meanwhile, then one ``restored``.
    """

    source: str  # the source's name
    state: Literal["lost", "frozen", "restored"]
    at: datetime  # UTC, timezone-aware
    detail: str  # human text; never contains credentials (use masked_uri)
    down_s: float | None = None  # for "restored": how long frames were missing
