"""Modbus devices (TCP and RTU): their rig-file schema, their acquisition and their simulator face."""

from __future__ import annotations

import itertools
import logging
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from daq.acquisition.polling import DeviceAcquisition
from daq.acquisition.transports.base import BuildContext, Built, Transport, device_path
from daq.schema import TIME_SLACK_S, Name, Strict, check_rate
from drivers.modbus import ModbusPoller, PymodbusTransport, SharedLink, silent_interval_s
from drivers.plc_time import TimeRegister
from drivers.registers import BYTE_ORDERS, TYPE_WIDTHS, TYPES, RegisterField, encode_value, plan_reads
from drivers.sim.rig import PlcFace, RtuFace

log = logging.getLogger(__name__)


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

    _rate = field_validator("poll_hz")(check_rate)

    @field_validator("groups")
    @classmethod
    def _group_rates(cls, groups: dict[str, float]) -> dict[str, float]:
        for name, hz in groups.items():
            try:
                check_rate(hz)
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


def _built(dev: ModbusDevice, link: SharedLink, ctx: BuildContext) -> Built:
    """One poller per poll group, all on the device's one link; writes go over it too."""
    acqs = []
    for group, hz, fields in dev.poll_groups():
        label = dev.name if group is None else f"{dev.name}/{group}"
        poller = ModbusPoller(label, link, fields, dev.unit_id, dev.max_gap,
                              reconnect_max_s=dev.reconnect_max_s, measurement=dev.name)
        acqs.append(DeviceAcquisition(ctx.rig, poller, ctx.bus, hz, dev.block_s, dev.heartbeat,
                                      dev.stale_after_s, time_register=dev.time_source(group)))

    async def write(f: RegisterField, value: float) -> None:
        await link.write(f.table, f.address, encode_value(f, value), dev.unit_id)

    return Built(acqs, write)


class ModbusTcp(Transport):
    """A PLC or instrument answering Modbus TCP."""

    name = "modbus_tcp"
    schema = ModbusTcpDevice

    def build(self, dev: ModbusTcpDevice, ctx: BuildContext) -> Built:  # noqa: D102
        return _built(dev, SharedLink(PymodbusTransport.tcp(dev.host, dev.port, dev.timeout_s)), ctx)

    def sim_face(self, dev: ModbusTcpDevice, data_dir):  # noqa: D102
        return "plcs", PlcFace(dev.name, dev.fields(), dev.host, dev.port, dev.unit_id)

    def endpoint(self, dev: ModbusTcpDevice) -> str:  # noqa: D102
        return f"{dev.host}:{dev.port}"


class ModbusRtu(Transport):
    """Units on an RS-485 line: every unit of one port shares the line, one request at a time."""

    name = "modbus_rtu"
    schema = ModbusRtuDevice

    def build(self, dev: ModbusRtuDevice, ctx: BuildContext) -> Built:  # noqa: D102
        lines = ctx.shared.setdefault(self.name, {})
        path = str(device_path(dev.port, ctx.data_dir))
        if path not in lines:
            inner = PymodbusTransport.rtu(path, dev.baudrate, dev.parity, dev.stopbits, dev.timeout_s)
            lines[path] = SharedLink(inner, silent_interval_s(dev.baudrate), serial=True)
        return _built(dev, lines[path], ctx)

    def sim_face(self, dev: ModbusRtuDevice, data_dir):  # noqa: D102
        return "rtus", RtuFace(dev.name, dev.fields(), device_path(dev.port, data_dir), dev.unit_id,
                               dev.baudrate, dev.parity, dev.stopbits)

    def check_rig(self, devices) -> list[str]:  # noqa: D102
        problems = []
        lines: dict[str, list[ModbusRtuDevice]] = {}
        for d in devices:
            lines.setdefault(d.port, []).append(d)
        for port, units in lines.items():
            if len({u.line_settings() for u in units}) > 1:
                problems.append(f"units on serial line {port} disagree on baudrate/parity/stopbits")
            ids = [u.unit_id for u in units]
            if len(set(ids)) != len(ids):
                problems.append(f"two units on serial line {port} share a unit_id")
            load = sum(u.line_load() for u in units)
            if load > 0.8:
                problems.append(
                    f"serial line {port} at {units[0].baudrate} baud is overbooked: its units' "
                    f"poll rates need {load:.0%} of the line's time (at most 80%); lower poll_hz")
        return problems


MODBUS_TCP = ModbusTcp()
MODBUS_RTU = ModbusRtu()
