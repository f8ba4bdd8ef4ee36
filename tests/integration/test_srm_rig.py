"""The SRM test rig end to end: controller on RTU, 20 kHz analyser stream, one cycle per test step."""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import time

import numpy as np
import pytest

from daq.catalogue import Catalogue
from daq.config import load_rig, load_settings
from daq.rigs.srm_rig import srm_motor
from daq.service import Service
from daq.simulators import build_simulator
from daq.storage.influx_v1 import series_rows
from daq.storage.influxd import free_port
from drivers.sim.srm_rig import STATE_HOLD
from tests.conftest import ROOT
from tests.unit.test_srm_model import expected_at_operating_point

SEQUENCE = """
[[sequence]]
speed_rpm = 600
torque_Nm = 40
hold_s = 1.4

[[sequence]]
speed_rpm = 1500
torque_Nm = 47.7
hold_s = 1.4

[[sequence]]
speed_rpm = 2200
torque_Nm = 30
hold_s = 1.4

[[sequence]]
kind = "locked_rotor"
angles_deg = [0, 90, 180]
voltage_V = 60.0
pulse_ms = 20.0
"""


def srm_rig_text() -> str:
    """The shipped SRM rig with a short sequence that runs once."""
    text = (ROOT / "configs" / "rigs" / "srm-rig.toml").read_text()
    text = re.sub(r"\[\[sequence\]\].*?(?=\n\[\[devices\]\])", SEQUENCE.strip() + "\n", text, count=1, flags=re.S)
    text = text.replace("settle_s = 0.6", "settle_s = 0.5").replace("loop = true", "loop = false")
    return text


def srm_settings(tmp_path, influx_url: str | None, database: str = "rigdaq", rig_text: str | None = None):
    """A service file for the SRM rig alone: InfluxDB if given, the API on a free port."""
    (tmp_path / "rigs").mkdir(exist_ok=True)
    (tmp_path / "rigs" / "srm-rig.toml").write_text(rig_text or srm_rig_text())
    storage = f'[storage.influxdb]\nurl = "{influx_url}"\ndatabase = "{database}"\n' if influx_url else ""
    (tmp_path / "demo.toml").write_text(f'[service]\ndata_dir = "var"\nrigs = ["rigs/srm-rig.toml"]\n'
                                        f"[api]\nport = {free_port()}\n{storage}")
    return load_settings(tmp_path / "demo.toml")


async def test_a_sequence_gives_one_analysed_cycle_per_step(tmp_path, influxd, influx, database):
    settings = srm_settings(tmp_path, influxd.url, database)
    rig = settings.rigs[0]
    assert len(rig.sequence) == 4
    service = Service(settings)
    await service.start()
    run = await service.runs.start("srm-01", operator="lab", serial="SRM-0042")
    try:
        for _ in range(60):  # the sequence takes ≈ 7 s
            await asyncio.sleep(0.5)
            if service.simulators["srm-01"].model.state == 4:
                break
        await asyncio.sleep(1.0)
    finally:
        await service.stop()
    health_missing = sum(a.status.missing_samples for a in service.acquisitions)
    assert health_missing == 0
    cat = Catalogue(settings.catalogue_url)
    _, cycles = cat.cycles_of_run(run.id)
    assert [c["info"]["step"] for c in cycles] == [1, 2, 3]  # one cycle per operating point
    model = service.simulators["srm-01"].model
    for c, (rpm, torque, before) in zip(cycles, [(600, 40.0, 0), (1500, 47.7, 600), (2200, 30.0, 1500)],
                                        strict=True):
        m = c["metrics"]
        # what the simulator replays at this operating point, from its solved tables
        # (tests/unit/test_srm_model.py): 600 rpm 39 % ripple, 81 % efficient, 15.3 A; 1500 rpm 36 %,
        # 90 %, 17.3 A; 2200 rpm 37 %, 93 %, 13.3 A
        want = expected_at_operating_point(model.m, model.points[(rpm, torque)])
        assert m["speed_rpm"] == pytest.approx(rpm, abs=0.05)  # the dyno holds it; noise σ 0.1 rpm averages out
        assert m["mean_torque_Nm"] == pytest.approx(want["mean_torque_Nm"], rel=2e-3)
        assert m["mean_torque_Nm"] == pytest.approx(torque, rel=5e-3)  # the set-point, solved to 0.2 %
        # the sensors' noise widens max − min a little, the 20 kHz samples miss the tables' extremes a little
        assert m["torque_ripple_pct"] == pytest.approx(want["torque_ripple_pct"], rel=0.03)
        assert m["efficiency"] == pytest.approx(want["efficiency"], rel=3e-3)
        assert m["phase_current_rms_A"] == pytest.approx(want["phase_current_rms_A"], rel=3e-3)
        assert m["torque_ripple_frequency_Hz"] == pytest.approx(24 * rpm / 60, rel=0.01)
        rms = [m[f"phase_{x}_current_rms_A"] for x in "abcd"]
        assert max(rms) - min(rms) < 0.03 * max(rms)
        assert m["copper_loss_W"] == pytest.approx(0.6 * sum(r * r for r in rms), rel=1e-6)
        # the rig file's limits: efficiency ≥ 0.70, ripple ≤ 120 %, phase current ≤ 30 A: all inside
        assert (c["verdict"], c["reasons"]) == ("ok", [])
        # the steady window, in whole turns: at most the step (the ramp at 3000 rpm/s, then the 1.4 s hold)
        # less settle_s = 0.5 s; at least the hold's last 0.9 s, less a turn cut at one end
        turns_per_s = rpm / 60
        ramp_s = (rpm - before) / 3000
        assert math.floor(0.9 * turns_per_s) - 1 <= c["info"]["revolutions"] <= (ramp_s + 0.9) * turns_per_s
    rows = series_rows(await influx.query(f"SELECT step, efficiency FROM cycles WHERE run = '{run.id}'"))
    assert [r["step"] for r in rows] == [1, 2, 3]
    # the locked-rotor step: ψ(i, θ) recovered from 20 kHz samples with sensor noise
    [art] = cat.artifacts_of_run(run.id)
    ch = art["data"]
    motor = srm_motor(rig.parameters)
    grid = np.array(ch["current_A"])
    assert ch["angles_deg"] == [0.0, 15.0, 30.0]  # mechanical: 0, 90, 180 electrical
    for k, mech in enumerate(ch["angles_deg"]):
        use = grid > 0.25 * grid[-1]
        want = motor.psi(grid[use], math.radians(mech * 6))
        got = np.array(ch["flux_Wb"][k])[use]
        assert np.max(np.abs(got - want) / want) < 0.02, mech
    assert ch["unaligned_inductance_H"] == pytest.approx(motor.L_u, rel=0.05)


