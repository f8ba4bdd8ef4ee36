"""Screw-press blow analysis: the metrics of SPEC's press table, from recorded arrays.

Units in, units out as the canonical channels and metric names say: time in s, force in
kN, position in mm (ram travel from the top, down positive), flywheel speed in rpm.
Internally everything is SI.

A blow is a *contact*: force above the contact threshold, entered when force rises
above ``threshold`` and left when it falls below ``threshold − hysteresis``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.integrate import trapezoid
from scipy.signal import savgol_filter

VERSION = "press-1.0"

METRICS = (
    "peak_force_kN", "forming_energy_kJ", "impact_velocity_m_s", "blow_energy_kJ", "efficiency",
    "contact_time_ms", "reverse_force_ratio", "max_channel_share", "cycle_time_s",
)


@dataclass(frozen=True)
class PressParams:
    """What the analysis needs to know about the press (SI units)."""

    contact_threshold_kN: float
    contact_hysteresis_kN: float = 0.0
    flywheel_inertia_kg_m2: float = 0.0
    ram_mass_kg: float = 0.0
    screw_lead_m: float = 1.0
    velocity_window_s: float = 0.005  # Savitzky–Golay window for the ram speed


@dataclass
class BlowResult:
    """One blow: metrics (None where a channel was missing), where it was, and provenance."""

    index: int
    start_s: float
    end_s: float
    metrics: dict[str, float | None]
    samples_sha256: str
    version: str = VERSION
    verdict: str = "ok"
    reasons: list[str] = field(default_factory=list)


def contacts(force_kN: np.ndarray, threshold: float, hysteresis: float = 0.0) -> list[tuple[int, int]]:
    """(first, last) sample index of every contact, with hysteresis."""
    above = force_kN > threshold
    below = force_kN < threshold - hysteresis
    out: list[tuple[int, int]] = []
    i, n = 0, len(force_kN)
    starts = np.flatnonzero(above)
    while True:
        k = np.searchsorted(starts, i)
        if k >= len(starts):
            break
        s = int(starts[k])
        ends = np.flatnonzero(below[s:])
        if len(ends) == 0:
            out.append((s, n - 1))
            break
        e = s + int(ends[0]) - 1
        out.append((s, e))
        i = e + 1
    return out


def samples_hash(time_s: np.ndarray, channels: dict[str, np.ndarray]) -> str:
    """SHA-256 of the samples: time then each channel in name order, float64 little-endian."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(time_s, dtype="<f8").tobytes())
    for name in sorted(channels):
        h.update(name.encode())
        h.update(np.ascontiguousarray(channels[name], dtype="<f8").tobytes())
    return h.hexdigest()


def _ram_speed_m_s(time_s: np.ndarray, position_mm: np.ndarray, at: int, window_s: float) -> float:
    """Ram speed at sample ``at`` from a Savitzky–Golay derivative of position."""
    dt = float(np.median(np.diff(time_s)))
    w = max(5, round(window_s / dt) | 1)
    lo = max(0, at - w)
    seg = position_mm[lo:at + 1]
    if len(seg) < 5:
        return float("nan")
    w = min(w, len(seg) - (1 - len(seg) % 2))
    d = savgol_filter(seg, w, 2, deriv=1, delta=dt)
    return float(d[-1]) / 1e3


def analyse(time_s: np.ndarray, channels: dict[str, np.ndarray], p: PressParams) -> list[BlowResult]:
    """Every blow in the recording, with SPEC's press metrics."""
    t = np.asarray(time_s, dtype=np.float64)
    force = np.asarray(channels["force"], dtype=np.float64)
    pos = channels.get("position")
    speed = channels.get("flywheel_speed")
    parts = [channels[f"force_{i}"] for i in range(1, 5) if f"force_{i}" in channels]
    blows = contacts(force, p.contact_threshold_kN, p.contact_hysteresis_kN)
    results = []
    for k, (s, e) in enumerate(blows):
        nxt = blows[k + 1][0] if k + 1 < len(blows) else len(t)
        window = slice(s, nxt)  # this blow until the next one starts
        contact = slice(s, e + 1)
        m: dict[str, float | None] = dict.fromkeys(METRICS)
        peak_i = s + int(np.argmax(force[contact]))
        peak = float(force[peak_i])
        m["peak_force_kN"] = peak
        m["contact_time_ms"] = (t[e] - t[s]) * 1e3
        after = force[peak_i:nxt]
        m["reverse_force_ratio"] = max(float(-after.min()), 0.0) / peak if peak > 0 else None
        end_t = t[nxt] if nxt < len(t) else t[-1]
        m["cycle_time_s"] = float(end_t - t[s])
        if pos is not None:
            x = np.asarray(pos, dtype=np.float64)
            m["forming_energy_kJ"] = float(trapezoid(force[contact], x[contact])) / 1e3  # kN·mm = J
            m["impact_velocity_m_s"] = _ram_speed_m_s(t, x, s, p.velocity_window_s)
        if speed is not None and p.flywheel_inertia_kg_m2 > 0:
            omega = float(speed[s]) * 2 * math.pi / 60
            v = omega * p.screw_lead_m / (2 * math.pi)
            m["blow_energy_kJ"] = (0.5 * p.flywheel_inertia_kg_m2 * omega**2
                                   + 0.5 * p.ram_mass_kg * v**2) / 1e3
        if m["forming_energy_kJ"] is not None and m["blow_energy_kJ"]:
            m["efficiency"] = m["forming_energy_kJ"] / m["blow_energy_kJ"]
        if len(parts) >= 2:
            peaks = np.array([float(np.max(np.asarray(c)[contact])) for c in parts])
            total = peaks.sum()
            m["max_channel_share"] = float(peaks.max() / total) if total > 0 else None
        used = {k2: np.asarray(v2)[window] for k2, v2 in channels.items()}
        results.append(BlowResult(k, float(t[s]), float(t[e]), m, samples_hash(t[window], used)))
    return results


def judge(result: BlowResult, limits: dict[str, dict[str, float]]) -> BlowResult:
    """Set the verdict: ``nok`` with every violated limit named, else ``ok``."""
    reasons = []
    for name, lim in limits.items():
        v = result.metrics.get(name)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            reasons.append(f"{name}: no value to check against its limits")
            continue
        if "min" in lim and v < lim["min"]:
            reasons.append(f"{name} = {v:.6g} below min {lim['min']:.6g}")
        if "max" in lim and v > lim["max"]:
            reasons.append(f"{name} = {v:.6g} above max {lim['max']:.6g}")
    result.reasons = reasons
    result.verdict = "nok" if reasons else "ok"
    return result
