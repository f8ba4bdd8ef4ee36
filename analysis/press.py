"""Screw-press blow analysis: the metrics of SPEC's press table, from recorded arrays.

Units in, units out as the canonical channels and metric names say: time in s, force in
kN, position in mm (ram travel from the top, down positive), flywheel speed in rpm.
Internally everything is SI.

A blow is a *contact*: force above the contact threshold, entered when force rises
above ``threshold`` and left when it falls below ``threshold − hysteresis``. Contacts
shorter than ``min_contact_s`` are spikes, not blows. A contact that starts within
``bounce_window_s`` after a blow's contact ended is a *bounce* of that blow: it is not a
blow of its own (nothing is counted twice, the next blow's cycle time is not cut short),
it is reported with the blow (:attr:`BlowResult.bounces`, :func:`bounce_reasons`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.integrate import trapezoid
from scipy.signal import savgol_filter

from analysis.result import CycleAnalysis, judge, samples_hash

__all__ = ["METRICS", "VERSION", "BlowResult", "Bounce", "Envelope", "PressParams", "analyse",
           "bounce_reasons", "contacts", "envelope_reasons", "judge", "samples_hash",
           "velocity_lookback"]

VERSION = "press-1.1"  # 1.1: bounces, the hashed window includes the ram-speed look-back

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
    min_contact_s: float = 0.0  # shorter contacts are spikes, not blows
    bounce_window_s: float = 0.0  # a contact starting this soon after a blow's end is its bounce
    blows_per_part: int = 1  # a multi-blow forging: this many blows make one part (0: no count)
    part_gap_s: float = math.inf  # a pause longer than this between blows starts a new part


@dataclass(frozen=True)
class Envelope:
    """Force band over ram position (kN over mm); outside the positions it does not apply."""

    position_mm: tuple[float, ...]
    force_min_kN: tuple[float, ...]
    force_max_kN: tuple[float, ...]


class PartCounter:
    """Counts blows into parts: ``blows_per_part`` blows, or a long pause, close a part."""

    def __init__(self, blows_per_part: int = 1, part_gap_s: float = math.inf):
        self.blows_per_part, self.part_gap_s = blows_per_part, part_gap_s
        self.part, self.blow, self._last_end_s = 0, 0, -math.inf

    def next(self, start_s: float, end_s: float) -> tuple[int, int]:
        """(part, blow in part) of a blow, 1-based."""
        full = self.blows_per_part > 0 and self.blow >= self.blows_per_part
        if self.part == 0 or full or start_s - self._last_end_s > self.part_gap_s:
            self.part, self.blow = self.part + 1, 0
        self.blow += 1
        self._last_end_s = end_s
        return self.part, self.blow


@dataclass(frozen=True)
class Bounce:
    """A second contact inside a blow's bounce window (times in s, as the analysis' time axis)."""

    start_s: float
    end_s: float  # last sample above threshold − hysteresis (or the last sample analysed)
    peak_force_kN: float
    open_ended: bool = False  # still in contact at the end of the samples analysed


@dataclass
class BlowResult(CycleAnalysis):
    """One blow; ``part`` and ``blow_in_part`` count multi-blow forgings (1-based).

    ``bounces`` are the contacts that began within ``bounce_window_s`` after this blow's
    contact ended; the metrics are those of the blow's own contact.
    """

    version: str = VERSION
    part: int = 1
    blow_in_part: int = 1
    bounces: list[Bounce] = field(default_factory=list)


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


def velocity_lookback(dt_s: float, window_s: float) -> int:
    """Samples before contact start that the Savitzky–Golay ram speed uses (at ``dt_s`` spacing).

    The impact velocity is computed from ``position[start − n : start + 1]``; whatever
    is hashed and archived for a blow must begin at least this many samples before it.
    """
    if not dt_s > 0:
        return 5
    return max(5, round(window_s / dt_s) | 1)


def ram_speed_m_s(time_s: np.ndarray, position_mm: np.ndarray, at: int, window_s: float) -> float:
    """Ram speed at sample ``at`` from a Savitzky–Golay derivative of position."""
    dt = float(np.median(np.diff(time_s)))
    w = velocity_lookback(dt, window_s)
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
    blows: list[tuple[int, int]] = []
    bounced: list[list[tuple[int, int]]] = []
    for s, e in contacts(force, p.contact_threshold_kN, p.contact_hysteresis_kN):
        if blows and t[s] <= t[blows[-1][1]] + p.bounce_window_s:
            bounced[-1].append((s, e))  # a bounce of the blow before: not a blow of its own
        elif t[e] - t[s] >= p.min_contact_s:
            blows.append((s, e))
            bounced.append([])
    lookback = velocity_lookback(float(np.median(np.diff(t))) if len(t) > 1 else 0.0, p.velocity_window_s)
    parts_of = PartCounter(p.blows_per_part, p.part_gap_s)
    results = []
    for k, (s, e) in enumerate(blows):
        nxt = blows[k + 1][0] if k + 1 < len(blows) else len(t)
        # every sample a metric uses: the ram speed's look-back, then this blow until the next starts
        window = slice(max(0, s - lookback), nxt)
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
            m["impact_velocity_m_s"] = ram_speed_m_s(t, x, s, p.velocity_window_s)
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
        part, blow = parts_of.next(float(t[s]), float(t[e]))
        bounces = [Bounce(float(t[bs]), float(t[be]), float(np.max(force[bs:be + 1])), open_ended=be == len(t) - 1)
                   for bs, be in bounced[k]]
        results.append(BlowResult(k, float(t[s]), float(t[e]), m, samples_hash(t[window], used),
                                  part=part, blow_in_part=blow, bounces=bounces))
    return results


def bounce_reasons(result: BlowResult) -> list[str]:
    """One reason per bounce: a second contact right after the blow makes it ``nok``.

    The die hit the part again, uncontrolled; the blow's own metrics do not show it, so
    the certificate must (with when, how long and how hard).
    """
    out = []
    for b in result.bounces:
        length = (b.end_s - b.start_s) * 1e3
        out.append(f"bounce: force above the contact threshold again {(b.start_s - result.end_s) * 1e3:.4g} ms "
                   f"after the contact ended, for {'≥ ' if b.open_ended else ''}{length:.4g} ms "
                   f"(peak {b.peak_force_kN:.6g} kN)")
    return out


def envelope_reasons(time_s: np.ndarray, position_mm: np.ndarray | None, force_kN: np.ndarray,
                     result: BlowResult, env: Envelope | None) -> list[str]:
    """Where the contact's force left the band, as one reason per side (empty if inside)."""
    if env is None:
        return []
    if position_mm is None:
        return ["envelope: no position channel to check the force–position band against"]
    t = np.asarray(time_s)
    sel = (t >= result.start_s) & (t <= result.end_s)
    x, f = np.asarray(position_mm, dtype=np.float64)[sel], np.asarray(force_kN, dtype=np.float64)[sel]
    xs = np.asarray(env.position_mm)
    inside = (x >= xs[0]) & (x <= xs[-1])
    x, f = x[inside], f[inside]
    lo, hi = np.interp(x, xs, env.force_min_kN), np.interp(x, xs, env.force_max_kN)
    reasons = []
    sides = (("above the band's max", f > hi, f - hi), ("below the band's min", f < lo, lo - f))
    for name, bad, excess in sides:
        if bad.any():
            worst = int(np.argmax(np.where(bad, excess, -np.inf)))
            bound = hi[worst] if f[worst] > hi[worst] else lo[worst]
            reasons.append(f"envelope: force {name} at {int(bad.sum())} samples; worst "
                           f"{f[worst]:.6g} kN at {x[worst]:.6g} mm (limit {bound:.6g} kN)")
    return reasons
