"""A 4-phase 8/6 switched-reluctance motor: magnetisation, converter, torque, periodic steady state.

Magnetisation ψ(i, θ) blends the unaligned (linear, ``L_u``) and the aligned (saturating)
curves by the rotor position::

    ψ_a(i) = ψ_s·(1 − exp(−k·i/ψ_s)) + L_sat·i,   k = L_a − L_sat   (slope L_a at i = 0)
    ψ(i, θ) = (1 − g(θ))·L_u·i + g(θ)·ψ_a(i),     g = (1 − cos θ_e)/2

with θ_e = N_r·θ the electrical angle (0 unaligned, π aligned). Torque comes from the
co-energy W'(i, θ) = ∫₀ⁱ ψ di′ (closed form here), T = ∂W'/∂θ at constant current.

Each phase is driven by an asymmetric half bridge: on from ``θ_on`` to ``θ_off`` with
hysteresis current control (+V_dc below the band, 0 V freewheeling above it: soft
chopping), then −V_dc (both diodes) until the current is zero. The phase equation
v = R·i + dψ/dt is integrated with ψ as the state at a fine step (≤ 2 µs), and the
current found from ψ by Newton's method.

Real time: stepping that at 2 µs in Python would be ~100× too slow. At constant speed
every phase repeats the same waveform once per electrical period, shifted by a quarter
period per phase, so :func:`solve_operating_point` solves one period once, finely, and
the rig model (:mod:`drivers.sim.srm_rig`) replays it against the rotor angle, with the
slow dynamics (speed ramps, winding temperature, sensor noise) applied on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SrmMotor:
    """Motor and drive parameters (SI; angles electrical, radians)."""

    R: float = 0.6  # phase resistance at 20 °C, Ω
    L_a: float = 0.080  # aligned, unsaturated, H
    L_u: float = 0.009  # unaligned, H
    L_sat: float = 0.004  # aligned, saturated slope, H
    psi_s: float = 1.0  # saturation flux, Wb
    Nr: int = 6
    phases: int = 4
    V_dc: float = 540.0
    i_max: float = 40.0
    band: float = 1.0  # hysteresis band, A (total width)
    theta_on: float = math.radians(-5.0)
    theta_off: float = math.radians(150.0)
    friction: float = 0.003  # viscous, N·m per rad/s

    # -- magnetisation ----------------------------------------------------------------
    def g(self, th_e):
        """Alignment, 0 unaligned … 1 aligned."""
        return 0.5 * (1 - np.cos(th_e))

    def psi(self, i, th_e):
        """Flux linkage ψ(i, θ_e), Wb."""
        k = self.L_a - self.L_sat
        psi_a = self.psi_s * (1 - np.exp(-k * i / self.psi_s)) + self.L_sat * i
        g = self.g(th_e)
        return (1 - g) * self.L_u * i + g * psi_a

    def coenergy(self, i, th_e):
        """W'(i, θ_e) = ∫₀ⁱ ψ di′, J."""
        k = self.L_a - self.L_sat
        wa = self.psi_s * (i - self.psi_s / k * (1 - np.exp(-k * i / self.psi_s))) + 0.5 * self.L_sat * i * i
        wu = 0.5 * self.L_u * i * i
        g = self.g(th_e)
        return (1 - g) * wu + g * wa

    def torque(self, i, th_e):
        """One phase's torque ∂W'/∂θ (θ mechanical), N·m."""
        k = self.L_a - self.L_sat
        wa = self.psi_s * (i - self.psi_s / k * (1 - np.exp(-k * i / self.psi_s))) + 0.5 * self.L_sat * i * i
        wu = 0.5 * self.L_u * i * i
        return (wa - wu) * 0.5 * self.Nr * np.sin(th_e)

    def current(self, psi: float, th_e: float, guess: float = 0.0) -> float:
        """The current with ψ(i, θ_e) = psi (Newton; ψ rises monotonically with i)."""
        if psi <= 0.0:
            return 0.0
        k = self.L_a - self.L_sat
        g = 0.5 * (1 - math.cos(th_e))
        i = guess if guess > 0 else psi / (g * self.L_a + (1 - g) * self.L_u)
        for _ in range(20):
            e = math.exp(-k * i / self.psi_s)
            f = (1 - g) * self.L_u * i + g * (self.psi_s * (1 - e) + self.L_sat * i) - psi
            d = (1 - g) * self.L_u + g * (k * e + self.L_sat)
            step = f / d
            i -= step
            if i < 0:
                i = 0.5 * (i + step)
            if abs(step) < 1e-9:
                break
        return i


