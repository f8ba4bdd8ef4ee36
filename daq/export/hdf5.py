"""HDF5 (h5py): one group per device, resizable datasets appended batch by batch.

Layout (h5py, MATLAB ``h5read``, HDFView)::

    /                       attributes: the run's metadata (run_id, rig, kind, operator, part_number, lot,
                            serial, notes, extra (JSON) and extra.<key>, start/stop (ISO 8601 and _ns), …)
    /<device>/time_ns       int64, ns since the Unix epoch (UTC)
    /<device>/<channel>     float64 (NaN where a sample lacks it) or UTF-8 strings; attribute ``unit``
    /cycles/<column>        cycle_no, t_ns, end_ns (int64), verdict, samples_sha256, version, reasons
                            (strings), one float64 dataset per metric
"""

from __future__ import annotations

import h5py
import numpy as np
import pyarrow as pa

from daq.export.common import Writer, as_float, as_str, channel_names, cycle_table, flat_meta, times
from daq.export.source import Device, metric_names

CHUNK_ROWS = 16384
_STR = h5py.string_dtype("utf-8")


class Hdf5Writer(Writer):
    """See the module docstring."""

    def __init__(self, path, info):
        super().__init__(path, info)
        # a chunk cache of two chunks per dataset: the writes are sequential, and HDF5's default (1 MB per
        # dataset) grew the process by ~150 MB for a 14-channel device before it levelled off
        self.f = h5py.File(path, "w", rdcc_nbytes=2 * CHUNK_ROWS * 8)
        for k, v in flat_meta(info.meta).items():
            self.f.attrs[k] = v
        self.f.attrs["format"] = "rigdaq run export 1"
        self._sets: list[h5py.Dataset] = []

    def _dataset(self, group: h5py.Group, name: str, dtype, unit: str | None = None) -> h5py.Dataset:
        ds = group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(CHUNK_ROWS,),
                                  compression="gzip", compression_opts=4, shuffle=True)
        if unit is not None:
            ds.attrs["unit"] = unit
        return ds

    def begin(self, dev: Device) -> None:  # noqa: D102
        g = self.f.create_group(dev.name)
        g.attrs["device"] = dev.name
        g.attrs["rig"] = self.info.meta["rig"]
        t = self._dataset(g, "time_ns", np.int64, "ns")
        t.attrs["description"] = "sample time, ns since 1970-01-01T00:00:00Z"
        self._sets = [t]
        for ch, name in zip(dev.channels, channel_names(dev), strict=True):
            ds = self._dataset(g, name, np.float64 if ch.numeric else _STR, ch.unit)
            ds.attrs["influx_type"] = ch.influx_type
            self._sets.append(ds)

    def write(self, dev: Device, batch: pa.RecordBatch) -> None:  # noqa: D102
        n = batch.num_rows
        cols = [times(batch)] + [as_float(batch.column(i + 1)) if ch.numeric else as_str(batch.column(i + 1))
                                 for i, ch in enumerate(dev.channels)]
        for ds, col in zip(self._sets, cols, strict=True):
            at = ds.shape[0]
            ds.resize((at + n,))
            ds[at:] = col

    def close(self) -> None:  # noqa: D102
        cycles = self.info.cycles
        g = self.f.create_group("cycles")
        g.attrs["description"] = "the run's cycles: start t_ns and end end_ns (ns since the epoch), results"
        for name, col in cycle_table(cycles, metric_names(cycles)).items():
            g.create_dataset(name, data=col, dtype=_STR if col.dtype == object else col.dtype)
        self.f.close()

    def abort(self) -> None:  # noqa: D102
        self.f.close()
