"""The simulated instruments of a logger rig: a climate chamber's thermocouples, a power meter, a room.

One small model (:class:`LoggerModel`, with ``dt``, ``step_count`` and ``advance(n)``)
gives every channel any face of the rig shows, run by :class:`daq.rigs.logger.sim.LoggerSimulator`
(a :class:`drivers.sim.rig.RigSimulator`) behind Modbus TCP, Modbus RTU and serial
streams alike. Channels are recognised by name (case-insensitive):

============================================  =================================================
name                                          signal
============================================  =================================================
``*setpoint*``, ``*set_point*``               the chamber's set-point program [°C]
``*chamber*``, ``*air_temp*``                 chamber air: first-order lag of the set-point
``*ambient*``, ``*room*``, ``*cjc*``          the room: ambient ± 0.3 °C, slowly
``tc1``, ``t3``, ``*temp*`` …                 a thermocouple in the chamber: the air through its
                                              own lag (``sensor_time_constant_s`` × 1…1.75),
                                              a fixed offset of up to ±0.4 °C, noise
``*humidity*``, ``rh``                        relative humidity [%]
``*pressure*``                                barometric pressure [hPa]
``*power_factor*``, ``pf``                    power factor
``*apparent*``, ``*reactive*``                apparent [VA], reactive [var] power
``*energy*``                                  energy since start [kWh]
``*power*``, ``p``                            active power [W]: base + effort × set-point error
``*voltage*``, ``u``, ``v``                   mains voltage [V]
``*current*``, ``i``                          current [A] = P / (U · pf)
``*frequency*``, ``f``, ``freq``              mains frequency [Hz]
============================================  =================================================

``[parameters.channels.NAME]`` gives any channel (these or others) its own
``base + amplitude·sin(2π·t/period_s) + noise``. Any other name is an error when the
simulator is built, naming the device and the channel.
"""

from __future__ import annotations

import inspect
import math
import re
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.signal import lfilter

from drivers.sim.rig import PlcFace, RigSimulator, RtuFace, StreamFace

#: what the RigSimulator itself shows on register faces (the model's clock in ms)
SIMULATOR_CHANNELS = ("plc_tick",)
BASE_RATE_HZ = 1000.0  # the model's step: 1 ms (the RigSimulator's PLC image ticks in whole ms)


class UnknownChannelError(ValueError):
    """A channel the simulated logger has no signal for."""


def model_rate(stream_rates: list[float]) -> float:
    """The model's step rate: a multiple of 1 kHz that every stream's sample rate divides."""
    for k in range(1, 201):
        rate = BASE_RATE_HZ * k
        if all(rate >= r and abs(rate / r - round(rate / r)) < 1e-9 * rate / r for r in stream_rates):
            return rate
    raise ValueError(f"no model rate up to 200 kHz is a whole multiple of every stream rate "
                     f"({', '.join(f'{r:g}' for r in stream_rates)} Hz)")


class _Lag:
    """A first-order lag ``y' = (u − y)/τ``, exact for input held over each step, state kept."""

    def __init__(self, tau_s: float, dt: float, y0: float):
        a = math.exp(-dt / tau_s)
        self.b, self.a = [1.0 - a], [1.0, -a]
        self.z = np.array([a * y0])

    def __call__(self, u: np.ndarray) -> np.ndarray:
        y, self.z = lfilter(self.b, self.a, u, zi=self.z)
        return y


Signal = Callable[[np.ndarray, dict], np.ndarray]


