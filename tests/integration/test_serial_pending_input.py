"""A port opened onto an instrument that kept streaming keeps what the kernel holds for it."""

import os
import pty
import time
import tty

import serial

from drivers.serial_port import SerialPort


def _pty_with_pending(n: int) -> tuple[int, str]:
    master, slave = pty.openpty()
    tty.setraw(slave)  # as an instrument's line is: bytes, not a terminal's cooked lines
    os.write(master, bytes(range(256)) * (n // 256))
    time.sleep(0.05)
    return master, os.ttyname(slave)


def test_bytes_waiting_at_open_are_read_not_discarded():
    _, name = _pty_with_pending(2048)
    port = SerialPort.at(name, 115200)
    port.open()
    got = b""
    for _ in range(50):
        got += port.ser.read(4096)
        if len(got) >= 2048:
            break
        time.sleep(0.01)
    port.close()
    assert got == bytes(range(256)) * 8


def test_plain_pyserial_would_have_discarded_them():
    # why SerialPort opens the port itself: pyserial's open() flushes the input queue
    _, name = _pty_with_pending(2048)
    ser = serial.Serial(name, 115200, timeout=0)
    time.sleep(0.05)
    assert ser.read(4096) == b""
    ser.close()


async def test_one_read_takes_all_the_kernel_holds_not_one_line_buffer():
    """A tty gives at most 4095 bytes per read(2); :meth:`SerialPort.read` reads on until it is empty.

    8 KiB waiting (two line buffers) come back from one call, so their arrival is taken once
    for all of them, and a backlog drains what the kernel holds per turn of the event loop
    instead of 4 KiB.
    """
    master, name = _pty_with_pending(8 * 1024)
    port = SerialPort.at(name, 115200)
    port.open()
    try:
        got = await port.read(1.0)
        assert got == bytes(range(256)) * 32
        os.write(master, b"x" * 5000)
        time.sleep(0.05)
        assert await port.read(1.0, max_bytes=4096) == b"x" * 4096  # at most max_bytes
        assert await port.read(1.0) == b"x" * 904
    finally:
        port.close()