@dataclass
class PhaseWaveform:
    """One phase over one electrical period at constant speed, at the fine step."""

    speed_rad_s: float
    i_ref: float
    theta_e: np.ndarray  # from θ_on, rad (electrical, not wrapped)
    current: np.ndarray
    voltage: np.ndarray
    torque: np.ndarray
    dt: float
    energy_in: float = 0.0  # over the period, J
    energy_copper: float = 0.0
    energy_mech: float = 0.0
    field_end: float = 0.0  # stored field energy ψ·i − W' at the end

    @property
    def mean_torque(self) -> float:
        """Mean electromagnetic torque of all phases together, N·m."""
        return 4 * float(np.mean(self.torque))


def simulate_phase(m: SrmMotor, speed_rad_s: float, i_ref: float, periods: int = 1,
                   max_dt: float = 2e-6, min_steps: int = 4000, stop_e: float | None = None,
                   resistance: float | None = None) -> PhaseWaveform:
    """Integrate one phase from zero current, starting at θ_on, for ``periods`` periods.

    ``stop_e``: stop early after this much electrical angle (for transient checks).
    """
    R = m.R if resistance is None else resistance
    w_e = speed_rad_s * m.Nr
    period = 2 * math.pi / w_e
    n_per = max(min_steps, math.ceil(period / max_dt))
    dt = period / n_per
    span = 2 * math.pi * periods if stop_e is None else stop_e
    n = max(1, round(span / (w_e * dt)))
    cond = m.theta_off - m.theta_on
    hi, lo = i_ref + m.band / 2, i_ref - m.band / 2
    th = np.empty(n)
    cur = np.empty(n)
    vol = np.empty(n)
    psi = i = 0.0
    on = True
    e_in = e_cu = 0.0
    for k in range(n):
        rel = (k * w_e * dt) % (2 * math.pi)
        th_e = m.theta_on + k * w_e * dt
        if rel < cond:
            if i >= hi:
                on = False
            elif i <= lo:
                on = True
            v = m.V_dc if on else 0.0
        else:
            on = True
            v = -m.V_dc if psi > 0 else 0.0
        th[k], cur[k], vol[k] = th_e, i, v
        e_in += v * i * dt
        e_cu += R * i * i * dt
        psi += (v - R * i) * dt
        if psi <= 0.0:
            psi = 0.0
            if v < 0:
                vol[k] = R * i  # diodes stop conducting as the flux reaches zero
        i = m.current(psi, th_e + w_e * dt, i)
    tq = m.torque(cur, th)
    e_mech = float(np.sum(tq) * speed_rad_s * dt)
    th_end = m.theta_on + n * w_e * dt
    field = float(psi * i - m.coenergy(i, th_end))
    return PhaseWaveform(speed_rad_s, i_ref, th, cur, vol, tq, dt, e_in, e_cu, e_mech, field)


@dataclass
class OperatingPoint:
    """A solved operating point: per-phase tables over one electrical period.

    ``angle``: electrical angle grid 0…2π (0 = phase A unaligned); tables are the phase's
    current, voltage and torque averaged over each bin.
    """

    speed_rpm: float
    torque_target_Nm: float
    i_ref: float
    angle: np.ndarray
    current: np.ndarray
    voltage: np.ndarray
    torque: np.ndarray
    mean_torque_Nm: float  # electromagnetic, all phases
    limited: bool  # the target torque could not be reached (current or voltage limit)


def _tables(w: PhaseWaveform, bins: int) -> tuple[np.ndarray, ...]:
    """Bin-average a waveform onto an electrical-angle grid starting at 0 (unaligned)."""
    pos = np.mod(w.theta_e, 2 * math.pi)
    idx = np.minimum((pos / (2 * math.pi) * bins).astype(np.int64), bins - 1)
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    count[count == 0] = 1.0
    out = [np.bincount(idx, weights=x, minlength=bins) / count for x in (w.current, w.voltage, w.torque)]
    grid = (np.arange(bins) + 0.5) * 2 * math.pi / bins
    return (grid, *out)


