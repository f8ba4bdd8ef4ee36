"""The tabular formats: Parquet (pyarrow) and CSV (stdlib) — one table for the whole run.

What a pandas user expects: ``pd.read_parquet(path)`` (or ``pd.read_csv(path, comment="#")``)
gives one DataFrame, one row per sample, with a ``device`` column to split by
(``df[df.device == "srm01_analyser"]``), the sample time and every channel of every
device as a column (empty where the row's device has no such channel). A channel name
two devices share with different types, or named ``device``/``time``/``time_ns``, becomes
``<device>.<channel>``.

* Parquet: ``time`` is ``timestamp[ns, UTC]`` (int64 ns on disk; pandas gets
  ``datetime64[ns, UTC]``), channels keep their InfluxDB types (float64, int64, bool,
  string) with nulls where a sample lacks a value; each column's field metadata has its
  ``unit`` (a JSON device → unit map when the devices disagree); the file's key-value
  metadata ``rigdaq`` (JSON) has the run's metadata, the devices with their channels and
  units, and the cycles. Rows go out in row groups of ``ROW_GROUP`` samples.
* CSV: ``device,time_ns,<channels…>``; the lines before the header start with ``#``: the
  first says how many there are (``skiprows``), then the run's metadata, the units
  (JSON) and one JSON line per cycle.
"""

from __future__ import annotations

import csv
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import csv as pacsv

from daq.export.common import Writer
from daq.export.source import Device, RunInfo

ROW_GROUP = 131_072
RESERVED = frozenset({"device", "time", "time_ns"})


def columns_of(info: RunInfo) -> tuple[dict[str, tuple[pa.DataType, dict[str, str]]], dict[tuple[str, str], str]]:
    """(column → (type, {device: unit})), ((device, channel) → column)) over every device of the run."""
    cols: dict[str, tuple[pa.DataType, dict[str, str]]] = {}
    where: dict[tuple[str, str], str] = {}
    for dev in info.devices:
        for ch in dev.channels:
            name = ch.name
            if name in RESERVED or (name in cols and cols[name][0] != ch.arrow_type):
                name = f"{dev.name}.{ch.name}"
            _, units = cols.setdefault(name, (ch.arrow_type, {}))
            units[dev.name] = ch.unit
            where[(dev.name, ch.name)] = name
    return cols, where


def _unit_text(units: dict[str, str]) -> str:
    values = set(units.values())
    return values.pop() if len(values) == 1 else json.dumps(units, ensure_ascii=False, sort_keys=True)


def export_metadata(info: RunInfo, where: dict[tuple[str, str], str]) -> dict:
    """The run's metadata, devices (channel → column, unit, InfluxDB type) and cycles, as one JSON-able dict."""
    devices = {d.name: {ch.name: {"column": where[(d.name, ch.name)], "unit": ch.unit, "influx_type": ch.influx_type}
                        for ch in d.channels} for d in info.devices}
    return {"format": "rigdaq run export 1", "run": info.meta, "devices": devices, "cycles": info.cycles}


class ParquetExportWriter(Writer):
    """See the module docstring."""

    def __init__(self, path, info):
        super().__init__(path, info)
        cols, self.where = columns_of(info)
        fields = [pa.field("device", pa.dictionary(pa.int32(), pa.string())),
                  pa.field("time", pa.timestamp("ns", tz="UTC"), metadata={"unit": "ns since 1970-01-01 UTC"})]
        fields += [pa.field(name, typ, metadata={"unit": _unit_text(units)}) for name, (typ, units) in cols.items()]
        meta = export_metadata(info, self.where)
        self.schema = pa.schema(fields, metadata={"rigdaq": json.dumps(meta, ensure_ascii=False, default=str)})
        self.w = pq.ParquetWriter(path, self.schema, compression="zstd")
        self._pending: list[pa.RecordBatch] = []
        self._rows = 0

    def write(self, dev: Device, batch: pa.RecordBatch) -> None:  # noqa: D102
        n = batch.num_rows
        mine = {self.where[(dev.name, ch.name)]: batch.column(i + 1) for i, ch in enumerate(dev.channels)}
        arrays = [pa.DictionaryArray.from_arrays(pa.array([0] * n, pa.int32()), pa.array([dev.name])),
                  batch.column(0).cast(pa.timestamp("ns", tz="UTC"))]
        for f in list(self.schema)[2:]:
            arrays.append(mine[f.name] if f.name in mine else pa.nulls(n, f.type))
        self._pending.append(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self._rows += n
        if self._rows >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self.w.write_table(pa.Table.from_batches(self._pending), row_group_size=max(self._rows, 1))
        self._pending, self._rows = [], 0

    def end(self, dev: Device) -> None:  # noqa: D102
        self._flush()

    def close(self) -> None:  # noqa: D102
        self._flush()
        self.w.close()

    def abort(self) -> None:  # noqa: D102
        self.w.close()


class CsvExportWriter(Writer):
    """See the module docstring.

    Cells are written by pyarrow's CSV writer: floats in their shortest round-trip form,
    booleans ``true``/``false``, nothing for a missing value, strings quoted when needed.
    """

    def __init__(self, path, info):
        super().__init__(path, info)
        cols, self.where = columns_of(info)
        meta = export_metadata(info, self.where)
        units = {name: _unit_text(u) for name, (_, u) in cols.items()}
        lines = [f"# run: {json.dumps(meta['run'], ensure_ascii=False)}",
                 f"# units: {json.dumps({'time_ns': 'ns since 1970-01-01 UTC', **units}, ensure_ascii=False)}",
                 f"# devices: {json.dumps(meta['devices'], ensure_ascii=False)}"]
        lines += [f"# cycle: {json.dumps(c, ensure_ascii=False, default=str)}" for c in info.cycles]
        lines.insert(0, f"# rigdaq run export 1; {len(lines) + 1} comment lines before the header (skiprows)")
        self.schema = pa.schema([pa.field("device", pa.string()), pa.field("time_ns", pa.int64())]
                                + [pa.field(name, typ) for name, (typ, _) in cols.items()])
        self.f = pa.OSFile(str(path), "wb")
        self.f.write("".join(line.replace("\n", " ").replace("\r", " ") + "\n" for line in lines).encode())
        header = io.StringIO()
        csv.writer(header, lineterminator="\n").writerow(self.schema.names)
        self.f.write(header.getvalue().encode())
        self.w = pacsv.CSVWriter(self.f, self.schema,
                                 write_options=pacsv.WriteOptions(include_header=False, quoting_style="needed"))

    def write(self, dev: Device, batch: pa.RecordBatch) -> None:  # noqa: D102
        n = batch.num_rows
        mine = {self.where[(dev.name, ch.name)]: batch.column(i + 1) for i, ch in enumerate(dev.channels)}
        arrays = [pa.array([dev.name] * n, pa.string()), batch.column(0)]
        for f in list(self.schema)[2:]:
            arrays.append(mine[f.name] if f.name in mine else pa.nulls(n, f.type))
        self.w.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))

    def close(self) -> None:  # noqa: D102
        self.w.close()
        self.f.close()

    def abort(self) -> None:  # noqa: D102
        self.f.close()
