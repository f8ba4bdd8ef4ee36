"""Simulated blows → live segmentation → analysis → InfluxDB `cycles` and the rigs view."""

from __future__ import annotations

import asyncio

import pytest

from analysis.press import analyse
from analysis.result import samples_hash
from api.routes.rigs import list_rigs
from daq.catalogue import Catalogue
from daq.cycles import press_params
from daq.service import Service
from daq.storage.influx_v1 import series_rows
from tests.integration.helpers import press_settings


async def test_each_blow_becomes_one_analysed_cycle(tmp_path, influxd, influx, database):
    settings = press_settings(tmp_path, influxd.url, database, poll_hz=50)
    service = Service(settings)
    await service.start()
    run = await service.runs.start("press-01", operator="Ann O'Hara", part_number="CRK 44,11=B", lot="H23")
    await asyncio.sleep(11.0)  # the first blow comes after ≈1.9 s, then one every ≈4.5 s
    rigs = list_rigs(service, None)
    await service.stop()
    [rig] = rigs
    assert rig.last_verdict in ("ok", "nok") and rig.last_cycle >= 2
    rows = series_rows(await influx.query(
        "SELECT cycle_no, peak_force_kN, forming_energy_kJ, impact_velocity_m_s, blow_energy_kJ, "
        "efficiency, contact_time_ms, max_channel_share, cycle_time_s, samples_sha256, verdict "
        "FROM cycles"))
    assert [r["cycle_no"] for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 2
    for r in rows:  # the physics of the simulated 100 MN press
        assert 85_000 < r["peak_force_kN"] < 105_000
        assert 2_000 < r["forming_energy_kJ"] < 2_600
        assert 0.6 < r["impact_velocity_m_s"] < 0.75
        assert 2_200 < r["blow_energy_kJ"] < 2_700
        assert 0.8 < r["efficiency"] < 1.05
        assert 100 < r["contact_time_ms"] < 200
        assert 0.25 <= r["max_channel_share"] < 0.3
        assert len(r["samples_sha256"]) == 64 and r["verdict"] in ("ok", "nok")
    # the cycle time of a blow is filled in when the next one starts
    assert rows[0]["cycle_time_s"] == pytest.approx(4.5, abs=0.3)

    # the catalogue has every cycle of the run, its archived samples hash to the stored SHA-256
    cat = Catalogue(settings.catalogue_url)
    total, filed = cat.cycles_of_run(run.id)
    assert total == len(rows) and [c["cycle_no"] for c in filed] == [r["cycle_no"] for r in rows]
    for c in filed:
        assert c["metrics"]["peak_force_kN"] == pytest.approx(
            next(r["peak_force_kN"] for r in rows if r["cycle_no"] == c["cycle_no"]))
        t_ns, chans = cat.cycle_samples(c["id"])
        assert len(t_ns) > 1000 and {"force", "position"} <= set(chans)
        assert samples_hash((t_ns - t_ns[0]) / 1e9, chans) == c["samples_sha256"]
        # re-analysed from the archive (as after InfluxDB's retention): the same result
        [again] = analyse((t_ns - t_ns[0]) / 1e9, chans, press_params(settings.rigs[0]))
        for k, v in again.metrics.items():
            if k != "cycle_time_s":
                assert v == pytest.approx(c["metrics"][k], rel=1e-12), k
        assert c["info"]["part"] >= 1 and c["info"]["device"] == "press01_amp"
    assert cat.run(run.id).operator == "Ann O'Hara"
    # samples, cycles and events of the run carry its id as the `run` tag
    tagged = series_rows(await influx.query(f"SELECT count(force) FROM press01_amp WHERE run = '{run.id}'"))
    assert tagged[0]["count"] > 50_000
    tagged = series_rows(await influx.query(f"SELECT count(cycle_no) FROM cycles WHERE run = '{run.id}'"))
    assert tagged[0]["count"] == len(rows)
    ev = series_rows(await influx.query("SELECT message, run_id FROM events WHERE kind = 'run_start'"))
    assert ev[0]["run_id"] == run.id
