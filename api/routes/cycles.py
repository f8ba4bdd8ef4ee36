"""One cycle: its result, its samples (``curve``) and its plot."""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Annotated, Literal

import numpy as np
import orjson
from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import Response

from api.auth import QA
from api.deps import ServiceDep, catalogue_of
from api.plots import cycle_plot
from api.views import CycleOut, cycle_out
from daq.storage.influx_v1 import InfluxError, InfluxV1Client, series_rows

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/cycles", tags=["cycles"])

CycleId = Annotated[int, Path(ge=1, le=2**62, description="cycle id")]


async def _cycle(service, cycle_id: int) -> dict:
    row = await asyncio.to_thread(catalogue_of(service).cycle, cycle_id)
    if row is None:
        raise HTTPException(404, f"no cycle {cycle_id}")
    return row


@router.get("/{cycle_id}", summary="One cycle's result", response_model=CycleOut)
async def get_cycle(cycle_id: CycleId, service: ServiceDep, who: QA) -> CycleOut:
    """Metrics, verdict, reasons, analysis version and the SHA-256 of the samples analysed."""
    return cycle_out(await _cycle(service, cycle_id))


def _window(service, row: dict) -> tuple[int, int]:
    """The analysed window: press blows keep ``pre_s``/``post_s`` around the contact."""
    rig = service.rigs.get(row["rig"])
    if rig is not None and rig.kind == "screw_press":
        return row["t_ns"] - int(rig.segmentation.pre_s * 1e9), row["end_ns"] + int(rig.segmentation.post_s * 1e9)
    return row["t_ns"], row["end_ns"]


async def _from_influx(service, row: dict) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    device = row["info"].get("device")
    if not isinstance(service.client, InfluxV1Client) or not device:
        return None  # the v2 API has no InfluxQL here: the archive answers
    start, end = _window(service, row)
    rig = row["rig"].replace("\\", "\\\\").replace("'", "\\'")
    meas = str(device).replace('"', '\\"')
    q = f"SELECT * FROM \"{meas}\" WHERE rig = '{rig}' AND time >= {start} AND time <= {end}"
    try:
        rows = series_rows(await service.client.query(q))
    except InfluxError as e:
        log.info("curve of cycle %d from InfluxDB failed (%s); using the archive", row["id"], e)
        return None
    if not rows:
        return None
    t = np.array([r["time"] for r in rows], dtype=np.int64)
    skip = {"time", "rig", "run", "sample"}
    chans = {}
    for k in rows[0]:
        if k in skip:
            continue
        vals = [r.get(k) for r in rows]
        if all(isinstance(v, int | float) or v is None for v in vals):
            chans[k] = np.array([np.nan if v is None else v for v in vals], dtype=np.float64)
    return t, chans


async def cycle_samples(service, row: dict, source: str) -> tuple[str, np.ndarray, dict[str, np.ndarray]]:
    """(source used, t_ns, channels) of a cycle: InfluxDB first, the catalogue's archive after."""
    if source in ("auto", "influxdb"):
        got = await _from_influx(service, row)
        if got is not None:
            return "influxdb", *got
        if source == "influxdb":
            raise HTTPException(404, f"InfluxDB has no samples of cycle {row['id']} (retention?); "
                                     "source=archive gives the catalogue's copy")
    got = await asyncio.to_thread(catalogue_of(service).cycle_samples, row["id"])
    if got is None:
        raise HTTPException(404, f"no samples of cycle {row['id']}: not in InfluxDB and not archived")
    return "archive", *got


@router.get("/{cycle_id}/curve", summary="The cycle's samples",
            responses={200: {"content": {"application/json": {}, "text/csv": {}},
                             "description": "time (ns, and s from the window start) and every channel"}})
async def curve(cycle_id: CycleId, service: ServiceDep, who: QA,
                format: Annotated[Literal["json", "csv"], Query(description="json or csv")] = "json",
                source: Annotated[Literal["auto", "influxdb", "archive"],
                                  Query(description="auto: InfluxDB, else the archive")] = "auto") -> Response:
    """Every sample of the cycle's window, from InfluxDB or (after retention) the archive."""
    row = await _cycle(service, cycle_id)
    used, t_ns, chans = await cycle_samples(service, row, source)
    names = sorted(chans)
    if format == "csv":
        buf = io.StringIO()
        buf.write(",".join(["time", "t_ns", *names]) + "\n")
        t_s = (t_ns - t_ns[0]) / 1e9
        cols = np.column_stack([t_s, *(chans[k] for k in names)]) if names else t_s[:, None]
        for ts, line in zip(t_ns.tolist(), cols.tolist(), strict=True):
            buf.write(f"{line[0]!r},{ts}," + ",".join(repr(v) for v in line[1:]) + "\n")
        return Response(buf.getvalue(), media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="cycle-{cycle_id}.csv"', "X-Source": used})
    body = {"cycle": cycle_id, "rig": row["rig"], "source": used, "device": row["info"].get("device"),
            "t_ns": t_ns, "channels": {k: np.where(np.isfinite(chans[k]), chans[k], None).tolist()
                                       if not np.all(np.isfinite(chans[k])) else chans[k] for k in names}}
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json",
                    headers={"X-Source": used})


@router.get("/{cycle_id}/plot.png", summary="The cycle's plot",
            responses={200: {"content": {"image/png": {}}, "description": "PNG"}})
async def plot(cycle_id: CycleId, service: ServiceDep, who: QA) -> Response:
    """Force over position with the envelope band (press); torque and phase currents (motor)."""
    row = await _cycle(service, cycle_id)
    _, t_ns, chans = await cycle_samples(service, row, "auto")
    rig = service.rigs.get(row["rig"])
    png = await asyncio.to_thread(cycle_plot, row, rig, t_ns, chans)
    return Response(png, media_type="image/png")
