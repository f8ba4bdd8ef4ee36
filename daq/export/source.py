"""What an export reads: the run and its cycles from the catalogue, its samples from the line InfluxDB.

Samples are read per device (InfluxDB measurement) in time windows of ``window_s``
seconds, each window one InfluxQL query answered as CSV in chunks (``chunked=true``), which
pyarrow's streaming CSV reader turns into record batches of a few MB: however long the run,
no more than one batch of samples is held at a time. The run's cycles are read whole from
the catalogue and held in memory (a few hundred bytes per cycle): that, not the samples,
is what grows with the run.

A run's samples are selected by the rig (tag ``rig``) and the run's time span
[start, stop], both ends included; not by the ``run`` tag. The storage writer tags samples
in bus order, so samples timed inside the run that reached storage just before its
``run_start`` event or just after its ``run_stop`` event carry no run tag; only one run can
be active per rig, so the rig and the span identify the run's samples. Windows are
``time >= lo AND time < hi``, the last one ``time <= stop``: a sample on a window edge is
read once.

The query names every field of the measurement (``SHOW FIELD KEYS``), so a sample comes
back exactly as it was written: int64 nanosecond time, floats bit for bit (InfluxDB prints
the shortest round-trip form), integers, booleans and strings with their InfluxDB types. A
sample that lacks a field (a failed poll, a NaN the writer left out) has a null there.
Units are those the run recorded at its start; a run from before they were recorded takes
the rig file's as it is now.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pyarrow as pa
from pyarrow import csv as pacsv

from daq import __version__
from daq.catalogue import Catalogue
from daq.export.plan import ExportError, InfluxTarget

log = logging.getLogger(__name__)

#: measurements in the line InfluxDB that are not devices
NOT_DEVICES = frozenset({"events", "cycles"})
#: InfluxDB field type → the arrow type it is read as
ARROW_TYPES = {"float": pa.float64(), "integer": pa.int64(), "unsigned": pa.uint64(), "boolean": pa.bool_(),
               "string": pa.string()}
CYCLE_KEYS = ("cycle_no", "t_ns", "end_ns", "verdict", "reasons", "metrics", "samples_sha256", "version", "kind")


@dataclass
class Channel:
    """One field of a device: its name, InfluxDB type and unit (the run's; "" if it names none)."""

    name: str
    influx_type: str
    unit: str = ""

    @property
    def arrow_type(self) -> pa.DataType:
        """What the channel is read as."""
        return ARROW_TYPES.get(self.influx_type, pa.string())

    @property
    def numeric(self) -> bool:
        """Float, integer or boolean (everything but strings)."""
        return self.influx_type != "string"


@dataclass
class Device:
    """One device of the run (an InfluxDB measurement): its channels in rig-file order, then the others."""

    name: str
    channels: list[Channel] = field(default_factory=list)


@dataclass
class RunInfo:
    """Everything but the samples: metadata, devices and their channels, cycles."""

    meta: dict
    devices: list[Device]
    cycles: list[dict]

    @property
    def start_ns(self) -> int:
        """The run's start."""
        return self.meta["start_ns"]


def common_type(types: set[str]) -> str:
    """The type a field is read as when shards hold it with different types (a rig file changed).

    InfluxQL does not say which shard's type a run's samples have, so the field is read as
    the type every one of them parses as: integers and floats as ``float``, anything else
    mixed as ``string``.
    """
    if len(types) == 1:
        return next(iter(types))
    if types <= {"integer", "unsigned", "float"}:
        return "float"
    return "string"


def _quote_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quote_str(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _ByteStream(io.RawIOBase):
    """A readable file over an iterator of byte chunks (an HTTP response body), for pyarrow."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class InfluxRunReader:
    """Reads one run's samples from the line InfluxDB's v1 API (synchronous: the export runs on its own)."""

    def __init__(self, target: InfluxTarget, window_s: float = 30.0, chunk_rows: int = 20_000,
                 block_bytes: int = 1 << 20):
        self.target = target
        self.window_ns = max(1, round(window_s * 1e9))
        self.chunk_rows = chunk_rows
        self.block_bytes = block_bytes
        auth = httpx.BasicAuth(target.username, target.password or "") if target.username else None
        self._http = httpx.Client(base_url=target.url.rstrip("/"), auth=auth, timeout=target.timeout_s)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    @staticmethod
    def _where(rig: str) -> str:
        return f"rig = {_quote_str(rig)}"  # not the run tag: see the module docstring

    def _get(self, q: str, **extra) -> httpx.Response:
        try:
            r = self._http.get("/query", params={"db": self.target.database, "q": q, "epoch": "ns", **extra})
        except httpx.HTTPError as e:
            raise ExportError(f"InfluxDB at {self.target.url} is unreachable: {type(e).__name__}: {e}") from None
        if r.status_code != 200:
            raise ExportError(f"InfluxDB at {self.target.url} answered {r.status_code}: {r.text.strip()[:300]}")
        return r

    def _rows(self, q: str) -> list[list]:
        results = self._get(q).json().get("results", [])
        rows = []
        for res in results:
            if "error" in res:
                raise ExportError(f"InfluxDB refused {q!r}: {res['error']}")
            for s in res.get("series", []):
                rows.extend(s["values"])
        return rows

    def measurements(self, rig: str) -> list[str]:
        """The measurements holding samples of the rig, any time (not ``events`` or ``cycles``)."""
        names = [r[0] for r in self._rows(f"SHOW MEASUREMENTS WHERE {self._where(rig)}")]
        return [n for n in names if n not in NOT_DEVICES]

    def field_types(self, measurement: str) -> dict[str, str]:
        """Field name → InfluxDB type (float, integer, boolean, string) of a measurement."""
        seen: dict[str, set[str]] = {}
        for name, typ in self._rows(f"SHOW FIELD KEYS FROM {_quote_ident(measurement)}"):
            seen.setdefault(name, set()).add(typ)
        return {name: common_type(types) for name, types in seen.items()}

    def present_fields(self, measurement: str, rig: str, start_ns: int, stop_ns: int) -> set[str]:
        """The fields with at least one value of the rig in [start_ns, stop_ns] (other fields belong to other runs).

        ``first(*)``, not ``count(*)``: a field's first value in the span is found at the start of its
        first block (0.09 s for a 10-minute, 20 kHz × 14-field run), counting decodes every block (25 s).
        """
        q = (f"SELECT first(*) FROM {_quote_ident(measurement)} WHERE {self._where(rig)} "
             f"AND time >= {int(start_ns)} AND time <= {int(stop_ns)}")
        results = self._get(q).json().get("results", [])
        present = set()
        for res in results:
            if "error" in res:
                raise ExportError(f"InfluxDB refused {q!r}: {res['error']}")
            for s in res.get("series", []):
                for values in s["values"]:
                    present.update(c[len("first_"):] for c, v in zip(s["columns"], values, strict=True)
                                   if c.startswith("first_") and v is not None)
        return present

    def batches(self, device: Device, rig: str, start_ns: int, stop_ns: int) -> Iterator[pa.RecordBatch]:
        """The device's samples of the rig in [start_ns, stop_ns], oldest first: ``time`` (int64 ns) and channels.

        Windows ``time >= lo AND time < hi``, the last ``time >= lo AND time <= stop_ns``: each sample once.
        """
        names = ["name", "tags", "time"] + [f"c{i}" for i in range(len(device.channels))]
        types = {"time": pa.int64(), **{f"c{i}": ch.arrow_type for i, ch in enumerate(device.channels)}}
        convert = pacsv.ConvertOptions(column_types=types, include_columns=list(types), null_values=[""],
                                       strings_can_be_null=True, true_values=["true"], false_values=["false"])
        parse = pacsv.ParseOptions(newlines_in_values=True)
        schema = pa.schema([pa.field("time", pa.int64())]
                           + [pa.field(ch.name, ch.arrow_type) for ch in device.channels])
        fields = ",".join(_quote_ident(ch.name) for ch in device.channels)
        where = self._where(rig)
        lo, stop_ns = int(start_ns), int(stop_ns)
        while lo <= stop_ns:
            hi = lo + self.window_ns
            upper = f"time < {hi}" if hi <= stop_ns else f"time <= {stop_ns}"
            q = f"SELECT {fields} FROM {_quote_ident(device.name)} WHERE {where} AND time >= {lo} AND {upper}"
            yield from self._window(q, names, convert, parse, schema)
            lo = hi

    def _window(self, q, names, convert, parse, schema) -> Iterator[pa.RecordBatch]:
        params = {"db": self.target.database, "q": q, "epoch": "ns", "chunked": "true",
                  "chunk_size": str(self.chunk_rows)}
        try:
            with self._http.stream("GET", "/query", params=params, headers={"Accept": "application/csv"}) as r:
                if r.status_code != 200:
                    r.read()
                    raise ExportError(f"InfluxDB at {self.target.url} answered {r.status_code}: "
                                      f"{r.text.strip()[:300]}")
                chunks = r.iter_bytes()
                first = b""
                for first in chunks:
                    if first:
                        break
                if not first:
                    return  # no sample in this window
                if first.startswith(b"{"):  # an error comes as JSON whatever was asked for
                    raise ExportError(f"InfluxDB refused {q!r}: {(first + r.read()).decode(errors='replace')[:300]}")

                def body():
                    yield first
                    yield from chunks

                read = pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=self.block_bytes,
                                         use_threads=False)  # InfluxDB is the slower side: no read-ahead
                reader = pacsv.open_csv(io.BufferedReader(_ByteStream(body()), 1 << 20), read_options=read,
                                        parse_options=parse, convert_options=convert)
                for batch in reader:
                    if batch.num_rows:
                        yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)
        except httpx.HTTPError as e:
            raise ExportError(f"InfluxDB at {self.target.url} failed mid-export: {type(e).__name__}: {e}") from None
        except pa.ArrowInvalid as e:
            raise ExportError(f"InfluxDB's answer to {q!r} could not be read: {e}") from None


def load_run(cat: Catalogue, reader: InfluxRunReader, run_id: int, rigs: dict[str, dict]) -> RunInfo:
    """The run's metadata, devices (with channel types and units) and cycles; ExportError(404) if no such run.

    ``rigs``: rig name → {"kind": …, "devices": {device: {channel: unit}}} from the service file. The
    units are the run's own (recorded at its start, :func:`daq.catalogue.runs.run_config`); ``rigs``
    gives them, as the rig file is now, for a run that recorded none.
    The cycles are read whole (a few hundred bytes each).
    """
    run = cat.run(run_id)
    if run is None:
        raise ExportError(f"no run {run_id}", 404)
    rig_cfg = rigs.get(run.rig, {})
    stop_ns = run.stopped_ns if run.stopped_ns is not None else time.time_ns()
    meta = {"run_id": run.id, "rig": run.rig, "kind": (run.config or {}).get("kind") or rig_cfg.get("kind", ""),
            "operator": run.operator, "part_number": run.part_number, "lot": run.lot, "serial": run.serial,
            "notes": run.notes, "extra": dict(run.extra or {}), "started_by": run.started_by,
            "start_ns": int(run.started_ns), "stop_ns": int(stop_ns), "active": run.stopped_ns is None,
            "start": _iso(run.started_ns), "stop": _iso(stop_ns), "rigdaq_version": __version__}
    units = (run.config or {}).get("units") or rig_cfg.get("devices", {})
    devices = []
    for name in reader.measurements(run.rig):
        present = reader.present_fields(name, run.rig, run.started_ns, stop_ns)
        if not present:
            continue  # a device of the rig with no sample in the run's span
        types = {k: v for k, v in reader.field_types(name).items() if k in present}
        dev_units = units.get(name, {})
        order = [c for c in dev_units if c in types] + sorted(c for c in types if c not in dev_units)
        devices.append(Device(name, [Channel(c, types[c], dev_units.get(c, "")) for c in order]))
    devices.sort(key=lambda d: (list(units).index(d.name) if d.name in units else len(units), d.name))
    cycles = []
    offset = 0
    while True:
        _, rows = cat.cycles_of_run(run_id, limit=5000, offset=offset)
        cycles.extend({k: r[k] for k in CYCLE_KEYS} for r in rows)
        if len(rows) < 5000:
            break
        offset += len(rows)
    return RunInfo(meta, devices, cycles)


def _iso(t_ns: int) -> str:
    from datetime import UTC, datetime

    sec, ns = divmod(int(t_ns), 1_000_000_000)
    return datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns:09d}Z"


def metric_names(cycles: list[dict]) -> list[str]:
    """Every metric any cycle has, in first-seen order."""
    names: dict[str, None] = {}
    for c in cycles:
        names.update(dict.fromkeys(c["metrics"] or {}))
    return list(names)