class LoggerModel:
    """Slowly varying lab signals for the channels asked for (module docstring).

    ``advance(n)`` runs ``n`` steps of ``dt`` and returns every channel at every step.
    Deterministic for a given seed; each channel's noise has its own stream (from its name),
    so adding a channel does not change the others.
    """

    def __init__(self, channels: list[str], params, seed: int = 1, rate_hz: float = BASE_RATE_HZ):
        self.p = params
        self.dt = 1.0 / rate_hz
        self.step_count = 0
        self.seed = seed
        p = params
        self._chamber = _Lag(p.chamber_time_constant_s, self.dt, p.setpoints_C[0])
        self._energy_kWh = 0.0
        self.signals: dict[str, Signal] = {}
        for name in dict.fromkeys(channels):
            self.signals[name] = self._signal(name)

    @classmethod
    def knows(cls, name: str, params) -> bool:
        """Whether a channel of this name can be simulated."""
        return name in params.channels or _kind(name) is not None

    # -- the chamber, the mains and the meter --------------------------------------------
    def _base(self, t: np.ndarray) -> dict:
        p = self.p
        prog = np.asarray(p.setpoints_C, dtype=np.float64)
        sp = prog[(t // p.hold_s).astype(np.int64) % len(prog)]
        air = self._chamber(sp)
        power = np.minimum(p.base_power_W + p.heating_W_per_K * np.abs(sp - air), p.max_power_W)
        volts = p.mains_voltage_V * (1 + 0.004 * np.sin(2 * math.pi * t / 47.0)) - 4e-4 * power
        pf = 0.95 + 0.04 * power / p.max_power_W
        energy = self._energy_kWh + np.cumsum(power) * (self.dt / 3.6e6)
        self._energy_kWh = float(energy[-1])
        return {"sp": sp, "air": air, "power": power, "volts": volts, "pf": pf, "energy": energy}

    def _signal(self, name: str) -> Signal:
        p = self.p
        rng = np.random.default_rng([self.seed, zlib.crc32(name.encode())])

        def noise(sigma: float) -> Callable[[int], np.ndarray]:
            return lambda n: rng.normal(0.0, sigma, n) if sigma else np.zeros(n)

        if name in p.channels:
            c = p.channels[name]
            nz = noise(c.noise)
            return lambda t, b: c.base + c.amplitude * np.sin(2 * math.pi * t / c.period_s) + nz(len(t))
        kind, index = _kind(name) or (None, 0)
        phase = (zlib.crc32(name.encode()) % 1000) / 1000 * 2 * math.pi  # phases L1/L2/L3 differ a little
        nt = noise(p.temperature_noise_C)
        if kind == "setpoint":
            return lambda t, b: b["sp"]
        if kind == "chamber":
            return lambda t, b: b["air"] + nt(len(t))
        if kind == "ambient":
            return lambda t, b: p.ambient_C + 0.3 * np.sin(2 * math.pi * t / 900.0 + phase) + nt(len(t))
        if kind == "thermocouple":
            lag = _Lag(p.sensor_time_constant_s * (1 + 0.25 * (index % 4)), self.dt, p.setpoints_C[0])
            offset = 0.4 * math.sin(1.7 * index + 0.3)
            return lambda t, b: lag(b["air"]) + offset + nt(len(t))
        if kind == "humidity":
            nz = noise(0.2)
            return lambda t, b: 45.0 + 3.0 * np.sin(2 * math.pi * t / 600.0 + phase) + nz(len(t))
        if kind == "pressure":
            nz = noise(0.05)
            return lambda t, b: 1013.25 + 0.5 * np.sin(2 * math.pi * t / 1800.0 + phase) + nz(len(t))
        if kind == "power_factor":
            nz = noise(0.001)
            return lambda t, b: b["pf"] + nz(len(t))
        if kind == "apparent":
            nz = noise(2.0)
            return lambda t, b: b["power"] / b["pf"] + nz(len(t))
        if kind == "reactive":
            nz = noise(2.0)
            return lambda t, b: b["power"] * np.tan(np.arccos(b["pf"])) + nz(len(t))
        if kind == "energy":
            return lambda t, b: b["energy"]
        if kind == "power":
            nz = noise(2.0)
            return lambda t, b: b["power"] + nz(len(t))
        if kind == "voltage":
            nz = noise(0.1)
            return lambda t, b: b["volts"] + 0.3 * np.sin(phase) + nz(len(t))
        if kind == "current":
            nz = noise(0.005)
            return lambda t, b: b["power"] / (b["volts"] * b["pf"]) + nz(len(t))
        if kind == "frequency":
            nz = noise(0.002)
            return lambda t, b: p.mains_frequency_Hz + 0.015 * np.sin(2 * math.pi * t / 90.0) + nz(len(t))
        raise UnknownChannelError(f"no simulated signal for channel {name!r}")

    def advance(self, n: int) -> dict[str, np.ndarray]:
        """Run ``n`` steps; every channel at every step (the state after each)."""
        t = (self.step_count + np.arange(1, n + 1)) * self.dt
        self.step_count += n
        base = self._base(t)
        return {name: np.asarray(sig(t, base), dtype=np.float64) for name, sig in self.signals.items()}


_PATTERNS: list[tuple[str, re.Pattern]] = [(k, re.compile(r, re.I)) for k, r in (
    ("setpoint", r"set_?point"),
    ("chamber", r"chamber|air_temp"),
    ("ambient", r"ambient|room|cjc"),
    ("thermocouple", r"^(tc|t|thermocouple)_?\d+$|temp"),
    ("humidity", r"humidity|^rh\d*$"),
    ("pressure", r"pressure"),
    ("power_factor", r"power_factor|^pf(_?l?\d)?$"),
    ("apparent", r"apparent"),
    ("reactive", r"reactive"),
    ("energy", r"energy"),
    ("power", r"power|^p(_?l?\d)?$"),
    ("voltage", r"voltage|^[uv](_?l?\d)?$|^[uv]_?rms"),
    ("current", r"current|^i(_?l?\d)?$|^i_?rms"),
    ("frequency", r"frequency|^f$|^freq"),
)]


def _kind(name: str) -> tuple[str, int] | None:
    """(signal kind, thermocouple index) of a channel name, or None."""
    for kind, pattern in _PATTERNS:
        if pattern.search(name):
            digits = re.findall(r"\d+", name)
            return kind, int(digits[-1]) if digits else zlib.crc32(name.encode()) % 8 + 1
    return None


class LoggerSimulator(RigSimulator):
    """A logger rig's instruments: its model behind every face the rig's devices declared."""

    task_name = "logger-sim"


def build_logger_simulator(rig, faces: dict[str, list], record: bool, counter_file: Path) -> LoggerSimulator:
    """The simulated logger for a rig file, showing each device through its transport's face.

    Every face kind the :class:`RigSimulator` takes is passed on (``plcs``, ``streams``,
    ``rtus``, and any it takes as a keyword, e.g. ``opcuas``). Raises ValueError naming the
    device and channel for a channel the model has no signal for, and for a face kind the
    RigSimulator cannot show.
    """
    takes = inspect.signature(RigSimulator.__init__).parameters
    other = sorted(k for k in faces if k not in ("plcs", "streams", "rtus"))
    cannot = [k for k in other if k not in takes or takes[k].kind is not inspect.Parameter.KEYWORD_ONLY]
    if cannot:
        raise ValueError(f"{rig.name}: the simulated logger cannot show faces of kind {', '.join(cannot)}")
    wanted: list[str] = []
    for kind, group in faces.items():
        for face in group:
            names = _face_channels(face)
            if kind != "streams":  # a register image (or a server's scan) shows the simulator's clock too
                names = [n for n in names if n not in SIMULATOR_CHANNELS]
            wanted += _checked(rig, face.name, names)
    streams: list[StreamFace] = faces.get("streams", [])
    model = LoggerModel(wanted, rig.parameters, seed=rig.simulation.seed,
                        rate_hz=model_rate([s.rate_hz for s in streams]))
    sim = rig.simulation
    plcs: list[PlcFace] = faces.get("plcs", [])
    rtus: list[RtuFace] = faces.get("rtus", [])
    return LoggerSimulator(model, plcs, streams, rtus, seed=sim.seed, clock_ppm=sim.clock_ppm, record=record,
                           counter_file=counter_file, stream_buffer_s=sim.stream_buffer_s,
                           **{k: faces[k] for k in other})


def _face_channels(face) -> list[str]:
    """The channel names a face shows: its register fields, its stream channels, or its channel table."""
    if hasattr(face, "fields"):
        return [f.name for f in face.fields]
    chans = face.channels
    return list(chans) if isinstance(chans, dict) else [c.name for c in chans]


def _checked(rig, device: str, names: list[str]) -> list[str]:
    for name in names:
        if not LoggerModel.knows(name, rig.parameters):
            raise UnknownChannelError(
                f"{rig.name}/{device}: the simulated logger has no signal for channel {name!r}: name it like "
                f"one of its built-in channels (tc1…, *temperature*, *voltage*, *current*, *power*, *energy*, "
                f"*frequency*, *humidity*, *pressure* …; see daq/rigs/logger/sim.py) or give it "
                f"[parameters.channels.{name}] (base, amplitude, period_s, noise)")
    return names
