"""Switched-reluctance motor test steps: SPEC's srm metrics, and locked-rotor characterisation.

Units in, units out as the canonical channels and metric names say: time s, speed rpm,
torque N·m, rotor angle deg, currents A, voltages V. SI inside.

A *test step* is one operating point. Its metrics come from the *steady window*: the
step after ``settle_s``, cut to a whole number of mechanical revolutions (from the
unwrapped rotor angle) so that torque ripple and phase currents are averaged over whole
periods. A step with less than one revolution (locked or crawling rotor) uses the whole
settled window.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy.integrate import cumulative_trapezoid
from scipy.signal import welch

from analysis.result import CycleAnalysis, judge, samples_hash

VERSION = "srm-1.0"
PHASES = ("a", "b", "c", "d")

METRICS = (
    "speed_rpm", "mean_torque_Nm", "torque_ripple_pct", "mech_power_W", "elec_power_W", "efficiency",
    "phase_current_rms_A", *(f"phase_{x}_current_rms_A" for x in PHASES), "copper_loss_W",
    "torque_ripple_frequency_Hz",
)

__all__ = ["METRICS", "VERSION", "SrmParams", "StepResult", "analyse", "analyse_step", "characterise",
           "judge", "split_steps", "steady_window"]


@dataclass(frozen=True)
class SrmParams:
    """What the analysis needs to know about the motor."""

    phase_resistance_ohm: float
    settle_s: float = 0.5  # after a step change, before the steady window
    min_steady_s: float = 0.05  # a shorter steady window gives no result


@dataclass
class StepResult(CycleAnalysis):
    """One test step; ``step`` is its number, ``revolutions`` how many the window spans."""

    version: str = VERSION
    step: int = 0
    revolutions: int = 0


def split_steps(step: np.ndarray | None, n: int) -> list[tuple[int, int, int]]:
    """(step number, first, end) index ranges of constant ``step`` (one range without it)."""
    if step is None:
        return [(0, 0, n)]
    s = np.asarray(step)
    cuts = np.flatnonzero(np.diff(s) != 0) + 1
    edges = [0, *cuts.tolist(), n]
    return [(int(s[a]), a, b) for a, b in itertools.pairwise(edges)]


def steady_window(time_s: np.ndarray, angle_deg: np.ndarray | None, settle_s: float) -> tuple[slice, int]:
    """The settled part of a step cut to whole revolutions: (index slice, revolutions)."""
    t = np.asarray(time_s, dtype=np.float64)
    first = int(np.searchsorted(t, t[0] + settle_s))
    if angle_deg is None or first >= len(t) - 1:
        return slice(first, len(t)), 0
    turned = np.unwrap(np.asarray(angle_deg[first:], dtype=np.float64), period=360.0)
    turned = np.abs(turned - turned[0])
    revs = int(turned.max() // 360.0)
    if revs < 1:
        return slice(first, len(t)), 0
    end = first + int(np.searchsorted(turned, revs * 360.0))  # monotonic for a turning rotor
    if np.any(np.diff(turned[: end - first]) < -1e-9):  # speed reversal: fall back to a mask
        end = first + int(np.flatnonzero(turned >= revs * 360.0)[0])
    return slice(first, end), revs


def _dominant_frequency(x: np.ndarray, fs: float) -> float | None:
    """Peak of the Welch spectrum of ``x``'s AC part, refined by a parabola through 3 bins."""
    ac = x - x.mean()
    if len(ac) < 16 or not np.any(ac):
        return None
    nperseg = min(len(ac), 1 << int(math.log2(max(fs, 16))))  # ≈1–2 Hz bins, FFT-friendly length
    f, pxx = welch(ac, fs=fs, nperseg=nperseg, detrend=False)
    k = int(np.argmax(pxx[1:])) + 1
    if 1 <= k < len(pxx) - 1:
        a, b, c = np.log(pxx[k - 1: k + 2] + 1e-300)
        den = a - 2 * b + c
        shift = 0.5 * (a - c) / den if den < 0 else 0.0
        return float(f[k] + shift * (f[1] - f[0]))
    return float(f[k])


def analyse_step(time_s: np.ndarray, channels: dict[str, np.ndarray], p: SrmParams,
                 index: int = 0, step: int = 0) -> StepResult | None:
    """SPEC's srm metrics for one test step (arrays already cut to the step)."""
    t = np.asarray(time_s, dtype=np.float64)
    win, revs = steady_window(t, channels.get("rotor_angle"), p.settle_s)
    tw = t[win]
    if len(tw) < 16 or tw[-1] - tw[0] < p.min_steady_s:
        return None
    c = {k: np.asarray(v, dtype=np.float64)[win] for k, v in channels.items()}
    m: dict[str, float | None] = dict.fromkeys(METRICS)
    if "speed" in c:
        m["speed_rpm"] = float(c["speed"].mean())
    if "torque" in c:
        torque = c["torque"]
        mean_t = float(torque.mean())
        m["mean_torque_Nm"] = mean_t
        if mean_t != 0:
            m["torque_ripple_pct"] = float((torque.max() - torque.min()) / abs(mean_t) * 100)
        fs = 1.0 / float(np.median(np.diff(tw)))
        m["torque_ripple_frequency_Hz"] = _dominant_frequency(torque, fs)
        if "speed" in c:
            m["mech_power_W"] = float(np.mean(torque * c["speed"] * (2 * math.pi / 60)))
    if "dc_voltage" in c and "dc_current" in c:
        m["elec_power_W"] = float(np.mean(c["dc_voltage"] * c["dc_current"]))
    else:
        pairs = [(f"phase_{x}_voltage", f"phase_{x}_current") for x in PHASES]
        pairs = [(v, i) for v, i in pairs if v in c and i in c]
        if pairs:
            m["elec_power_W"] = float(sum(np.mean(c[v] * c[i]) for v, i in pairs))
    if m["mech_power_W"] is not None and m["elec_power_W"]:
        m["efficiency"] = m["mech_power_W"] / m["elec_power_W"]
    rms = {x: float(np.sqrt(np.mean(c[f"phase_{x}_current"] ** 2)))
           for x in PHASES if f"phase_{x}_current" in c}
    for x, r in rms.items():
        m[f"phase_{x}_current_rms_A"] = r
    if rms:
        m["phase_current_rms_A"] = float(np.mean(list(rms.values())))
        m["copper_loss_W"] = float(sum(p.phase_resistance_ohm * r * r for r in rms.values()))
    return StepResult(index, float(tw[0]), float(tw[-1]), m, samples_hash(tw, c),
                      step=step, revolutions=revs)


