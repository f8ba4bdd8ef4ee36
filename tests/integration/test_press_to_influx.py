"""Simulated press → Modbus TCP → driver → real influxd, read back and compared."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from daq.service import Service
from daq.storage.influx_v1 import series_rows
from drivers.plc_time import PlcClock
from tests.integration.helpers import press_settings


async def test_every_polled_sample_lands_in_influxdb_with_the_simulators_values(
        tmp_path, influxd, influx, database):
    settings = press_settings(tmp_path, influxd.url, database, poll_hz=100)
    service = Service(settings, record_sim=True)
    await service.start()
    await asyncio.sleep(4.0)
    await service.stop()

    sim = service.simulators["press-01"]
    acq = service.acquisitions[0]
    polls_served = sim.server.served[("holding", 0)]
    # a poll in flight when acquisition is cancelled at stop may be served but never read; a
    # poll that found the PLC's previous scan again (plc_tick unchanged) is not stored twice
    polled = acq.status.samples + acq.status.repeated_scans
    assert polls_served - 1 <= polled <= polls_served and polls_served > 250
    assert service.writer.stats.dropped_lines == 0 and service.writer.stats.rejected_lines == 0

    rows = series_rows(await influx.query(
        'SELECT plc_tick, force, "position", flywheel_speed, state_contact '
        'FROM press01_plc WHERE rig = \'press-01\' AND plc_tick >= 0'))
    assert len(rows) == acq.status.samples
    times = [r["time"] for r in rows]
    assert times == sorted(times) and len(set(times)) == len(times)
    ticks = [r["plc_tick"] for r in rows]
    assert ticks == sorted(ticks) and len(set(ticks)) == len(ticks)  # each scan once
    for r in rows:
        shown = sim.history[r["plc_tick"]]
        assert r["force"] == float(np.float32(shown["force"]))
        assert r["position"] == float(np.float32(shown["position"]))
        assert r["flywheel_speed"] == pytest.approx(round(shown["flywheel_speed"] * 10) * 0.1, abs=1e-9)
        assert r["state_contact"] == shown["state_contact"]
    # the ram moved: the model is running, not a constant
    assert max(r["position"] for r in rows) - min(r["position"] for r in rows) > 10

    slow = series_rows(await influx.query(
        "SELECT blow_count, recipe FROM press01_plc WHERE recipe != ''"))
    # the slow group polls once a second (its first request reads input register 0): every poll
    # answered is stored, as for the fast group
    slow_acq = next(a for a in service.acquisitions if a.status.device == "press01_plc/slow")
    slow_served = sim.server.served[("input", 0)]
    assert slow_served - 1 <= slow_acq.status.samples <= slow_served
    assert len(slow) == slow_acq.status.samples
    assert [r["recipe"] for r in slow] == ["DIE-A113"] * len(slow)
    # a clean run: started, stopped, and nothing in between (no fault, no gap)
    events = series_rows(await influx.query("SELECT kind, message FROM events"))
    assert [e["kind"] for e in events] == ["service_start", "service_stop"]


async def test_device_restart_is_recorded_as_fault_recovery_and_gap(tmp_path, influxd, influx, database):
    settings = press_settings(tmp_path, influxd.url, database, poll_hz=50)
    service = Service(settings)
    await service.start()
    sim = service.simulators["press-01"]
    acq = service.acquisitions[0]
    acq.poller.backoff.min_s = 0.05
    await asyncio.sleep(1.0)
    sim.faults.inject("press01_plc", "disconnect", duration_s=1.5)   # the PLC goes away
    await asyncio.sleep(1.0)
    assert acq.status.state == "down"
    for _ in range(100):              # and comes back on the same port
        await asyncio.sleep(0.1)
        if acq.status.state == "ok":
            break
    await asyncio.sleep(0.5)
    await service.stop()
    assert acq.status.state == "ok"
    rows = series_rows(await influx.query(
        "SELECT kind, message, gap_s FROM events WHERE device = 'press01_plc'"))
    kinds = [r["kind"] for r in rows]
    assert kinds[:3] == ["device_fault", "device_recovered", "data_gap"], kinds
    [gap] = series_rows(await influx.query(
        "SELECT gap_s, gap_start_ns, gap_end_ns FROM events WHERE kind = 'data_gap' AND device = 'press01_plc'"))
    # the PLC was away for the fault's 1.5 s: the last sample before it and the first after are
    # at least that far apart (how much more is the reconnect backoff, on the host's clock)
    start, end = gap["gap_start_ns"], gap["gap_end_ns"]
    assert gap["gap_s"] == pytest.approx((end - start) / 1e9, abs=1e-9) and gap["gap_s"] >= 1.5
    # and the gap is exactly the hole in the stored samples: those two are stored, nothing between
    times = [r["time"] for r in series_rows(await influx.query(
        "SELECT plc_tick FROM press01_plc WHERE plc_tick >= 0"))]
    assert start in times and end in times and [t for t in times if start < t < end] == []


async def test_plc_samples_are_timestamped_from_the_plc_clock(tmp_path, influxd, influx, database, monkeypatch):
    """The press PLC names ``plc_tick`` (its millisecond clock, read with the values) as its
    time register: every stored sample carries the clock's timestamp of its scan.

    Every reply the clock saw is recorded (tick, arrival, timestamp given). Exactly:
    the stored points are the timestamps given, in order, one per new tick; each is no
    later than its reply arrived; the polls that found the same scan again are the ones
    given none. The timestamps follow the PLC's clock: three consecutive scans stamped on
    the line of the fit (no excess being slewed off, no cap) and with the line unchanged
    between them (no bucket of 0.1 s closed, no earlier reply lowered it) are steps of
    (tick difference) × the fitted period (1 ms ± the drift), to the ns rounding, so the
    two steps are in proportion to their tick differences to within that rounding:
    ``|Δt₁·Δc₂ − Δt₂·Δc₁| ≤ Δc₁ + Δc₂`` ns. Every such pair is (in a trial run 93 % of all
    pairs were such pairs; the request/reply midpoints of the same polls, off by up to a
    5 ms scan, were in proportion for none). And no spurious ``counter_reset``: the only
    events are start and stop.
    """
    given: list[tuple[int, int, int | None]] = []
    lines: list[tuple | None] = []  # per timestamp given: the line it was stamped on, or None if off it
    stamp = PlcClock.stamp

    def record(self, raw, reply_ns):
        ts = stamp(self, raw, reply_ns)
        given.append((raw, reply_ns, ts))
        if ts is not None:
            clk = self.clock
            (c0, t0), u = clk._origin, self.count - clk._origin[0]
            on_line = ts + clk.latency_ns == t0 + round(clk._offset + u * clk.period_ns)
            lines.append((c0, t0, clk._offset, clk.period_ns) if on_line else None)
        return ts

    monkeypatch.setattr(PlcClock, "stamp", record)
    settings = press_settings(tmp_path, influxd.url, database, poll_hz=50)
    service = Service(settings)
    await service.start()
    acq = service.acquisitions[0]
    for _ in range(240):  # 250 polls at 50 Hz: 5 s on a quiet machine, longer on a loaded one
        await asyncio.sleep(0.25)
        if acq.status.samples >= 250:
            break
    await service.stop()
    assert acq.time_register.name == "plc_tick" and acq.heartbeat == "plc_tick"
    assert [a.plc for a in service.acquisitions if a.status.device == "press01_plc/slow"] == [None]

    rows = series_rows(await influx.query("SELECT plc_tick FROM press01_plc WHERE plc_tick >= 0"))
    stored = [(r["plc_tick"], r["time"]) for r in rows]
    stamped = [(raw, ts) for raw, _, ts in given if ts is not None]
    assert stored == stamped and len(stored) == acq.status.samples >= 250
    assert all(ts <= reply for _, reply, ts in given if ts is not None)
    assert sum(ts is None for _, _, ts in given) == acq.status.repeated_scans

    t = np.array([ts for _, ts in stored], dtype=np.int64)
    c = np.array([raw for raw, _ in stored], dtype=np.int64)
    dt, dc = np.diff(t), np.diff(c)
    assert np.all(dt > 0) and np.all(dc > 0)
    in_proportion = np.abs(dt[:-1] * dc[1:] - dt[1:] * dc[:-1]) <= dc[:-1] + dc[1:]
    same_line = np.array([a is not None and a == b == c
                          for a, b, c in zip(lines, lines[1:], lines[2:], strict=False)])
    assert len(same_line) == len(in_proportion) and same_line.any()
    assert np.all(in_proportion[same_line]), np.flatnonzero(same_line & ~in_proportion)
    assert abs(np.median(dt / dc) / 1e6 - 1) <= 1e-3  # ns per PLC ms: within the clock's 1000 ppm clamp
    events = series_rows(await influx.query("SELECT kind, message FROM events"))
    assert [e["kind"] for e in events] == ["service_start", "service_stop"]
