"""What the drift monitor reads from a sample and its prediction (structural types).

The monitor depends only on these attribute shapes, so it works with the agent's
``Sample`` and ``Prediction`` and with anything else that has the same fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt


class SampleLike(Protocol):
    @property
    def ts(self) -> datetime: ...

    @property
    def input_id(self) -> str: ...

    @property
    def frame(self) -> npt.NDArray[np.uint8] | None: ...

    @property
    def features(self) -> Mapping[str, float] | None: ...

    @property
    def observed_label(self) -> str | None: ...


class PredictionLike(Protocol):
    @property
    def label(self) -> str: ...

    @property
    def confidence(self) -> float: ...

    @property
    def scores(self) -> Mapping[str, float]: ...

    @property
    def embedding(self) -> npt.NDArray[np.float32] | None: ...

    @property
    def input_stats(self) -> Mapping[str, float]: ...
