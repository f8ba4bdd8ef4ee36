"""A logger rig's run summary: per device and channel, statistics and a hash of the run's samples.

While a run is active the tracker takes every block of the rig and keeps, per device and
numeric channel (``sample``, a stream's counter, excluded; bits and strings are not
numeric), in constant memory:

* ``count``: valid samples, i.e. with a finite value, not masked by the block's ``valid``
  mask for the channel, and of quality GOOD (0); ``missing``: samples without a value
  (NaN, ±inf, or masked); ``bad_quality``: samples with a value but quality not GOOD;
* ``min``, ``max``, ``mean``, ``std`` (population standard deviation, ddof = 0) of the
  valid samples, combined block by block with Chan et al.'s parallel update (each block's
  mean and sum of squared deviations computed in two passes with numpy, relative to the
  channel's first valid value so that a large mean does not cost the spread its digits);
* ``first_ns``, ``last_ns`` and ``span_s``: the time span of the valid samples;
* ``stored``, ``stored_first_ns``, ``stored_last_ns`` and ``sha256``: the values storage
  keeps for the channel (every finite, unmasked value, whatever its quality: InfluxDB does
  not keep the quality) and a SHA-256 over them, in the order received.

The hash (layout ``rigdaq-logger-sha256/1``), recomputable from the stored samples:

* a channel's digest is SHA-256 over its stored values in time order, 16 bytes each: the
  timestamp as int64 little-endian (ns since the epoch), then the value as float64
  little-endian (integers converted to float64; -0.0 hashed as 0.0). The tracker hashes
  in the order the values arrive, which is time order: a channel comes from one
  acquisition, whose timestamps increase;
* a device's ``sha256`` is SHA-256 over its channels with at least one stored value, in
  sorted name order (Unicode code points), each as its UTF-8 name, one 0x00 byte, then its
  32-byte digest. A device without any is the SHA-256 of nothing.

From InfluxDB: per device (measurement) and numeric field except ``sample``, the non-null
values with tag ``run`` = the run's id and ``stored_first_ns`` ≤ time ≤ ``stored_last_ns``.
(The run's tag and the summary cover the same blocks: storage and the segmentation stage
both follow the run's start and stop events in bus order; the bounds are kept as a check.)

``close_run`` returns the summary as a :class:`RunArtifact` named ``channel_summary`` and
starts afresh; a new run id without ``close_run`` drops what was gathered (runs never mix).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field

import numpy as np

from daq.cycles.result import ResultTracker, RunArtifact

log = logging.getLogger(__name__)

ARTIFACT = "channel_summary"
LAYOUT = "rigdaq-logger-sha256/1"
_RECORD = np.dtype([("t", "<i8"), ("v", "<f8")])


@dataclass
class ChannelSummary:
    """Streaming figures of one channel in one run."""

    count: int = 0
    missing: int = 0
    bad_quality: int = 0
    shift: float | None = None  # the first valid value: sums are kept relative to it (no cancellation)
    mean_d: float = 0.0  # mean − shift
    m2: float = 0.0  # sum of squared deviations from the mean
    min: float = math.inf
    max: float = -math.inf
    first_ns: int | None = None
    last_ns: int | None = None
    stored: int = 0
    stored_first_ns: int | None = None
    stored_last_ns: int | None = None
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)

    def add(self, t: np.ndarray, v: np.ndarray, has: np.ndarray, good: np.ndarray) -> None:
        """One block's column: ``has`` (a stored value) and ``good`` (valid sample) masks."""
        n_has = int(has.sum())
        self.missing += len(v) - n_has
        n_good = int(good.sum())
        self.bad_quality += n_has - n_good
        if n_has:
            rec = np.empty(n_has, _RECORD)
            rec["t"] = t[has]
            rec["v"] = v[has] + 0.0  # -0.0 → 0.0: a stored "-0" reads back as 0
            self.digest.update(rec.tobytes())
            self.stored += n_has
            ts = rec["t"]
            self.stored_first_ns = _lo(self.stored_first_ns, int(ts.min()))
            self.stored_last_ns = _hi(self.stored_last_ns, int(ts.max()))
        if not n_good:
            return
        x, tx = v[good], t[good]
        lo, hi = float(x.min()), float(x.max())
        if self.shift is None:
            self.shift = float(x[0])
        if lo == hi:  # exactly constant: no rounding in the mean or the deviations
            mean_b, m2_b = lo - self.shift, 0.0
        else:
            d = x - self.shift
            mean_b = float(d.mean())
            m2_b = float(np.square(d - mean_b).sum())
        n_a, n = self.count, self.count + n_good
        delta = mean_b - self.mean_d
        if n_a == 0:
            self.mean_d, self.m2 = mean_b, m2_b
        else:
            self.mean_d += delta * (n_good / n)
            self.m2 += m2_b + delta * delta * (n_a * n_good / n)
        self.count = n
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.first_ns = _lo(self.first_ns, int(tx.min()))
        self.last_ns = _hi(self.last_ns, int(tx.max()))

    def as_dict(self, unit: str) -> dict:
        """JSON-ready figures (None where there was no valid sample)."""
        some = self.count > 0
        return {
            "unit": unit, "count": self.count, "missing": self.missing, "bad_quality": self.bad_quality,
            "min": self.min if some else None, "max": self.max if some else None,
            "mean": self.shift + self.mean_d if some else None,
            "std": math.sqrt(max(self.m2, 0.0) / self.count) if some else None,
            "first_ns": self.first_ns, "last_ns": self.last_ns,
            "span_s": (self.last_ns - self.first_ns) / 1e9 if some else None,
            "stored": self.stored, "stored_first_ns": self.stored_first_ns,
            "stored_last_ns": self.stored_last_ns, "sha256": self.digest.hexdigest(),
        }