def periodic_waveform(m: SrmMotor, speed_rad_s: float, i_ref: float) -> PhaseWaveform:
    """The steady period of one phase at constant speed.

    One period from zero if the current dies out before θ_on comes round again, else
    the last of three periods (continuous conduction).
    """
    w = simulate_phase(m, speed_rad_s, i_ref, periods=1)
    if w.current[-1] < 1e-6:
        return w
    w3 = simulate_phase(m, speed_rad_s, i_ref, periods=3)
    n = len(w3.current) // 3
    sl = slice(2 * n, 3 * n)
    return PhaseWaveform(speed_rad_s, i_ref, w3.theta_e[sl], w3.current[sl], w3.voltage[sl], w3.torque[sl],
                         w3.dt)


def solve_operating_point(m: SrmMotor, speed_rpm: float, torque_Nm: float,
                          bins: int = 1024) -> OperatingPoint:
    """The current reference that gives ``torque_Nm`` on the shaft at ``speed_rpm``.

    Mean torque rises with the reference; it is found by bisection/secant (regula falsi)
    between 0 and ``i_max``. Beyond what the drive can give, the result is at ``i_max``
    and flagged ``limited``.
    """
    w_mech = max(speed_rpm, 1.0) * 2 * math.pi / 60
    want = torque_Nm + m.friction * w_mech  # electromagnetic torque to make
    lo, t_lo = 0.0, 0.0
    hi = m.i_max
    best = periodic_waveform(m, w_mech, hi)
    t_hi = best.mean_torque
    limited = t_hi < want
    if not limited and want > 0:
        side = 0
        for _ in range(12):
            x = lo + (hi - lo) * (want - t_lo) / (t_hi - t_lo) if t_hi > t_lo else 0.5 * (lo + hi)
            x = min(max(x, lo + 0.02 * (hi - lo)), hi - 0.02 * (hi - lo))
            w = periodic_waveform(m, w_mech, x)
            t = w.mean_torque
            best = w
            if abs(t - want) < 2e-3 * max(want, 1.0):
                break
            if t < want:
                lo, t_lo = x, t
                if side == -1:
                    t_hi = want + (t_hi - want) / 2  # Illinois step: keep the bracket shrinking
                side = -1
            else:
                hi, t_hi = x, t
                if side == 1:
                    t_lo = want + (t_lo - want) / 2
                side = 1
    elif want <= 0:
        best = periodic_waveform(m, w_mech, 0.0)
    grid, cur, vol, tq = _tables(best, bins)
    return OperatingPoint(speed_rpm, torque_Nm, best.i_ref, grid, cur, vol, tq, best.mean_torque, limited)


def locked_rotor_pulse(m: SrmMotor, theta_e: float, voltage: float, pulse_s: float, i_stop: float,
                       rest_s: float = 0.02, dt: float = 2e-6, tail_s: float = 0.03
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A voltage pulse into one phase with the rotor held at ``theta_e``.

    +``voltage`` until ``pulse_s`` has passed or the current reaches ``i_stop``, then
    −``voltage`` until the flux is gone; (t, v, i) at the fine step, with ``rest_s`` of
    rest before and ``tail_s`` after.
    """
    n = int((rest_s + pulse_s * 3 + tail_s) / dt)
    t = np.arange(n) * dt
    v = np.zeros(n)
    cur = np.zeros(n)
    psi = i = 0.0
    phase = "rest"
    for k in range(n):
        if phase == "rest" and t[k] >= rest_s:
            phase = "on"
        if phase == "on" and (t[k] >= rest_s + pulse_s or i >= i_stop):
            phase = "off"
        if phase == "on":
            u = voltage
        elif phase == "off" and psi > 0:
            u = -voltage
        else:
            u = 0.0
            if phase == "off":
                phase = "done"
        v[k], cur[k] = u, i
        psi = max(psi + (u - m.R * i) * dt, 0.0)
        i = m.current(psi, theta_e, i)
    return t, v, cur
