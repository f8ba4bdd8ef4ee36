"""Service and rig configuration: TOML files parsed into validated models.

Every problem is reported with the file, the key path inside it and the reason, and
all problems of all files are collected before anything starts: an invalid config
never starts half a service.
"""

from __future__ import annotations

import itertools
import logging
import tomllib
from pathlib import Path
from typing import Annotated, ClassVar, Literal
from urllib.parse import urlparse, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from analysis.press import METRICS as PRESS_METRICS
from analysis.srm import METRICS as SRM_METRICS
from drivers.modbus import silent_interval_s
from drivers.plc_time import TimeRegister
from drivers.registers import BYTE_ORDERS, TYPE_WIDTHS, TYPES, RegisterField, plan_reads
from drivers.stream import StreamChannel

log = logging.getLogger(__name__)

Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$", max_length=64)]

#: Polling faster than this is refused: no Modbus TCP device answers it reliably.
MAX_POLL_HZ = 1000.0

#: A time register's advance may disagree with the host time by timeout_s plus this (the
#: time between the PLC's updates of it) before it is taken for a restart.
TIME_SLACK_S = 1.0


class Strict(BaseModel):
    """Base model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class RegisterConfig(Strict):
    """One entry of a device's register map (Telegraf-style); ``register`` names the table."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: Name
    table: Literal["holding", "input", "coil", "discrete"] = Field(default="holding", alias="register")
    address: int = Field(ge=0, le=65535, description="0-based protocol address")
    type: Literal[TYPES] = "uint16"  # type: ignore[valid-type]
    byte_order: Literal[BYTE_ORDERS] = "ABCD"  # type: ignore[valid-type]
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    bit: int | None = Field(default=None, ge=0, le=15)
    length: int | None = Field(default=None, ge=1, le=60, description="string: registers")
    writable: bool = False
    group: Name | None = Field(default=None, description="poll group (see the device's groups)")
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> RegisterConfig:
        if self.table in ("coil", "discrete") and self.type != "bit":
            raise ValueError(f"a {self.table} holds one bit: type must be 'bit', not {self.type!r}")
        if self.type == "bit" and self.table in ("holding", "input") and self.bit is None:
            raise ValueError("type 'bit' in a holding/input register needs 'bit' (0-15)")
        if self.bit is not None and self.type != "bit":
            raise ValueError("'bit' is only meaningful with type 'bit'")
        if self.type == "string" and self.length is None:
            raise ValueError("type 'string' needs 'length' (number of registers)")
        if self.length is not None and self.type != "string":
            raise ValueError("'length' is only meaningful with type 'string'")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.writable and self.table in ("input", "discrete"):
            raise ValueError(f"{self.table} registers are read-only on every Modbus device")
        return self

    def to_field(self) -> RegisterField:
        """The driver-side field definition."""
        return RegisterField(
            name=self.name, table=self.table, address=self.address, type=self.type,
            byte_order=self.byte_order, scale=self.scale, offset=self.offset, unit=self.unit,
            bit=self.bit, length=self.length, writable=self.writable,
        )


def _check_rate(v: float) -> float:
    if not 0 < v <= MAX_POLL_HZ:
        raise ValueError(f"must be > 0 and ≤ {MAX_POLL_HZ:g} Hz (got {v:g})")
    return v


