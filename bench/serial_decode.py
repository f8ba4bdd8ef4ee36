"""Frame decoding throughput: rigdaq's vectorised decoder vs a per-frame struct.unpack loop.

Same bytes for both: N binary frames (sync, sequence, 11 float32 channels, CRC-16) with
a little line noise spliced in. The per-frame peer does what a decoder must: find the
sync word, check the CRC (pymodbus' CRC-16/MODBUS routine) and struct.unpack the
values. A second peer line skips the CRC check, as an upper bound for any loop.

    python -m bench.serial_decode [--frames 200000] [--channels 11]
"""

from __future__ import annotations

import argparse
import struct
import time

import numpy as np
from pymodbus.framer.rtu import FramerRTU

from drivers.stream import FrameCodec, StreamChannel


def make_bytes(n: int, channels: int) -> tuple[bytes, FrameCodec]:
    chans = [StreamChannel(f"ch{i}", "float32") for i in range(channels)]
    codec = FrameCodec(chans)
    seq = np.arange(n)
    t = seq / 20_000
    data = codec.encode(seq, {f"ch{i}": np.sin(2 * np.pi * 50 * t + i) * 100 for i in range(channels)})
    # splice 16 bytes of noise in every 10 000 frames (a resync each time)
    L = codec.frame_len
    parts = [data[i:i + 10_000 * L] for i in range(0, len(data), 10_000 * L)]
    return b"\x00\xa5\x13garbage-bytes!".join(parts), codec


def per_frame_loop(data: bytes, channels: int, check_crc: bool) -> int:
    fmt = struct.Struct("<I" + "f" * channels)
    L = 2 + fmt.size + 2
    crc_of = FramerRTU.compute_CRC
    out = []
    i, n = 0, len(data)
    while i + L <= n:
        if data[i] != 0xA5 or data[i + 1] != 0x5A:
            i += 1
            continue
        body = data[i + 2:i + L - 2]
        if check_crc and crc_of(body) != int.from_bytes(data[i + L - 2:i + L], "big"):
            i += 1
            continue
        out.append(fmt.unpack(body))
        i += L
    return len(out)


def ours(data: bytes, codec: FrameCodec, chunk: int = 65536) -> int:
    codec.reset()
    n = 0
    for i in range(0, len(data), chunk):
        n += len(codec.feed(data[i:i + chunk]))
    return n


def best_rate(fn, frames: int, rounds: int = 3) -> float:
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        got = fn()
        dt = time.perf_counter() - t0
        assert got == frames, (got, frames)
        best = max(best, frames / dt)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--channels", type=int, default=11)
    a = ap.parse_args()
    data, codec = make_bytes(a.frames, a.channels)
    r_ours = best_rate(lambda: ours(data, codec), a.frames)
    r_crc = best_rate(lambda: per_frame_loop(data, a.channels, True), a.frames, rounds=1)
    r_nocrc = best_rate(lambda: per_frame_loop(data, a.channels, False), a.frames, rounds=2)
    print(f"{a.frames} frames of {codec.frame_len} bytes ({a.channels} float32 channels), "
          f"{len(data) / 1e6:.1f} MB")
    print(f"rigdaq vectorised decoder          : {r_ours:12,.0f} frames/s")
    print(f"per-frame struct.unpack + CRC check: {r_crc:12,.0f} frames/s")
    print(f"per-frame struct.unpack, no CRC    : {r_nocrc:12,.0f} frames/s")
    print(f"ratio vs per-frame loop with CRC   : {r_ours / r_crc:6.1f}x   target >= 20x")
    print(f"ratio vs per-frame loop without CRC: {r_ours / r_nocrc:6.1f}x")


if __name__ == "__main__":
    main()