def _lo(a: int | None, b: int) -> int:
    return b if a is None else min(a, b)


def _hi(a: int | None, b: int) -> int:
    return b if a is None else max(a, b)


@dataclass
class DeviceSummary:
    """One device's channels in one run, plus how many samples (rows) it delivered."""

    samples: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    channels: dict[str, ChannelSummary] = field(default_factory=dict)

    def sha256(self) -> str:
        """The device's hash: its channels' digests, in sorted name order (module docstring)."""
        h = hashlib.sha256()
        for name in sorted(self.channels):
            c = self.channels[name]
            if c.stored:
                h.update(name.encode("utf-8") + b"\x00" + c.digest.digest())
        return h.hexdigest()


def _columns(block, skipped: set) -> tuple[np.ndarray, list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]] | None:
    """(t_ns, [(channel, float64 values, has-value mask, valid mask)]) of a block; None if unusable.

    Never raises on what a block may hold: a column of another length, strings, bits,
    objects or a malformed mask is left out (named once in the log, via ``skipped``).
    """
    try:
        t = np.asarray(block.t_ns)
        if t.ndim != 1 or t.dtype.kind not in "iu":
            raise ValueError(f"timestamps of dtype {t.dtype} and shape {t.shape}")
        t = t.astype(np.int64, copy=False)
        n = len(t)
        if n == 0:
            return t, []
        q = getattr(block, "quality", None)
        q = np.zeros(n, np.uint8) if q is None else np.asarray(q)
        if q.shape != (n,):
            raise ValueError(f"a quality array of shape {q.shape} for {n} samples")
        q_good = q == 0
        masks = getattr(block, "valid", None) or {}
        channels = block.channels
        names = list(channels)
    except Exception as e:  # an odd block is skipped, never raised
        key = (getattr(block, "device", "?"), "")
        if key not in skipped:
            skipped.add(key)
            log.warning("run summary: a block of %s is left out: %s", key[0], e)
        return None
    out = []
    for name in names:
        if name == "sample":
            continue
        try:
            col = np.asarray(channels[name])
            if col.dtype.kind not in "fiu":
                continue  # bits, strings: not summarised
            if col.shape != (n,):
                raise ValueError(f"{col.shape[0] if col.ndim else 0} values for {n} timestamps")
            v = col.astype(np.float64)
            has = np.isfinite(v)
            m = masks.get(name) if isinstance(masks, dict) else None
            if m is not None:
                m = np.asarray(m)
                if m.shape != (n,) or m.dtype.kind != "b":
                    raise ValueError(f"a valid mask of dtype {m.dtype} and shape {m.shape}")
                has &= m
            out.append((name, v, has, has & q_good))
        except Exception as e:  # an odd column is left out, never raised
            key = (getattr(block, "device", "?"), name)
            if key not in skipped:
                skipped.add(key)
                log.warning("run summary: channel %s of %s is left out of a block: %s", name, key[0], e)
    return t, out