class ModbusDevice(Strict):
    """What Modbus TCP and RTU devices share: the register map and its polling.

    Registers poll at ``poll_hz`` unless they name a ``group`` from ``groups``
    (group name → polls per second), e.g. a fast group at 100 Hz and a slow one at 1 Hz.

    ``time_register`` names the device's scan counter or clock (an unsigned integer
    register counting ``time_unit_s`` seconds, modulo ``time_wrap``): the registers of its
    poll group, all read in the one request that reads it, are timestamped from it
    (:mod:`drivers.plc_time`); other groups keep the request/reply midpoint.
    """

    name: Name
    unit_id: int = Field(default=1, ge=0, le=255)
    poll_hz: float = Field(default=10.0, description="polls per second")
    groups: dict[Name, float] = Field(default_factory=dict, description="poll group → Hz")
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    max_gap: int = Field(default=0, ge=0, le=100, description="registers a read may span to coalesce")
    block_s: float = Field(default=0.1, gt=0, le=10, description="how often blocks are emitted")
    reconnect_max_s: float = Field(default=10.0, gt=0, le=600)
    heartbeat: Name | None = Field(default=None, description="a register that changes every scan")
    stale_after_s: float = Field(default=2.0, gt=0, le=3600)
    time_register: Name | None = Field(default=None, description="the PLC's scan counter or clock: its poll "
                                       "group is timestamped from it")
    time_unit_s: float | None = Field(default=None, gt=0, le=1.0,
                                      description="seconds per count of time_register (0.001: a ms clock)")
    time_wrap: int | None = Field(default=None, ge=2, description="time_register counts modulo this "
                                  "(default: 2^bits of its type)")
    latency_ms: float = Field(default=0.0, ge=0, le=1000,
                              description="with time_register: calibrated constant delay from a scan to "
                                          "its reply's arrival, subtracted from timestamps")
    registers: list[RegisterConfig] = Field(min_length=1)

    _rate = field_validator("poll_hz")(_check_rate)

    @field_validator("groups")
    @classmethod
    def _group_rates(cls, groups: dict[str, float]) -> dict[str, float]:
        for name, hz in groups.items():
            try:
                _check_rate(hz)
            except ValueError as e:
                raise ValueError(f"group {name!r}: {e}") from None
        return groups

    @field_validator("registers")
    @classmethod
    def _map(cls, registers: list[RegisterConfig]) -> list[RegisterConfig]:
        errors: list[str] = []
        seen: dict[str, int] = {}
        for i, r in enumerate(registers):
            if r.name in seen:
                errors.append(f"[{i}]: name {r.name!r} already used by [{seen[r.name]}]")
            seen[r.name] = i
        for table in ("holding", "input", "coil", "discrete"):
            entries = sorted((r.address, i, r) for i, r in enumerate(registers) if r.table == table)
            for (a1, i1, r1), (a2, i2, r2) in itertools.pairwise(entries):
                end1 = a1 + r1.to_field().width
                if a2 < end1:
                    if r1.type == "bit" and r2.type == "bit" and a1 == a2 and r1.bit != r2.bit:
                        continue  # distinct bits of one register
                    errors.append(f"[{i2}] ({r2.name}, {table} {a2}) overlaps "
                                  f"[{i1}] ({r1.name}, {table} {a1}..{end1 - 1})")
        if errors:
            raise ValueError("; ".join(errors))
        return registers

    @model_validator(mode="after")
    def _references(self) -> ModbusDevice:
        names = {r.name for r in self.registers}
        if self.heartbeat is not None and self.heartbeat not in names:
            raise ValueError(f"heartbeat {self.heartbeat!r} is not a register of this device")
        for i, r in enumerate(self.registers):
            if r.group is not None and r.group not in self.groups:
                known = ", ".join(self.groups) or "none defined"
                raise ValueError(f"registers[{i}] ({r.name}): group {r.group!r} is not in groups "
                                 f"({known})")
        return self

    @model_validator(mode="after")
    def _timing(self) -> ModbusDevice:
        fastest = max([self.poll_hz, *self.groups.values()])
        if self.timeout_s * fastest > 50:
            raise ValueError(f"timeout_s {self.timeout_s:g} spans more than 50 poll periods "
                             f"at {fastest:g} Hz")
        return self

    @model_validator(mode="after")
    def _time_register(self) -> ModbusDevice:
        name = self.time_register
        if name is None:
            extra = [k for k in ("time_unit_s", "time_wrap") if getattr(self, k) is not None]
            extra += ["latency_ms"] if self.latency_ms else []
            if extra:
                keys = " and ".join([", ".join(extra[:-1]), extra[-1]] if len(extra) > 1 else extra)
                raise ValueError(f"{keys} without time_register")
            return self
        reg = next((r for r in self.registers if r.name == name), None)
        if reg is None:
            raise ValueError(f"time_register {name!r} is not a register of this device")
        if reg.type not in ("uint16", "uint32", "uint64"):
            raise ValueError(f"time_register {name!r} is {reg.type}: it must be uint16, uint32 or uint64 "
                             "(declare a signed counter as the unsigned type of its width)")
        if reg.scale != 1.0 or reg.offset != 0.0:
            raise ValueError(f"time_register {name!r} must not have scale or offset: time_unit_s gives "
                             "seconds per count")
        if self.time_unit_s is None:
            raise ValueError(f"time_register {name!r} needs time_unit_s (seconds per count, e.g. 0.001 "
                             "for a millisecond clock)")
        values = 1 << (16 * TYPE_WIDTHS[reg.type][0])
        wrap = values if self.time_wrap is None else self.time_wrap
        if wrap > values:
            raise ValueError(f"time_wrap {wrap} is more than the {values} values a {reg.type} holds")
        tolerance_s = self.timeout_s + TIME_SLACK_S
        if wrap * self.time_unit_s < 2 * tolerance_s:
            raise ValueError(f"time_register {name!r} wraps every {wrap * self.time_unit_s:g} s (time_wrap × "
                             f"time_unit_s); it must run at least {2 * tolerance_s:g} s (2 × (timeout_s + "
                             f"{TIME_SLACK_S:g} s)) between wraps, or a wrap cannot be told from a late reply")
        group = reg.group
        label = "the default poll group" if group is None else f"poll group {group!r}"
        fields = [r.to_field() for r in self.registers if r.group == group]
        reads = plan_reads(fields, self.max_gap)
        if len(reads) > 1:
            where = ", ".join(f"{r.table} {r.address}..{r.address + r.count - 1}" for r in reads)
            raise ValueError(
                f"time_register {name!r} must be read in one request with every register of {label}, which "
                f"takes {len(reads)} requests ({where}): make them one contiguous block of ≤ 125 registers "
                "(max_gap bridges holes) or move the others to another group")
        return self

    def time_source(self, group: str | None) -> TimeRegister | None:
        """The time register, for the poll group that reads it (None for every other group)."""
        if self.time_register is None:
            return None
        reg = next(r for r in self.registers if r.name == self.time_register)
        if reg.group != group:
            return None
        wrap = self.time_wrap or 1 << (16 * TYPE_WIDTHS[reg.type][0])
        return TimeRegister(reg.name, float(self.time_unit_s), wrap, self.timeout_s + TIME_SLACK_S,
                            round(self.latency_ms * 1e6))

    def fields(self) -> list[RegisterField]:
        """Driver-side field definitions, in config order."""
        return [r.to_field() for r in self.registers]

    def poll_groups(self) -> list[tuple[str | None, float, list[RegisterField]]]:
        """(group or None, Hz, fields) for every group that has registers."""
        out: list[tuple[str | None, float, list[RegisterField]]] = []
        default = [r.to_field() for r in self.registers if r.group is None]
        if default:
            out.append((None, self.poll_hz, default))
        for g, hz in self.groups.items():
            fields = [r.to_field() for r in self.registers if r.group == g]
            if fields:
                out.append((g, hz, fields))
        return out

    def channel_units(self) -> dict[str, str]:
        """Channel name → unit."""
        return {r.name: r.unit for r in self.registers}


