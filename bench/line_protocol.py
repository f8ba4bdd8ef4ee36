"""Line-protocol serialisation: rigdaq's columnar serialiser vs influxdb-client's Point and DataFrame paths.

The same block for all three: the press amplifier's shape (6 float channels and the
integer sample counter, tags rig and run, nanosecond timestamps), N points.

* Point: one ``Point`` per sample, ``to_line_protocol()``, lines joined.
* DataFrame: influxdb-client's fastest path, the serializer ``write_api.write()`` uses
  for a pandas DataFrame (``data_frame_to_list_of_points``): the block's columns in a
  DataFrame indexed by the nanosecond timestamps, the tags as default tags
  (``PointSettings``), lines joined. Building the DataFrame is timed with it.

All outputs are checked to hold the same points: as many lines, and line by line the
same series, field values (a float compared as a number: ``13040.0`` is ``13040``) and
timestamp. The ratio against the DataFrame path is the last ``ratio`` line.

    python -m bench.line_protocol [--points 200000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from influxdb_client import Point, WritePrecision
from influxdb_client.client.write.dataframe_serializer import data_frame_to_list_of_points
from influxdb_client.client.write_api import PointSettings

from daq.storage.lineproto import block_bytes
from drivers.block import Block

MEASUREMENT = "press01_amp"
TAGS = {"rig": "press-01", "run": "R-0042"}


def make_block(n: int) -> Block:
    rng = np.random.default_rng(0)
    t = 1_795_000_000_000_000_000 + np.arange(n, dtype=np.int64) * 100_000
    chans = {name: rng.normal(0, 1e4, n).astype(np.float32).astype(np.float64)
             for name in ("force", "force_1", "force_2", "force_3", "force_4", "position")}
    chans["sample"] = np.arange(n, dtype=np.int64)
    return Block(MEASUREMENT, t, chans)


def ours(block: Block) -> bytes:
    body, _, _ = block_bytes(MEASUREMENT, TAGS, block)
    return body


def point_path(block: Block) -> bytes:
    names = list(block.channels)
    cols = [block.channels[k].tolist() for k in names]
    times = block.t_ns.tolist()
    lines = []
    for i, t in enumerate(times):
        p = Point(MEASUREMENT).tag("rig", TAGS["rig"]).tag("run", TAGS["run"]).time(t, WritePrecision.NS)
        for k, col in zip(names, cols, strict=True):
            p = p.field(k, col[i])
        lines.append(p.to_line_protocol())
    return ("\n".join(lines) + "\n").encode()


def dataframe_path(block: Block) -> bytes:
    frame = pd.DataFrame(block.channels, index=pd.DatetimeIndex(block.t_ns, tz="UTC"))
    lines = data_frame_to_list_of_points(frame, PointSettings(**TAGS), WritePrecision.NS,
                                         data_frame_measurement_name=MEASUREMENT)
    return ("\n".join(lines) + "\n").encode()


def normalise(body: bytes) -> list:
    """Lines as (key, {field: value}, time), in order; 13040.0 and 13040 are the same float."""
    out = []
    for line in body.decode().splitlines():
        key, fields, t = line.split(" ")
        parsed = {}
        for kv in fields.split(","):
            k, v = kv.split("=")
            parsed[k] = ("i", int(v[:-1])) if v.endswith("i") else ("f", float(v))
        out.append((key, parsed, int(t)))
    return out


def rates(fns: dict, block: Block, rounds: dict[str, int]) -> tuple[dict[str, float], dict[str, bytes]]:
    """Best points/s of each path over its rounds, the paths taking turns; and each output."""
    best = dict.fromkeys(fns, 0.0)
    out: dict[str, bytes] = {}
    for r in range(max(rounds.values())):
        for name, fn in fns.items():
            if r < rounds[name]:
                t0 = time.perf_counter()
                out[name] = fn(block)
                best[name] = max(best[name], len(block) / (time.perf_counter() - t0))
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=200_000)
    a = ap.parse_args()
    block = make_block(a.points)
    fns = {"ours": ours, "point": point_path, "frame": dataframe_path}
    r, out = rates(fns, block, {"ours": 7, "point": 2, "frame": 5})
    points = normalise(out["ours"])
    assert len(points) == a.points, "rigdaq: wrong line count"
    for name in ("point", "frame"):
        assert normalise(out[name]) == points, f"{name}: outputs differ"
    print(f"{a.points} points × 7 fields (6 float, 1 int), 2 tags; same points in all three checked")
    print(f"rigdaq block_bytes           : {r['ours']:12,.0f} points/s")
    print(f"influxdb-client Point        : {r['point']:12,.0f} points/s")
    print(f"influxdb-client DataFrame    : {r['frame']:12,.0f} points/s")
    print(f"ratio vs Point               : {r['ours'] / r['point']:6.1f}x")
    print(f"ratio vs DataFrame           : {r['ours'] / r['frame']:6.1f}x   target >= 10x")


if __name__ == "__main__":
    main()