def analyse(time_s: np.ndarray, channels: dict[str, np.ndarray], p: SrmParams) -> list[StepResult]:
    """Every test step of a recording; the ``step`` channel splits it (else one step)."""
    t = np.asarray(time_s, dtype=np.float64)
    chans = {k: v for k, v in channels.items() if k != "step"}
    out = []
    for number, a, b in split_steps(channels.get("step"), len(t)):
        r = analyse_step(t[a:b], {k: np.asarray(v)[a:b] for k, v in chans.items()}, p,
                         index=len(out), step=number)
        if r is not None:
            out.append(r)
    return out


# -- locked-rotor characterisation ------------------------------------------------------

@dataclass
class Characterisation:
    """ψ(i, θ) from locked-rotor voltage pulses, and the inductances it implies."""

    angles_deg: list[float]
    current_A: list[float]  # the common current grid of the table
    flux_Wb: list[list[float]]  # [angle][current]
    inductance_H: list[float | None]  # small-signal ψ/i at low current, per angle
    aligned_inductance_H: float | None
    unaligned_inductance_H: float | None


def flux_linkage(time_s: np.ndarray, voltage_V: np.ndarray, current_A: np.ndarray,
                 resistance_ohm: float, rest_A: float = 0.05) -> np.ndarray:
    """ψ(t) = ∫(v − R·i) dt from the first sample, with offset correction.

    The current is "at rest" below ``rest_A`` or 2 % of its peak, whichever is larger
    (sensor noise must not count as current). A constant offset e₀ in the integrand
    (amplifier/ADC offset) makes the integral drift as e₀·t. Where the current is back
    at rest after the pulse ψ must be zero, so e₀ is the least-squares slope of the raw
    integral there; without such a tail, e₀ is the integrand's mean where the current
    rests before the pulse.
    """
    t = np.asarray(time_s, dtype=np.float64)
    i = np.asarray(current_A, dtype=np.float64)
    e = np.asarray(voltage_V, dtype=np.float64) - resistance_ohm * i
    tau = t - t[0]
    raw = cumulative_trapezoid(e, t, initial=0.0)
    peak = float(np.max(np.abs(i))) if len(i) else 0.0
    on = np.flatnonzero(np.abs(i) > max(rest_A, 0.02 * peak))  # sensor noise is not current
    if len(on) == 0:
        return np.zeros_like(t)
    after = slice(int(on[-1]) + 1, len(t))
    if len(t) - after.start >= 10:
        e0 = float(np.dot(raw[after], tau[after]) / np.dot(tau[after], tau[after]))
    elif on[0] >= 10:
        e0 = float(np.mean(e[: int(on[0]) // 2]))
    else:
        e0 = 0.0
    return raw - e0 * tau


def characterise(pulses: list[tuple[float, np.ndarray, np.ndarray, np.ndarray]], resistance_ohm: float,
                 grid_points: int = 21, low_current_frac: float = 0.1) -> Characterisation:
    """The ψ(i, θ) table from one locked-rotor pulse per rotor angle.

    ``pulses``: (angle deg, time s, voltage V, current A). The rising part of each pulse
    (start to peak current) gives ψ(i) at that angle; the table shares one current grid
    from 0 to the smallest peak. Aligned/unaligned inductance: the largest/smallest
    low-current slope ψ/i (at ``low_current_frac`` of the grid's top).
    """
    curves = []
    for angle, t, v, i in sorted(pulses, key=lambda p: p[0]):
        psi = flux_linkage(t, v, i, resistance_ohm)
        k = int(np.argmax(i))
        rising_i, rising_psi = np.asarray(i[: k + 1], dtype=np.float64), psi[: k + 1]
        order = np.argsort(rising_i, kind="stable")
        curves.append((float(angle), rising_i[order], rising_psi[order], float(i[k])))
    top = min(c[3] for c in curves)
    grid = np.linspace(0.0, top, grid_points)
    table, ls = [], []
    for _, ci, cp, _ in curves:
        table.append([float(x) for x in np.interp(grid, ci, cp)])
        low = low_current_frac * top
        ls.append(float(np.interp(low, ci, cp) / low) if low > 0 else None)
    good = [x for x in ls if x is not None]
    return Characterisation([c[0] for c in curves], [float(x) for x in grid], table, ls,
                            max(good) if good else None, min(good) if good else None)
