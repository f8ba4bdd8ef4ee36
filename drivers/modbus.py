"""Modbus polling driver: a read plan over a transport, raw rows out, quality per poll.

The driver is handed a transport (anything with ``connect``/``close``/``connected``/
``read``); it never opens connections from addresses itself. :class:`PymodbusTransport`
wraps a pymodbus async client (TCP now, RTU on a serial port later); tests can pass a
fake that replays a transcript.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from drivers.block import QUALITY_BAD, QUALITY_GOOD, QUALITY_PARTIAL
from drivers.registers import ReadRequest, RegisterCodec, RegisterField, plan_reads

log = logging.getLogger(__name__)

#: Modbus exception codes, for messages people can act on.
EXCEPTION_NAMES = {
    1: "illegal function", 2: "illegal data address", 3: "illegal data value",
    4: "server device failure", 5: "acknowledge", 6: "server device busy",
    10: "gateway path unavailable", 11: "gateway target failed to respond",
}


class ModbusReadError(Exception):
    """A read that did not return data. ``kind``: timeout, exception, disconnected, protocol."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class ModbusTransport(Protocol):
    """What the poller needs from a connection."""

    @property
    def connected(self) -> bool: ...  # noqa: D102

    async def connect(self) -> bool: ...  # noqa: D102

    def close(self) -> None: ...  # noqa: D102

    async def read(self, table: str, address: int, count: int, unit: int) -> list[int]: ...  # noqa: D102


class PymodbusTransport:
    """A pymodbus async client as a transport. Reconnection is left to the poller."""

    def __init__(self, client, timeout_s: float):
        self.client = client
        self.timeout_s = timeout_s
        self._readers = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
        }

    @classmethod
    def tcp(cls, host: str, port: int, timeout_s: float = 1.0) -> PymodbusTransport:
        """A Modbus TCP transport (not yet connected)."""
        client = AsyncModbusTcpClient(
            host, port=port, timeout=timeout_s, retries=0, reconnect_delay=0, reconnect_delay_max=0
        )
        return cls(client, timeout_s)

    @classmethod
    def rtu(cls, port: str, baudrate: int = 19200, parity: str = "N", stopbits: int = 1,
            timeout_s: float = 1.0) -> PymodbusTransport:
        """A Modbus RTU transport on a serial port (not yet opened)."""
        client = AsyncModbusSerialClient(
            port, baudrate=baudrate, parity=parity, stopbits=stopbits, bytesize=8,
            timeout=timeout_s, retries=0, reconnect_delay=0, reconnect_delay_max=0)
        return cls(client, timeout_s)

    @property
    def connected(self) -> bool:  # noqa: D102
        return bool(self.client.connected)

    async def connect(self) -> bool:  # noqa: D102
        try:
            async with asyncio.timeout(self.timeout_s + 1.0):
                return bool(await self.client.connect())
        except (TimeoutError, OSError, ModbusException):
            return False

    def close(self) -> None:  # noqa: D102
        self.client.close()

    async def _request(self, call, what: str):
        """One request; a transport failure or an exception reply becomes :class:`ModbusReadError`."""
        try:
            rr = await call()
        except ModbusIOException as e:
            raise ModbusReadError("timeout", f"no reply within {self.timeout_s:g} s ({e})") from None
        except ConnectionException as e:
            raise ModbusReadError("disconnected", str(e)) from None
        except (TimeoutError, OSError) as e:
            raise ModbusReadError("disconnected", repr(e)) from None
        except ModbusException as e:
            raise ModbusReadError("protocol", str(e)) from None
        if rr.isError():
            code = getattr(rr, "exception_code", 0)
            name = EXCEPTION_NAMES.get(code, "unknown")
            raise ModbusReadError("exception", f"exception {code} ({name}) {what}")
        return rr

    async def read(self, table: str, address: int, count: int, unit: int) -> list[int]:  # noqa: D102
        rr = await self._request(lambda: self._readers[table](address, count=count, device_id=unit),
                                 f"reading {table} {address}+{count}")
        if table in ("coil", "discrete"):
            return [int(b) for b in rr.bits[:count]]
        if len(rr.registers) != count:
            raise ModbusReadError("protocol", f"asked {count} registers, got {len(rr.registers)}")
        return rr.registers

    async def write(self, table: str, address: int, registers: list[int], unit: int) -> None:
        """Write holding registers (or one coil); raises :class:`ModbusReadError` on failure."""
        if table == "coil":
            call = lambda: self.client.write_coil(address, bool(registers[0]), device_id=unit)  # noqa: E731
        elif table == "holding":
            call = lambda: self.client.write_registers(address, registers, device_id=unit)  # noqa: E731
        else:
            raise ModbusReadError("protocol", f"{table} registers cannot be written")
        await self._request(call, f"writing {table} {address}")


def silent_interval_s(baudrate: int, bits_per_char: int = 11) -> float:
    """Modbus RTU inter-frame silence: 3.5 character times, 1.75 ms above 19 200 baud."""
    return 1.75e-3 if baudrate > 19200 else 3.5 * bits_per_char / baudrate


