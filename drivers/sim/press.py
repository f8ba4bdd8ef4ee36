"""Physics model of an electric screw press driven directly by an SR motor.

The flywheel, screw and motor rotor (inertia ``J``) turn together; the screw of lead
``L`` moves the ram (mass ``m``). Seen from the ram, the whole drive is one mass

    M = J·(2π/L)² + m,      v = ω·L/2π,      blow energy E = ½·M·v² = ½Jω² + ½mv².

A blow, in model phases:

* ``accel``: the SR motor drives at ``min(T_max, P_max/ω)`` until the flywheel reaches
  the blow speed set-point; the ram travels down meanwhile.
* ``coast``: motor off, the ram runs on to the workpiece (gravity helps, friction takes).
* ``contact``: the frame + dies (stiffness ``k``) and the workpiece act in series. The
  workpiece flows plastically once the force reaches its flow resistance
  ``R(p) = R0 + k_h·p`` (``p`` plastic height reduction; ``k_h`` hardening and growing
  contact area). Kinetic energy goes into plastic work and elastic frame strain; the
  elastic part throws the ram back (rebound) and contact ends when force reaches zero.
* ``return``: a speed controller brings the ram back to the top of stroke with the
  motor (regenerating while braking), then ``idle`` until the next blow.

Integration is semi-implicit Euler at ``dt`` (default 0.1 ms, the force stream rate).
The model is deterministic for a given seed: the state after ``k`` steps depends on
nothing else, which tests use to check acquired data against the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

G = 9.81
TWO_PI = 2.0 * math.pi

IDLE, ACCEL, COAST, CONTACT, RETURN = range(5)
PHASE_NAMES = ("idle", "accel", "coast", "contact", "return")

#: channels produced per step by :meth:`ScrewPressModel.advance`
CHANNELS = (
    "force", "force_1", "force_2", "force_3", "force_4", "position", "flywheel_speed",
    "motor_current", "motor_voltage", "die_temperature",
)


@dataclass
class PressParameters:
    """Physical parameters in SI units."""

    inertia_kg_m2: float
    lead_m: float
    ram_mass_kg: float
    stroke_m: float
    torque_max_Nm: float
    power_max_W: float
    blow_speed_rad_s: float
    frame_stiffness_N_m: float
    nominal_force_N: float
    blow_interval_s: float = 6.0
    dc_link_V: float = 1050.0
    dc_source_ohm: float = 0.012
    drive_efficiency: float = 0.93
    die_preheat_C: float = 250.0


class ScrewPressModel:
    """Time-stepped screw press. ``advance(n)`` returns ``n`` steps of every channel."""

    def __init__(self, p: PressParameters, seed: int = 1, dt_s: float = 1e-4):
        self.p = p
        self.dt = dt_s
        self.rng = np.random.default_rng(seed)
        self.M = p.inertia_kg_m2 * (TWO_PI / p.lead_m) ** 2 + p.ram_mass_kg
        self.k_per_rad = p.lead_m / TWO_PI  # m of ram travel per rad of screw
        self.step_count = 0
        self.t = 0.0
        self.phase = IDLE
        self.x = 0.0  # ram travel from top, m, down positive
        self.v = 0.0  # ram speed, m/s, down positive
        self.force_N = 0.0
        self.torque_Nm = 0.0
        self.i_dc = 0.0
        self.v_dc = p.dc_link_V
        self.energy_J = 0.0  # electrical energy drawn since power-on
        self.die_C = p.die_preheat_C
        self.blow_count = 0
        self.next_blow_t = 0.5
        self.share = np.full(4, 0.25)
        self._new_workpiece()

    # -- workpiece -------------------------------------------------------------------
    def _new_workpiece(self) -> None:
        p, rng = self.p, self.rng
        self.contact_x = p.stroke_m + rng.normal(0.0, 0.0015)
        self.R0 = 0.15 * p.nominal_force_N * (1.0 + rng.normal(0.0, 0.04))
        self.k_h = 0.02 * p.nominal_force_N / 1e-3 * (1.0 + rng.normal(0.0, 0.03))  # N/m
        self.plastic = 0.0
        # off-centre load: tie-rod shares differ a little from blow to blow
        w = 1.0 + rng.normal(0.0, 0.03, 4)
        self.share = w / w.sum()

    # -- physics ---------------------------------------------------------------------
    def _motor_torque(self, omega: float) -> float:
        p = self.p
        if self.phase == ACCEL:
            return min(p.torque_max_Nm, p.power_max_W / max(abs(omega), 1e-3))
        if self.phase == RETURN:
            a_brake = 0.35  # m/s², deceleration planned for the approach to the top
            v_target = -min(0.45, math.sqrt(2.0 * a_brake * max(self.x, 0.0)))
            f = self.M * 4.0 * (v_target - self.v)  # proportional speed loop, 4 1/s
            t = f * self.k_per_rad
            limit = min(p.torque_max_Nm, p.power_max_W / max(abs(omega), 1e-3))
            return max(-limit, min(limit, t))
        return 0.0

    def _contact_force(self) -> float:
        k = self.p.frame_stiffness_N_m
        closure = self.x - self.contact_x
        if closure <= self.plastic:
            return 0.0
        trial = k * (closure - self.plastic)
        flow = self.R0 + self.k_h * self.plastic
        if trial > flow and self.v > 0.0:
            self.plastic = (k * closure - self.R0) / (k + self.k_h)
            return self.R0 + self.k_h * self.plastic
        return trial

    def _step(self) -> None:
        p = self.p
        dt = self.dt
        omega = self.v / self.k_per_rad
        if self.phase == IDLE and self.t >= self.next_blow_t:
            self.phase = ACCEL
            self._new_workpiece()
        if self.phase == ACCEL and omega >= p.blow_speed_rad_s:
            self.phase = COAST
        torque = self._motor_torque(omega) if self.phase != IDLE else 0.0
        force = self._contact_force() if self.x > self.contact_x - 0.01 else 0.0
        if force > 0.0 and self.phase in (ACCEL, COAST):
            self.phase = CONTACT
            torque = 0.0
        if self.phase == CONTACT and force <= 0.0 and self.v < 0.0:
            self.phase = RETURN
            self.blow_count += 1
            self.next_blow_t = self.t + max(p.blow_interval_s - 3.0, 0.5)
        if self.phase == IDLE:
            self.v = 0.0
        else:
            friction = 0.02 * self.M * self.v + (4e4 if self.v > 0 else -4e4 if self.v < 0 else 0.0)
            f_drive = torque / self.k_per_rad
            a = (f_drive + p.ram_mass_kg * G - force - friction) / self.M
            self.v += a * dt
            self.x += self.v * dt
            if self.phase == RETURN and self.x <= 0.0:  # top of stroke: brake engages
                self.phase, self.x, self.v, torque = IDLE, 0.0, 0.0, 0.0
                self.next_blow_t = max(self.next_blow_t, self.t + 0.5)
        # drive electrics: motoring draws P/η, braking regenerates P·η
        mech = torque * (self.v / self.k_per_rad)
        p_el = mech / p.drive_efficiency if mech >= 0 else mech * p.drive_efficiency
        p_el += 8e3  # auxiliaries, cooling fans, PLC
        self.i_dc = p_el / self.v_dc
        self.v_dc = p.dc_link_V - p.dc_source_ohm * self.i_dc
        self.energy_J += p_el * dt
        # die heats by contact with the hot part, cools towards the preheat temperature
        heat = 40.0 if self.phase == CONTACT else 0.0
        self.die_C += ((p.die_preheat_C - self.die_C) / 600.0 + heat) * dt
        self.force_N = force
        self.torque_Nm = torque
        self.t += dt
        self.step_count += 1

    def advance(self, n: int) -> dict[str, np.ndarray]:
        """Run ``n`` steps; return every channel at every step in engineering units.

        force in kN (with gauge noise), position in mm, flywheel speed in rpm, motor
        current in A, voltage in V, die temperature in °C.
        """
        force = np.empty(n)
        pos = np.empty(n)
        speed = np.empty(n)
        cur = np.empty(n)
        volt = np.empty(n)
        die = np.empty(n)
        rpm_per_ms = 60.0 / TWO_PI / self.k_per_rad
        for i in range(n):
            self._step()
            force[i] = self.force_N
            pos[i] = self.x
            speed[i] = self.v
            cur[i] = self.i_dc
            volt[i] = self.v_dc
            die[i] = self.die_C
        noise = self.rng.normal(0.0, 1.0, (5, n))
        gauges = force[None, :] * self.share[:, None] / 1e3 + noise[:4] * 5.0  # kN, ±5 kN/gauge
        return {
            "force": gauges.sum(axis=0),
            "force_1": gauges[0], "force_2": gauges[1], "force_3": gauges[2], "force_4": gauges[3],
            "position": pos * 1e3 + noise[4] * 0.005,
            "flywheel_speed": speed * rpm_per_ms,
            "motor_current": cur,
            "motor_voltage": volt,
            "die_temperature": die,
        }

    @property
    def state_bits(self) -> dict[str, bool]:
        """The PLC state word's bits."""
        return {
            "state_running": self.phase != IDLE,
            "state_contact": self.phase == CONTACT,
            "state_return": self.phase == RETURN,
            "state_fault": False,
        }
