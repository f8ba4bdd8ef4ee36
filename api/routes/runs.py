"""Runs: start and stop with metadata, list and filter, a run's cycles."""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field, field_validator

from api.auth import QA, Engineer, Operator
from api.deps import ServiceDep, catalogue_of
from api.inputs import epoch_ns, printable, printable_extra
from api.views import CycleOut, RunOut, SweepRow, cycle_out, run_out
from daq.catalogue.runs import RunError
from daq.reports.certificate import ReportError, rig_fallbacks
from daq.reports.records import run_sweep
from daq.reports.worker import WORKER, render_report, worker_can_open

log = logging.getLogger(__name__)


@asynccontextmanager
async def _report_worker(app):
    """The report worker (started by the first report) ends with the app."""
    try:
        yield
    finally:
        await asyncio.to_thread(WORKER.shutdown)


router = APIRouter(prefix="/api/runs", tags=["runs"], lifespan=_report_worker)

Text = Annotated[str, Field(max_length=200)]
RunId = Annotated[int, Path(ge=1, le=2**62, description="run id")]


class RunStart(BaseModel):
    """A run to start, with what identifies it on a certificate."""

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [{
        "rig": "press-01", "operator": "J. Müller", "part_number": "CRK-4411-B", "lot": "H23-0917",
        "serial": "DIE-A113", "notes": "first article", "extra": {"customer": "ACME"}}]}}

    rig: Text = Field(min_length=1)
    operator: Text = ""
    part_number: Text = ""
    lot: Text = Field(default="", description="lot or heat number")
    serial: Text = Field(default="", description="die serial (press) or motor serial (motor rig)")
    notes: Annotated[str, Field(max_length=4000)] = ""
    extra: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=200)]] = Field(
        default_factory=dict, max_length=32, description="further metadata, name → text")
    start_sequence: bool = Field(default=False, description="motor test rigs: also start the rig's test sequence")

    @field_validator("rig", "operator", "part_number", "lot", "serial", "notes")
    @classmethod
    def _printable(cls, v: str) -> str:
        return printable(v)

    @field_validator("extra")
    @classmethod
    def _printable_extra(cls, v: dict[str, str]) -> dict[str, str]:
        return printable_extra(v)


class RunPage(BaseModel):
    """One page of runs, newest first."""

    total: int
    limit: int
    offset: int
    runs: list[RunOut]


class CyclePage(BaseModel):
    """One page of a run's cycles, in time order."""

    run: int
    total: int
    limit: int
    offset: int
    cycles: list[CycleOut]


def _runs_or_503(service):
    if service.runs is None:
        raise HTTPException(503, "the service is still starting")
    return service.runs


@router.post("", summary="Start a run", status_code=201, response_model=RunOut)
async def start_run(body: RunStart, service: ServiceDep, who: Engineer) -> RunOut:
    """Start a run on a rig; its samples, cycles and events are tagged ``run=<id>`` until it stops.

    409 if the rig already has an active run.
    """
    runs = _runs_or_503(service)
    if body.start_sequence:  # refuse before anything starts when the rig cannot be told to
        if body.rig not in service.rigs:
            raise HTTPException(404, f"no rig {body.rig!r}; rigs are: {', '.join(sorted(service.rigs))}")
        try:
            service.writable_channel(body.rig, "command")
        except (KeyError, PermissionError) as e:
            raise HTTPException(422, f"start_sequence: {e.args[0]}") from None
    try:
        run = await runs.start(body.rig, operator=body.operator, part_number=body.part_number,
                               lot=body.lot, serial=body.serial, notes=body.notes, extra=body.extra,
                               started_by=who.name)
    except RunError as e:
        raise HTTPException(e.status, str(e)) from None
    if body.start_sequence:
        try:
            await service.write_channel(body.rig, "command", 1)
        except (KeyError, PermissionError, ConnectionError, OSError) as e:
            log.warning("run %d: could not start the test sequence: %s", run.id, e)
            raise HTTPException(409, f"run {run.id} started, but the test sequence could not: {e}") from None
        except Exception as e:  # a Modbus error reply
            raise HTTPException(502, f"run {run.id} started; the rig controller refused: {e}") from None
    return run_out(run)


@router.post("/{run_id}/stop", summary="Stop a run", response_model=RunOut)
async def stop_run(run_id: RunId, service: ServiceDep, who: Engineer) -> RunOut:
    """Stop an active run (409 if it was already stopped, 404 if there is none)."""
    try:
        run = await _runs_or_503(service).stop(run_id, by=who.name)
    except RunError as e:
        raise HTTPException(e.status, str(e)) from None
    return run_out(run)


