"""The bus scheduler: one request at a time on a shared line, with the RTU silence between."""

import asyncio

import pytest

from drivers.modbus import ModbusReadError, SharedLink, silent_interval_s


class SlowLine:
    def __init__(self):
        self.connected = True
        self.log = []
        self.busy = False

    async def connect(self):
        return True

    def close(self):
        self.connected = False

    async def read(self, table, address, count, unit):
        loop = asyncio.get_running_loop()
        assert not self.busy, "two requests on the line at once"
        self.busy = True
        self.log.append((unit, loop.time()))
        await asyncio.sleep(0.002)
        self.busy = False
        if unit == 9:
            raise ModbusReadError("timeout", "no reply")
        self.log.append((unit, loop.time(), "end"))
        return [unit] * count


async def test_requests_from_many_units_are_serialised_with_silence_between():
    line = SlowLine()
    link = SharedLink(line, silence_s=0.005, serial=True)
    results = await asyncio.gather(*[link.read("holding", 0, 2, u) for u in (1, 2, 3, 1)])
    assert results == [[1, 1], [2, 2], [3, 3], [1, 1]]
    starts = [t for (_, t, *rest) in line.log if not rest]
    ends = [t for (_, t, *rest) in line.log if rest]
    for end, next_start in zip(ends, starts[1:], strict=False):
        assert next_start - end >= 0.005 - 1e-4
    assert [u for (u, _, *rest) in line.log if not rest] == [1, 2, 3, 1]  # first come, first served


async def test_a_timeout_on_a_serial_line_does_not_close_it():
    line = SlowLine()
    link = SharedLink(line, serial=True)
    with pytest.raises(ModbusReadError):
        await link.read("holding", 0, 1, 9)
    assert link.connected and not link.closes_on_timeout
    assert SharedLink(line).closes_on_timeout  # a TCP connection is restarted instead


def test_silent_interval():
    assert silent_interval_s(9600) == pytest.approx(3.5 * 11 / 9600)
    assert silent_interval_s(115200) == 1.75e-3
