"""A run's samples for engineers' tools: HDF5, TDMS, MDF4, Parquet or CSV (see :mod:`daq.export`)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from pathlib import Path as FsPath
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from api.auth import QA
from api.deps import ServiceDep, catalogue_of
from daq.export import FORMATS, ExportError, export_in_worker, plan_for, worker_timeout_s

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/runs", tags=["export"])

RunId = Annotated[int, Path(ge=1, le=2**62, description="run id")]

#: exports at once per app (each worker process takes some 300–400 MB)
MAX_EXPORTS = 2
#: how long a request waits for a free slot before it gets 503
SLOT_WAIT_S = 5.0
#: the Retry-After of that 503 (s)
RETRY_AFTER_S = 60
#: spool directories (``<data_dir>/exports/run-*``) older than this are a killed export's leftovers
STALE_AFTER_S = 3600.0


def _slots(request: Request) -> asyncio.Semaphore:
    state = request.app.state
    if getattr(state, "export_slots", None) is None:
        state.export_slots = asyncio.Semaphore(MAX_EXPORTS)
    return state.export_slots


def _active(request: Request) -> set[FsPath]:
    state = request.app.state
    if getattr(state, "export_dirs", None) is None:
        state.export_dirs = set()
    return state.export_dirs


def sweep(spool: FsPath, keep: set[FsPath], now: float | None = None) -> None:
    """Delete ``spool/run-*`` left by a killed service or worker: untouched for an hour and not in ``keep``."""
    limit = (now if now is not None else time.time()) - STALE_AFTER_S
    for d in spool.glob("run-*"):
        if d in keep:
            continue
        try:
            newest = max([d.stat().st_mtime, *(f.stat().st_mtime for f in d.iterdir())] if d.is_dir()
                         else [d.stat().st_mtime])
            if newest >= limit:
                continue
            if d.is_dir():
                shutil.rmtree(d)
            else:
                d.unlink()
        except OSError as e:
            log.warning("export: cannot sweep %s: %s", d, e)
        else:
            log.info("export: swept %s, left by an export that did not finish", d)


@router.get("/{run_id}/export", summary="The run's samples as a file for engineers' tools",
            responses={200: {"content": {m: {} for *_, m in FORMATS.values()},
                             "description": "every channel of the run at its native rate, with units, "
                                            "the run's metadata and its cycles"},
                       404: {"description": "no such run"}, 409: {"description": "no v1 InfluxDB to read"},
                       502: {"description": "InfluxDB failed"},
                       503: {"description": "two exports are running already (Retry-After)"},
                       504: {"description": "the export took too long: use `daq export`"}})
async def export(run_id: RunId, service: ServiceDep, who: QA, request: Request,
                 format: Annotated[Literal["hdf5", "tdms", "mdf4", "parquet", "csv"],
                                   Query(description="hdf5 (h5py, MATLAB), tdms (DIAdem, LabVIEW), "
                                                     "mdf4 (asammdf, CANape), parquet (pandas), csv")]
                 ) -> FileResponse:
    """Every channel of the run from the line InfluxDB, as ``daq export`` writes it.

    The file is written by a worker process (the service's interpreter and memory stay out
    of it) into a temporary directory under the data dir, sent, then deleted; leftovers of
    exports that did not finish (a kill) are swept when an export starts. At most
    ``MAX_EXPORTS`` exports run at once: a request that finds no free slot within
    ``SLOT_WAIT_S`` gets 503 with Retry-After. A worker that takes longer than
    max(600 s, 2 × the run's span) is stopped: 504.
    """
    cat = catalogue_of(service)
    run = await asyncio.to_thread(cat.run, run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id}")
    _, _, suffix, media = FORMATS[format]
    slots = _slots(request)
    try:
        await asyncio.wait_for(slots.acquire(), SLOT_WAIT_S)
    except TimeoutError:
        raise HTTPException(503, f"{MAX_EXPORTS} exports are running already; try again in a minute, or export "
                                 f"on the service's machine: daq export {run_id} --format {format} -o FILE",
                            headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    try:
        return await _export(run_id, run, format, suffix, media, service, who, _active(request))
    finally:
        slots.release()


async def _export(run_id, run, format, suffix, media, service, who, active: set[FsPath]) -> FileResponse:
    spool = service.settings.data_dir / "exports"
    try:
        spool.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(sweep, spool, set(active))
        tmp = FsPath(tempfile.mkdtemp(prefix=f"run-{run_id}-", dir=spool))
    except OSError as e:
        raise HTTPException(507, f"cannot make room for the export under {spool}: {e.strerror or e}") from None
    active.add(tmp)

    def drop() -> None:
        shutil.rmtree(tmp, ignore_errors=True)
        active.discard(tmp)

    name = f"run-{run_id}-{run.rig}{suffix}"
    stop_ns = run.stopped_ns if run.stopped_ns is not None else time.time_ns()
    try:
        plan = plan_for(service.settings, run_id, format, tmp / name)
        await export_in_worker(plan, worker_timeout_s(stop_ns - run.started_ns))
    except ExportError as e:
        drop()
        raise HTTPException(e.status, str(e)) from None
    except BaseException:
        drop()
        raise
    log.info("run %d exported as %s for %s", run_id, format, who.name)
    return FileResponse(tmp / name, media_type=media, filename=name, background=BackgroundTask(drop))