async def _mbpoll_rtu(port: str, *args: str) -> list[float]:
    proc = await asyncio.create_subprocess_exec(
        "mbpoll", "-m", "rtu", "-b", "115200", "-P", "none", "-a", "1", "-1", "-q", "-0", *args, port,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode() + out.decode()
    return [float(v) for v in re.findall(r"^\[\d+\]:\s+(\S+)", out.decode(), flags=re.M)]


async def test_mbpoll_reads_the_rig_controller_over_rtu(tmp_path):
    if shutil.which("mbpoll") is None:
        pytest.fail("mbpoll is not installed: apt-get install mbpoll (scripts/setup does it)")
    (tmp_path / "rig.toml").write_text(srm_rig_text())
    rig = load_rig(tmp_path / "rig.toml")
    sim = build_simulator(rig, tmp_path)
    await sim.start()
    try:
        while sim.model.step_count < 0.8 * 20_000:  # 0.8 s of the rig's clock: into step 1's hold
            await asyncio.sleep(0.02)
        sim.pause()
        port = str(tmp_path / "pty" / "srm01-rs485")
        step, state = await _mbpoll_rtu(port, "-t", "4", "-r", "0", "-c", "2")
        [speed_sp] = await _mbpoll_rtu(port, "-t", "4:float", "-B", "-r", "2", "-c", "1")
        [temp] = await _mbpoll_rtu(port, "-t", "4", "-r", "6", "-c", "1")  # int16, 0.1 °C
        m = sim.model
        # step 1 ramps to 600 rpm at 3000 rpm/s in 0.2 s, then holds for 1.4 s: at 0.8 s it holds
        assert (step, state) == (m.step_no, m.state) == (1, STATE_HOLD)
        assert speed_sp == pytest.approx(600.0)
        assert temp / 10 == pytest.approx(m.temp_C, abs=0.11)
        # the writable command register: 2 stops the sequence
        proc = await asyncio.create_subprocess_exec(
            "mbpoll", "-m", "rtu", "-b", "115200", "-P", "none", "-a", "1", "-1", "-q", "-0", "-t", "4",
            "-r", "9", port, "2", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        await proc.communicate()
        assert proc.returncode == 0 and not m.running and m.step_no == 0
    finally:
        await sim.stop()


def test_a_run_can_start_the_test_sequence_through_the_controller(tmp_path, influxd):
    import httpx

    from tests.integration.helpers import ServiceThread, bearer, keys_for

    text = srm_rig_text().replace("autostart = true", "autostart = false")
    st = ServiceThread(srm_settings(tmp_path, None, rig_text=text))
    try:
        model = st.service.simulators["srm-01"].model
        keys = keys_for(st.service)
        time.sleep(1.0)
        assert not model.running and model.step_no == 0  # waits for its command
        with pytest.raises(PermissionError, match="not declared writable"):
            st.call(st.service.write_channel("srm-01", "step", 3))
        r = httpx.post(f"{st.base}/api/runs", headers=bearer(keys["engineer"]), timeout=10,
                       json={"rig": "srm-01", "operator": "lab", "start_sequence": True})
        assert r.status_code == 201, r.text
        assert model.running
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and st.service.last_cycle.get("srm-01") is None:
            time.sleep(0.2)
        first = st.service.last_cycle["srm-01"]
        assert first.info["step"] == 1 and first.run == str(r.json()["id"])
        events = [e.kind for e in st.service.recent_events]
        assert "channel_written" in events and "run_start" in events
    finally:
        st.stop()
