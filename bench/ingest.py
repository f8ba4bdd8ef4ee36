"""Sustained ingest into a local influxd: rigdaq's writer (spool included) vs a plain HTTP post.

Both write the same points (the press amplifier's shape: 6 floats and an integer
counter per point) into their own database of one local InfluxDB 1.x:

* peer: line protocol serialised beforehand (not timed), posted batch after batch with
  httpx;
* rigdaq: blocks published on the bus as acquisition would, turned into line protocol,
  fsync'd to the spool, posted, confirmed and deleted — timed from the first block to
  the last confirmation.

    python bench/ingest.py [--points 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from daq.bus import SampleBus, Tagged
from daq.influxd import ManagedInfluxd, free_port
from daq.storage.influx_v1 import InfluxV1Client
from daq.storage.lineproto import block_bytes
from daq.storage.spool import Spool
from daq.storage.writer import StorageWriter
from drivers.block import Block

BLOCK = 500  # samples per block: 50 ms of a 10 kHz stream


def blocks(n: int, offset: int = 0) -> list[Block]:
    rng = np.random.default_rng(1)
    out = []
    for start in range(0, n, BLOCK):
        k = min(BLOCK, n - start)
        t = 1_795_000_000_000_000_000 + (offset + start + np.arange(k, dtype=np.int64)) * 100_000
        chans = {c: rng.normal(0, 1e4, k) for c in ("force", "force_1", "force_2", "force_3",
                                                     "force_4", "position")}
        chans["sample"] = start + np.arange(k, dtype=np.int64)
        out.append(Block("press01_amp", t, chans))
    return out


async def count(url: str, db: str) -> int:
    async with httpx.AsyncClient(timeout=60) as h:
        r = await h.get(f"{url}/query", params={"db": db, "q": "SELECT count(sample) FROM press01_amp"})
        return r.json()["results"][0]["series"][0]["values"][0][1]


async def peer(url: str, data: list[Block], batch_lines: int) -> float:
    async with httpx.AsyncClient(timeout=60) as h:
        await h.post(f"{url}/query", params={"q": 'CREATE DATABASE "peer"'})
        bodies, cur, lines = [], [], 0
        for b in data:
            body, n, _ = block_bytes(b.device, {"rig": "press-01"}, b)
            cur.append(body)
            lines += n
            if lines >= batch_lines:
                bodies.append(b"".join(cur))
                cur, lines = [], 0
        if cur:
            bodies.append(b"".join(cur))
        t0 = time.perf_counter()
        for body in bodies:
            r = await h.post(f"{url}/write", params={"db": "peer", "precision": "ns"}, content=body)
            assert r.status_code == 204, r.text
        return time.perf_counter() - t0


async def ours(url: str, data: list[Block], spool_dir: Path) -> float:
    client = InfluxV1Client(url, "ours", timeout_s=60)
    await client.create_database()
    bus = SampleBus()
    writer = StorageWriter(client, bus.subscribe("storage", maxsize=1_000_000), Spool(spool_dir, 10**10),
                           commit_interval_s=0.2)
    writer.start()
    t0 = time.perf_counter()
    for b in data:
        bus.publish(Tagged("press-01", b))
        await asyncio.sleep(0)  # acquisition yields between blocks
    total = sum(len(b) for b in data)
    while writer.stats.samples_in < total or writer._buf or writer.spool.files:
        await asyncio.sleep(0.01)
    dt = time.perf_counter() - t0
    await writer.stop()
    await client.aclose()
    return dt


async def main(points: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    db = ManagedInfluxd(tmp / "influx", port=free_port())
    await db.start()
    try:
        data = blocks(points)
        t_peer = await peer(db.url, data, batch_lines=20_000)
        t_ours = await ours(db.url, data, tmp / "spool")
        n_peer, n_ours = await count(db.url, "peer"), await count(db.url, "ours")
        assert n_peer == n_ours == points, (n_peer, n_ours)
        print(f"{points:,} points × 7 fields into a local InfluxDB 1.x (counts checked)")
        print(f"plain HTTP post of pre-serialised lines : {points / t_peer:12,.0f} points/s")
        print(f"rigdaq writer (serialise, fsync spool, post, confirm): {points / t_ours:12,.0f} points/s")
        print(f"ratio: {t_peer / t_ours:.2f}   target >= 0.7")
    finally:
        db.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    asyncio.run(main(ap.parse_args().points))
