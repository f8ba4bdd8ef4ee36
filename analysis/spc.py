"""Statistical process control over a run's cycles: capability, control charts, Nelson rules.

Capability (one value per cycle): the within-run spread is estimated from the average
moving range, σ_w = MR̄ / d₂ with d₂ = 1.128 (subgroups of two); the overall spread is the
sample standard deviation. Cp/Cpk use σ_w, Pp/Ppk the overall σ.

Control charts (:func:`control_chart`): an I-MR chart for a short run, X̄–R or X̄–S charts of
consecutive subgroups for a long one, so a chart never has more than a hundred or so
points; with the expected false-alarm rate of the Nelson rules applied
(:func:`rule_false_alarm_rate`, :func:`expected_false_alarms`).
"""

from __future__ import annotations

import math
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


# -- control charts at any run length --------------------------------------------------------------
#
# Up to IMR_MAX values the chart is an I-MR chart of every value. Above that, the values are cut, in
# run order, into consecutive subgroups of n = ceil(count / MAX_POINTS) values (so at most MAX_POINTS
# points are charted, whatever the run's length), and the chart is X̄–R (n ≤ 10) or X̄–S (n > 10):
#
#   X̄–R:  centre X̄̄, limits X̄̄ ± A2·R̄;      R chart  D3·R̄ … D4·R̄;    σ̂ = R̄ / d2
#   X̄–S:  centre X̄̄, limits X̄̄ ± A3·S̄;      S chart  B3·S̄ … B4·S̄;    σ̂ = S̄ / c4
#
# The constants are those of the standard tables (ASTM E2587, Montgomery's Appendix VI) for
# n ≤ 25; beyond, A3, B3 and B4 come from the formula those tables are computed by:
# c4 = √(2/(n−1))·Γ(n/2)/Γ((n−1)/2), A3 = 3/(c4·√n), B3,4 = 1 ∓ 3·√(1−c4²)/c4 (B3 ≥ 0).
# Values after the last full subgroup (fewer than n) are not charted; the chart says how many.
# The Nelson rules are applied to the charted location points (individuals or subgroup means)
# with the chart's centre and σ of a point = (UCL − centre)/3.

IMR_MAX = 100
MAX_POINTS = 100
RULES = (1, 2, 3, 4, 5, 6, 7, 8)
#: points a Nelson rule's pattern spans (the first point that can complete it is the L-th)
RULE_SPAN = {1: 1, 2: 9, 3: 6, 4: 14, 5: 3, 6: 5, 7: 15, 8: 8}
RULE_TEXT = {1: "a point beyond 3σ", 2: "9 in a row on one side of the centre",
             3: "6 in a row steadily rising or falling", 4: "14 in a row alternating up and down",
             5: "2 of 3 beyond 2σ on one side",
             6: "4 of 5 beyond 1σ on one side", 7: "15 in a row within 1σ", 8: "8 in a row beyond 1σ (either side)"}

#: n: (A2, D3, D4, d2) — X̄–R chart constants (standard tables)
XBAR_R = {2: (1.880, 0.0, 3.267, 1.128), 3: (1.023, 0.0, 2.574, 1.693), 4: (0.729, 0.0, 2.282, 2.059),
          5: (0.577, 0.0, 2.114, 2.326), 6: (0.483, 0.0, 2.004, 2.534), 7: (0.419, 0.076, 1.924, 2.704),
          8: (0.373, 0.136, 1.864, 2.847), 9: (0.337, 0.184, 1.816, 2.970), 10: (0.308, 0.223, 1.777, 3.078)}
