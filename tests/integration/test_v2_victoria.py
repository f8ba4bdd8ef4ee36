"""The v2 write API (influxdb-client: token, org, bucket) for real, against VictoriaMetrics,
which accepts /api/v2/write and gives the data back on /api/v1/export."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time

import httpx
import pytest

from daq.config import load_settings
from daq.service import Service
from daq.storage.influxd import free_port
from tests.integration.helpers import press_settings


@pytest.fixture
def victoria(tmp_path):
    exe = shutil.which("victoria-metrics")
    if exe is None:
        pytest.fail("victoria-metrics is not installed: apt-get install victoria-metrics "
                    "(scripts/setup does it)")
    port = free_port()
    proc = subprocess.Popen([exe, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={tmp_path / 'vm'}",
                             "-loggerLevel=ERROR", "-search.latencyOffset=0s"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{url}/health", timeout=0.5).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


def _export(url: str, metric: str) -> list[dict]:
    httpx.get(f"{url}/internal/force_flush")
    r = httpx.get(f"{url}/api/v1/export", params={"match[]": metric})
    return [json.loads(line) for line in r.text.splitlines() if line.strip()]


async def test_v2_api_writes_every_sample(tmp_path, victoria):
    settings = press_settings(tmp_path, victoria, "unused", poll_hz=50)
    cfg = settings.path
    cfg.write_text(cfg.read_text().replace('database = "unused"',
                                           'api = "v2"\ntoken = "tok"\norg = "plant"\nbucket = "rigdaq"'))
    settings = load_settings(cfg)
    service = Service(settings)
    await service.start()
    await asyncio.sleep(3.0)
    await service.stop()
    plc = next(a for a in service.acquisitions if a.status.device == "press01_plc")
    assert service.writer.stats.lines_written > 20_000 and service.writer.stats.dropped_lines == 0
    for _ in range(50):  # VictoriaMetrics makes fresh samples searchable within seconds
        [series] = _export(victoria, 'press01_plc_plc_tick{rig="press-01"}')
        if len(series["values"]) >= plc.status.samples:
            break
        await asyncio.sleep(0.2)
    assert len(series["values"]) == plc.status.samples
    ticks = series["values"]
    assert ticks == sorted(ticks) and ticks[-1] - ticks[0] > 2000
    amp_acq = next(a for a in service.acquisitions if a.status.device == "press01_amp")
    for _ in range(50):
        [amp] = _export(victoria, 'press01_amp_force_1{rig="press-01"}')
        if len(amp["values"]) >= amp_acq.status.samples:
            break
        await asyncio.sleep(0.2)
    assert len(amp["values"]) == amp_acq.status.samples  # every amplifier sample, once


def test_v2_config_needs_token_org_bucket(tmp_path):
    settings = press_settings(tmp_path, "http://127.0.0.1:1", "x")
    cfg = settings.path
    cfg.write_text(cfg.read_text().replace('database = "x"', 'api = "v2"\ntoken = "t"'))
    from daq.config import ConfigError

    with pytest.raises(ConfigError) as e:
        load_settings(cfg)
    assert 'storage.influxdb: api = "v2" needs org, bucket' in str(e.value)
