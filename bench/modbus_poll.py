"""Modbus TCP polling throughput: rigdaq's driver vs a plain pymodbus client loop.

Both read the same 100 holding registers from the same simulated PLC (a separate
process, so the server does not share the client's core). Ours also decodes them
(50 float32 channels in two byte orders), timestamps every poll and publishes
columnar blocks on the bus; the plain loop only gets the list of ints back.
Runs alternate (peer, ours, peer, ours, …) and the best of each is compared.

    python -m bench.modbus_poll [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import time

from pymodbus.client import AsyncModbusTcpClient

from daq.acquisition.polling import DeviceAcquisition
from daq.bus import SampleBus
from daq.storage.influxd import free_port
from drivers.modbus import ModbusPoller, PymodbusTransport
from drivers.registers import RegisterField

N_REGS = 100
FIELDS = [RegisterField(f"ch{i:02d}", "holding", 2 * i, "float32", "CDAB" if i % 2 else "ABCD")
          for i in range(N_REGS // 2)]


def _serve(port: int, ready) -> None:
    from drivers.sim.modbus_server import ModbusSimServer, RegisterImage

    async def main():
        image = RegisterImage(FIELDS)
        image.set({f.name: 1.5 * i for i, f in enumerate(FIELDS)})
        server = ModbusSimServer(image, "127.0.0.1", port)
        await server.start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


async def plain_pymodbus(port: int, seconds: float) -> int:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    await client.connect()
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        rr = await client.read_holding_registers(0, count=N_REGS, device_id=1)
        assert not rr.isError()
        n += 1
    client.close()
    return n


async def rigdaq_driver(port: int, seconds: float) -> tuple[int, int]:
    transport = PymodbusTransport.tcp("127.0.0.1", port, timeout_s=2)
    poller = ModbusPoller("bench", transport, FIELDS)
    assert len(poller.requests) == 1 and poller.requests[0].count == N_REGS
    bus = SampleBus()
    sub = bus.subscribe("sink", maxsize=1_000_000)
    acq = DeviceAcquisition("bench", poller, bus, poll_hz=1000, block_s=0.1)
    await acq.poll_once()  # connect outside the timed loop, as the peer does
    end = time.perf_counter() + seconds
    polls = 0
    while time.perf_counter() < end:
        await acq.poll_once()
        polls += 1
    acq.emit()
    decoded = 0
    while (item := sub.get_nowait()) is not None:
        decoded += len(item.block) * len(item.block.channels)
    poller.close()
    assert acq.status.failed_polls == 0
    return polls, decoded


async def main(seconds: float, rounds: int) -> None:
    port = free_port()
    ready = mp.Event()
    proc = mp.Process(target=_serve, args=(port, ready), daemon=True)
    proc.start()
    ready.wait(10)
    try:
        peer, ours, values = [], [], []
        for _ in range(rounds):
            peer.append(await plain_pymodbus(port, seconds) / seconds)
            polls, decoded = await rigdaq_driver(port, seconds)
            ours.append(polls / seconds)
            values.append(decoded / seconds)
        best_peer, best_ours = max(peer), max(ours)
        values = values[ours.index(best_ours)]
        print(f"plain pymodbus : {best_peer:8.0f} reads/s  {best_peer * N_REGS:10.0f} registers/s")
        print(f"rigdaq driver  : {best_ours:8.0f} reads/s  {best_ours * N_REGS:10.0f} registers/s "
              f"({values:.0f} decoded, timestamped values/s)")
        print(f"ratio (rigdaq / plain pymodbus): {best_ours / best_peer:.3f}   target >= 0.85")
    finally:
        proc.terminate()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    asyncio.run(main(a.seconds, a.rounds))