class SharedLink:
    """One link (a serial line, or one TCP connection) shared by several pollers.

    The bus scheduler: requests from all pollers on the link go out one at a time in
    arrival order (asyncio's lock is FIFO), each after the line has been silent for
    ``silence_s`` (the RTU inter-frame gap). A timeout for one unit does not close a
    shared serial line: the other units on it are fine.
    """

    def __init__(self, inner: PymodbusTransport, silence_s: float = 0.0, serial: bool = False):
        self.inner = inner
        self.silence_s = silence_s
        self.closes_on_timeout = not serial
        self._lock = asyncio.Lock()
        self._last_end = 0.0
        self.requests = 0

    @property
    def connected(self) -> bool:  # noqa: D102
        return self.inner.connected

    async def connect(self) -> bool:  # noqa: D102
        async with self._lock:
            return self.inner.connected or await self.inner.connect()

    def close(self) -> None:  # noqa: D102
        self.inner.close()

    async def _in_turn(self, request):
        """Run ``request()`` when it is this caller's turn and the line has been silent long enough."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            wait = self._last_end + self.silence_s - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                return await request()
            finally:
                self._last_end = loop.time()
                self.requests += 1

    async def read(self, table: str, address: int, count: int, unit: int) -> list[int]:  # noqa: D102
        return await self._in_turn(lambda: self.inner.read(table, address, count, unit))

    async def write(self, table: str, address: int, registers: list[int], unit: int) -> None:
        """A write, in turn with the polls on this link (connecting first if needed)."""

        async def request() -> None:
            if not self.inner.connected:
                await self.inner.connect()
            await self.inner.write(table, address, registers, unit)

        await self._in_turn(request)


class Backoff:
    """Capped exponential backoff: min_s, 2·min_s, 4·min_s, … up to max_s."""

    def __init__(self, min_s: float = 0.1, max_s: float = 10.0):
        self.min_s, self.max_s = min_s, max_s
        self.delay = 0.0
        self.next_try = 0.0

    def due(self, now: float) -> bool:
        """True when another attempt may be made."""
        return now >= self.next_try

    def failed(self, now: float) -> float:
        """Record a failure; returns the wait before the next attempt."""
        self.delay = min(self.max_s, max(self.min_s, self.delay * 2))
        self.next_try = now + self.delay
        return self.delay

    def succeeded(self) -> None:
        """Reset after a success."""
        self.delay = 0.0
        self.next_try = 0.0


@dataclass
class PollResult:
    """Outcome of one poll. ``failed`` lists indices of the read plan's requests that failed."""

    quality: int
    failed: list[int] = field(default_factory=list)
    errors: list[ModbusReadError] = field(default_factory=list)
    reconnected: bool = False


class ModbusPoller:
    """Polls one Modbus unit: connects (with backoff), runs the read plan into a raw row."""

    def __init__(self, name: str, transport: ModbusTransport, fields: list[RegisterField],
                 unit_id: int = 1, max_gap: int = 0, reconnect_min_s: float = 0.1,
                 reconnect_max_s: float = 10.0, measurement: str | None = None):
        self.name = name
        self.measurement = measurement or name
        self.transport = transport
        self.unit_id = unit_id
        self.fields = list(fields)
        self.requests: list[ReadRequest] = plan_reads(self.fields, max_gap)
        self.codec = RegisterCodec(self.fields, self.requests)
        self.backoff = Backoff(reconnect_min_s, reconnect_max_s)
        self.request_channels: list[list[str]] = [
            [f.name for f in self.fields if f.table == r.table
             and r.address <= f.address < r.address + r.count]
            for r in self.requests
        ]
        self.connects = 0

    async def poll(self, row: np.ndarray) -> PollResult:
        """Read every request of the plan into ``row`` (uint16[row_width])."""
        reconnected = False
        if not self.transport.connected:
            now = time.monotonic()
            if not self.backoff.due(now):
                wait = self.backoff.next_try - now
                return PollResult(QUALITY_BAD, list(range(len(self.requests))), [
                    ModbusReadError("disconnected", f"not connected; next attempt in {wait:.1f} s")])
            if not await self.transport.connect():
                delay = self.backoff.failed(time.monotonic())
                return PollResult(QUALITY_BAD, list(range(len(self.requests))), [
                    ModbusReadError("disconnected", f"connect failed; retry in {delay:.1f} s")])
            self.connects += 1
            reconnected = True
        failed: list[int] = []
        errors: list[ModbusReadError] = []
        for i, r in enumerate(self.requests):
            try:
                regs = await self.transport.read(r.table, r.address, r.count, self.unit_id)
            except ModbusReadError as e:
                failed.append(i)
                errors.append(e)
                if e.kind in ("disconnected", "timeout", "protocol"):
                    # a late reply would desynchronise a TCP stream: start afresh (a shared
                    # serial line stays open for the other units on it)
                    if e.kind == "disconnected" or getattr(self.transport, "closes_on_timeout", True):
                        self.transport.close()
                    self.backoff.failed(time.monotonic())
                    failed.extend(range(i + 1, len(self.requests)))
                    break
                continue
            row[r.row_offset : r.row_offset + r.count] = regs
        if not failed:
            self.backoff.succeeded()
            quality = QUALITY_GOOD
        else:
            quality = QUALITY_BAD if len(failed) == len(self.requests) else QUALITY_PARTIAL
        return PollResult(quality, failed, errors, reconnected)

    def close(self) -> None:
        """Close the transport."""
        self.transport.close()
