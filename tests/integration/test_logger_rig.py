"""The lab logger end to end: simulated scanner (TCP), power meter (RTU) and room sensor (stream).

A run is logged for about two seconds; its ``channel_summary`` must be what the samples
InfluxDB holds for that run give, and its hashes must be recomputable from them exactly.
"""

from __future__ import annotations

import asyncio
import io
import time

import numpy as np
import pytest
from pypdf import PdfReader

from daq.catalogue import Catalogue
from daq.config import load_settings
from daq.reports.certificate import build_report, render_pdf
from daq.service import Service
from daq.storage.influx_v1 import series_rows
from daq.storage.influxd import free_port
from tests.conftest import ROOT
from tests.unit.test_logger_kind import channel_sha256, device_sha256

# what each device must at least deliver in the run (≈2 s)
MIN_SAMPLES = {"lab01_scanner": 6, "lab01_power": 2, "lab01_room": 20}
SLOW_FILING_S = 0.3


def logger_settings(tmp_path, influx_url: str, database: str):
    """A service file for the shipped lab logger alone, its scanner on a free port."""
    (tmp_path / "rigs").mkdir(exist_ok=True)
    rig = (ROOT / "configs" / "rigs" / "lab-logger.toml").read_text()
    assert "port = 15030" in rig
    (tmp_path / "rigs" / "lab-logger.toml").write_text(rig.replace("port = 15030", f"port = {free_port()}"))
    (tmp_path / "demo.toml").write_text(
        f'[service]\ndata_dir = "var"\nrigs = ["rigs/lab-logger.toml"]\n[api]\nport = {free_port()}\n'
        f'[storage.influxdb]\nurl = "{influx_url}"\ndatabase = "{database}"\ncommit_interval_s = 0.1\n')
    return load_settings(tmp_path / "demo.toml")


async def _until(cond, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.05)


async def test_a_run_summary_is_what_influxdb_holds_for_the_run(tmp_path, influxd, influx, database):
    settings = logger_settings(tmp_path, influxd.url, database)
    service = Service(settings)
    await service.start()
    try:
        # every device's samples flowing before the run starts (a stream's first samples are held
        # until its clock has anchored, then published back-dated)
        await _until(lambda: {r.device for r in service.live.latest("lab-01").values()} >= set(MIN_SAMPLES), 10.0)
        run = await service.runs.start("lab-01", operator="lab", notes="soak at 23 °C")
        # a slow catalogue (the stop is filed SLOW_FILING_S late) changes nothing: the summary and
        # InfluxDB's run tag both end at the run's stop event on the bus
        file_artifact = service.catalogue.file_artifact

        def slow_file_artifact(a):
            time.sleep(SLOW_FILING_S)
            return file_artifact(a)

        service.catalogue.file_artifact = slow_file_artifact
        await asyncio.sleep(2.0)
        stopped = await service.runs.stop(run.id)
        await asyncio.sleep(0.2)
    finally:
        await service.stop()
    assert sum(a.status.missing_samples for a in service.acquisitions) == 0
    cat = Catalogue(settings.catalogue_url)
    arts = cat.artifacts_of_run(run.id)
    assert [a["name"] for a in arts] == ["channel_summary"], "a run's summary is filed once"
    art = arts[0]
    assert (art["name"], art["rig"], art["t_ns"]) == ("channel_summary", "lab-01", stopped.stopped_ns)
    data = art["data"]
    assert (data["run"], data["end_ns"], data["std"]) == (str(run.id), stopped.stopped_ns, "population (ddof = 0)")
    assert stopped.started_ns <= data["start_ns"] < stopped.stopped_ns
    assert sorted(data["devices"]) == sorted(MIN_SAMPLES)
    for dev, summary in data["devices"].items():
        rows = series_rows(await influx.query(f"SELECT * FROM \"{dev}\" WHERE \"run\" = '{run.id}'"))
        fields = sorted({k for r in rows for k, v in r.items() if v is not None} - {"time", "rig", "run", "sample"})
        assert sorted(summary["channels"]) == fields, dev  # every stored channel is summarised
        series = {}
        for name, c in summary["channels"].items():
            # the simulated instruments answer every poll: every sample has its value, quality good
            assert (c["missing"], c["bad_quality"], c["stored"]) == (0, 0, c["count"]), (dev, name)
            assert c["count"] >= MIN_SAMPLES[dev], (dev, name, c["count"])
            tagged = [(r["time"], r[name]) for r in rows if r.get(name) is not None]
            # exactly the samples InfluxDB tags with the run are summarised, none more, none less
            assert (tagged[0][0], tagged[-1][0]) == (c["stored_first_ns"], c["stored_last_ns"]), (dev, name)
            t = np.array([t for t, _ in tagged], dtype=np.int64)
            v = np.array([float(v) for _, v in tagged])
            assert c["count"] == len(v)
            assert (c["min"], c["max"]) == (v.min(), v.max())
            assert c["mean"] == pytest.approx(np.mean(v), rel=1e-12)
            assert c["std"] == pytest.approx(np.std(v), rel=1e-12, abs=1e-12 * abs(np.mean(v)))  # 0 if constant
            assert (c["first_ns"], c["last_ns"]) == (int(t[0]), int(t[-1]))
            assert c["sha256"] == channel_sha256(t, v).hex(), (dev, name)
            series[name] = (t, v)
        assert summary["sha256"] == device_sha256(series), dev
    units = {n: c["unit"] for n, c in data["devices"]["lab01_power"]["channels"].items()}
    assert units == {"voltage": "V", "current": "A", "power": "W", "power_factor": "", "frequency": "Hz",
                     "energy": "kWh"}
    # a 23 °C soak: the chamber and the room near 23 °C, the meter at its base load
    for k in range(1, 9):
        assert 22.3 < data["devices"]["lab01_scanner"]["channels"][f"tc{k}"]["mean"] < 23.7
    assert 22.0 < data["devices"]["lab01_room"]["channels"]["ambient_temperature"]["mean"] < 24.0
    assert 140.0 < data["devices"]["lab01_power"]["channels"]["power"]["mean"] < 160.0
    # stopped runs get no more artifacts: the samples after the stop are no run's
    assert len(cat.artifacts_of_run(run.id)) == 1
    # the run's certificate shows the summary: each device's table and samples hash, searchable
    report = build_report(cat, run.id, {r.name: r for r in settings.rigs})
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(render_pdf(report))).pages)
    for dev, summary in data["devices"].items():
        assert f"{dev}: channel summary" in text and summary["sha256"] in text, dev
    assert report["overall_verdict"] == "no cycles" and report["method"]["description"].startswith("Continuous")
    cat.close()
