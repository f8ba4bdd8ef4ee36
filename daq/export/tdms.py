"""TDMS (npTDMS): one group per device, one segment per batch; what DIAdem and LabVIEW open.

* file properties: the run's metadata (``name`` "run <id>", rig, operator, part_number, …,
  ``start``/``stop`` as TDMS time stamps and ISO text, ``extra.<key>``);
* group ``<device>``: channels ``time`` (s since the run's start, float64, unit ``s``),
  ``time_ns`` (int64 ns since the epoch, exact) and one channel per field (float64, NaN
  where a sample lacks it, or strings) with ``unit_string``. Stream timestamps follow the
  instrument's clock and are not exactly equidistant, so there are no ``wf_increment``
  waveform properties: DIAdem plots against the ``time`` channel;
* group ``cycles``: cycle_no, t_ns, end_ns, start_s/end_s (since the run's start), verdict,
  samples_sha256, version, reasons, one channel per metric.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from nptdms import ChannelObject, GroupObject, RootObject, TdmsWriter

from daq.export.common import Writer, as_float, as_str, channel_names, cycle_table, flat_meta, times
from daq.export.source import Device, metric_names


def _stamp(t_ns: int) -> np.datetime64:
    return np.datetime64(int(t_ns), "ns")


class TdmsExportWriter(Writer):
    """See the module docstring."""

    def __init__(self, path, info):
        super().__init__(path, info)
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close/abort
        self.w = TdmsWriter(self._file)
        props: dict[str, object] = {"name": f"run {info.meta['run_id']}", "format": "rigdaq run export 1"}
        props.update(flat_meta(info.meta))
        props["start_time"] = _stamp(info.meta["start_ns"])
        props["stop_time"] = _stamp(info.meta["stop_ns"])
        props["author"] = info.meta["operator"]
        self.w.write_segment([RootObject(props)])
        self._first = True

    def begin(self, dev: Device) -> None:  # noqa: D102
        self._first = True

    def write(self, dev: Device, batch: pa.RecordBatch) -> None:  # noqa: D102
        t = times(batch)
        objs: list = []
        first = self._first
        if first:
            objs.append(GroupObject(dev.name, properties={"device": dev.name, "rig": self.info.meta["rig"]}))
        rel = (t - self.info.start_ns) / 1e9
        objs.append(ChannelObject(dev.name, "time", rel, properties={
            "unit_string": "s", "description": "since the run's start"} if first else None))
        objs.append(ChannelObject(dev.name, "time_ns", t, properties={
            "unit_string": "ns", "description": "ns since 1970-01-01T00:00:00Z"} if first else None))
        for i, (ch, name) in enumerate(zip(dev.channels, channel_names(dev), strict=True)):
            col = batch.column(i + 1)
            data = as_float(col) if ch.numeric else as_str(col).astype(str)
            objs.append(ChannelObject(dev.name, name, data, properties={
                "unit_string": ch.unit, "influx_type": ch.influx_type} if first else None))
        self.w.write_segment(objs)
        self._first = False

    def close(self) -> None:  # noqa: D102
        cycles = self.info.cycles
        table = cycle_table(cycles, metric_names(cycles))
        start = self.info.start_ns
        table["start_s"] = (table["t_ns"] - start) / 1e9
        table["end_s"] = (table["end_ns"] - start) / 1e9
        objs: list = [GroupObject("cycles", properties={"description": "the run's cycles and their results"})]
        for name, col in table.items():
            unit = {"t_ns": "ns", "end_ns": "ns", "start_s": "s", "end_s": "s"}.get(name, "")
            data = col.astype(str) if col.dtype == object else col
            if len(data):
                objs.append(ChannelObject("cycles", name, data, properties={"unit_string": unit}))
        self.w.write_segment(objs)
        self._file.close()

    def abort(self) -> None:  # noqa: D102
        self._file.close()
