"""One cycle: its result, its samples (``curve``) and its plot.

A curve is served, by default, from the catalogue's archive: the very samples the
cycle was analysed from, which hash to its ``samples_sha256``. Only when the archive no
longer has them (``archive_max_mb``) does it come from InfluxDB, whose copy is not what
was hashed (host timestamps, no PLC channels). Every curve says which it is:
``X-Samples-SHA256`` is the SHA-256 of the samples served (as :func:`samples_hash`
computes it, time in s from the first sample) and ``X-Samples-SHA256-Match`` is
``true`` only when that equals the cycle's ``samples_sha256``.
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Annotated, Literal

import numpy as np
import orjson
from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import Response

from analysis.result import samples_hash
from api.auth import QA
from api.deps import ServiceDep, catalogue_of
from api.views import CycleOut, cycle_out
from daq.reports.plots import cycle_plot
from daq.reports.records import known_kind
from daq.storage.influx_v1 import InfluxError

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
    """The part of the stream the cycle's curve covers, as its rig's kind says.

    A press blow keeps ``pre_s``/``post_s`` around the contact; the analysed span when the
    rig or its kind is gone.
    """
    rig, kind = service.rigs.get(row["rig"]), known_kind(row["kind"])
    if rig is None or kind is None:
        return row["t_ns"], row["end_ns"]
    return kind.window(rig, row)


async def _from_influx(service, row: dict) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    device = row["info"].get("device")
    if service.client is None or not device:
        return None
    start, end = _window(service, row)
    try:
        return await service.client.curve(str(device), row["rig"], start, end)
    except InfluxError as e:
        log.info("curve of cycle %d from InfluxDB failed (%s); using the archive", row["id"], e)
        return None


async def cycle_samples(service, row: dict, source: str) -> tuple[str, np.ndarray, dict[str, np.ndarray]]:
    """(source used, t_ns, channels) of a cycle: the catalogue's archive (what was analysed) first.

    ``auto`` falls back to InfluxDB when the archive no longer has the cycle's samples.
    """
    if source in ("auto", "archive"):
        got = await asyncio.to_thread(catalogue_of(service).cycle_samples, row["id"])
        if got is not None:
            return "archive", *got
        if source == "archive":
            raise HTTPException(404, f"the archive has no samples of cycle {row['id']} (pruned by "
                                     "archive_max_mb?); source=influxdb gives InfluxDB's copy")
    got = await _from_influx(service, row)
    if got is not None:
        return "influxdb", *got
    if source == "influxdb":
        raise HTTPException(404, f"InfluxDB has no samples of cycle {row['id']} (retention?); "
                                 "source=archive gives the catalogue's copy")
    raise HTTPException(404, f"no samples of cycle {row['id']}: not archived and not in InfluxDB")


def curve_hash_headers(row: dict, used: str, t_ns: np.ndarray, chans: dict[str, np.ndarray]) -> dict[str, str]:
    """Which samples these are: their SHA-256 and whether it is the cycle's ``samples_sha256``."""
    served = samples_hash((t_ns - t_ns[0]) / 1e9, chans) if len(t_ns) else samples_hash(t_ns, chans)
    match = served == row["samples_sha256"]
    headers = {"X-Source": used, "X-Samples-SHA256": served, "X-Samples-SHA256-Match": "true" if match else "false"}
    if not match:
        why = ("InfluxDB's copy (host timestamps, the master device's channels only)" if used == "influxdb"
               else "the archived samples no longer hash to it")
        headers["X-Samples-Note"] = (f"these are not the samples cycle {row['id']} was analysed and hashed from: "
                                     f"{why}; its samples_sha256 is {row['samples_sha256']}")
    return headers


@router.get("/{cycle_id}/curve", summary="The cycle's samples",
            responses={200: {"content": {"application/json": {}, "text/csv": {}},
                             "description": "time (ns, and s from the window start) and every channel"}})
async def curve(cycle_id: CycleId, service: ServiceDep, who: QA,
                format: Annotated[Literal["json", "csv"], Query(description="json or csv")] = "json",
                source: Annotated[Literal["auto", "influxdb", "archive"],
                                  Query(description="auto: the archive (the samples that hash to the cycle's "
                                                    "samples_sha256), else InfluxDB")] = "auto") -> Response:
    """Every sample of the cycle's window: by default the archived samples the cycle was analysed from.

    ``X-Samples-SHA256`` is the SHA-256 of what is served (time in s from the first
    sample, then each channel in name order, float64 little-endian), and
    ``X-Samples-SHA256-Match`` says ``true`` only when it is the cycle's
    ``samples_sha256``; ``false`` (with ``X-Samples-Note``) when the samples come from
    InfluxDB or otherwise are not those that were hashed.
    """
    row = await _cycle(service, cycle_id)
    used, t_ns, chans = await cycle_samples(service, row, source)
    headers = curve_hash_headers(row, used, t_ns, chans)
    names = sorted(chans)
    if format == "csv":
        buf = io.StringIO()
        buf.write(",".join(["time", "t_ns", *names]) + "\n")
        t_s = (t_ns - t_ns[0]) / 1e9
        cols = np.column_stack([t_s, *(chans[k] for k in names)]) if names else t_s[:, None]
        for ts, line in zip(t_ns.tolist(), cols.tolist(), strict=True):
            buf.write(f"{line[0]!r},{ts}," + ",".join(repr(v) for v in line[1:]) + "\n")
        return Response(buf.getvalue(), media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="cycle-{cycle_id}.csv"', **headers})
    body = {"cycle": cycle_id, "rig": row["rig"], "source": used, "device": row["info"].get("device"),
            "samples_sha256": row["samples_sha256"], "served_sha256": headers["X-Samples-SHA256"],
            "samples_sha256_match": headers["X-Samples-SHA256-Match"] == "true",
            "t_ns": t_ns, "channels": {k: np.where(np.isfinite(chans[k]), chans[k], None).tolist()
                                       if not np.all(np.isfinite(chans[k])) else chans[k] for k in names}}
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json",
                    headers=headers)


@router.get("/{cycle_id}/plot.png", summary="The cycle's plot",
            responses={200: {"content": {"image/png": {}}, "description": "PNG"}})
async def plot(cycle_id: CycleId, service: ServiceDep, who: QA) -> Response:
    """The cycle as its rig's kind draws it.

    Force over position with the envelope band (press), torque and phase currents (motor);
    every channel over time otherwise.
    """
    row = await _cycle(service, cycle_id)
    _, t_ns, chans = await cycle_samples(service, row, "auto")
    rig = service.rigs.get(row["rig"])
    png = await asyncio.to_thread(cycle_plot, row, rig, t_ns, chans)
    return Response(png, media_type="image/png")