class ModbusTcpDevice(ModbusDevice):
    """A Modbus TCP device (a PLC, a gateway)."""

    transport: Literal["modbus_tcp"]
    host: str = "127.0.0.1"
    port: int = Field(default=502, ge=1, le=65535)


class ModbusRtuDevice(ModbusDevice):
    """A Modbus RTU unit on a serial line; units with the same ``port`` share the line.

    ``port`` is a device path; a relative path is taken under the service's data_dir.
    """

    transport: Literal["modbus_rtu"]
    port: str
    baudrate: int = Field(default=19200, ge=300, le=4_000_000)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    unit_id: int = Field(default=1, ge=1, le=247)

    def line_settings(self) -> tuple[int, str, int]:
        """What every unit on one line must agree on."""
        return (self.baudrate, self.parity, self.stopbits)

    def line_load(self) -> float:
        """Fraction of the line's time this unit's polling takes."""
        bits = 11  # start + 8 data + parity or second stop + stop (10 for 8N1; assume the worse)
        load = 0.0
        for _group, hz, fields in self.poll_groups():
            for r in plan_reads(fields, self.max_gap):
                reply = 5 + (2 * r.count if r.table in ("holding", "input") else (r.count + 7) // 8)
                t = (8 + reply) * bits / self.baudrate + 2 * silent_interval_s(self.baudrate)
                load += hz * (t + 0.002)  # + 2 ms for the unit to answer
        return load


class StreamChannelConfig(Strict):
    """One channel of a streaming instrument, in frame order."""

    name: Name
    type: Literal["int16", "uint16", "int32", "uint32", "float32", "float64"] = "float32"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    description: str = ""

    def to_channel(self) -> StreamChannel:
        """The driver-side channel definition."""
        return StreamChannel(self.name, self.type, self.scale, self.offset, self.unit)


class SerialStreamDevice(Strict):
    """An instrument streaming frames or lines over a serial port.

    ``port`` is a device path; a relative path is taken under the service's data_dir
    (that is where simulators put their pseudo-terminals).
    """

    name: Name
    transport: Literal["serial_stream"]
    port: str
    baudrate: int = Field(default=921600, ge=300, le=20_000_000)
    format: Literal["binary", "ascii"] = "binary"
    sample_rate_hz: float = Field(gt=0, le=200_000, description="samples per second the device sends")
    block_s: float = Field(default=0.05, gt=0, le=10)
    silence_timeout_s: float = Field(default=1.0, gt=0, le=60, description="no bytes for this long: fault")
    stuck_after_s: float = Field(default=1.0, gt=0, le=3600,
                                 description="every channel frozen this long: values_stuck")
    reconnect_max_s: float = Field(default=10.0, gt=0, le=600)
    latency_ms: float = Field(default=0.0, ge=0, le=1000,
                              description="calibrated constant delay from sampling to arrival, "
                                          "subtracted from timestamps")
    channels: list[StreamChannelConfig] = Field(min_length=1, max_length=256)

    @field_validator("channels")
    @classmethod
    def _unique(cls, channels: list[StreamChannelConfig]) -> list[StreamChannelConfig]:
        names = [c.name for c in channels]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"channel names must be unique; repeated: {', '.join(dup)}")
        if "sample" in names:
            raise ValueError("'sample' is reserved: it carries the device's sample counter")
        return channels

    @model_validator(mode="after")
    def _bandwidth(self) -> SerialStreamDevice:
        if self.format == "binary":
            frame = 8 + sum({"int16": 2, "uint16": 2, "int32": 4, "uint32": 4, "float32": 4,
                             "float64": 8}[c.type] for c in self.channels)
            need = frame * 10 * self.sample_rate_hz  # 10 bits per byte on the wire
            if need > self.baudrate:
                raise ValueError(
                    f"{self.sample_rate_hz:g} frames/s of {frame} bytes need {need:,.0f} baud; "
                    f"baudrate is {self.baudrate:,}")
        return self

    def stream_channels(self) -> list[StreamChannel]:
        """Driver-side channel definitions, in frame order."""
        return [c.to_channel() for c in self.channels]

    def channel_units(self) -> dict[str, str]:
        """Channel name → unit (``sample`` is the device's sample counter)."""
        return {"sample": "", **{c.name: c.unit for c in self.channels}}


