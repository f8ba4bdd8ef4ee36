"""What every format's writer shares: the writer protocol and column conversions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from daq.export.source import Device, RunInfo

#: run metadata keys in the order they are shown
META_KEYS = ("run_id", "rig", "kind", "operator", "part_number", "lot", "serial", "notes", "started_by",
             "start", "stop", "start_ns", "stop_ns", "active", "rigdaq_version")


class Writer:
    """Writes one run to one file: ``begin`` a device, ``write`` its batches in time order, ``end`` it; ``close``.

    Devices come one after another; ``close`` adds the cycles (``info.cycles``) and finishes the file.
    """

    def __init__(self, path: Path, info: RunInfo):
        self.path = path
        self.info = info

    def begin(self, dev: Device) -> None:
        """A device's samples follow."""

    def write(self, dev: Device, batch: pa.RecordBatch) -> None:
        """Samples of ``dev``: column ``time`` (int64 ns) and one column per channel."""
        raise NotImplementedError

    def end(self, dev: Device) -> None:
        """The device is done."""

    def close(self) -> None:
        """Add the cycles and finish the file."""

    def abort(self) -> None:
        """Give up: release what is open (the caller deletes the file)."""


#: the names the sample-file formats (HDF5, TDMS, MDF4) give their own time channels
TIME_NAMES = frozenset({"time", "time_ns"})


def channel_names(dev: Device) -> list[str]:
    """The names of the device's channels in HDF5, TDMS and MDF4.

    A field named like the formats' own time channels (``time``, ``time_ns``) becomes ``<device>.<field>``.
    """
    return [f"{dev.name}.{ch.name}" if ch.name in TIME_NAMES else ch.name for ch in dev.channels]


def as_float(arr: pa.Array) -> np.ndarray:
    """A numeric column as float64, NaN where a sample lacks it (integers past 2**53 round to the nearest)."""
    if pa.types.is_floating(arr.type) and arr.null_count == 0:
        return arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    return pc.cast(arr, pa.float64(), safe=False).fill_null(np.nan).to_numpy(zero_copy_only=False)


def as_str(arr: pa.Array) -> np.ndarray:
    """A column as Python strings ("" where a sample lacks it)."""
    return np.array(pc.cast(arr, pa.string()).fill_null("").to_pylist(), dtype=object)


def times(batch: pa.RecordBatch) -> np.ndarray:
    """The ``time`` column (int64 ns)."""
    return batch.column(0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def meta_text(value) -> str:
    """A metadata value as text (dicts as JSON)."""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def flat_meta(meta: dict) -> dict[str, object]:
    """Run metadata as flat name → int or str (``extra`` as ``extra.<key>`` and as JSON)."""
    out: dict[str, object] = {}
    for k in META_KEYS:
        v = meta[k]
        out[k] = v if isinstance(v, int) and not isinstance(v, bool) else meta_text(v)
    out["extra"] = meta_text(meta["extra"])
    for k, v in meta["extra"].items():
        out[f"extra.{k}"] = meta_text(v)
    return out


def cycle_table(cycles: list[dict], metrics: list[str]) -> dict[str, np.ndarray]:
    """Cycles as columns.

    cycle_no, t_ns, end_ns (int64), verdict, samples_sha256, version, reasons (str), and
    one float64 column per metric (NaN where a cycle lacks it).
    """
    cols: dict[str, np.ndarray] = {
        "cycle_no": np.array([c["cycle_no"] for c in cycles], dtype=np.int64),
        "t_ns": np.array([c["t_ns"] for c in cycles], dtype=np.int64),
        "end_ns": np.array([c["end_ns"] for c in cycles], dtype=np.int64),
        "verdict": np.array([c["verdict"] for c in cycles], dtype=object),
        "samples_sha256": np.array([c["samples_sha256"] for c in cycles], dtype=object),
        "version": np.array([c["version"] for c in cycles], dtype=object),
        "reasons": np.array(["; ".join(c["reasons"] or []) for c in cycles], dtype=object),
    }
    for m in metrics:
        vals = [(c["metrics"] or {}).get(m) for c in cycles]
        cols[m] = np.array([np.nan if v is None else float(v) for v in vals], dtype=np.float64)
    return cols