@router.get("", summary="List runs", response_model=RunPage)
async def list_runs(service: ServiceDep, who: Operator,
                    rig: Annotated[str | None, Query(max_length=64)] = None,
                    part_number: Annotated[str | None, Query(max_length=200)] = None,
                    lot: Annotated[str | None, Query(max_length=200)] = None,
                    since: Annotated[datetime | None, Query(description="started at or after (ISO 8601)")] = None,
                    until: Annotated[datetime | None, Query(description="started before (ISO 8601)")] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> RunPage:
    """Runs, newest first, filtered by rig, part number, lot and start time; paginated."""
    cat = catalogue_of(service)
    total, rows = await asyncio.to_thread(cat.list_runs, rig, part_number, lot, epoch_ns(since), epoch_ns(until),
                                          limit, offset)
    return RunPage(total=total, limit=limit, offset=offset, runs=[run_out(r) for r in rows])


@router.get("/{run_id}", summary="One run", response_model=RunOut)
async def get_run(run_id: RunId, service: ServiceDep, who: Operator) -> RunOut:
    """A run with its metadata, cycle counts, artifacts and (motor rigs) torque–speed table."""
    cat = catalogue_of(service)
    run = await asyncio.to_thread(cat.run, run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id}")
    counts = await asyncio.to_thread(cat.verdict_counts, run_id)  # SELECT COUNT … GROUP BY verdict
    arts = await asyncio.to_thread(cat.artifacts_of_run, run_id)
    table = await asyncio.to_thread(run_sweep, cat, run)  # read in pages, and only for kinds that have one
    return run_out(run, counts, arts, [SweepRow(**row) for row in table])


@router.get("/{run_id}/cycles", summary="A run's cycles", response_model=CyclePage)
async def run_cycles(run_id: RunId, service: ServiceDep, who: QA,
                     verdict: Annotated[str | None, Query(pattern="^(ok|nok)$")] = None,
                     since: Annotated[datetime | None, Query(description="cycles starting at or after")] = None,
                     until: Annotated[datetime | None, Query(description="cycles starting before")] = None,
                     limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
                     offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> CyclePage:
    """Cycles with metrics, verdict and reasons, in time order; paginated, by verdict and start time."""
    cat = catalogue_of(service)
    run = await asyncio.to_thread(cat.run, run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id}")
    total, rows = await asyncio.to_thread(cat.cycles_of_run, run_id, limit, offset, verdict, epoch_ns(since),
                                          epoch_ns(until))
    return CyclePage(run=run_id, total=total, limit=limit, offset=offset, cycles=[cycle_out(r) for r in rows])


@router.get("/{run_id}/report", summary="The run's certification report",
            responses={200: {"content": {"application/pdf": {}, "application/json": {}, "text/csv": {}},
                             "description": "the certificate in the format asked for"}})
async def report(run_id: RunId, service: ServiceDep, who: QA,
                 format: Annotated[Literal["pdf", "json", "csv"], Query(description="pdf, json or csv")] = "pdf"
                 ) -> Response:
    """Certificate for a run: traceability, instruments, method, limits, per-cycle table, capability.

    Also the control chart with Nelson flags and their expected false-alarm rate, the
    overall verdict, every cycle's samples hash, the report's own content hash (header
    ``X-Content-SHA256``) and the QA signatures. Rendered in a worker process of its own
    (:mod:`daq.reports.worker`), so a long run's certificate never stalls acquisition or the
    other API calls; the file is streamed from there.
    """
    cat = catalogue_of(service)
    rigs = rig_fallbacks(service.rigs)
    try:
        if worker_can_open(cat.url):
            done = await WORKER.render(cat.url, run_id, format, rigs)
        else:  # an in-memory catalogue no other process can open
            done = await asyncio.to_thread(render_report, cat, run_id, format, rigs)
    except ReportError as e:
        raise HTTPException(404, str(e)) from None
    except BrokenProcessPool:
        raise HTTPException(503, "the report worker stopped while rendering; try again") from None
    f = open(done.path, "rb")  # noqa: SIM115 (closed by the stream)
    os.unlink(done.path)  # gone once sent (or the client leaves): nothing left behind in the temporary dir
    size = os.fstat(f.fileno()).st_size

    def stream():
        with f:
            while chunk := f.read(1 << 20):
                yield chunk

    return StreamingResponse(stream(), media_type=done.media_type,
                             headers={"Content-Disposition": f'attachment; filename="{done.filename}"',
                                      "Content-Length": str(size), "X-Content-SHA256": done.content_sha256})
