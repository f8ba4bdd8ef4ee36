"""Device faults injected into the running simulators: the service stays up, other devices
are unaffected, every fault is recorded with its reason, and data flows again."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from daq.service import Service
from daq.storage.influx_v1 import series_rows
from tests.integration.helpers import press_settings

# fault kind → event kinds the service must record for it
PLC_FAULTS = {
    "disconnect": {"device_fault", "device_recovered", "data_gap"},
    "timeout": {"device_fault", "device_recovered"},
    "exception": {"device_fault", "device_recovered"},
    "corrupt": {"device_fault", "device_recovered"},
    "truncated": {"device_fault", "device_recovered"},
    "stuck": {"device_stale", "device_recovered"},
}
AMP_FAULTS = {
    "disconnect": {"device_fault", "device_recovered", "data_gap"},
    "timeout": {"device_fault", "device_recovered", "data_gap"},
    "corrupt": {"stream_resync", "data_gap"},
    "truncated": {"stream_resync", "data_gap"},
    "stuck": {"values_stuck", "device_recovered"},
}


async def _run_with_fault(tmp_path, influxd, influx, database, device, kind, seconds=2.5):
    settings = press_settings(tmp_path, influxd.url, database, poll_hz=50)
    service = Service(settings)
    await service.start()
    sim = service.simulators["press-01"]
    acqs = {a.status.device: a for a in service.acquisitions}
    for a in acqs.values():
        if hasattr(a, "poller"):
            a.poller.backoff.min_s = 0.05
        else:
            a.backoff.min_s = 0.05
    try:
        await asyncio.sleep(1.5)
        before = {name: a.status.samples for name, a in acqs.items()}
        sim.faults.inject(device, kind, duration_s=seconds)
        await asyncio.sleep(seconds)
        during = {name: a.status.samples for name, a in acqs.items()}
        for _ in range(60):  # data flows again within seconds
            await asyncio.sleep(0.1)
            if all(a.status.state == "ok" for a in acqs.values()):
                break
        await asyncio.sleep(1.0)
        after = {name: a.status.samples for name, a in acqs.items()}
        states = {name: a.status.state for name, a in acqs.items()}
        missing = {name: a.status.missing_samples for name, a in acqs.items()}
    finally:
        await service.stop()
    events = series_rows(await influx.query(
        f"SELECT kind, message, reason FROM events WHERE device = '{device}'"))
    return before, during, after, states, missing, events


@pytest.mark.parametrize("kind", sorted(PLC_FAULTS))
async def test_plc_faults(tmp_path, influxd, influx, database, kind):
    before, during, after, states, missing, events = await _run_with_fault(
        tmp_path, influxd, influx, database, "press01_plc", kind)
    assert set(states.values()) == {"ok"}, states
    assert after["press01_plc"] > during["press01_plc"] + 20          # flowing again
    assert missing["press01_amp"] == 0                                 # the amplifier never noticed
    assert during["press01_amp"] - before["press01_amp"] > 15_000
    kinds = {e["kind"] for e in events}
    assert PLC_FAULTS[kind] <= kinds, events
    fault = next(e for e in events if e["kind"] in ("device_fault", "device_stale"))
    assert fault["message"] and fault["reason"]


@pytest.mark.parametrize("kind", sorted(AMP_FAULTS))
async def test_amplifier_faults(tmp_path, influxd, influx, database, kind):
    before, during, after, states, missing, events = await _run_with_fault(
        tmp_path, influxd, influx, database, "press01_amp", kind)
    assert set(states.values()) == {"ok"}, states
    assert after["press01_amp"] > during["press01_amp"] + 5_000
    assert during["press01_plc"] - before["press01_plc"] > 60          # the PLC kept being polled
    kinds = {e["kind"] for e in events}
    assert AMP_FAULTS[kind] <= kinds, events
    if "data_gap" in AMP_FAULTS[kind]:
        assert missing["press01_amp"] > 0


RTU_FAULTS = {
    "timeout": {"device_fault", "device_recovered"},
    "exception": {"device_fault", "device_recovered"},
    "corrupt": {"device_fault", "device_recovered"},
    "truncated": {"device_fault", "device_recovered"},
}


@pytest.mark.parametrize("kind", sorted(RTU_FAULTS))
async def test_rtu_unit_faults_leave_the_other_unit_on_the_line_alone(
        tmp_path, influxd, influx, database, kind):
    before, during, after, states, _, events = await _run_with_fault(
        tmp_path, influxd, influx, database, "press01_dies", kind)
    assert set(states.values()) == {"ok"}, states
    assert after["press01_dies"] > during["press01_dies"] + 2
    # the lube unit shares the RS-485 line: it kept answering (2 Hz)
    assert during["press01_lube"] - before["press01_lube"] >= 3
    assert RTU_FAULTS[kind] <= {e["kind"] for e in events}, events


async def test_ten_khz_stream_lands_without_counter_gaps(tmp_path, influxd, influx, database):
    settings = press_settings(tmp_path, influxd.url, database, poll_hz=50)
    service = Service(settings)
    await service.start()
    await asyncio.sleep(4.0)
    await service.stop()
    amp = next(a for a in service.acquisitions if a.status.device == "press01_amp")
    rows = series_rows(await influx.query(
        "SELECT count(sample), min(sample), max(sample), max(force) FROM press01_amp"))
    [r] = rows
    assert r["count"] == r["max"] - r["min"] + 1 == amp.status.samples > 35_000
    assert amp.status.missing_samples == 0 and amp.status.skipped_bytes == 0
    pts = series_rows(await influx.query(
        "SELECT force, force_1, force_2, force_3, force_4, sample FROM press01_amp LIMIT 20000"))
    total = np.array([p["force"] for p in pts])
    parts = np.array([[p[f"force_{i}"] for i in range(1, 5)] for p in pts]).sum(axis=1)
    np.testing.assert_allclose(total, parts, atol=0.05, rtol=1e-6)  # float32 on the wire
    t = np.array([p["time"] for p in pts], dtype=np.int64)
    dt = np.diff(t)
    assert np.all(dt > 0) and abs(np.median(dt) - 100_000) < 50  # 10 kHz, 40 ppm rig clock
