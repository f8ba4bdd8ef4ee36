"""MDF4 (asammdf): one channel group per device, extended batch by batch.

What asammdf, CANape and other ASAM MDF 4 tools open.

asammdf writes appended and extended samples to a temporary file, not to memory, and
``save`` copies them block by block, so the export's memory does not grow with the run.

* header: ``start_time`` is the run's start; the comment's ``common_properties`` hold the
  run's metadata (run_id, rig, kind, operator, part_number, lot, serial, notes, extra,
  start/stop, rigdaq_version); author = operator, project = part number, subject = serial,
  department = rig;
* channel group per device (acquisition name and comment = the device): master ``time``
  in s since the run's start, ``time_ns`` (int64 ns since the epoch, exact), one channel per
  field with its ``unit`` (float64, NaN where a sample lacks it; strings as UTF-8 bytes, VLSD);
* channel group ``cycles``: master = the cycle's start in s since the run's start; end_s,
  cycle_no, t_ns, end_ns, one channel per metric, verdict and samples_sha256 as strings.
"""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import pyarrow as pa
from asammdf import MDF, Signal

from daq.export.common import Writer, as_float, as_str, channel_names, cycle_table, flat_meta, times
from daq.export.source import Device, metric_names


def header_comment(meta: dict) -> str:
    """The HD comment: a description and the run's metadata as common properties."""
    props = "".join(f"<e name={quoteattr(k)}>{escape(str(v))}</e>" for k, v in flat_meta(meta).items())
    text = f"rigdaq run {meta['run_id']} on {meta['rig']}"
    return f"<HDcomment><TX>{escape(text)}</TX><common_properties>{props}</common_properties></HDcomment>"


def _bytes(texts) -> np.ndarray:
    """Strings as UTF-8 bytes (asammdf stores them as variable-length signal data, VLSD)."""
    return np.array([t.encode() for t in texts], dtype=bytes)


def _encoding(col: np.ndarray) -> str | None:
    return "utf-8" if col.dtype.kind == "S" else None


class Mdf4Writer(Writer):
    """See the module docstring."""

    def __init__(self, path, info):
        super().__init__(path, info)
        self.mdf = MDF(version="4.10")
        meta = info.meta
        self.mdf.header.comment = header_comment(meta)
        self.mdf.header.author = meta["operator"]
        self.mdf.header.project = meta["part_number"]
        self.mdf.header.subject = meta["serial"]
        self.mdf.header.department = meta["rig"]
        sec, ns = divmod(meta["start_ns"], 1_000_000_000)
        self.mdf.header.start_time = datetime.fromtimestamp(sec, UTC).replace(microsecond=ns // 1000)
        self._group: int | None = None

    def begin(self, dev: Device) -> None:  # noqa: D102
        self._group = None

    def _columns(self, dev: Device, batch: pa.RecordBatch) -> tuple[np.ndarray, list[np.ndarray]]:
        t = times(batch)
        cols = [t]
        for i, ch in enumerate(dev.channels):
            col = batch.column(i + 1)
            cols.append(as_float(col) if ch.numeric else _bytes(as_str(col)))
        return (t - self.info.start_ns) / 1e9, cols

    def write(self, dev: Device, batch: pa.RecordBatch) -> None:  # noqa: D102
        master, cols = self._columns(dev, batch)
        if self._group is None:
            names = ["time_ns", *channel_names(dev)]
            units = ["ns", *(ch.unit for ch in dev.channels)]
            comments = ["ns since 1970-01-01T00:00:00Z", *(f"{dev.name}.{ch.name}" for ch in dev.channels)]
            sigs = [Signal(c, master, name=n, unit=u, comment=cm, encoding=_encoding(c))
                    for c, n, u, cm in zip(cols, names, units, comments, strict=True)]
            self.mdf.append(sigs, acq_name=dev.name, comment=dev.name, common_timebase=True)
            self._group = len(self.mdf.groups) - 1
        else:
            self.mdf.extend(self._group, [(master, None), *((c, None) for c in cols)])

    def close(self) -> None:  # noqa: D102
        cycles = self.info.cycles
        if cycles:
            table = cycle_table(cycles, metric_names(cycles))
            start = self.info.start_ns
            master = (table["t_ns"] - start) / 1e9
            table["end_s"] = (table["end_ns"] - start) / 1e9
            sigs = []
            for name, col in table.items():
                if col.dtype == object:
                    col = _bytes(col)
                unit = {"t_ns": "ns", "end_ns": "ns", "end_s": "s"}.get(name, "")
                sigs.append(Signal(col, master, name=name, unit=unit, comment=f"cycles.{name}",
                                   encoding=_encoding(col)))
            self.mdf.append(sigs, acq_name="cycles", comment="cycles", common_timebase=True)
        # asammdf gives a file without the .mf4 suffix one; save under that, then move it into place
        part = saved = self.path.with_name(self.path.name + ".part.mf4")
        try:
            saved = self.mdf.save(part, overwrite=True, compression=2)
            self.mdf.close()
            os.replace(saved, self.path)
        except BaseException:
            with contextlib.suppress(Exception):
                self.mdf.close()
            for left in {part, Path(saved)}:
                with contextlib.suppress(OSError):
                    left.unlink()
            raise

    def abort(self) -> None:  # noqa: D102
        self.mdf.close()
