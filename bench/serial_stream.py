"""A 20 kHz × 11-channel stream through a pseudo-terminal, read by rigdaq for real.

A writer process plays an SR-motor power analyser: every 5 ms it sends the frames due
(sync, sequence, 11 float32 channels, CRC-16) into a pty. This process reads the other
end with rigdaq's stream acquisition (bulk reads, vectorised decode, counter unwrap,
drift-corrected timestamps, blocks on the bus) and reports lost frames and the CPU
seconds it spent per second of data.

    python -m bench.serial_stream [--seconds 60] [--rate 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import numpy as np

from daq.acquisition.stream import StreamAcquisition
from daq.bus import SampleBus, Tagged
from drivers.serial_port import SerialPort
from drivers.stream import FrameCodec, StreamChannel

CHANNELS = [StreamChannel(n, "float32") for n in (
    "phase_a_current", "phase_b_current", "phase_c_current", "phase_d_current",
    "phase_a_voltage", "phase_b_voltage", "phase_c_voltage", "phase_d_voltage",
    "torque", "speed", "rotor_angle")]


def writer(link: str, rate: float, seconds: float, ready, done) -> None:
    from drivers.sim.pty_link import PtyLink

    pty = PtyLink(link, fifo_bytes=4 * 1024 * 1024)
    pty.open()
    ready.set()
    codec = FrameCodec(CHANNELS)
    t0 = time.monotonic()
    sent = 0
    total = int(rate * seconds)
    while sent < total:
        due = min(total, int((time.monotonic() - t0) * rate))
        if due > sent:
            seq = np.arange(sent, due)
            t = seq / rate
            values = {c.name: np.sin(2 * np.pi * 50 * t + i) * 100 for i, c in enumerate(CHANNELS)}
            pty.write(codec.encode(seq, values))
            sent = due
        time.sleep(0.005)
    done.value = sent
    deadline = time.monotonic() + 5.0
    while pty._pending and time.monotonic() < deadline:  # let the reader take the rest
        pty.write(b"")
        time.sleep(0.01)
    time.sleep(2.0)
    pty.close()


async def read(link: str, rate: float, seconds: float) -> tuple[StreamAcquisition, int, float, float]:
    bus = SampleBus()
    sub = bus.subscribe("sink", maxsize=1_000_000)
    acq = StreamAcquisition("bench", "analyser", SerialPort.at(link, 4_000_000), FrameCodec(CHANNELS),
                            rate, bus, block_s=0.05)
    task = asyncio.create_task(acq.run())
    cpu0, wall0 = time.process_time(), time.monotonic()
    received = 0
    expected = int(rate * seconds)
    while received < expected and time.monotonic() - wall0 < seconds + 5:
        try:
            item = await asyncio.wait_for(sub.get(), 0.5)
        except TimeoutError:
            continue
        if isinstance(item, Tagged):
            received += len(item.block)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    while (item := sub.get_nowait()) is not None:
        if isinstance(item, Tagged):
            received += len(item.block)
    return acq, received, cpu, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=20_000)
    a = ap.parse_args()
    link = str(Path(tempfile.mkdtemp()) / "analyser")
    ready, done = mp.Event(), mp.Value("q", 0)
    proc = mp.Process(target=writer, args=(link, a.rate, a.seconds, ready, done), daemon=True)
    proc.start()
    ready.wait(10)
    acq, received, cpu, wall = asyncio.run(read(link, a.rate, a.seconds))
    proc.join(10)
    sent = done.value
    lost = sent - received
    data_s = received / a.rate
    frame = FrameCodec(CHANNELS).frame_len
    print(f"{a.rate:,.0f} frames/s × {len(CHANNELS)} channels ({frame} B/frame, "
          f"{a.rate * frame / 1e6:.2f} MB/s) for {a.seconds:g} s through a pty")
    print(f"frames sent {sent:,}, received {received:,}, lost {lost:,} "
          f"(counter gaps {acq.status.missing_samples}, skipped bytes {acq.status.skipped_bytes})")
    print(f"reader CPU: {cpu:.2f} s over {wall:.1f} s wall = {cpu / data_s:.3f} CPU-seconds per "
          f"second of data")


if __name__ == "__main__":
    main()
