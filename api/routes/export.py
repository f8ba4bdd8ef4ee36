"""A run's samples for engineers' tools: HDF5, TDMS, MDF4, Parquet or CSV (see :mod:`daq.export`)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from pathlib import Path as FsPath
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from api.auth import QA
from api.deps import ServiceDep, catalogue_of
from daq.export import FORMATS, ExportError, export_in_worker, plan_for

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/runs", tags=["export"])

RunId = Annotated[int, Path(ge=1, le=2**62, description="run id")]


@router.get("/{run_id}/export", summary="The run's samples as a file for engineers' tools",
            responses={200: {"content": {m: {} for *_, m in FORMATS.values()},
                             "description": "every channel of the run at its native rate, with units, "
                                            "the run's metadata and its cycles"},
                       404: {"description": "no such run"}, 409: {"description": "no v1 InfluxDB to read"},
                       502: {"description": "InfluxDB failed"}})
async def export(run_id: RunId, service: ServiceDep, who: QA,
                 format: Annotated[Literal["hdf5", "tdms", "mdf4", "parquet", "csv"],
                                   Query(description="hdf5 (h5py, MATLAB), tdms (DIAdem, LabVIEW), "
                                                     "mdf4 (asammdf, CANape), parquet (pandas), csv")]
                 ) -> FileResponse:
    """Every channel of the run from the line InfluxDB, as ``daq export`` writes it.

    The file is written by a worker process (the service's interpreter and memory stay out
    of it) into a temporary file under the data dir, sent, then deleted.
    """
    cat = catalogue_of(service)
    run = await asyncio.to_thread(cat.run, run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id}")
    _, _, suffix, media = FORMATS[format]
    spool = service.settings.data_dir / "exports"
    try:
        spool.mkdir(parents=True, exist_ok=True)
        tmp = FsPath(tempfile.mkdtemp(prefix=f"run-{run_id}-", dir=spool))
    except OSError as e:
        raise HTTPException(507, f"cannot make room for the export under {spool}: {e.strerror or e}") from None
    name = f"run-{run_id}-{run.rig}{suffix}"
    try:
        plan = plan_for(service.settings, run_id, format, tmp / name)
        await export_in_worker(plan)
    except ExportError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise HTTPException(e.status, str(e)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("run %d exported as %s for %s", run_id, format, who.name)
    return FileResponse(tmp / name, media_type=media, filename=name,
                        background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True))
