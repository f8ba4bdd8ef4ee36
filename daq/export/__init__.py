"""Run export for engineers' tools.

Every channel of a run at its native rate, with units, the run's metadata and its
cycles, in the format a tool opens.

| format | library | opens in |
|---|---|---|
| ``hdf5`` | h5py | h5py, MATLAB ``h5read``, HDFView |
| ``tdms`` | npTDMS | NI DIAdem, LabVIEW, npTDMS |
| ``mdf4`` | asammdf | asammdf (GUI), CANape, other ASAM MDF 4 tools |
| ``parquet`` | pyarrow | pandas ``read_parquet``, polars, Spark, DuckDB |
| ``csv`` | pyarrow | pandas ``read_csv(comment="#")``, spreadsheets |

Samples stream from the line InfluxDB (:mod:`.source`) into the file batch by batch
(:mod:`.hdf5`, :mod:`.tdms`, :mod:`.mdf4`, :mod:`.tables`), so the samples' share of memory
does not grow with the run; the cycles do: they are held in memory (a few hundred bytes per
cycle) and Parquet writes them into its footer metadata (JSON) in one piece.
:func:`export_run` does it in this process (``daq export``); :func:`export_in_worker` in a
child process (the API: the service's interpreter and memory stay out of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from daq.export.plan import ExportError, InfluxTarget

log = logging.getLogger(__name__)

#: format → (module, writer class, file suffix, media type)
FORMATS: dict[str, tuple[str, str, str, str]] = {
    "hdf5": ("daq.export.hdf5", "Hdf5Writer", ".h5", "application/x-hdf5"),
    "tdms": ("daq.export.tdms", "TdmsExportWriter", ".tdms", "application/octet-stream"),
    "mdf4": ("daq.export.mdf4", "Mdf4Writer", ".mf4", "application/octet-stream"),
    "parquet": ("daq.export.tables", "ParquetExportWriter", ".parquet", "application/vnd.apache.parquet"),
    "csv": ("daq.export.tables", "CsvExportWriter", ".csv", "text/csv"),
}

__all__ = ["FORMATS", "ExportError", "ExportPlan", "export_in_worker", "export_run", "plan_for", "worker_timeout_s"]

#: the API worker's timeout: at least this long …
MIN_WORKER_TIMEOUT_S = 600.0
#: … or this many times the run's span (an export reads far faster than the run recorded)
WORKER_TIMEOUT_PER_RUN_S = 2.0


def worker_timeout_s(span_ns: int) -> float:
    """How long the API's worker may take for a run spanning ``span_ns``: max(600 s, 2 × the span)."""
    return max(MIN_WORKER_TIMEOUT_S, WORKER_TIMEOUT_PER_RUN_S * max(int(span_ns), 0) / 1e9)


@dataclass
class ExportPlan:
    """Everything an export needs, as plain values (it travels to a worker process as JSON)."""

    run_id: int
    format: str
    output: str
    catalogue_url: str
    influx: InfluxTarget
    #: rig name → {"kind": …, "devices": {device: {channel: unit}}}
    rigs: dict[str, dict] = field(default_factory=dict)
    window_s: float = 30.0

    def to_json(self) -> str:
        """The plan as JSON."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ExportPlan:
        """The plan from :meth:`to_json`."""
        d = json.loads(text)
        d["influx"] = InfluxTarget(**d["influx"])
        return cls(**d)


def plan_for(settings, run_id: int, fmt: str, output: str | Path, window_s: float = 30.0) -> ExportPlan:
    """The plan for exporting ``run_id`` of a service file's catalogue and line InfluxDB.

    ExportError (422) for an unknown format; (409) when the service file has no line InfluxDB
    or it speaks the v2 API only (the export reads InfluxQL through the v1 API).
    """
    if fmt not in FORMATS:
        raise ExportError(f"no export format {fmt!r}; formats are {', '.join(FORMATS)}", 422)
    cfg = settings.storage.influxdb
    if cfg is None:
        raise ExportError(f"{settings.path}: no [storage.influxdb]: there are no samples to export", 409)
    if cfg.api != "v1":
        raise ExportError(f"{settings.path}: [storage.influxdb] api = \"v2\": the export reads samples "
                          "through InfluxDB's v1 query API (InfluxQL); point a v1 [storage.influxdb] at it", 409)
    rigs = {r.name: {"kind": r.kind, "devices": {d.name: d.channel_units() for d in r.devices}}
            for r in settings.rigs}
    target = InfluxTarget(cfg.url, cfg.database, cfg.username, cfg.password, max(cfg.timeout_s, 60.0))
    return ExportPlan(run_id, fmt, str(output), settings.catalogue_url, target, rigs, window_s)


def _writer(fmt: str):
    import importlib

    module, name, _, _ = FORMATS[fmt]
    return getattr(importlib.import_module(module), name)


def export_run(plan: ExportPlan, catalogue=None) -> dict:
    """Write the run to ``plan.output``; a summary (samples per device, cycles, bytes).

    ExportError: 404 no such run, 502 InfluxDB failed; OSError when the file cannot be
    written (IsADirectoryError when ``plan.output`` is a directory). The file is written under
    a temporary name next to it and moved into place when complete: a failed export leaves no
    file behind (and an existing file at ``plan.output`` as it was).
    """
    from daq.catalogue import Catalogue
    from daq.export.source import InfluxRunReader, load_run

    out = Path(plan.output)
    if out.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(out))
    own = catalogue is None
    cat = catalogue or Catalogue(plan.catalogue_url)
    reader = InfluxRunReader(plan.influx, window_s=plan.window_s)
    part = out.with_name(f".{out.name}.{os.getpid()}.part")
    writer = None
    try:
        info = load_run(cat, reader, plan.run_id, plan.rigs)
        try:
            writer = _writer(plan.format)(part, info)
            counts = {}
            for dev in info.devices:
                writer.begin(dev)
                n = 0
                for batch in reader.batches(dev, info.meta["rig"], info.meta["start_ns"], info.meta["stop_ns"]):
                    writer.write(dev, batch)
                    n += batch.num_rows
                writer.end(dev)
                counts[dev.name] = n
            w, writer = writer, None
            w.close()
            os.replace(part, out)
        except BaseException:
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.abort()
            with contextlib.suppress(OSError):
                part.unlink()
            raise
    finally:
        reader.close()
        if own:
            cat.close()
    return {"run_id": plan.run_id, "format": plan.format, "output": str(out), "samples": counts,
            "cycles": len(info.cycles), "bytes": out.stat().st_size}


async def export_in_worker(plan: ExportPlan, timeout_s: float = MIN_WORKER_TIMEOUT_S) -> dict:
    """:func:`export_run` in a child process (``python -m daq.export``): its summary; ExportError on failure.

    After ``timeout_s`` (see :func:`worker_timeout_s`) the worker is killed and ExportError(504) says to
    export on the command line instead.
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daq.export", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(plan.to_json().encode()), timeout_s)
    except BaseException as e:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        if isinstance(e, TimeoutError):
            raise ExportError(
                f"the export of run {plan.run_id} took longer than {timeout_s:.0f} s and was stopped; export it "
                f"on the service's machine instead: daq export {plan.run_id} --format {plan.format} -o FILE",
                504) from None
        raise
    if proc.returncode != 0:
        try:
            answer = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise ExportError(f"the export worker failed (exit {proc.returncode}): "
                              f"{err.decode(errors='replace').strip()[-500:]}", 500) from None
        raise ExportError(answer["error"], answer["status"])
    return json.loads(out.decode().strip().splitlines()[-1])
