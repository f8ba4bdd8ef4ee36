"""Sustained ingest into a local influxd: rigdaq's writer (spool included) vs a plain HTTP post.

Both write the same points (the press amplifier's shape: 6 floats and an integer
counter per point) into their own database of one local InfluxDB 1.x:

* peer: line protocol serialised beforehand (not timed), posted batch after batch with
  httpx;
* rigdaq: blocks published on the bus as acquisition would, turned into line protocol,
  fsync'd to the spool, posted, confirmed and deleted — timed from the first block to
  the last confirmation.

    python -m bench.ingest [--points 1000000] [--rounds 3] [--spool-dir DIR]

The spool lives on the data disk (``var/bench-ingest/`` by default, as the service's
``var/spool/``), never on a tmpfs, so fsync costs what it costs in production.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from daq.bus import SampleBus, Tagged
from daq.storage.influx_v1 import InfluxV1Client
from daq.storage.influxd import ManagedInfluxd, free_port
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


async def peer(url: str, data: list[Block], batch_lines: int, db: str) -> float:
    async with httpx.AsyncClient(timeout=60) as h:
        await h.post(f"{url}/query", params={"q": f'CREATE DATABASE "{db}"'})
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
            r = await h.post(f"{url}/write", params={"db": db, "precision": "ns"}, content=body)
            assert r.status_code == 204, r.text
        return time.perf_counter() - t0


async def ours(url: str, data: list[Block], spool_dir: Path, db: str) -> float:
    client = InfluxV1Client(url, db, timeout_s=60)
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
    while writer.stats.samples_in < total or writer._buf or writer.spool.batches:
        await asyncio.sleep(0.01)
    dt = time.perf_counter() - t0
    await writer.stop()
    await client.aclose()
    return dt


def _filesystem(path: Path) -> str:
    """The file system type ``path`` lives on (from /proc/mounts)."""
    best, kind = "", "?"
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mnt, fs = line.split()[:3]
        if str(path.resolve()).startswith(mnt) and len(mnt) > len(best):
            best, kind = mnt, fs
    return kind


async def main(points: int, spool_root: Path, rounds: int) -> None:
    spool_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=spool_root))
    db = ManagedInfluxd(tmp / "influx", port=free_port())
    await db.start()
    try:
        data = blocks(points)
        print(f"{points:,} points × 7 fields into a local InfluxDB 1.x, {rounds} alternating rounds "
              f"(counts checked); spool on {tmp} ({_filesystem(tmp)})")
        ratios = []
        for i in range(rounds):
            t_peer = await peer(db.url, data, batch_lines=20_000, db=f"peer{i}")
            t_ours = await ours(db.url, data, tmp / f"spool{i}", db=f"ours{i}")
            n_peer, n_ours = await count(db.url, f"peer{i}"), await count(db.url, f"ours{i}")
            assert n_peer == n_ours == points, (n_peer, n_ours)
            ratios.append(t_peer / t_ours)
            print(f"round {i + 1}: plain HTTP post of pre-serialised lines {points / t_peer:10,.0f} points/s, "
                  f"rigdaq writer (serialise, fsync spool, post, confirm) {points / t_ours:10,.0f} points/s, "
                  f"ratio {t_peer / t_ours:.2f}")
        print("(the peer posts 20 000-line batches one at a time; rigdaq commits in bursts of up to 4 MB and "
              "sends a backlog in 2 MB requests, two in flight)")
        print(f"ratio: {statistics.median(ratios):.2f} (median of {rounds}; min {min(ratios):.2f}, "
              f"max {max(ratios):.2f})   target >= 0.8")
    finally:
        db.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--spool-dir", type=Path, default=Path("var/bench-ingest"),
                    help="where the spool (and influxd's data) go: the data disk, not a tmpfs")
    ap.add_argument("--rounds", type=int, default=3, help="alternating peer/rigdaq rounds (median ratio)")
    args = ap.parse_args()
    asyncio.run(main(args.points, args.spool_dir, args.rounds))