#: n: (A3, B3, B4, c4) — X̄–S chart constants (standard tables)
XBAR_S = {2: (2.659, 0.0, 3.267, 0.7979), 3: (1.954, 0.0, 2.568, 0.8862), 4: (1.628, 0.0, 2.266, 0.9213),
          5: (1.427, 0.0, 2.089, 0.9400), 6: (1.287, 0.030, 1.970, 0.9515), 7: (1.182, 0.118, 1.882, 0.9594),
          8: (1.099, 0.185, 1.815, 0.9650), 9: (1.032, 0.239, 1.761, 0.9693), 10: (0.975, 0.284, 1.716, 0.9727),
          11: (0.927, 0.321, 1.679, 0.9754), 12: (0.886, 0.354, 1.646, 0.9776), 13: (0.850, 0.382, 1.618, 0.9794),
          14: (0.817, 0.406, 1.594, 0.9810), 15: (0.789, 0.428, 1.572, 0.9823), 16: (0.763, 0.448, 1.552, 0.9835),
          17: (0.739, 0.466, 1.534, 0.9845), 18: (0.718, 0.482, 1.518, 0.9854), 19: (0.698, 0.497, 1.503, 0.9862),
          20: (0.680, 0.510, 1.490, 0.9869), 21: (0.663, 0.523, 1.477, 0.9876), 22: (0.647, 0.534, 1.466, 0.9882),
          23: (0.633, 0.545, 1.455, 0.9887), 24: (0.619, 0.555, 1.445, 0.9892), 25: (0.606, 0.565, 1.435, 0.9896)}


def c4(n: int) -> float:
    """E[s]/σ for n normal values: √(2/(n−1))·Γ(n/2)/Γ((n−1)/2)."""
    return math.sqrt(2 / (n - 1)) * math.exp(math.lgamma(n / 2) - math.lgamma((n - 1) / 2))


def xbar_s_constants(n: int) -> tuple[float, float, float, float]:
    """(A3, B3, B4, c4) for subgroups of n: the standard table up to 25, its formula beyond."""
    if n in XBAR_S:
        return XBAR_S[n]
    c = c4(n)
    b = 3 * math.sqrt(1 - c * c) / c
    return 3 / (c * math.sqrt(n)), max(0.0, 1 - b), 1 + b, c


