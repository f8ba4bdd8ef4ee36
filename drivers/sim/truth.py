"""The simulators' truth log: when each sample they showed was really taken.

A developer hook for timing benchmarks (``bench/timing.py``): the simulators know the
true moment of every sample, so the service's timestamps can be checked against it.
Off unless enabled (``truth_sink=`` on a simulator, :meth:`RigSimulator.set_truth_sink`,
or ``RIGDAQ_SIM_TRUTH=DIR`` for ``daq run`` / ``daq sim``, see :mod:`daq.simulators`).

**Truth.** The model of a rig runs on the rig's clock: its step ``k`` (the state after
``k`` steps of ``dt``) is due at host monotonic time ``start + k·dt/(1 + clock_ppm·1e-6)``.
That is mapped to the wall clock (``time.time_ns()``, what the service timestamps with)
once, when the model clock (re)starts, and is the *true time* of everything the model
showed at step ``k``: a streamed frame sampled at step ``k``, a register image published
with the state after ``k`` steps. Every kind is int64 columns, one row per item:

=========  ==================================  ==========================================
kind       columns                             one row per
=========  ==================================  ==========================================
frames     counter, truth_ns                   frame handed to the instrument's output
                                               (``counter`` unwrapped; the wire carries it
                                               mod 2³²); frames a fault keeps from being
                                               sent are not recorded
scans      tick, truth_ns, published_ns        register image published (``tick`` is the
                                               model's ``plc_tick``, ms of rig time;
                                               ``published_ns`` when the image became
                                               visible to clients)
reads      tick, served_ns                     read request a Modbus face answered: which
                                               image (``tick``) it served, and when
link       host_ns, queued_bytes,              write of frames to the instrument's output:
           dropped_bytes                       bytes then waiting in its FIFO (nobody
                                               reading), bytes its FIFO dropped so far
=========  ==================================  ==========================================

**Sinks.** A callable gets ``(kind, device, {column: int64 array})`` for every chunk (as
the model runs: every 5 ms scan). A directory gets, per device and kind, a file
``DEVICE.KIND.i64`` of little-endian int64 rows (appended; 1 MiB write buffers, flushed
when the simulator stops) and a ``DEVICE.json`` describing the device (rate, clock_ppm,
frame size, columns); :func:`load_truth` reads a directory back. Recording costs a few
array operations per 5 ms chunk; a 20 kHz stream writes 16 bytes per frame (≈1.2 GB an
hour), so the hook is for benchmark-length runs.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: the columns of each kind, in file order
COLUMNS: dict[str, tuple[str, ...]] = {
    "frames": ("counter", "truth_ns"),
    "scans": ("tick", "truth_ns", "published_ns"),
    "reads": ("tick", "served_ns"),
    "link": ("host_ns", "queued_bytes", "dropped_bytes"),
}

TruthCallback = Callable[[str, str, dict[str, np.ndarray]], None]
TruthSink = TruthCallback | str | os.PathLike


class TruthLog:
    """Hands truth records to a callable or appends them to files in a directory."""

    def __init__(self, sink: TruthSink):
        self.callback: TruthCallback | None = None
        self.directory: Path | None = None
        if callable(sink):
            self.callback = sink
        else:
            self.directory = Path(sink)
            self.directory.mkdir(parents=True, exist_ok=True)
        self._files: dict[tuple[str, str], object] = {}
        self.rows: dict[tuple[str, str], int] = {}  # (device, kind) → rows recorded

    def describe(self, device: str, info: dict) -> None:
        """Write ``DEVICE.json`` (directory sinks only): what the device is, how to read its files."""
        if self.directory is None:
            return
        info = {**info, "device": device, "pid": os.getpid(),
                "files": {k: {"path": f"{device}.{k}.i64", "columns": list(c), "dtype": "<i8"}
                          for k, c in COLUMNS.items()}}
        tmp = self.directory / f"{device}.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(info, indent=1))
        tmp.replace(self.directory / f"{device}.json")

    def record(self, kind: str, device: str, *columns) -> None:
        """One chunk of ``kind`` rows: the columns in :data:`COLUMNS` order (arrays or scalars)."""
        cols = [np.atleast_1d(np.asarray(c, dtype=np.int64)) for c in columns]
        if len(cols) != len(COLUMNS[kind]):
            raise ValueError(f"{kind} takes columns {COLUMNS[kind]}, got {len(cols)}")
        n = max(len(c) for c in cols)
        if n == 0:
            return
        key = (device, kind)
        self.rows[key] = self.rows.get(key, 0) + n
        if self.callback is not None:
            self.callback(kind, device, {name: np.broadcast_to(c, (n,)).copy()
                                         for name, c in zip(COLUMNS[kind], cols, strict=True)})
            return
        f = self._files.get(key)
        if f is None:
            f = self._files[key] = open(self.directory / f"{device}.{kind}.i64", "ab",  # noqa: SIM115
                                        buffering=1 << 20)
        rows = np.empty((n, len(cols)), dtype="<i8")
        for i, c in enumerate(cols):
            rows[:, i] = c
        f.write(rows.tobytes())

    def close(self) -> None:
        """Flush and close the files (a later record reopens them, appending)."""
        for f in self._files.values():
            try:
                f.close()
            except OSError as e:
                log.warning("truth log: %s", e)
        self._files.clear()


def load_truth(directory: str | os.PathLike) -> dict[str, dict]:
    """A directory sink read back: device → ``{"info": DEVICE.json, kind: {column: int64 array}}``.

    A file cut short mid-row (a killed process) is read up to its last whole row.
    """
    directory = Path(directory)
    out: dict[str, dict] = {}
    for meta in sorted(directory.glob("*.json")):
        device = meta.stem
        entry: dict = {"info": json.loads(meta.read_text())}
        for kind, cols in COLUMNS.items():
            path = directory / f"{device}.{kind}.i64"
            raw = np.fromfile(path, dtype="<i8") if path.exists() else np.zeros(0, dtype="<i8")
            rows = raw[: len(raw) // len(cols) * len(cols)].reshape(-1, len(cols))
            entry[kind] = {name: rows[:, i].astype(np.int64) for i, name in enumerate(cols)}
        out[device] = entry
    return out
