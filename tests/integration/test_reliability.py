"""Nothing lost: an InfluxDB outage, a kill -9 of the service, a killed simulator; a real influxd.

Stream accounting is exact throughout: the amplifier's stored ``sample`` counter holds no
value twice, and every counter value missing between its first and last is counted by
the amplifier's ``data_gap`` events.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from daq.service import Service
from daq.simulators import counter_origin_file
from daq.storage.influx_v1 import InfluxV1Client, series_rows
from daq.storage.influxd import ManagedInfluxd, free_port
from drivers.sim.rig import counter_origins
from tests.integration.helpers import press_settings

DAQ = [sys.executable, "-m", "daq.cli"]
RATE = 10_000  # the amplifier's samples per second


async def test_influxd_outage_of_20_s_loses_nothing(tmp_path):
    db = ManagedInfluxd(tmp_path / "influx", port=free_port())
    await db.start()
    settings = press_settings(tmp_path, db.url, "outage", poll_hz=50)
    service = Service(settings)
    try:
        await service.start()
        await asyncio.sleep(2.0)
        db.stop()                                   # InfluxDB goes away for 20 s
        await asyncio.sleep(20.0)
        assert not service.writer.healthy and service.writer.spool.lines > 100_000
        await db.start()
        for _ in range(100):
            await asyncio.sleep(0.2)
            if service.writer.healthy and service.writer.spool.lines < 5_000:
                break
        await asyncio.sleep(1.0)
    finally:
        await service.stop()
    try:
        client = InfluxV1Client(db.url, "outage")
        amp = next(a for a in service.acquisitions if a.status.device == "press01_amp")
        plc = next(a for a in service.acquisitions if a.status.device == "press01_plc")
        [r] = series_rows(await client.query(
            "SELECT count(sample), min(sample), max(sample) FROM press01_amp"))
        assert r["count"] == amp.status.samples == r["max"] - r["min"] + 1 > 200_000
        [p] = series_rows(await client.query("SELECT count(plc_tick) FROM press01_plc"))
        assert p["count"] == plc.status.samples
        kinds = [e["kind"] for e in series_rows(await client.query("SELECT kind, message FROM events"))]
        assert "storage_fault" in kinds and "storage_recovered" in kinds
        assert service.writer.stats.dropped_lines == 0 and not service.writer.spool.files
        await client.aclose()
    finally:
        db.stop()


def _config(tmp_path, influx_url, db):
    settings = press_settings(tmp_path, influx_url, db, poll_hz=50)
    return settings.path


def _count(url: str, q: str, db: str) -> list[dict]:
    r = httpx.get(f"{url}/query", params={"db": db, "q": q, "epoch": "ns"}).json()
    return [dict(zip(s["columns"], v, strict=True)) for res in r["results"]
            for s in res.get("series", []) for v in s["values"]]


def _start_sim(cfg, cwd) -> subprocess.Popen:
    """``daq sim`` in its own process, once every endpoint is up."""
    p = subprocess.Popen([*DAQ, "sim", str(cfg)], cwd=cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
    while "press01_lube" not in p.stdout.readline():
        pass
    return p


def _amp_accounting(url: str, db: str, committed_before: int | None = None) -> tuple[int, list[dict]]:
    """Check the amplifier's counter in InfluxDB; returns (missing samples, all events).

    No counter value is stored twice, no counter reset was seen, and the samples missing
    between the first and the last counter are exactly those the ``data_gap`` events
    count, each gap starting right after a stored sample. ``committed_before``: the last
    counter an earlier run committed elsewhere; the count then starts right after it.
    """
    [r] = _count(url, "SELECT count(sample), min(sample), max(sample) FROM press01_amp", db)
    stored = {int(x["sample"]) for x in _count(url, "SELECT sample FROM press01_amp", db)}
    assert len(stored) == r["count"]
    first = r["min"] if committed_before is None else committed_before + 1
    missing = (r["max"] - first + 1) - r["count"]
    events = _count(url, "SELECT kind, message, gap_s, missing_samples, first_missing, device "
                         "FROM events", db)
    amp = [e for e in events if e["device"] == "press01_amp"]
    assert not [e for e in amp if e["kind"] == "counter_reset"], amp
    gaps = [e for e in amp if e["kind"] == "data_gap"]
    assert sum(e["missing_samples"] for e in gaps) == missing, gaps
    assert all(e["first_missing"] - 1 in stored | {first - 1} for e in gaps), gaps
    return missing, events


@pytest.mark.parametrize("separate_sim", [False, True], ids=["in-process-simulators", "daq-sim-process"])
def test_kill_9_loses_at_most_the_last_commit_and_says_so(tmp_path, influxd, database, separate_sim):
    """``daq run`` is killed and restarted; its instruments keep counting meanwhile.

    With in-process simulators (``daq run`` alone) the instruments die with the service,
    but their counters go on by the wall clock from where they started, as a real
    instrument's do while its host is down; with ``daq sim`` they simply keep running.
    """
    cfg = _config(tmp_path, influxd.url, database)
    run_cmd = [*DAQ, "run", *(["--no-sim"] if separate_sim else []), str(cfg)]
    sim = _start_sim(cfg, tmp_path) if separate_sim else None
    try:
        run = subprocess.Popen(run_cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(6.0)
        run.send_signal(signal.SIGKILL)             # no chance to flush anything
        run.wait()
        killed_at = time.time_ns()
        time.sleep(1.0)
        run = subprocess.Popen(run_cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
        time.sleep(6.0)
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=60)
        assert run.returncode == 0, err
    finally:
        if sim is not None:
            sim.send_signal(signal.SIGTERM)
            sim.wait(30)
    # exactly once: no sample twice, every missing one accounted for by a data_gap event
    missing, events = _amp_accounting(influxd.url, database)
    if separate_sim:
        # the instrument's output buffer held what it sent while the service was down:
        # lost is only what the killed service had read but not committed
        assert 0 < missing < RATE * 6
    else:
        # nothing streamed while no process ran the instrument, ≥ 1 s, yet it counted on
        assert RATE * 1.0 <= missing < RATE * 20
    unclean = [e for e in events if e["kind"] == "unclean_shutdown"]
    assert len(unclean) == 1 and 0.5 < unclean[0]["gap_s"] < 30
    assert abs(killed_at - unclean[0]["time"]) < 30e9
    assert not list((tmp_path / "var" / "spool").glob("*.lp"))
    assert os.path.exists(tmp_path / "var" / "spool")


async def test_resume_after_a_kill_unwraps_a_counter_past_its_32_bit_wrap(tmp_path, influxd, influx, database):
    """An instrument that has counted for days: its uint32 counter wraps while we resume.

    The previous run (killed) committed up to ``saved``, an unwrapped counter beyond
    2·2³²; the amplifier's counter passes 3·2³² a few seconds into this run.
    """
    settings = press_settings(tmp_path, influxd.url, database, poll_hz=50)
    rig = settings.rigs[0]
    wrap = 3 * 2**32
    now = time.time_ns()
    due = wrap - 8 * RATE  # the counter now: ≈ 8 s before the wrap
    rig_rate = RATE * (1 + rig.simulation.clock_ppm * 1e-6)
    counter_origins(counter_origin_file(rig, settings.data_dir), {"press01_amp": float(RATE)},
                    now - round(due / rig_rate * 1e9))
    saved = due - RATE // 2
    (settings.data_dir / "service.state").write_text(json.dumps(
        {"pid": 1, "heartbeat_ns": now - 10**9, "counters": {"press01_amp": saved}}))
    service = Service(settings)
    try:
        await service.start()
        for _ in range(200):
            await asyncio.sleep(0.2)
            if service.writer.committed_counters.get("press01_amp", 0) > wrap + RATE:
                break
    finally:
        await service.stop()
    assert service.writer.committed_counters["press01_amp"] > wrap + RATE
    [r] = series_rows(await influx.query("SELECT count(sample), min(sample), max(sample) FROM press01_amp"))
    assert saved < r["min"] < wrap < r["max"]
    assert r["count"] == r["max"] - r["min"] + 1  # seamless across the wrap
    missing, events = _amp_accounting(influxd.url, database, committed_before=saved)
    assert missing == r["min"] - saved - 1 > 0
    [gap] = [e for e in events if e["kind"] == "data_gap" and e["device"] == "press01_amp"]
    assert gap["first_missing"] == saved + 1 and gap["missing_samples"] == r["min"] - saved - 1
    assert [e["kind"] for e in events].count("unclean_shutdown") == 1


def test_killing_and_restarting_the_simulator_leaves_the_service_up(tmp_path, influxd, database):
    cfg = _config(tmp_path, influxd.url, database)
    api_port = int(cfg.read_text().split("port = ")[1].split()[0])

    def health():
        return httpx.get(f"http://127.0.0.1:{api_port}/api/health", timeout=5).json()

    sim = _start_sim(cfg, tmp_path)
    run = subprocess.Popen([*DAQ, "run", "--no-sim", str(cfg)], cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(5.0)
        assert {d["state"] for d in health()["devices"]} == {"ok"}
        sim.send_signal(signal.SIGKILL)  # every simulated device vanishes at once
        sim.wait()
        time.sleep(3.0)
        states = {d["device"]: d["state"] for d in health()["devices"]}
        assert run.poll() is None and "down" in states.values(), states
        sim = _start_sim(cfg, tmp_path)
        for _ in range(100):
            time.sleep(0.2)
            states = {d["device"]: d["state"] for d in health()["devices"]}
            if set(states.values()) == {"ok"}:
                break
        assert set(states.values()) == {"ok"}, states   # all flowing again within 20 s
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(60)
        sim.send_signal(signal.SIGTERM)
        sim.wait(30)
    assert run.returncode == 0
    # A power-cycled instrument restarts its counter (a counter_reset). A `daq sim` process
    # is not that: it stands for the equipment, and killing it models the service host
    # losing the link (cables, serial server, the simulator's host) while the instruments
    # run on. So the amplifier counts on from the time since its origin (var/sim/), and
    # the samples sent while nobody could receive them are a data_gap, counted exactly:
    # at least the 3 s during which no simulator process ran.
    missing, events = _amp_accounting(influxd.url, database)
    assert RATE * 3.0 <= missing < RATE * 60
    kinds = {(e["kind"], e["device"]) for e in events}
    for device in ("press01_plc", "press01_amp", "press01_dies", "press01_lube"):
        assert ("device_fault", device) in kinds and ("device_recovered", device) in kinds, device
