"""Line-protocol serialisation: rigdaq's columnar serialiser vs influxdb-client's Point path.

The same block for both: the press amplifier's shape (6 float channels and the integer
sample counter, tags rig and run, nanosecond timestamps), N points.

    python bench/line_protocol.py [--points 200000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from influxdb_client import Point, WritePrecision

from daq.storage.lineproto import block_bytes
from drivers.block import Block


def make_block(n: int) -> Block:
    rng = np.random.default_rng(0)
    t = 1_795_000_000_000_000_000 + np.arange(n, dtype=np.int64) * 100_000
    chans = {name: rng.normal(0, 1e4, n).astype(np.float32).astype(np.float64)
             for name in ("force", "force_1", "force_2", "force_3", "force_4", "position")}
    chans["sample"] = np.arange(n, dtype=np.int64)
    return Block("press01_amp", t, chans)


def ours(block: Block) -> bytes:
    body, _, _ = block_bytes("press01_amp", {"rig": "press-01", "run": "R-0042"}, block)
    return body


def point_path(block: Block) -> bytes:
    names = list(block.channels)
    cols = [block.channels[k].tolist() for k in names]
    times = block.t_ns.tolist()
    lines = []
    for i, t in enumerate(times):
        p = Point("press01_amp").tag("rig", "press-01").tag("run", "R-0042").time(t, WritePrecision.NS)
        for k, col in zip(names, cols, strict=True):
            p = p.field(k, col[i])
        lines.append(p.to_line_protocol())
    return ("\n".join(lines) + "\n").encode()


def normalise(body: bytes) -> list:
    """Lines as (key, {field: value}, time); 13040.0 and 13040 are the same float."""
    out = []
    for line in body.decode().splitlines():
        key, fields, t = line.split(" ")
        parsed = {}
        for kv in fields.split(","):
            k, v = kv.split("=")
            parsed[k] = ("i", int(v[:-1])) if v.endswith("i") else ("f", float(v))
        out.append((key, parsed, int(t)))
    return sorted(out, key=lambda x: x[2])


def rate(fn, block: Block, rounds: int) -> tuple[float, bytes]:
    best, out = 0.0, b""
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = fn(block)
        best = max(best, len(block) / (time.perf_counter() - t0))
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=200_000)
    a = ap.parse_args()
    block = make_block(a.points)
    r_ours, body = rate(ours, block, 5)
    r_peer, peer = rate(point_path, block, 2)
    assert normalise(body) == normalise(peer), "outputs differ"
    print(f"{a.points} points × 7 fields (6 float, 1 int), 2 tags; same points checked")
    print(f"rigdaq block_bytes      : {r_ours:12,.0f} points/s")
    print(f"influxdb-client Point   : {r_peer:12,.0f} points/s")
    print(f"ratio: {r_ours / r_peer:.1f}x   target >= 10x")


if __name__ == "__main__":
    main()