def subgroup_size(count: int, imr_max: int = IMR_MAX, max_points: int = MAX_POINTS) -> int:
    """1 (an I-MR chart of every value) up to ``imr_max`` values, else ceil(count / max_points) (≥ 2)."""
    if count <= imr_max:
        return 1
    return max(2, -(-count // max_points))


def _tail(k: float) -> float:
    """P(Z > k) for a standard normal Z."""
    return 0.5 * math.erfc(k / math.sqrt(2))


def zigzag(n: int) -> int:
    """Euler's zigzag number: alternating (up-down) permutations of n items (Seidel's boustrophedon)."""
    row = [1]
    for _ in range(n):
        nxt = [0]
        for v in reversed(row):
            nxt.append(nxt[-1] + v)
        row = nxt
    return row[-1]


def rule_false_alarm_rate(rule: int) -> float:
    """P(a point completes rule ``rule``'s pattern) for an in-control process.

    That is, for independent normal values at the chart's centre with its σ (rules 3 and 4
    hold for any continuous distribution, rule 2 for any symmetric one), a point preceded by
    at least the pattern's span:

    1. 2·P(Z>3);  2. 2·(1/2)⁹;  3. 2/6!;  4. 2·E₁₄/14! (E the zigzag numbers: 14 values in
    alternating order);  5. 2·p·(1−(1−p)²), p = P(Z>2) (this point beyond 2σ and one of the two
    before on the same side);  6. 2·q·P(≥3 of 4 beyond 1σ), q = P(Z>1);  7. (1−2q)¹⁵;
    8. (2q)⁸.
    """
    p2, q = _tail(2), _tail(1)
    if rule == 1:
        return 2 * _tail(3)
    if rule == 2:
        return 2 * 0.5 ** 9
    if rule == 3:
        return 2 / math.factorial(6)
    if rule == 4:
        return 2 * zigzag(14) / math.factorial(14)
    if rule == 5:
        return 2 * p2 * (1 - (1 - p2) ** 2)
    if rule == 6:
        return 2 * q * (4 * q ** 3 * (1 - q) + q ** 4)
    if rule == 7:
        return (1 - 2 * q) ** 15
    if rule == 8:
        return (2 * q) ** 8
    raise ValueError(f"no Nelson rule {rule}")


def false_alarm_rate(rules=RULES) -> float:
    """Expected rule signals per point (the sum of the rules' rates; ≥ P(a point is flagged at all))."""
    return sum(rule_false_alarm_rate(r) for r in rules)


def expected_false_alarms(points: int, rules=RULES) -> float:
    """Expected number of (rule, point) signals over ``points`` charted points of an in-control process.

    By linearity of expectation: Σ over the rules of rate × the points that can complete the
    pattern (points − span + 1, at least 0).
    """
    return sum(rule_false_alarm_rate(r) * max(0, points - RULE_SPAN[r] + 1) for r in rules)


@dataclass
class ControlChart:
    """A location chart (individuals or subgroup means) with its spread chart, Nelson flags and false-alarm rates."""

    kind: str  # "I-MR", "Xbar-R" or "Xbar-S"
    n: int  # subgroup size (1: individuals)
    center: float
    ucl: float
    lcl: float
    spread_center: float  # MR̄, R̄ or S̄
    spread_ucl: float
    spread_lcl: float
    sigma: float  # σ̂ of a single value: MR̄/d2, R̄/d2 or S̄/c4
    points: np.ndarray  # the charted location values
    spread: np.ndarray  # moving ranges (one fewer than points), ranges or standard deviations
    first: np.ndarray  # index (into the values) of each point's first value
    left_out: int  # values after the last full subgroup, not charted
    rules: tuple[int, ...] = RULES
    flags: list[tuple[int, int]] = field(default_factory=list)  # (rule, point index)
    false_alarm_per_point: float = 0.0
    expected_false_alarms: float = 0.0


def control_chart(x: np.ndarray, imr_max: int = IMR_MAX, max_points: int = MAX_POINTS,
                  rules=RULES, n: int | None = None) -> ControlChart:
    """The chart for values in run order: I-MR up to ``imr_max`` values, else X̄–R / X̄–S (see above).

    ``n`` sets the subgroup size instead (1: I-MR).
    """
    x = np.asarray(x, dtype=np.float64)
    n = subgroup_size(len(x), imr_max, max_points) if n is None else n
    rules = tuple(rules)
    if n == 1:
        ch = imr(x)
        sigma = ch.mr_center / D2
        points, spread, first, left = x, np.abs(np.diff(x)), np.arange(len(x)), 0
        kind, center, ucl, lcl = "I-MR", ch.center, ch.ucl, ch.lcl
        s_center, s_ucl, s_lcl = ch.mr_center, ch.mr_ucl, 0.0
    else:
        k = len(x) // n
        groups = x[: k * n].reshape(k, n)
        points, first, left = groups.mean(axis=1), np.arange(k) * n, len(x) - k * n
        center = float(groups.mean())
        if n <= 10:
            a2, d3, d4, d2 = XBAR_R[n]
            spread = groups.max(axis=1) - groups.min(axis=1)
            rbar = float(spread.mean())
            kind, half, sigma = "Xbar-R", a2 * rbar, rbar / d2
            s_center, s_ucl, s_lcl = rbar, d4 * rbar, d3 * rbar
        else:
            a3, b3, b4, c = xbar_s_constants(n)
            spread = groups.std(axis=1, ddof=1)
            sbar = float(spread.mean())
            kind, half, sigma = "Xbar-S", a3 * sbar, sbar / c
            s_center, s_ucl, s_lcl = sbar, b4 * sbar, b3 * sbar
        ucl, lcl = center + half, center - half
    flags = [f for f in nelson(points, center, (ucl - center) / 3) if f[0] in rules]
    return ControlChart(kind, n, float(center), float(ucl), float(lcl), float(s_center), float(s_ucl),
                        float(s_lcl), float(sigma), points, spread, first, left, rules, flags,
                        false_alarm_rate(rules), expected_false_alarms(len(points), rules))
