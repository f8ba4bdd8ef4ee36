"""Serve a live register image over Modbus with pymodbus' server.

Only the addresses in the register map exist: reads of anything else get exception 02
(illegal data address), as from a real PLC. Fields not declared writable are
read-only. A simulator updates the image with engineering values; every read serves
the latest complete image (the server runs in the same event loop, so a read never
sees half an update).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter

import numpy as np
from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.registers import RegisterField, store_value
from drivers.sim.faults import FaultBoard

log = logging.getLogger(__name__)

_FC_TABLE = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 3: "holding", 6: "holding",
             16: "holding", 23: "holding", 4: "input"}
_BIT_TABLES = ("coil", "discrete")


class RegisterImage:
    """The values a simulated device currently shows, one uint16/bit array per table."""

    def __init__(self, fields: list[RegisterField]):
        self.fields = list(fields)
        self.arrays: dict[str, np.ndarray] = {}
        for table in ("holding", "input", "coil", "discrete"):
            ends = [f.address + f.width for f in fields if f.table == table]
            size = max(ends) if ends else 0
            if table in _BIT_TABLES:
                size = (size + 15) // 16 * 16
            self.arrays[table] = np.zeros(size, dtype=np.uint16)
        self._by_name = {f.name: f for f in fields}
        self.tick = -1  # the scan it shows (the simulator's plc_tick); -1 before the first

    def set(self, values: dict[str, object]) -> None:
        """Encode engineering values into the image (unknown names are ignored)."""
        for name, value in values.items():
            f = self._by_name.get(name)
            if f is not None:
                store_value(self.arrays[f.table], f.address, f, value)

    def registers(self, table: str) -> list[int]:
        """The table as pymodbus stores it (bits packed 16 to a register, bit 0 first)."""
        arr = self.arrays[table]
        if table in _BIT_TABLES:
            packed = np.packbits(arr.astype(bool), bitorder="little").view("<u2")
            return packed.tolist()
        return arr.tolist()

    def sim_device(self, unit_id: int, action) -> SimDevice:
        """A pymodbus device whose valid addresses are exactly the mapped ones."""
        blocks: list[list[SimData]] = []
        for table in ("coil", "discrete", "holding", "input"):
            spans = sorted({(f.address, f.address + f.width, not f.writable)
                            for f in self.fields if f.table == table})
            entries = []
            covered = -1
            for start, end, readonly in spans:
                start = max(start, covered)
                if start >= end:
                    continue
                if table in _BIT_TABLES:
                    entries.append(SimData(start, count=end - start, values=False,
                                           datatype=DataType.BITS, readonly=readonly))
                else:
                    entries.append(SimData(start, count=end - start, values=0,
                                           datatype=DataType.REGISTERS, readonly=readonly))
                covered = end
            if not entries and table in _BIT_TABLES:  # pymodbus wants every table present:
                # park 16 read-only bits at the top of the address space
                entries.append(SimData(65520, count=16, values=False, datatype=DataType.BITS,
                                       readonly=True))
            elif not entries:
                entries.append(SimData(0, count=1, datatype=DataType.INVALID))
            blocks.append(entries)
        return SimDevice(unit_id, simdata=tuple(blocks), use_bit_addressing=True, action=action)


class _UnitServer:
    """What TCP and RTU simulators share: units, faults, the read/write action."""

    def __init__(self, units: dict[int, tuple[str, RegisterImage]], faults: FaultBoard | None):
        self.units = units
        self.faults = faults or FaultBoard()
        self.served: Counter[tuple[str, int]] = Counter()
        self.served_units: Counter[tuple[int, str, int]] = Counter()
        self.written: list[tuple[int, str, int, list[int]]] = []
        self.on_write = None  # called with (unit, table, address, registers) for every write
        self.on_read = None  # called with (unit name, the image served) for every read answered
        self._server = None

    def _devices(self) -> list[SimDevice]:
        return [image.sim_device(unit, functools.partial(self._action, unit))
                for unit, (_, image) in self.units.items()]

    async def _action(self, unit, fc, start_address, address, count, registers, set_values):
        name, image = self.units[unit]
        table = _FC_TABLE.get(fc)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if self.faults.active(name, "exception"):
            return ExcCodes.DEVICE_BUSY
        if late := self.faults.active(name, "timeout"):
            await asyncio.sleep(late.params.get("delay_s", 2.0))
        if set_values is not None:
            self.written.append((unit, table, address, list(set_values)))
            if self.on_write is not None:
                self.on_write(unit, table, address, list(set_values))
            return None
        current = image.registers(table)
        registers[: len(current) - start_address] = current[start_address:]
        self.served[(table, address)] += 1
        self.served_units[(unit, table, address)] += 1
        if self.on_read is not None:
            self.on_read(name, image)
        return None

    def _unit_of_reply(self, data: bytes) -> int | None:
        raise NotImplementedError

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            return data
        unit = self._unit_of_reply(data)
        name = self.units[unit][0] if unit in self.units else ""
        if self.faults.active(name, "corrupt") and len(data) > 4:
            buf = bytearray(data)
            buf[len(buf) // 2] ^= 0x7F  # breaks the length field (TCP) or the CRC (RTU)
            buf[-1] ^= 0xFF
            return bytes(buf)
        if self.faults.active(name, "truncated") and len(data) > 5:
            return data[: len(data) - max(2, len(data) // 3)]
        return data

    @property
    def running(self) -> bool:
        """True while serving."""
        return self._server is not None

    async def stop(self) -> None:
        """Close the listener / port and every connection."""
        if self._server is not None:
            await self._server.shutdown()
            self._server = None


class ModbusSimServer(_UnitServer):
    """A Modbus TCP server in the current event loop serving register images.

    ``served`` counts the reads answered per ``(table, start address)``; simulators and
    tests use it to know how many polls a client made.
    """

    def __init__(self, image: RegisterImage, host: str, port: int, unit_id: int = 1,
                 faults: FaultBoard | None = None, name: str = "plc"):
        super().__init__({unit_id: (name, image)}, faults)
        self.image = image
        self.host, self.port, self.unit_id = host, port, unit_id
        self.name = name

    def _unit_of_reply(self, data: bytes) -> int | None:
        return data[6] if len(data) > 6 else None

    async def start(self) -> None:
        """Bind and serve in the background; returns once listening."""
        self._server = ModbusTcpServer(self._devices(), address=(self.host, self.port),
                                       trace_packet=self._trace_packet)
        try:
            await self._server.serve_forever(background=True)
        except RuntimeError:
            self._server = None
            raise OSError(f"cannot listen on {self.host}:{self.port} (address in use?)") from None
        if self.port == 0 and self._server.transport is not None:
            self.port = self._server.transport.sockets[0].getsockname()[1]
        log.info("Modbus TCP simulator listening on %s:%d", self.host, self.port)


class ModbusRtuSimServer(_UnitServer):
    """Several Modbus RTU units answering on one serial line (one end of a pty pair)."""

    def __init__(self, units: dict[int, tuple[str, RegisterImage]], port: str, baudrate: int,
                 parity: str = "N", stopbits: int = 1, faults: FaultBoard | None = None):
        super().__init__(units, faults)
        self.port, self.baudrate, self.parity, self.stopbits = port, baudrate, parity, stopbits

    def _unit_of_reply(self, data: bytes) -> int | None:
        return data[0] if data else None

    async def start(self) -> None:
        """Open the port and answer requests in the background."""
        self._server = ModbusSerialServer(self._devices(), framer=FramerType.RTU, port=self.port,
                                          baudrate=self.baudrate, parity=self.parity,
                                          stopbits=self.stopbits, bytesize=8,
                                          trace_packet=self._trace_packet)
        try:
            await self._server.serve_forever(background=True)
        except RuntimeError:
            self._server = None
            raise OSError(f"cannot open {self.port} for the RTU simulator") from None
        log.info("Modbus RTU simulator on %s, units %s", self.port, sorted(self.units))
