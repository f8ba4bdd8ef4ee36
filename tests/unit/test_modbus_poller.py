"""The poller and acquisition against a scripted transport (no sockets)."""

import numpy as np

from daq.acquisition.polling import DeviceAcquisition
from daq.bus import SampleBus, Tagged
from daq.events import Event
from drivers.block import QUALITY_BAD, QUALITY_GOOD, QUALITY_PARTIAL
from drivers.modbus import Backoff, ModbusPoller, ModbusReadError
from drivers.registers import RegisterField

FIELDS = [
    RegisterField("force", "holding", 0, "float32", "CDAB", unit="kN"),
    RegisterField("speed", "holding", 2, "int16", scale=0.1),
    RegisterField("count", "input", 0, "uint32"),
]


class ScriptedTransport:
    """Answers reads from a script: a list per call of registers or an exception."""

    def __init__(self, script):
        self.script = list(script)
        self.calls = []
        self.connected = False
        self.connect_results = []

    async def connect(self):
        ok = self.connect_results.pop(0) if self.connect_results else True
        self.connected = ok
        return ok

    def close(self):
        self.connected = False

    async def read(self, table, address, count, unit):
        self.calls.append((table, address, count, unit))
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        assert len(step) == count
        return step


def good(i):
    # force = 1.5 + i (CDAB float32), speed = -0.1*i, count = i
    import struct
    hi, lo = struct.unpack(">HH", struct.pack(">f", 1.5 + i))
    return [[lo, hi, (-i) & 0xFFFF], [0, i]]


async def test_reads_follow_the_plan_and_decode():
    t = ScriptedTransport([r for i in range(3) for r in good(i)])
    poller = ModbusPoller("plc", t, FIELDS, unit_id=7)
    bus = SampleBus()
    sub = bus.subscribe("test")
    acq = DeviceAcquisition("rig", poller, bus, poll_hz=100, block_s=1.0)
    for _ in range(3):
        await acq.poll_once()
    acq.emit()
    assert t.calls[:2] == [("holding", 0, 3, 7), ("input", 0, 2, 7)]
    item = sub.get_nowait()
    assert isinstance(item, Tagged) and item.rig == "rig"
    b = item.block
    np.testing.assert_array_equal(b.channels["force"], [1.5, 2.5, 3.5])
    np.testing.assert_allclose(b.channels["speed"], [0.0, -0.1, -0.2])
    np.testing.assert_array_equal(b.channels["count"], [0, 1, 2])
    assert list(b.quality) == [QUALITY_GOOD] * 3 and b.valid is None
    assert np.all(np.diff(b.t_ns) > 0)


async def test_exception_reply_masks_only_that_request():
    t = ScriptedTransport([*good(0), good(1)[0], ModbusReadError("exception", "exception 2")])
    poller = ModbusPoller("plc", t, FIELDS)
    bus = SampleBus()
    sub = bus.subscribe("test")
    acq = DeviceAcquisition("rig", poller, bus, poll_hz=100, block_s=1.0)
    await acq.poll_once()
    await acq.poll_once()
    acq.emit()
    items = []
    while (x := sub.get_nowait()) is not None:
        items.append(x)
    events = [x for x in items if isinstance(x, Event)]
    [block] = [x.block for x in items if isinstance(x, Tagged)]
    assert [e.kind for e in events] == ["device_fault"] and "exception 2" in events[0].message
    assert list(block.quality) == [QUALITY_GOOD, QUALITY_PARTIAL]
    assert list(block.valid["count"]) == [True, False] and "force" not in block.valid
    assert block.channels["force"][1] == 2.5
    assert acq.status.state == "degraded"


async def test_timeout_drops_connection_then_backoff_then_recovery_with_gap_event():
    t = ScriptedTransport([*good(0), ModbusReadError("timeout", "no reply"), *good(1)])
    t.connect_results = [True, False, True]
    poller = ModbusPoller("plc", t, FIELDS, reconnect_min_s=0.0)
    bus = SampleBus()
    sub = bus.subscribe("test")
    acq = DeviceAcquisition("rig", poller, bus, poll_hz=100, block_s=1.0)
    await acq.poll_once()             # good
    await acq.poll_once()             # timeout: connection closed, device down
    assert not t.connected and acq.status.state == "down"
    r = await poller.poll(np.zeros(5, np.uint16))  # reconnect refused
    assert r.quality == QUALITY_BAD and "connect failed" in str(r.errors[0])
    poller.backoff.next_try = 0
    await acq.poll_once()             # reconnects and reads
    acq.emit()
    kinds = []
    while (x := sub.get_nowait()) is not None:
        kinds.append(x.kind if isinstance(x, Event) else "block")
    assert kinds == ["device_fault", "device_recovered", "data_gap", "block"]
    assert acq.status.samples == 2 and poller.connects == 2


def test_backoff_is_exponential_and_capped():
    b = Backoff(0.1, 1.0)
    delays = [b.failed(0.0) for _ in range(6)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert not b.due(0.5) and b.due(1.0)
    b.succeeded()
    assert b.failed(0.0) == 0.1
