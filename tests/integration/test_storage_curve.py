"""A cycle's curve read back by the storage clients themselves: ``curve()`` of v1 (a real influxd)
and of v2 (VictoriaMetrics, which takes the v2 write API and serves ``/api/v1/export``).

Exact values: what was written is what comes back. From VictoriaMetrics as it keeps them:
timestamps at whole milliseconds, values with up to 12 significant digits, no order
inside a millisecond (compared there as the set of values written in it).
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from api.routes.cycles import curve
from daq.catalogue import Catalogue
from daq.storage.influx_v1 import InfluxError, InfluxV1Client
from daq.storage.influx_v2 import InfluxV2Client
from daq.storage.lineproto import block_bytes, series_key
from drivers.block import Block
from tests.integration.test_cycle_curve_hash import _blow_with_plc
from tests.integration.test_v2_victoria import victoria  # noqa: F401  (the VictoriaMetrics fixture)

T = 1_795_770_843_120_000_000  # ns, on a whole millisecond
RIG = "press 'A'\\1"  # quote, space and backslash: escaped in the query
FORCE = [0.1, 1 / 3, -2.5e-7, 123456.789, 9.0, 7.25]  # InfluxDB keeps every float64 bit
FORCE_VM = [0.1, 0.3333, -2.5e-7, 123456.789, 9.0, 7.25]  # VictoriaMetrics keeps ~12 significant digits
POSITION = [10.5, 11.0, None, 12.125, 13.0, 14.5]


def _lines(measurement: str, rig: str, times: list[int], run: str | None = "3", first: int = 0,
           force: list[float] = FORCE) -> bytes:
    """Line protocol of force/POSITION[first:] at ``times``, with a ``sample`` counter and a string field."""
    tags = series_key(measurement, {"rig": rig, "run": run or ""})
    out = []
    for k, (t, f, x) in enumerate(zip(times, force[first:], POSITION[first:], strict=False), start=first):
        fields = f"force={f!r},sample={k}i" + ("" if x is None else f",position={x!r}") + ',note="blow"'
        out.append(f"{tags} {fields} {t}")
    return ("\n".join(out) + "\n").encode()


async def test_v1_curve_gives_back_exactly_what_was_written(influx):
    times = [T + k * 100_000 for k in range(6)]  # 10 kHz
    await influx.write(_lines("amp 1", RIG, times))
    await influx.write(_lines("amp 1", "press-02", times))  # another rig, same window
    await influx.write(_lines("amp 1", RIG, [T - 10**9 + k for k in range(6)]))  # before the window
    await influx.write(_lines("amp 2", RIG, [T + 7 + k for k in range(6)]))  # another measurement

    t, chans = await influx.curve("amp 1", RIG, T, times[-1])  # both ends included
    assert t.dtype == np.int64 and t.tolist() == times
    assert sorted(chans) == ["force", "position"]  # no rig/run tags, no sample counter, no string field
    assert chans["force"].dtype == np.float64 and chans["force"].tolist() == FORCE
    pos = chans["position"]
    assert np.isnan(pos[2]) and [v for k, v in enumerate(pos.tolist()) if k != 2] == [
        v for v in POSITION if v is not None]

    t, chans = await influx.curve("amp 1", RIG, times[1], times[3])
    assert t.tolist() == times[1:4] and chans["force"].tolist() == FORCE[1:4]
    assert await influx.curve("amp 1", RIG, T + 10**9, T + 2 * 10**9) is None  # nothing in the window
    assert await influx.curve("amp 1", "press-03", T, times[-1]) is None
    assert await influx.curve('amp "9"', RIG, T, times[-1]) is None  # no such measurement


async def test_v1_curve_errors_are_influx_errors():
    client = InfluxV1Client("http://127.0.0.1:1", "x", timeout_s=2)
    with pytest.raises(InfluxError) as e:
        await client.curve("amp", "press-01", T, T + 1)
    assert e.value.kind == "unreachable"
    await client.aclose()


async def _flushed_curve(client: InfluxV2Client, url: str, *args, n: int):
    """VictoriaMetrics makes fresh samples searchable after a flush, within moments."""
    got = None
    for _ in range(50):
        httpx.get(f"{url}/internal/force_flush")
        got = await client.curve(*args)
        if got is not None and len(got[0]) >= n:
            break
        await asyncio.sleep(0.1)
    return got


def _per_ms(t_ns, values) -> dict[int, list[float]]:
    """Values by millisecond, sorted within it: VictoriaMetrics keeps no order inside a millisecond."""
    out: dict[int, list[float]] = {}
    for t, v in zip(t_ns, values, strict=True):
        if v is not None and v == v:  # NaN: no value there
            out.setdefault(int(t) // 1_000_000, []).append(float(v))
    return {k: sorted(v) for k, v in out.items()}


async def test_v2_curve_from_victoriametrics_at_milliseconds(victoria):  # noqa: F811
    client = InfluxV2Client(victoria, "tok", "plant", "rigdaq")
    ms = 1_000_000
    # three samples in the first millisecond (off the grid), then one a millisecond; the run tag on some only
    times = [T + 250_000, T + 500_000, T + 750_000, T + ms + 100, T + 3 * ms + 999_999, T + 5 * ms + 3]
    await client.write(_lines("amp 1", RIG, times[:3], force=FORCE_VM)
                       + _lines("amp 1", RIG, times[3:], run=None, first=3, force=FORCE_VM))
    await client.write(_lines("amp 1", "press-02", times))  # another rig
    await client.write(_lines("amp 2", RIG, times))  # another measurement ("amp 2_…" is not "amp 1_…")
    await client.write(_lines("amp 1", RIG, [T - ms + 7] + [T + 6 * ms + k for k in range(5)]))  # 1 ms either side

    start, end = T + 600_000, T + 5 * ms + 400_000  # cut at whole milliseconds: [T, T + 5 ms]
    got = await _flushed_curve(client, victoria, "amp 1", RIG, start, end, n=len(times))
    assert got is not None
    t, chans = got
    assert t.dtype == np.int64 and t.tolist() == [x // ms * ms for x in times]  # every sample, at its millisecond
    assert set(chans) == {"force", "position", "note"}  # a string field arrives as 0 (VictoriaMetrics)
    assert all(v.dtype == np.float64 and len(v) == len(t) for v in chans.values())
    # one sample a millisecond: the very rows written; inside one millisecond: the values written, in some order
    assert chans["force"][3:].tolist() == FORCE_VM[3:] and chans["position"][3:].tolist() == POSITION[3:]
    assert _per_ms(t, chans["force"]) == _per_ms(times, FORCE_VM)
    assert _per_ms(t, chans["position"]) == _per_ms(times, POSITION)
    assert np.isnan(chans["position"]).sum() == 1  # the sample written without a position
    assert chans["note"].tolist() == [0.0] * 6

    assert await client.curve("amp 1", RIG, T + 10 * ms, T + 20 * ms) is None
    assert await client.curve("amp 1", "press-03", start, end) is None
    await client.aclose()


async def test_v2_curve_where_there_is_no_export_is_an_influx_error(influxd):
    client = InfluxV2Client(influxd.url, "tok", "plant", "rigdaq")  # influxd 1.x: no /api/v1/export
    with pytest.raises(InfluxError, match="no /api/v1/export"):
        await client.curve("amp", "press-01", T, T + 1)
    await client.aclose()
    client = InfluxV2Client("http://127.0.0.1:1", "tok", "plant", "rigdaq", timeout_s=2)
    with pytest.raises(InfluxError) as e:
        await client.curve("amp", "press-01", T, T + 1)
    assert e.value.kind == "unreachable"
    await client.aclose()


async def test_the_curve_route_reads_a_v2_store_too(tmp_path, victoria):  # noqa: F811
    """``source=influxdb`` on a v2 service: the amplifier's samples at milliseconds, in order."""
    t_ns, chans, c = _blow_with_plc()
    chans = {k: np.round(v, 3) for k, v in chans.items()}  # what VictoriaMetrics keeps exactly (~12 digits)
    cat = Catalogue(f"sqlite:///{tmp_path}/catalogue.sqlite")
    cid = cat.file_cycle(c)
    client = InfluxV2Client(victoria, "tok", "plant", "rigdaq")
    body, _, _ = block_bytes("amp", {"rig": "press-01"}, Block("amp", t_ns, chans, np.zeros(len(t_ns), np.uint8)))
    await client.write(body)
    rig = SimpleNamespace(kind="screw_press", segmentation=SimpleNamespace(pre_s=0.3, post_s=0.1))
    service = SimpleNamespace(catalogue=cat, client=client, rigs={"press-01": rig})
    start, end = c.t_ns - int(0.3e9), c.end_ns + int(0.1e9)
    ms = 1_000_000
    inside = (t_ns // ms >= start // ms) & (t_ns // ms <= end // ms)
    await _flushed_curve(client, victoria, "amp", "press-01", start, end, n=int(inside.sum()))

    r = await curve(cid, service, None, format="json", source="influxdb")
    assert r.headers["x-source"] == "influxdb" and r.headers["x-samples-sha256-match"] == "false"
    j = json.loads(r.body)
    assert j["t_ns"] == (t_ns[inside] // ms * ms).tolist()  # 10 kHz: ten samples a millisecond, all there
    assert sorted(j["channels"]) == sorted(chans)
    for k, v in chans.items():
        assert _per_ms(j["t_ns"], j["channels"][k]) == _per_ms(t_ns[inside], v[inside])
    cat.close()
    await client.aclose()
