"""The SRM test rig: motor on a speed-controlled dynamometer, run through a test sequence.

Every operating point of the sequence is solved once, finely, by
:func:`drivers.sim.srm.solve_operating_point` (about 0.1 s each, done before the rig
starts). The rig then *replays* it at the power analyser's sample rate: the rotor angle
is integrated from the speed, each phase's current, voltage and torque are looked up in
the solved period at its own electrical angle (phases a quarter period apart), and the
slow dynamics are applied on top:

* speed ramps between operating points (the dynamometer's rate limit); during a ramp
  the waveform of the step's operating point is replayed at the changing speed — an
  approximation that only affects the ramp, which the settle time leaves out;
* winding temperature from a first-order thermal model; the copper resistance follows
  it (+0.393 %/K) and the phase voltages carry the extra R·i drop;
* the analyser averages each sample period (the solved tables are smoothed by that
  window), and adds sensor noise.

A locked-rotor step holds the rotor at each angle and puts a voltage pulse on phase A
(solved at the fine step, then averaged to the sample rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from drivers.sim.srm import OperatingPoint, SrmMotor, locked_rotor_pulse, solve_operating_point

STATE_IDLE, STATE_RAMP, STATE_HOLD, STATE_LOCKED, STATE_DONE = 0, 1, 2, 3, 4
ALPHA_CU = 0.00393  # 1/K


@dataclass(frozen=True)
class SeqStep:
    """One step of the test sequence."""

    kind: str = "operating_point"  # or "locked_rotor"
    speed_rpm: float = 0.0
    torque_Nm: float = 0.0
    hold_s: float = 2.0
    angles_e_deg: tuple[float, ...] = ()
    voltage_V: float = 60.0
    pulse_s: float = 0.02


@dataclass
class RigMechanics:
    """Dynamometer, thermal and sensor parameters."""

    ramp_rpm_s: float = 3000.0
    rotor_inertia: float = 0.02  # motor rotor alone (the torque flange sits between rotor and dyno)
    thermal_resistance: float = 0.15  # K/W
    thermal_time_constant: float = 600.0  # s
    ambient_C: float = 25.0
    source_resistance: float = 0.05  # DC link, Ω
    noise: dict[str, float] = field(default_factory=lambda: {
        "current": 0.03, "voltage": 0.3, "torque": 0.03, "speed": 0.1, "dc_voltage": 0.2, "dc_current": 0.02})
    idle_s: float = 2.0  # between sequence repetitions
    loop: bool = True


PHASES = "abcd"


def _smooth(table: np.ndarray, width_bins: float) -> np.ndarray:
    """Circular moving average over ``width_bins`` (the analyser's sample window)."""
    w = max(1, round(width_bins))
    if w <= 1:
        return table
    k = np.ones(w) / w
    ext = np.concatenate([table[-w:], table, table[:w]])
    return np.convolve(ext, k, mode="same")[w:-w]


class SrmRigModel:
    """Sample-by-sample rig state at the analyser rate: ``advance(n)`` gives every channel."""

    def __init__(self, motor: SrmMotor, sequence: list[SeqStep], rate_hz: float = 20_000.0,
                 mech: RigMechanics | None = None, seed: int = 1, autostart: bool = True):
        self.m = motor
        self.sequence = sequence
        self.dt = 1.0 / rate_hz
        self.mech = mech or RigMechanics()
        self.rng = np.random.default_rng(seed)
        self.step_count = 0
        self.speed_rpm = 0.0
        self.theta_m = 0.0  # rad
        self.temp_C = self.mech.ambient_C
        self.index = -1  # position in the sequence; -1 idle
        self.step_no = 0
        self.state = STATE_IDLE
        self._step_t = 0.0  # time in the current step / idle, s
        self._ramp_s = 0.0
        self.running = autostart
        self.points: dict[tuple[float, float], OperatingPoint] = {}
        self.pulses: dict[tuple[float, float, float], tuple[np.ndarray, np.ndarray]] = {}
        self.energy_J = 0.0  # electrical energy drawn

    # -- preparation ------------------------------------------------------------------
    def prepare(self) -> None:
        """Solve every operating point and locked-rotor pulse of the sequence (blocking)."""
        for s in self.sequence:
            if s.kind == "operating_point":
                key = (s.speed_rpm, s.torque_Nm)
                if key not in self.points:
                    self.points[key] = self._smoothed(solve_operating_point(self.m, *key))
            else:
                for a in s.angles_e_deg:
                    self._pulse(a, s)

    def _smoothed(self, op: OperatingPoint) -> OperatingPoint:
        w_e = op.speed_rpm * 2 * math.pi / 60 * self.m.Nr
        width = w_e * self.dt / (2 * math.pi / len(op.angle))
        for name in ("current", "voltage", "torque"):
            setattr(op, name, _smooth(getattr(op, name), width))
        return op

    def _pulse(self, angle_e_deg: float, s: SeqStep) -> tuple[np.ndarray, np.ndarray]:
        key = (angle_e_deg, s.voltage_V, s.pulse_s)
        if key not in self.pulses:
            fine_dt = 2e-6
            t, v, i = locked_rotor_pulse(self.m, math.radians(angle_e_deg), s.voltage_V, s.pulse_s,
                                         0.9 * self.m.i_max, dt=fine_dt)
            per = round(self.dt / fine_dt)
            n = len(t) // per
            self.pulses[key] = (v[: n * per].reshape(n, per).mean(1), i[: n * per].reshape(n, per).mean(1))
        return self.pulses[key]

    # -- sequence ---------------------------------------------------------------------
    def command(self, code: int) -> None:
        """Rig controller command: 1 start the sequence, 2 stop it."""
        if code == 1 and self.sequence:
            self.running = True
            self.index, self._step_t = -1, math.inf  # start at once
        elif code == 2:
            self.running = False
            self.index, self.step_no, self.state, self._step_t = -1, 0, STATE_IDLE, 0.0

    def _step_length(self, s: SeqStep) -> float:
        if s.kind == "locked_rotor":
            return len(s.angles_e_deg) * len(self._pulse(s.angles_e_deg[0], s)[0]) * self.dt
        return self._ramp_s + s.hold_s

    def _next_step(self) -> None:
        self.index += 1
        if self.index >= len(self.sequence):
            self.index, self.step_no, self.state, self._step_t = -1, 0, STATE_DONE, 0.0
            if not self.mech.loop:
                self.running = False
            return
        s = self.sequence[self.index]
        self.step_no = self.index + 1
        self._step_t = 0.0
        target = s.speed_rpm if s.kind == "operating_point" else 0.0
        self._ramp_s = abs(target - self.speed_rpm) / self.mech.ramp_rpm_s
        self.state = STATE_LOCKED if s.kind == "locked_rotor" else STATE_RAMP

    def _advance_sequence(self, n: int) -> None:
        """Move the sequence clock by one block (step changes land on block edges)."""
        if self.index < 0:
            wait = self.mech.idle_s if self.state == STATE_DONE else 0.0
            if self.running and self._step_t >= wait:
                self._next_step()
        elif self._step_t >= self._step_length(self.sequence[self.index]):
            self._next_step()
        self._step_t += n * self.dt

    # -- sampling ---------------------------------------------------------------------
    def advance(self, n: int) -> dict[str, np.ndarray]:
        """The next ``n`` samples of every channel, plus the controller's registers."""
        self._advance_sequence(n)
        s = self.sequence[self.index] if self.index >= 0 else None
        locked = s is not None and s.kind == "locked_rotor"
        out = self._locked(n, s) if locked else self._turning(n, s)
        self.step_count += n
        return out

    def _resistance(self) -> float:
        return self.m.R * (1 + ALPHA_CU * (self.temp_C - 20.0))

    def _noise(self, kind: str, n: int) -> np.ndarray:
        return self.rng.normal(0.0, self.mech.noise.get(kind, 0.0), n)

    def _thermal(self, copper_W: float, span_s: float) -> None:
        m = self.mech
        c = m.thermal_time_constant / m.thermal_resistance
        self.temp_C += (copper_W - (self.temp_C - m.ambient_C) / m.thermal_resistance) / c * span_s

    def _turning(self, n: int, s: SeqStep | None) -> dict[str, np.ndarray]:
        target = s.speed_rpm if s is not None else 0.0
        torque_sp = s.torque_Nm if s is not None else 0.0
        ramp = self.mech.ramp_rpm_s * self.dt
        steps = np.arange(1, n + 1) * ramp
        if target >= self.speed_rpm:
            speed = np.minimum(self.speed_rpm + steps, target)
        else:
            speed = np.maximum(self.speed_rpm - steps, target)
        accel = np.gradient(speed, self.dt) * 2 * math.pi / 60 if n > 1 else np.zeros(n)
        w = speed * 2 * math.pi / 60
        theta = self.theta_m + np.cumsum(w) * self.dt
        self.theta_m = float(theta[-1] % (2 * math.pi))
        self.speed_rpm = float(speed[-1])
        if s is not None and self.state == STATE_RAMP and abs(self.speed_rpm - target) < 1e-6:
            self.state = STATE_HOLD
        op = self.points.get((s.speed_rpm, s.torque_Nm)) if s is not None else None
        r_hot = self._resistance()
        out: dict[str, np.ndarray] = {}
        te = np.zeros(n)
        p_el = np.zeros(n)
        sq = 0.0
        for k, x in enumerate(PHASES):
            if op is None or self.speed_rpm < 1.0:
                i = v = tq = np.zeros(n)
            else:
                ang = np.mod(theta * self.m.Nr - k * math.pi / 2, 2 * math.pi)
                i = np.interp(ang, op.angle, op.current, period=2 * math.pi)
                v = np.interp(ang, op.angle, op.voltage, period=2 * math.pi) + (r_hot - self.m.R) * i
                tq = np.interp(ang, op.angle, op.torque, period=2 * math.pi)
            te += tq
            p_el += v * i
            sq += float(np.mean(i * i))
            out[f"phase_{x}_current"] = i + self._noise("current", n)
            out[f"phase_{x}_voltage"] = v + self._noise("voltage", n)
        self._thermal(r_hot * sq, n * self.dt)
        i_dc = p_el / self.m.V_dc
        self.energy_J += float(np.sum(p_el) * self.dt)
        shaft = te - self.m.friction * w - self.mech.rotor_inertia * accel
        out.update(
            speed=speed + self._noise("speed", n),
            torque=np.where(speed > 0, shaft, 0.0) + self._noise("torque", n),
            rotor_angle=np.degrees(np.mod(theta, 2 * math.pi)),
            dc_voltage=self.m.V_dc - self.mech.source_resistance * i_dc + self._noise("dc_voltage", n),
            dc_current=i_dc + self._noise("dc_current", n),
        )
        out.update(self._registers(n, target, torque_sp))
        return out

    def _locked(self, n: int, s: SeqStep) -> dict[str, np.ndarray]:
        per = len(self._pulse(s.angles_e_deg[0], s)[0])
        first = round((self._step_t - n * self.dt) / self.dt) if self._step_t > 0 else 0
        k = first + np.arange(n)
        which = np.minimum(k // per, len(s.angles_e_deg) - 1)
        v = np.zeros(n)
        i = np.zeros(n)
        for j in np.unique(which):
            sel = which == j
            pv, pi = self._pulse(s.angles_e_deg[j], s)
            idx = np.minimum(k[sel] - j * per, per - 1)
            v[sel], i[sel] = pv[idx], pi[idx]
        angle_e = np.radians(np.asarray(s.angles_e_deg))[which]
        self.speed_rpm = 0.0
        self.theta_m = float(angle_e[-1] / self.m.Nr)
        zeros = np.zeros(n)
        out = {f"phase_{x}_{q}": zeros + self._noise(q, n)
               for x in PHASES[1:] for q in ("current", "voltage")}
        out.update(phase_a_current=i + self._noise("current", n),
                   phase_a_voltage=v + self._noise("voltage", n),
                   speed=zeros + self._noise("speed", n),
                   torque=self.m.torque(i, angle_e) + self._noise("torque", n),
                   rotor_angle=np.degrees(angle_e / self.m.Nr),
                   dc_voltage=np.full(n, self.m.V_dc), dc_current=np.abs(v * i) / self.m.V_dc)
        self.energy_J += float(np.sum(v * i) * self.dt)
        self._thermal(self._resistance() * float(np.mean(i * i)), n * self.dt)
        out.update(self._registers(n, 0.0, 0.0))
        return out

    def _registers(self, n: int, speed_sp: float, torque_sp: float) -> dict[str, np.ndarray]:
        full = np.full
        return {"step": full(n, self.step_no), "state": full(n, self.state),
                "speed_setpoint": full(n, speed_sp), "torque_setpoint": full(n, torque_sp),
                "winding_temperature": full(n, self.temp_C),
                "dyno_temperature": full(n, self.mech.ambient_C + 0.004 * self.speed_rpm),
                "sequence_running": full(n, float(self.running))}
