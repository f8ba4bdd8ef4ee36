"""Nothing lost: an InfluxDB outage and a kill -9, with a real influxd."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx

from daq.influxd import ManagedInfluxd, free_port
from daq.service import Service
from daq.storage.influx_v1 import InfluxV1Client, series_rows
from tests.integration.helpers import press_settings

DAQ = [sys.executable, "-m", "daq.cli"]


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


def test_kill_9_loses_at_most_the_last_commit_and_says_so(tmp_path, influxd, database):
    cfg = _config(tmp_path, influxd.url, database)
    sim = subprocess.Popen([*DAQ, "sim", str(cfg)], cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
    try:
        while "press01_lube" not in sim.stdout.readline():
            pass
        run = subprocess.Popen([*DAQ, "run", "--no-sim", str(cfg)], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(6.0)
        run.send_signal(signal.SIGKILL)             # no chance to flush anything
        run.wait()
        killed_at = time.time_ns()
        time.sleep(1.0)
        run = subprocess.Popen([*DAQ, "run", "--no-sim", str(cfg)], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(6.0)
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=60)
        assert run.returncode == 0, err
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(30)
    # exactly once: no sample twice, and a gap only around the kill
    [r] = _count(influxd.url, "SELECT count(sample), min(sample), max(sample) FROM press01_amp", database)
    rows = _count(influxd.url, "SELECT sample FROM press01_amp", database)
    samples = [x["sample"] for x in rows]
    assert len(samples) == len(set(samples)) == r["count"]
    missing = (r["max"] - r["min"] + 1) - r["count"]
    # down ≈ 1 s plus start-up; lost from RAM ≤ block (50 ms) + commit interval (200 ms)
    assert 0 < missing < 10_000 * 6
    events = _count(influxd.url, "SELECT kind, message, gap_s, missing_samples, device FROM events", database)
    unclean = [e for e in events if e["kind"] == "unclean_shutdown"]
    assert len(unclean) == 1 and 0.5 < unclean[0]["gap_s"] < 10
    assert abs(killed_at - unclean[0]["time"]) < 10e9
    # every missing sample is accounted for by a data_gap event of the amplifier
    gaps = [e for e in events if e["kind"] == "data_gap" and e["device"] == "press01_amp"]
    assert sum(e["missing_samples"] for e in gaps) == missing
    assert not list((tmp_path / "var" / "spool").glob("*.lp"))
    assert os.path.exists(tmp_path / "var" / "spool")


def test_killing_and_restarting_the_simulator_leaves_the_service_up(tmp_path, influxd, database):
    cfg = _config(tmp_path, influxd.url, database)
    api_port = int(cfg.read_text().split("port = ")[1].split()[0])

    def start_sim():
        p = subprocess.Popen([*DAQ, "sim", str(cfg)], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
        while "press01_lube" not in p.stdout.readline():
            pass
        return p

    def health():
        return httpx.get(f"http://127.0.0.1:{api_port}/api/health", timeout=5).json()

    sim = start_sim()
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
        sim = start_sim()
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
    events = _count(influxd.url, "SELECT kind, message, device FROM events", database)
    kinds = {(e["kind"], e["device"]) for e in events}
    for device in ("press01_plc", "press01_amp", "press01_dies", "press01_lube"):
        assert ("device_fault", device) in kinds and ("device_recovered", device) in kinds, device
    assert ("counter_reset", "press01_amp") in kinds  # the new simulator counts from 0 again