class ScheduledFault(Strict):
    """A simulated fault switched on ``at_s`` after the simulator starts."""

    device: Name
    kind: Literal["disconnect", "timeout", "exception", "corrupt", "truncated", "stuck"]
    at_s: float = Field(ge=0)
    duration_s: float | None = Field(default=None, gt=0)


class SimulationSettings(Strict):
    """How the simulated rig behaves (only used with ``simulate = true``)."""

    seed: int = 1
    clock_ppm: float = Field(default=0.0, ge=-1000, le=1000, description="rig clock error vs host")
    faults: list[ScheduledFault] = Field(default_factory=list)
    autostart: bool = Field(default=True, description="srm_rig: run the test sequence from the start")
    loop: bool = Field(default=True, description="srm_rig: repeat the sequence after a pause")
    pause_s: float = Field(default=2.0, ge=0, le=86400, description="srm_rig: the pause between repetitions")
    stream_buffer_s: float = Field(default=2.0, gt=0, le=60,
                                   description="seconds of frames a simulated instrument buffers while nobody reads")


class ScrewPressParameters(Strict):
    """Physical parameters of an electric screw press (SI units unless the name says)."""

    flywheel_inertia_kg_m2: float = Field(gt=0, description="flywheel + screw + motor rotor")
    screw_lead_m: float = Field(gt=0, le=2, description="ram travel per screw revolution")
    ram_mass_kg: float = Field(gt=0)
    nominal_force_kN: float = Field(gt=0)
    stroke_mm: float = Field(gt=0, description="ram travel from top to the die face")
    contact_threshold_kN: float = Field(gt=0, description="force above which the ram is in contact")
    contact_hysteresis_kN: float = Field(default=0.0, ge=0)
    motor_torque_max_kNm: float = Field(gt=0)
    motor_power_max_kW: float = Field(gt=0)
    blow_speed_rpm: float = Field(gt=0, description="flywheel speed set-point for a blow")
    frame_stiffness_kN_mm: float = Field(gt=0, description="frame + die stiffness in series")
    blow_interval_s: float = Field(default=6.0, gt=0)


