"""Latest value per channel, for the operator page and ``/api/rigs/{rig}/latest``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drivers.block import Block


@dataclass(slots=True)
class Reading:
    """One channel's latest value."""

    value: float | int | bool | str | None
    unit: str
    t_ns: int
    quality: int
    device: str


class LatestValues:
    """Keeps, per rig and channel, the last valid sample seen."""

    def __init__(self) -> None:
        self.rigs: dict[str, dict[str, Reading]] = {}
        self.units: dict[tuple[str, str], str] = {}

    def set_units(self, rig: str, units: dict[str, str]) -> None:
        """Declare the unit of each channel of ``rig``."""
        for ch, u in units.items():
            self.units[(rig, ch)] = u

    def update(self, rig: str, block: Block) -> None:
        """Take the newest valid value of every channel in ``block``."""
        if len(block) == 0:
            return
        readings = self.rigs.setdefault(rig, {})
        valid = block.valid or {}
        for ch, arr in block.channels.items():
            ok = valid.get(ch)
            idx = len(arr) - 1 if ok is None else (np.flatnonzero(ok)[-1] if ok.any() else -1)
            if idx < 0:
                continue
            v = arr[idx]
            if arr.dtype.kind == "f":
                if not np.isfinite(v):
                    continue
                v = float(v)
            elif arr.dtype.kind in "iu":
                v = int(v)
            elif arr.dtype.kind == "b":
                v = bool(v)
            else:
                v = str(v)
            readings[ch] = Reading(v, self.units.get((rig, ch), ""), int(block.t_ns[idx]),
                                   int(block.quality[idx]), block.device)

    def latest(self, rig: str) -> dict[str, Reading]:
        """Channel → reading for ``rig`` (empty before the first sample)."""
        return dict(self.rigs.get(rig, {}))