class RunSummaryTracker(ResultTracker):
    """Summarises every device and numeric channel of one logger rig per run (module docstring)."""

    def __init__(self, rig: str, units: dict[str, dict[str, str]] | None = None):
        self.rig = rig
        self.units = units or {}  # device → channel → unit, from the rig file
        self.results: list = []
        self.cycle_no = 0  # a logger has no cycles; the service sets it from the catalogue
        self._run = ""
        self._closed = False
        self._devices: dict[str, DeviceSummary] = {}
        self._skipped: set[tuple[str, str]] = set()

    def _new_run(self) -> None:
        """A new run id starts a new summary."""
        self._devices = {}
        self._closed = False

    def _feed(self, rig: str, block) -> None:
        """Take a block of this rig into the active run's summary (nothing without a run).

        It completes nothing: the summary is final when the run stops (``close_run``).
        """
        if rig != self.rig or not self._run or self._closed:
            return
        cols = _columns(block, self._skipped)
        if cols is None:
            return
        t, columns = cols
        if not len(t):
            return
        dev = self._devices.setdefault(str(block.device), DeviceSummary())
        dev.samples += len(t)
        dev.first_ns = _lo(dev.first_ns, int(t.min()))
        dev.last_ns = _hi(dev.last_ns, int(t.max()))
        for name, v, has, good in columns:
            dev.channels.setdefault(name, ChannelSummary()).add(t, v, has, good)

    def summary(self, end_ns: int | None = None) -> dict:
        """The active run's summary so far (JSON-ready): what ``close_run`` files."""
        devices = {}
        for name in sorted(set(self.units) | set(self._devices)):
            d = self._devices.get(name, DeviceSummary())
            units = self.units.get(name, {})
            devices[name] = {
                "samples": d.samples, "first_ns": d.first_ns, "last_ns": d.last_ns, "sha256": d.sha256(),
                "channels": {c: s.as_dict(units.get(c, "")) for c, s in sorted(d.channels.items())},
            }
        starts = [d.first_ns for d in self._devices.values() if d.first_ns is not None]
        return {"run": self._run, "start_ns": min(starts) if starts else None, "end_ns": end_ns,
                "std": "population (ddof = 0)", "hash_layout": LAYOUT, "devices": devices}

    def close_run(self, end_ns: int) -> RunArtifact | None:
        """The run stops: its summary as a ``channel_summary`` artifact (None without a run)."""
        if not self._run or self._closed:
            return None
        art = RunArtifact(self.rig, self._run, ARTIFACT, int(end_ns), self.summary(int(end_ns)))
        self._devices = {}
        self._closed = True  # until the next run: blocks still tagged with this one are not its summary's
        n = sum(len(d["channels"]) for d in art.data["devices"].values())
        log.info("%s: run %s summarised: %d devices, %d channels", self.rig, self._run,
                 len(art.data["devices"]), n)
        return art