class Limit(Strict):
    """Acceptance limits of one metric."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some(self) -> Limit:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        return self

    def as_dict(self) -> dict[str, float]:
        """Only the bounds that are set."""
        return {k: v for k, v in (("min", self.min), ("max", self.max)) if v is not None}


class PressSegmentation(Strict):
    """How blows are cut out of the force stream and counted into parts."""

    pre_s: float = Field(default=0.3, ge=0, le=5, description="kept before contact (impact speed)")
    post_s: float = Field(default=0.1, ge=0, le=5, description="kept after contact")
    min_contact_ms: float = Field(default=5.0, ge=0, description="shorter contacts are spikes")
    blows_per_part: int = Field(default=1, ge=0, description="multi-blow forging; 0: count by pause only")
    part_gap_s: float | None = Field(default=None, gt=0, description="a longer pause starts a new part")


class Envelope(Strict):
    """Force–position band for the contact: force must stay between min and max (kN over mm)."""

    position_mm: list[float] = Field(min_length=2)
    force_min_kN: list[float]
    force_max_kN: list[float]

    @model_validator(mode="after")
    def _shape(self) -> Envelope:
        n = len(self.position_mm)
        if len(self.force_min_kN) != n or len(self.force_max_kN) != n:
            raise ValueError(f"position_mm, force_min_kN and force_max_kN need the same length ({n})")
        if any(b <= a for a, b in itertools.pairwise(self.position_mm)):
            raise ValueError("position_mm must increase")
        bad = [x for x, lo, hi in zip(self.position_mm, self.force_min_kN, self.force_max_kN, strict=True)
               if lo > hi]
        if bad:
            raise ValueError(f"force_min_kN is above force_max_kN at {', '.join(f'{x:g} mm' for x in bad)}")
        return self


class RigBase(Strict):
    """What every rig file has: name, devices, simulation, limits."""

    name: Name
    simulate: bool = False
    description: str = ""
    devices: list[Annotated[ModbusTcpDevice | ModbusRtuDevice | SerialStreamDevice,
                            Field(discriminator="transport")]] = Field(min_length=1)
    simulation: SimulationSettings = SimulationSettings()
    limits: dict[str, Limit] = Field(default_factory=dict, description="metric → acceptance limits")
    METRICS: ClassVar[tuple[str, ...]] = ()

    @field_validator("limits")
    @classmethod
    def _known_metrics(cls, limits: dict[str, Limit]) -> dict[str, Limit]:
        unknown = sorted(set(limits) - set(cls.METRICS))
        if unknown:
            raise ValueError(f"no such metric: {', '.join(unknown)}; metrics are {', '.join(cls.METRICS)}")
        return limits

    def limit_dicts(self) -> dict[str, dict[str, float]]:
        """Limits as the analysis takes them."""
        return {k: v.as_dict() for k, v in self.limits.items()}

    @model_validator(mode="after")
    def _unique_devices(self) -> RigBase:
        names = [d.name for d in self.devices]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"device names must be unique; repeated: {', '.join(dup)}")
        lines: dict[str, list[ModbusRtuDevice]] = {}
        for d in self.devices:
            if isinstance(d, ModbusRtuDevice):
                lines.setdefault(d.port, []).append(d)
        for port, units in lines.items():
            if len({u.line_settings() for u in units}) > 1:
                raise ValueError(f"units on serial line {port} disagree on baudrate/parity/stopbits")
            ids = [u.unit_id for u in units]
            if len(set(ids)) != len(ids):
                raise ValueError(f"two units on serial line {port} share a unit_id")
            load = sum(u.line_load() for u in units)
            if load > 0.8:
                raise ValueError(
                    f"serial line {port} at {units[0].baudrate} baud is overbooked: its units' "
                    f"poll rates need {load:.0%} of the line's time (at most 80%); lower poll_hz")
        for f in self.simulation.faults:
            if f.device not in names:
                raise ValueError(f"simulation.faults: no device {f.device!r}; devices: {', '.join(names)}")
        return self


class PressRig(RigBase):
    """An electric screw press."""

    kind: Literal["screw_press"]
    parameters: ScrewPressParameters
    segmentation: PressSegmentation = PressSegmentation()
    envelope: Envelope | None = None
    METRICS: ClassVar[tuple[str, ...]] = PRESS_METRICS


class SrmParameters(Strict):
    """A switched-reluctance motor on a dynamometer (SI units unless the name says)."""

    phases: Literal[4] = 4
    stator_poles: Literal[8] = 8
    rotor_poles: Literal[6] = 6
    phase_resistance_ohm: float = Field(gt=0, description="per phase, at 20 °C")
    aligned_inductance_mH: float = Field(gt=0, description="unsaturated, rotor aligned")
    unaligned_inductance_mH: float = Field(gt=0)
    saturated_inductance_mH: float = Field(gt=0, description="aligned, deep in saturation")
    saturation_flux_Wb: float = Field(gt=0, description="knee of the aligned ψ(i) curve")
    rotor_inertia_kg_m2: float = Field(gt=0, description="motor rotor, ahead of the torque flange")
    friction_Nm_per_krpm: float = Field(default=0.3, ge=0, description="viscous bearing + windage")
    dc_voltage_V: float = Field(gt=0)
    current_limit_A: float = Field(gt=0)
    hysteresis_band_A: float = Field(default=1.0, gt=0)
    turn_on_deg: float = Field(default=-5.0, description="electrical deg, 0 = unaligned")
    turn_off_deg: float = Field(default=150.0, description="electrical deg, 180 = aligned")
    rated_speed_rpm: float = Field(gt=0)
    rated_torque_Nm: float = Field(gt=0)
    thermal_resistance_K_W: float = Field(default=0.15, gt=0, description="winding to ambient")
    thermal_time_constant_s: float = Field(default=600.0, gt=0)
    ambient_C: float = 25.0

    @model_validator(mode="after")
    def _inductances(self) -> SrmParameters:
        if not self.unaligned_inductance_mH < self.aligned_inductance_mH:
            raise ValueError("aligned_inductance_mH must be above unaligned_inductance_mH")
        if not self.saturated_inductance_mH < self.aligned_inductance_mH:
            raise ValueError("saturated_inductance_mH must be below aligned_inductance_mH")
        if not self.turn_on_deg < self.turn_off_deg < self.turn_on_deg + 360:
            raise ValueError("turn_off_deg must follow turn_on_deg within one electrical period")
        return self


class SrmSegmentation(Strict):
    """How test steps are cut: settle after the step change, then whole revolutions."""

    settle_s: float = Field(default=0.5, ge=0, le=60)
    min_steady_s: float = Field(default=0.2, gt=0)


class SequenceStep(Strict):
    """One operating point of a test sequence (or a locked-rotor characterisation)."""

    kind: Literal["operating_point", "locked_rotor"] = "operating_point"
    speed_rpm: float = Field(default=0.0, ge=0)
    torque_Nm: float = Field(default=0.0, ge=0)
    hold_s: float = Field(default=2.0, gt=0, le=3600)
    angles_deg: list[float] = Field(default_factory=list, description="locked rotor: electrical deg")
    voltage_V: float = Field(default=60.0, gt=0, description="locked rotor: pulse voltage")
    pulse_ms: float = Field(default=20.0, gt=0, le=1000)

    @model_validator(mode="after")
    def _complete(self) -> SequenceStep:
        if self.kind == "locked_rotor" and not self.angles_deg:
            raise ValueError("a locked_rotor step needs angles_deg")
        if self.kind == "operating_point" and self.speed_rpm <= 0:
            raise ValueError("an operating point needs speed_rpm > 0")
        return self


class SrmRig(RigBase):
    """A switched-reluctance motor test rig."""

    kind: Literal["srm_rig"]
    parameters: SrmParameters
    segmentation: SrmSegmentation = SrmSegmentation()
    sequence: list[SequenceStep] = Field(default_factory=list, description="the test sequence")
    METRICS: ClassVar[tuple[str, ...]] = SRM_METRICS

    @model_validator(mode="after")
    def _sequence_in_range(self) -> SrmRig:
        p = self.parameters
        for k, st in enumerate(self.sequence):
            if st.speed_rpm > 2 * p.rated_speed_rpm:
                raise ValueError(f"sequence[{k}]: speed_rpm {st.speed_rpm:g} is over twice the rated "
                                 f"{p.rated_speed_rpm:g} rpm")
            if st.torque_Nm > 1.5 * p.rated_torque_Nm:
                raise ValueError(f"sequence[{k}]: torque_Nm {st.torque_Nm:g} is over 1.5× the rated "
                                 f"{p.rated_torque_Nm:g} N·m")
        return self


Rig = PressRig | SrmRig
RIG_KINDS = {"screw_press": PressRig, "srm_rig": SrmRig}


class InfluxSettings(Strict):
    """Where samples go."""

    api: Literal["v1", "v2"] = "v1"
    url: str = "http://127.0.0.1:8086"
    database: Name = Field(default="rigdaq", description="v1: the database")
    username: str | None = Field(default=None, description="v1: user, if auth is on")
    password: str | None = None
    token: str | None = Field(default=None, description="v2: API token")
    org: str | None = Field(default=None, description="v2: organisation")
    bucket: str | None = Field(default=None, description="v2: bucket")
    managed: bool = False
    data_dir: str = "influxdb"
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    commit_interval_s: float = Field(default=0.2, gt=0, le=10,
                                     description="how often gathered lines are fsync'd to the spool")
    spool_max_mb: float = Field(default=2048, gt=0, description="bound of the on-disk spool")
    spool_policy: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    memory_max_mb: float = Field(default=256, gt=0, description="bound of what is held in memory while "
                                 "the spool cannot write to disk (full, I/O error, read-only)")
    retention: str | None = Field(default=None, pattern=r"^([1-9][0-9]*[hdw]|INF)$",
                                  description="v1: how long the database keeps samples (48h, 30d, 52w, INF)")

    @model_validator(mode="after")
    def _api_fields(self) -> InfluxSettings:
        if self.api == "v2":
            missing = [k for k in ("token", "org", "bucket") if not getattr(self, k)]
            if missing:
                raise ValueError(f"api = \"v2\" needs {', '.join(missing)}")
            if self.managed:
                raise ValueError("managed = true starts InfluxDB 1.x, which speaks api = \"v1\" only")
        return self

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        u = urlparse(v)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"must be an http(s) URL like http://127.0.0.1:8086 (got {v!r})")
        return v.rstrip("/")


class StorageSettings(Strict):
    """Storage back ends."""

    influxdb: InfluxSettings | None = None


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def canonical_origin(value: str) -> str:
    """``scheme://host[:port]`` of a web origin, lower case, without a default port.

    Raises ValueError for anything that is not an http(s) origin (a path, a query,
    user info or a bad port), the way browsers never send it in ``Origin``.
    """
    u = urlsplit(value.strip())
    try:
        port = u.port
    except ValueError:
        raise ValueError(f"bad port in {value!r}") from None
    if u.scheme.lower() not in ("http", "https") or not u.hostname:
        raise ValueError(f"must be an origin like https://hmi.example.com:8443 (got {value!r})")
    if u.path not in ("", "/") or u.query or u.fragment or u.username is not None or u.password is not None:
        raise ValueError(f"an origin is scheme://host[:port] only, without path, query or user (got {value!r})")
    scheme, host = u.scheme.lower(), u.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}" if port in (None, _DEFAULT_PORTS[scheme]) else f"{scheme}://{host}:{port}"


class ApiSettings(Strict):
    """The HTTP API and operator page."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="web origins (scheme://host[:port]) besides the API's own that may open the live "
                    "WebSocket, e.g. a plant HMI behind a reverse proxy")

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        errors: list[str] = []
        out: list[str] = []
        for i, o in enumerate(origins):
            try:
                out.append(canonical_origin(o))
            except ValueError as e:
                errors.append(f"[{i}]: {e}")
        if errors:
            raise ValueError("; ".join(errors))
        return out


