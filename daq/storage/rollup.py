"""Rollups for a central InfluxDB: per channel min/max/mean/last over 1 s, and a decimated stream.

At plant scale an agent writes full-rate samples to its line's InfluxDB (short retention)
and, to a central InfluxDB, what a plant-wide view needs: for every device and numeric
channel the **min, max, mean and last** value of each whole second (aligned to the epoch
second, timestamped at its start, with the number of samples ``n``), optionally a
**decimated stream** (the mean of each ``1/decimate_hz`` bin, timestamped at the bin's
start) for devices that name a rate, and every cycle result and event unchanged.
Full-rate cycle curves stay in the catalogue archive.

:class:`Rollup` is the arithmetic, block by block: a device's samples arrive in time
order (an acquisition's timestamps increase), so a window is complete as soon as a sample
of a later window arrives, and is emitted then; :meth:`Rollup.flush` emits what is still
open at stop. Only samples of good quality with a finite value count. Output blocks are
named ``<device>_1s`` (fields ``<channel>_min``, ``_max``, ``_mean``, ``_last``, ``_n``) and
``<device>_dec`` (fields named as the channels).

:class:`RollupStage` runs it on the service's bus and publishes onto a second bus, the
central one, which a second :class:`~daq.storage.writer.StorageWriter` (its own spool:
nothing is lost while the central InfluxDB is away) drains.
"""

from __future__ import annotations

import logging

import numpy as np

from daq.bus import SampleBus, Tagged
from daq.cycles.result import CycleResult
from daq.events import Event
from drivers.block import QUALITY_GOOD, Block

log = logging.getLogger(__name__)

STATS = ("min", "max", "mean", "last", "n")


