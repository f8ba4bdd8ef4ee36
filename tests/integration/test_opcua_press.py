"""The simulated press PLC over OPC UA: the same scans as its Modbus registers, into InfluxDB.

The shipped press rig file gets two OPC UA devices (one polled, one subscribed); the
simulator serves each through a real asyncua server showing the model's values with each
scan's true time as source timestamp. What lands in InfluxDB is compared exactly with the
register images the simulator published (``record_sim``: plc_tick → values).
"""

from __future__ import annotations

import asyncio

import pytest

from daq.config import load_settings
from daq.service import Service
from daq.storage.influx_v1 import series_rows
from daq.storage.influxd import free_port
from tests.integration.helpers import press_settings

pytestmark = [pytest.mark.timeout(120)]

NODES = {"plc_tick": "UInt32", "force": "Double", "position": "Double", "state_contact": "Boolean",
         "recipe": "String"}


def _device(name: str, mode: str) -> str:
    nodes = "".join(f'\n  [[devices.nodes]]\n  name = "{c}"\n  node = "ns=2;s={name}.{c}"\n  type = "{t}"\n'
                    for c, t in NODES.items())
    return f'''
[[devices]]
name = "{name}"
transport = "opcua"
endpoint = "opc.tcp://127.0.0.1:{free_port()}/rigdaq"
block_s = 0.05
{mode}
{nodes}'''


async def test_polled_and_subscribed_opcua_faces_store_the_scans_the_simulator_showed(
        tmp_path, influxd, influx, database):
    press_settings(tmp_path, influxd.url, database)
    rig = tmp_path / "rigs" / "screw-press.toml"
    rig.write_text(rig.read_text() + _device("press01_ua", "poll_hz = 20")
                   + _device("press01_uas", "sampling_interval_ms = 5\npublishing_interval_ms = 50\n"
                                            "queue_size = 1000"))
    service = Service(load_settings(tmp_path / "demo.toml"), record_sim=True)
    await service.start()
    await asyncio.sleep(4.0)
    await service.stop()
    sim = service.simulators["press-01"]
    assert service.writer.stats.dropped_lines == 0

    polled = series_rows(await influx.query(
        "SELECT plc_tick, force, \"position\", state_contact, recipe FROM press01_ua"))
    acq = next(a for a in service.acquisitions if a.status.device == "press01_ua")
    assert len(polled) == acq.status.samples and len(polled) > 40
    for r in polled:  # every value as the scan showed it: same scan, same types, no rounding
        shown = sim.history[r["plc_tick"]]
        assert (r["force"], r["position"], r["state_contact"], r["recipe"]) == \
            (shown["force"], shown["position"], bool(shown["state_contact"]), "DIE-A113")
        assert r["time"] % 1000 == 0  # the server's source timestamp (OPC UA via asyncua: µs)

    ticks = [r["plc_tick"] for r in series_rows(await influx.query("SELECT plc_tick FROM press01_uas"))]
    shown = sorted(sim.history)
    # every scan published while subscribed arrived, once, in order: none lost between notifications
    assert ticks == [k for k in shown if ticks[0] <= k <= ticks[-1]] and len(ticks) > 400
    forces = series_rows(await influx.query("SELECT force, plc_tick FROM press01_uas WHERE plc_tick >= 0"))
    assert [r["force"] for r in forces] == [sim.history[r["plc_tick"]]["force"] for r in forces]