class CatalogueSettings(Strict):
    """Runs, cycles and archived cycle samples (any SQLAlchemy URL)."""

    url: str | None = Field(default=None, description="default: SQLite at <data_dir>/catalogue.sqlite")
    archive_samples: bool = Field(default=True, description="keep each cycle's samples, compressed")
    archive_max_mb: float | None = Field(default=None, gt=0,
                                         description="bound of the archived samples: the oldest go first")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and "://" not in v:
            raise ValueError(f"must be an SQLAlchemy URL like sqlite:///var/catalogue.sqlite (got {v!r})")
        return v


class AuthSettings(Strict):
    """Who may use the API: keys with roles (``daq keys create``)."""

    enabled: bool = Field(default=True, description="false: every request is admin (closed lab networks)")


class ServiceSettings(Strict):
    """The service file (``configs/demo.toml``)."""

    name: str = "rigdaq"
    data_dir: str = "var"
    rigs: list[str] = Field(min_length=1, description="rig files, relative to this file")


class ServiceFile(Strict):
    """Top level of the service file."""

    service: ServiceSettings
    api: ApiSettings = ApiSettings()
    storage: StorageSettings = StorageSettings()
    catalogue: CatalogueSettings = CatalogueSettings()
    auth: AuthSettings = AuthSettings()


