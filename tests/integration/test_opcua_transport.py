"""The OPC UA transport as the service runs it: rig file → registry → acquisition → blocks, real server.

A real asyncua server (:class:`drivers.sim.opcua_server.OpcUaSimServer`) is fed through its
own API; the acquisition the transport registry builds from a rig file reads it by polling
and by a subscription; what reaches the bus is compared exactly. The server is stopped and
started again mid-run.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from daq.acquisition.transports import BuildContext, transport_of
from daq.bus import SampleBus, Tagged
from daq.config import ConfigError, load_rig
from daq.events import Event
from daq.storage.influxd import free_port
from drivers.block import QUALITY_BAD, QUALITY_GOOD, QUALITY_PARTIAL
from drivers.sim.opcua_server import OpcUaSimServer
from tests.conftest import ROOT

pytestmark = [pytest.mark.timeout(90)]

CHANNELS = {"force_kN": "Double", "blows": "UInt32", "ready": "Boolean", "recipe": "String"}


def _rig(tmp_path, server: OpcUaSimServer, mode: str) -> object:
    """The shipped press rig file plus an OPC UA device reading ``server``."""
    text = (ROOT / "configs" / "rigs" / "screw-press.toml").read_text()
    def node(c: str) -> str:  # one by browse path, the others by NodeId
        return server.browse_path(c) if c == "blows" else server.node_id(c)

    nodes = "".join(
        f'\n  [[devices.nodes]]\n  name = "{c}"\n  node = "{node(c)}"\n  type = "{t}"\n'
        + ('  scale = 0.5\n' if c == "force_kN" else "")
        for c, t in CHANNELS.items())
    text += f'''
[[devices]]
name = "press01_ua"
transport = "opcua"
endpoint = "{server.endpoint}"
block_s = 0.05
reconnect_max_s = 0.5
{mode}
{nodes}'''
    p = tmp_path / "rig.toml"
    p.write_text(text)
    return load_rig(p)


def _collect(sub, blocks: list, events: list) -> None:
    while (item := sub.get_nowait()) is not None:
        if isinstance(item, Tagged):
            blocks.append(item.block)
        elif isinstance(item, Event):
            events.append(item)


async def _until(cond, sub, blocks, events, tries: int = 200) -> None:
    for _ in range(tries):
        _collect(sub, blocks, events)
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out waiting")


def test_a_bad_opcua_device_is_named_in_the_rig_file(tmp_path):
    server = OpcUaSimServer("PressPLC", CHANNELS, port=free_port())
    with pytest.raises(ConfigError) as e:
        _rig(tmp_path, server, "poll_hz = 10\nsampling_interval_ms = 10")
    assert e.value.problems == [f"{tmp_path / 'rig.toml'}: devices[4] (press01_ua): give poll_hz (polling) or "
                                "sampling_interval_ms (a subscription), not both"]


async def test_polling_reads_exact_values_and_status_as_quality(tmp_path):
    server = OpcUaSimServer("PressPLC", CHANNELS, port=free_port())
    await server.start()
    rig = _rig(tmp_path, server, "poll_hz = 20")
    dev = rig.devices[-1]
    bus = SampleBus()
    sub = bus.subscribe("t", maxsize=100_000)
    [acq] = transport_of(dev).build(dev, BuildContext(rig.name, bus, tmp_path)).acquisitions
    await server.set({"force_kN": 1234.5, "blows": 4_000_000_000, "ready": True, "recipe": "DIE-A113"},
                     source_ns=1_700_000_000_123_456_000)
    task = asyncio.create_task(acq.run())
    blocks, events = [], []
    try:
        await _until(lambda: sum(len(b) for b in blocks) >= 3, sub, blocks, events)
        b = blocks[0]
        assert b.device == "press01_ua"
        assert b.channels["force_kN"][0] == 617.25 and b.channels["force_kN"].dtype == np.float64
        assert b.channels["blows"][0] == 4_000_000_000 and b.channels["blows"].dtype.kind in "iu"
        assert bool(b.channels["ready"][0]) is True and b.channels["recipe"][0] == "DIE-A113"
        assert b.t_ns[0] == 1_700_000_000_123_456_000  # the server's source timestamp
        assert b.quality[0] == QUALITY_GOOD
        # Uncertain and Bad statuses
        await server.set({"force_kN": 10.0}, status={"force_kN": 0x40000000})
        n = sum(len(x) for x in blocks)
        await _until(lambda: sum(len(x) for x in blocks) >= n + 3, sub, blocks, events)
        assert blocks[-1].quality[-1] == QUALITY_PARTIAL and blocks[-1].channels["force_kN"][-1] == 5.0
        await server.set({"force_kN": 10.0}, status={"force_kN": 0x808C0000})
        n = sum(len(x) for x in blocks)
        await _until(lambda: sum(len(x) for x in blocks) >= n + 3, sub, blocks, events)
        last = blocks[-1]
        assert last.quality[-1] == QUALITY_BAD and not last.valid["force_kN"][-1] and last.valid["blows"][-1]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.stop()


async def test_subscription_delivers_every_change_and_survives_a_server_restart(tmp_path):
    port = free_port()
    server = OpcUaSimServer("PressPLC", CHANNELS, port=port)
    await server.start()
    rig = _rig(tmp_path, server, "sampling_interval_ms = 10\npublishing_interval_ms = 50\nqueue_size = 1000")
    dev = rig.devices[-1]
    bus = SampleBus()
    sub = bus.subscribe("t", maxsize=100_000)
    [acq] = transport_of(dev).build(dev, BuildContext(rig.name, bus, tmp_path)).acquisitions
    task = asyncio.create_task(acq.run())
    blocks, events = [], []

    def forces() -> list[tuple[int, float]]:
        return [(int(t), float(v)) for b in blocks if "force_kN" in b.channels
                for t, v in zip(b.t_ns, b.channels["force_kN"], strict=True)]

    try:
        await _until(lambda: acq.client.subscription is not None, sub, blocks, events)
        t0 = 1_700_000_000_000_000_000
        for i in range(1, 101):  # (0.0 is the initial value: setting it again is no change)
            await server.set({"force_kN": float(i)}, source_ns=t0 + i * 1_000_000)
        await _until(lambda: (t0 + 100_000_000, 50.0) in forces(), sub, blocks, events)
        got = [x for x in forces() if t0 <= x[0] < t0 + 10**9]  # not the initial value (stamped now)
        assert got == [(t0 + i * 1_000_000, i * 0.5) for i in range(1, 101)]  # every change, in order

        await server.stop()
        await _until(lambda: any(e.kind == "device_fault" for e in events), sub, blocks, events)
        await server.start()  # same port
        await _until(lambda: any(e.kind == "device_recovered" for e in events), sub, blocks, events)
        await _until(lambda: acq.client.subscription is not None, sub, blocks, events)
        await server.set({"force_kN": 4000.0}, source_ns=t0 + 10**9)
        await _until(lambda: (t0 + 10**9, 2000.0) in forces(), sub, blocks, events)
        assert acq.status.connects == 2
        assert [e.kind for e in events if e.kind in ("device_fault", "device_recovered")] == \
            ["device_fault", "device_recovered"]
        assert not [e for e in events if e.kind == "data_lost"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.stop()
