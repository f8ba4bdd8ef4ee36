"""The columnar block that flows from drivers through the bus to storage and analysis."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Quality codes carried per sample.
QUALITY_GOOD = 0
QUALITY_PARTIAL = 1  # some of the device's requests failed; their channels are NaN
QUALITY_BAD = 2
QUALITY_STALE = 3  # the device answers but its values stopped changing (hung PLC, stuck sensor)


@dataclass(slots=True)
class Block:
    """``n`` samples of one device, stored column-wise.

    ``t_ns`` holds int64 nanosecond Unix timestamps; every array in ``channels`` has
    length ``n``. Numeric channels are float64 (scaled values) or int64 (raw integers);
    string channels are numpy unicode arrays; bit channels are bool. Float NaN means
    "no value" as well.
    """

    device: str
    t_ns: np.ndarray
    channels: dict[str, np.ndarray]
    quality: np.ndarray = field(default=None)  # type: ignore[assignment]
    #: optional per-channel bool masks: False where that channel has no value (its read
    #: failed); absent channels are valid everywhere
    valid: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.quality is None:
            self.quality = np.zeros(len(self.t_ns), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.t_ns)