class Settings(BaseModel):
    """A fully validated configuration: the service file plus its rigs."""

    path: Path
    service: ServiceSettings
    api: ApiSettings
    storage: StorageSettings
    catalogue: CatalogueSettings = CatalogueSettings()
    auth: AuthSettings = AuthSettings()
    rigs: list[Rig]

    @property
    def data_dir(self) -> Path:
        """Where the service keeps its state (relative paths are relative to the config)."""
        p = Path(self.service.data_dir)
        return p if p.is_absolute() else (self.path.parent / p).resolve()

    @property
    def catalogue_url(self) -> str:
        """The catalogue's database URL (SQLite in the data dir unless configured)."""
        return self.catalogue.url or f"sqlite:///{self.data_dir / 'catalogue.sqlite'}"


class ConfigError(Exception):
    """One or more problems in configuration files; ``problems`` lists them all."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def _key_path(loc: tuple, data: object = None) -> str:
    """``devices[0].registers[4] (force).type`` from a pydantic error location.

    List items that have a ``name`` in the raw data are labelled with it.
    """
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                out += f" ({node['name']})"
        elif str(part).startswith("function-") or part in ("modbus_tcp", "modbus_rtu", "serial_stream"):
            continue
        else:
            out += ("." if out else "") + str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


def _explain(err: dict) -> str:
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    inp = err.get("input")
    if err["type"] not in ("missing", "extra_forbidden", "value_error") and not isinstance(
        inp, dict | list
    ):
        msg += f" (got {inp!r})"
    return msg


def _problems(path: Path, exc: ValidationError, data: object = None) -> list[str]:
    return [f"{path}: {_key_path(e['loc'], data)}: {_explain(e)}" for e in exc.errors()]


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror}"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: not valid TOML: {e}"]) from None


def load_rig(path: str | Path) -> Rig:
    """Load and validate one rig file, raising :class:`ConfigError` with every problem."""
    path = Path(path)
    data = _read_toml(path)
    kind = data.get("kind")
    model = RIG_KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ConfigError([f"{path}: kind: must be one of {', '.join(RIG_KINDS)} (got {kind!r})"])
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_problems(path, e, data)) from None


def load_settings(path: str | Path) -> Settings:
    """Load the service file and all its rigs; every problem of every file is collected."""
    path = Path(path)
    data = _read_toml(path)
    problems: list[str] = []
    try:
        top = ServiceFile.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_problems(path, e, data)) from None
    rigs: list[Rig] = []
    for i, rel in enumerate(top.service.rigs):
        rig_path = path.parent / rel
        try:
            rigs.append(load_rig(rig_path))
        except ConfigError as e:
            if rig_path.exists():
                problems.extend(e.problems)
            else:
                problems.append(f"{path}: service.rigs[{i}]: {rel}: file not found")
    names = [r.name for r in rigs]
    for n in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{path}: service.rigs: rig name {n!r} is used by more than one rig file")
    endpoints: dict[tuple[str, int], str] = {}
    for r in rigs:
        for d in r.devices:
            if isinstance(d, ModbusRtuDevice):
                continue  # units share their line by design
            key = (d.host, d.port) if isinstance(d, ModbusTcpDevice) else ("serial", d.port)
            if key in endpoints:
                problems.append(
                    f"{path}: rigs: device {r.name}/{d.name} and {endpoints[key]} both use "
                    f"{':'.join(map(str, key))}"
                )
            endpoints[key] = f"{r.name}/{d.name}"
    if problems:
        raise ConfigError(problems)
    return Settings(path=path, service=top.service, api=top.api, storage=top.storage,
                    catalogue=top.catalogue, auth=top.auth, rigs=rigs)