class _Bins:
    """Running per-bin sums of one device: open bin start, and per channel n/min/max/sum/last."""

    def __init__(self, width_ns: int):
        self.width_ns = width_ns
        self.start: int | None = None
        self.acc: dict[str, list[float]] = {}  # channel → [n, min, max, sum, last]

    def add(self, t: np.ndarray, cols: dict[str, np.ndarray], good: np.ndarray) -> list[tuple[int, dict]]:
        """Take samples (time-ordered); returns the bins they completed: (start ns, channel → stats).

        Per channel the block's bins are reduced in one numpy call each (``reduceat``); only
        the per-bin merge into the running sums is Python, on scalars.
        """
        done: list[tuple[int, dict]] = []
        if not len(t):
            return done
        bins = (t // self.width_ns) * self.width_ns
        starts = np.flatnonzero(np.concatenate(([True], bins[1:] != bins[:-1])))
        idx = np.arange(len(t))
        per: dict[str, tuple[list, list, list, list, list]] = {}
        for name, v in cols.items():
            m = good & np.isfinite(v)
            last_i = np.maximum.reduceat(np.where(m, idx, -1), starts)
            per[name] = (np.add.reduceat(m.astype(np.int64), starts).tolist(),
                         np.minimum.reduceat(np.where(m, v, np.inf), starts).tolist(),
                         np.maximum.reduceat(np.where(m, v, -np.inf), starts).tolist(),
                         np.add.reduceat(np.where(m, v, 0.0), starts).tolist(),
                         v[np.maximum(last_i, 0)].tolist())
        for k, start in enumerate(bins[starts].tolist()):
            if self.start is not None and start != self.start:
                done.append(self._close())
            self.start = start
            for name, (n, lo, hi, tot, last) in per.items():
                acc = self.acc.setdefault(name, [0, np.inf, -np.inf, 0.0, np.nan])  # every channel, even empty
                if n[k]:
                    acc[0] += n[k]
                    acc[1] = min(acc[1], lo[k])
                    acc[2] = max(acc[2], hi[k])
                    acc[3] += tot[k]
                    acc[4] = last[k]
        return done

    def _close(self) -> tuple[int, dict]:
        nan = float("nan")
        out = (self.start, {k: {"n": a[0], "min": a[1] if a[0] else nan, "max": a[2] if a[0] else nan,
                                "mean": a[3] / a[0] if a[0] else nan, "last": a[4]}
                            for k, a in self.acc.items()})
        self.acc = {}
        return out

    def flush(self) -> list[tuple[int, dict]]:
        """The open bin, if it has any sample."""
        if self.start is None or not any(a[0] for a in self.acc.values()):
            return []
        done = [self._close()]
        self.start = None
        return done


class Rollup:
    """Rollup blocks of one service's devices (see the module docstring).

    ``window_s``: the rollup window (1 s); ``decimate_hz``: device → rate of its decimated
    stream (≤ 1 kHz; devices not named get none).
    """

    def __init__(self, window_s: float = 1.0, decimate_hz: dict[str, float] | None = None):
        self.window_ns = round(window_s * 1e9)
        self.decimate_ns = {d: round(1e9 / hz) for d, hz in (decimate_hz or {}).items()}
        self._windows: dict[str, _Bins] = {}
        self._decim: dict[str, _Bins] = {}

    @staticmethod
    def _numeric(block: Block) -> dict[str, np.ndarray]:
        cols = {}
        for name, v in block.channels.items():
            if name == "sample" or v.dtype.kind not in "fiu":
                continue
            col = v.astype(np.float64)
            if block.valid is not None and name in block.valid:
                col = np.where(block.valid[name], col, np.nan)
            cols[name] = col
        return cols

    def feed(self, block: Block) -> list[Block]:
        """One device block; returns the rollup (and decimated) blocks it completed."""
        cols = self._numeric(block)
        if not cols or not len(block):
            return []
        good = block.quality == QUALITY_GOOD
        dev = block.device
        out = self._blocks(dev, "_1s", self._windows.setdefault(dev, _Bins(self.window_ns))
                           .add(block.t_ns, cols, good), stats=True)
        if dev in self.decimate_ns:
            out += self._blocks(dev, "_dec", self._decim.setdefault(dev, _Bins(self.decimate_ns[dev]))
                                .add(block.t_ns, cols, good), stats=False)
        return out

    def flush(self) -> list[Block]:
        """What is still open (at stop)."""
        out = []
        for dev, bins in self._windows.items():
            out += self._blocks(dev, "_1s", bins.flush(), stats=True)
        for dev, bins in self._decim.items():
            out += self._blocks(dev, "_dec", bins.flush(), stats=False)
        return out

    @staticmethod
    def _blocks(dev: str, suffix: str, done: list[tuple[int, dict]], stats: bool) -> list[Block]:
        """Completed bins as one block (channels missing in a bin are NaN there)."""
        if not done:
            return []
        t = np.array([s for s, _ in done], dtype=np.int64)
        names = sorted({k for _, acc in done for k in acc})
        cols: dict[str, np.ndarray] = {}
        for name in names:
            if stats:
                for st in STATS:
                    col = np.array([acc[name][st] if name in acc else np.nan for _, acc in done])
                    cols[f"{name}_{st}"] = np.nan_to_num(col).astype(np.int64) if st == "n" else col
            else:
                cols[name] = np.array([acc[name]["mean"] if name in acc else np.nan for _, acc in done])
        return [Block(dev + suffix, t, cols)]


class RollupStage:
    """Rolls up the service's blocks and forwards cycles and events onto the central bus."""

    def __init__(self, bus: SampleBus, central: SampleBus, rollup: Rollup, maxsize: int = 10_000):
        self.central = central
        self.rollup = rollup
        self.sub = bus.subscribe("rollup", maxsize=maxsize, accepts=(Tagged, Event, CycleResult))
        self._rig_of: dict[str, str] = {}

    def take(self, item) -> None:
        """One item of the service's bus."""
        if isinstance(item, Tagged):
            self._rig_of[item.block.device] = item.rig
            for b in self.rollup.feed(item.block):
                self.central.publish(Tagged(item.rig, b))
        else:
            self.central.publish(item)

    def flush(self) -> None:
        """At stop, once acquisition has stopped: take what is still queued, publish the open windows."""
        while (item := self.sub.get_nowait()) is not None:
            self.take(item)
        for b in self.rollup.flush():
            dev = b.device.rsplit("_", 1)[0]
            self.central.publish(Tagged(self._rig_of.get(dev, ""), b))

    async def run(self) -> None:
        """Follow the bus until cancelled (then :meth:`flush`, after the acquisitions' last blocks)."""
        while True:
            self.take(await self.sub.get())
