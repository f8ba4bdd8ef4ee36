"""Statistical process control over a run's cycles: capability, I-MR limits, Nelson rules.

Individuals charts (one value per cycle): the within-run spread is estimated from the
average moving range, σ_w = MR̄ / d₂ with d₂ = 1.128 (subgroups of two); the overall
spread is the sample standard deviation. Cp/Cpk use σ_w, Pp/Ppk the overall σ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

D2 = 1.128   # d2 for moving ranges of two
D4 = 3.267   # upper limit factor of the moving-range chart


@dataclass
class Capability:
    """Cp, Cpk, Pp, Ppk (None where a limit or the spread is missing)."""

    n: int
    mean: float
    sigma_within: float
    sigma_overall: float
    cp: float | None
    cpk: float | None
    pp: float | None
    ppk: float | None


@dataclass
class IMRChart:
    """Individuals and moving-range chart limits, and the Nelson-rule flags."""

    center: float
    ucl: float
    lcl: float
    mr_center: float
    mr_ucl: float
    flags: list[tuple[int, int]] = field(default_factory=list)  # (rule, index of last point)


def _index(usl: float | None, lsl: float | None, mu: float,
           sigma: float) -> tuple[float | None, float | None]:
    if not sigma > 0:
        return None, None
    both = usl is not None and lsl is not None
    c = (usl - lsl) / (6 * sigma) if both else None
    sides = [(usl - mu) / (3 * sigma)] if usl is not None else []
    sides += [(mu - lsl) / (3 * sigma)] if lsl is not None else []
    return c, (min(sides) if sides else None)


def capability(x: np.ndarray, lsl: float | None = None, usl: float | None = None) -> Capability:
    """Process capability of the values ``x`` against the specification limits."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    mu = float(x.mean()) if len(x) else float("nan")
    sw = float(np.abs(np.diff(x)).mean() / D2) if len(x) > 1 else float("nan")
    so = float(x.std(ddof=1)) if len(x) > 1 else float("nan")
    cp, cpk = _index(usl, lsl, mu, sw)
    pp, ppk = _index(usl, lsl, mu, so)
    return Capability(len(x), mu, sw, so, cp, cpk, pp, ppk)


def _runs(mask: np.ndarray, length: int) -> list[int]:
    """Indices where ``mask`` has been true for the last ``length`` points."""
    out, run = [], 0
    for i, m in enumerate(mask.tolist()):
        run = run + 1 if m else 0
        if run >= length:
            out.append(i)
    return out


def _k_of_m(mask: np.ndarray, k: int, m: int) -> list[int]:
    """Indices i where at least k of the m points ending at i satisfy ``mask``."""
    c = np.convolve(mask.astype(int), np.ones(m, dtype=int))[: len(mask)]
    return [i for i in np.flatnonzero(c >= k).tolist() if i >= m - 1 and mask[i]]


def nelson(x: np.ndarray, center: float, sigma: float) -> list[tuple[int, int]]:
    """Nelson rules 1–8: (rule, index of the point that completes the pattern)."""
    x = np.asarray(x, dtype=np.float64)
    if not sigma > 0 or len(x) == 0:
        return []
    z = (x - center) / sigma
    d = np.sign(np.diff(x))
    flags: list[tuple[int, int]] = []
    flags += [(1, i) for i in np.flatnonzero(np.abs(z) > 3).tolist()]
    flags += [(2, i) for i in _runs(z > 0, 9) + _runs(z < 0, 9)]
    flags += [(3, i + 1) for i in _runs(d > 0, 5) + _runs(d < 0, 5)]  # 6 points, 5 steps
    alternating = np.concatenate(([False], d[1:] * d[:-1] < 0))  # step i turns against step i−1
    flags += [(4, i + 1) for i in _runs(alternating, 12)]  # 14 points, 13 steps, 12 turns
    flags += [(5, i) for i in _k_of_m(z > 2, 2, 3) + _k_of_m(z < -2, 2, 3)]
    flags += [(6, i) for i in _k_of_m(z > 1, 4, 5) + _k_of_m(z < -1, 4, 5)]
    flags += [(7, i) for i in _runs(np.abs(z) < 1, 15)]
    flags += [(8, i) for i in _runs(np.abs(z) > 1, 8)]
    return sorted(set(flags))


def imr(x: np.ndarray) -> IMRChart:
    """I-MR chart limits and Nelson flags for the values ``x`` (in run order)."""
    x = np.asarray(x, dtype=np.float64)
    mr = float(np.abs(np.diff(x)).mean()) if len(x) > 1 else float("nan")
    center = float(x.mean())
    sigma = mr / D2
    return IMRChart(center, center + 3 * sigma, center - 3 * sigma, mr, D4 * mr,
                    nelson(x, center, sigma))
