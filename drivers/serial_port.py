"""A serial port (pyserial) read from asyncio: wait until readable, then take every byte.

Works with real ports, USB adapters and pseudo-terminals alike. The port is opened by
a factory the caller hands in, so tests pass a pty and the service a configured path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import serial

log = logging.getLogger(__name__)


class PortClosedError(Exception):
    """The port went away (cable pulled, adapter gone, the other end of a pty closed)."""


def keep_pending_input(ser: serial.Serial) -> serial.Serial:
    """Open ``ser`` (created closed) without discarding what the port already holds.

    pyserial's ``open()`` flushes the input queue (``tcflush(TCIFLUSH)``). For an
    instrument that kept streaming while the service was away, those bytes are samples:
    they are read like any others (and timestamped from their counter).
    """
    flush = ser._reset_input_buffer
    ser._reset_input_buffer = lambda: None
    try:
        ser.open()
    finally:
        ser._reset_input_buffer = flush
    return ser


class SerialPort:
    """Non-blocking bulk reads of a pyserial port."""

    def __init__(self, opener: Callable[[], serial.SerialBase], name: str = ""):
        self.opener = opener
        self.name = name
        self.ser: serial.SerialBase | None = None

    @classmethod
    def at(cls, path: str, baudrate: int = 921600) -> SerialPort:
        """A port at a device path (opened on :meth:`open`)."""
        def opener() -> serial.Serial:
            ser = serial.Serial(None, baudrate=baudrate, timeout=0, exclusive=True)
            ser.port = path
            return keep_pending_input(ser)

        return cls(opener, path)

    @property
    def is_open(self) -> bool:  # noqa: D102
        return self.ser is not None and self.ser.is_open

    def open(self) -> None:
        """Open the port; raises OSError with the reason when it cannot."""
        try:
            self.ser = self.opener()
        except (serial.SerialException, OSError) as e:
            self.ser = None
            raise OSError(f"cannot open {self.name or 'serial port'}: {e}") from None

    def close(self) -> None:
        """Close quietly."""
        if self.ser is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                self.ser.close()
            self.ser = None

    async def read(self, timeout_s: float, max_bytes: int = 1 << 20) -> bytes:
        """Every byte available once the port is readable; b"" after ``timeout_s`` of silence.

        A tty hands out at most its line buffer (4 KiB) per read(2) while the kernel may
        hold more: it is read again at once until it has nothing left (or ``max_bytes``
        came), so all of it is taken in one go, not one 4 KiB piece per turn of the event
        loop (which would let a backlog drain barely faster than real time and make the
        last piece's arrival late by the processing of the others).
        """
        ser = self.ser
        if ser is None:
            raise PortClosedError("port is not open")
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        fd = ser.fileno()
        loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
        try:
            async with asyncio.timeout(timeout_s):  # unlike wait_for, never eats a cancel
                await ready
        except TimeoutError:
            return b""
        finally:
            loop.remove_reader(fd)
        try:
            data = ser.read(max(ser.in_waiting, 1))
            if not data:
                raise PortClosedError("readable but no data: the other end has gone")
            if len(data) < max_bytes:
                buf = bytearray(data)
                # timeout 0: one non-blocking read(2) each; in_waiting lags behind what it returns
                while len(buf) < max_bytes and (more := ser.read(max_bytes - len(buf))):
                    buf += more
                data = bytes(buf)
        except (serial.SerialException, OSError) as e:
            raise PortClosedError(str(e)) from None
        return data
