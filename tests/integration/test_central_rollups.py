"""The central InfluxDB path: rollups, a decimated stream, cycles and events, against a real influxd.

The simulated press runs with ``[storage.central]`` pointing at a second database; what the
central one holds per second is compared with the full-rate samples the line's database
holds for the same seconds.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from daq.config import load_settings
from daq.service import Service
from daq.storage.influx_v1 import InfluxV1Client, series_rows
from tests.integration.helpers import press_settings

pytestmark = [pytest.mark.timeout(120)]


async def test_rollups_per_second_are_the_line_samples_statistics(tmp_path, influxd, influx, database):
    central_db = database + "_central"
    press_settings(tmp_path, influxd.url, database)
    svc_file = tmp_path / "demo.toml"
    svc_file.write_text(svc_file.read_text() + f'''
[storage.central]
url = "{influxd.url}"
database = "{central_db}"
commit_interval_s = 0.2
decimate_hz = {{ press01_amp = 100 }}
''')
    service = Service(load_settings(svc_file))
    await service.start()
    await asyncio.sleep(4.0)
    await service.stop()
    assert service.health()["storage"]["central"]["dropped_lines"] == 0
    central = InfluxV1Client(influxd.url, central_db)
    try:
        measurements = {r["name"] for r in series_rows(await central.query("SHOW MEASUREMENTS"))}
        # rollups, the decimated stream, cycles and events; never the full-rate samples
        assert {"press01_amp_1s", "press01_amp_dec", "press01_plc_1s", "events"} <= measurements
        assert "press01_amp" not in measurements and "press01_plc" not in measurements
        ups = series_rows(await central.query('SELECT * FROM "press01_amp_1s"'))
        raw = series_rows(await influx.query('SELECT "time", force FROM press01_amp'))
        t = np.array([r["time"] for r in raw], dtype=np.int64)
        f = np.array([r["force"] for r in raw])
        sec = t // 1_000_000_000 * 1_000_000_000
        assert len(ups) >= 3
        for u in ups:
            x = f[sec == u["time"]]
            assert (u["force_n"], u["force_min"], u["force_max"], u["force_last"]) == \
                (len(x), x.min(), x.max(), x[-1]), u["time"]
            assert u["force_mean"] == pytest.approx(x.mean(), rel=1e-12)
        dec = series_rows(await central.query('SELECT "time", force FROM "press01_amp_dec"'))
        bins = t // 10_000_000 * 10_000_000  # 100 Hz: 10 ms bins
        assert [d["time"] for d in dec] == np.unique(bins).tolist()
        for d in dec[:: max(1, len(dec) // 20)]:
            assert d["force"] == pytest.approx(f[bins == d["time"]].mean(), rel=1e-12)
        started = series_rows(await central.query("SELECT message, kind FROM events WHERE kind = 'service_start'"))
        assert len(started) == 1
    finally:
        await central.aclose()
