"""What every cycle analysis returns: metrics, verdict against limits, provenance."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class CycleAnalysis:
    """One analysed cycle: metrics (None where a channel was missing), where, provenance."""

    index: int
    start_s: float
    end_s: float
    metrics: dict[str, float | None]
    samples_sha256: str
    version: str
    verdict: str = "ok"
    reasons: list[str] = field(default_factory=list)


def samples_hash(time_s: np.ndarray, channels: dict[str, np.ndarray]) -> str:
    """SHA-256 of the samples: time then each channel in name order, float64 little-endian."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(time_s, dtype="<f8").tobytes())
    for name in sorted(channels):
        h.update(name.encode())
        h.update(np.ascontiguousarray(channels[name], dtype="<f8").tobytes())
    return h.hexdigest()


def limit_reasons(metrics: dict[str, float | None], limits: dict[str, dict[str, float]]) -> list[str]:
    """Every violated min/max limit, named with its value."""
    reasons = []
    for name, lim in limits.items():
        v = metrics.get(name)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            reasons.append(f"{name}: no value to check against its limits")
            continue
        if "min" in lim and v < lim["min"]:
            reasons.append(f"{name} = {v:.6g} below min {lim['min']:.6g}")
        if "max" in lim and v > lim["max"]:
            reasons.append(f"{name} = {v:.6g} above max {lim['max']:.6g}")
    return reasons


def judge(result: CycleAnalysis, limits: dict[str, dict[str, float]],
          extra_reasons: list[str] | None = None) -> CycleAnalysis:
    """Set the verdict: ``nok`` with every violated limit named, else ``ok``."""
    result.reasons = limit_reasons(result.metrics, limits) + list(extra_reasons or [])
    result.verdict = "nok" if result.reasons else "ok"
    return result
