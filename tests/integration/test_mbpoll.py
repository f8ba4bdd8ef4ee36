"""A third-party Modbus client (mbpoll) reads the simulated PLC as the rig file documents."""

from __future__ import annotations

import asyncio
import re
import shutil

import numpy as np
import pytest

from daq.config import load_rig
from daq.simulators import build_simulator
from daq.storage.influxd import free_port
from tests.conftest import ROOT


async def _mbpoll(port: int, *args: str) -> list[float]:
    proc = await asyncio.create_subprocess_exec(
        "mbpoll", "-m", "tcp", "-p", str(port), "-a", "1", "-1", "-q", *args, "127.0.0.1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return [float(v) for v in re.findall(r"^\[\d+\]:\s+(\S+)", out.decode(), flags=re.M)]


async def test_mbpoll_reads_documented_values(tmp_path):
    if shutil.which("mbpoll") is None:
        pytest.fail("mbpoll is not installed: apt-get install mbpoll (scripts/setup does it)")
    rig = load_rig(ROOT / "configs" / "rigs" / "screw-press.toml")
    rig.devices[0].port = free_port()
    sim = build_simulator(rig, tmp_path)
    await sim.start()
    try:
        await asyncio.sleep(2.5)   # into the first blow's acceleration
        sim.pause()                # hold the image still while mbpoll reads it
        port = sim.server.port
        # mbpoll numbers registers from 1 (reference = address + 1); its float default is
        # word-swapped (CDAB), the order the rig file declares for force and position.
        force, position = await _mbpoll(port, "-t", "4:float", "-r", "1", "-c", "2")
        [speed_raw] = await _mbpoll(port, "-t", "4", "-r", "5", "-c", "1")
        [tick] = await _mbpoll(port, "-t", "4:int", "-B", "-r", "10", "-c", "1")
        [blows] = await _mbpoll(port, "-t", "3:int", "-B", "-r", "1", "-c", "1")
        m = sim.model
        assert force == pytest.approx(float(np.float32(sim.last["force"])), rel=1e-5)
        assert position == pytest.approx(float(np.float32(sim.last["position"])), rel=1e-5)
        assert position > 10  # the ram is on its way down
        speed = (speed_raw - 65536 if speed_raw > 32767 else speed_raw) * 0.1  # int16, scale 0.1
        assert speed == pytest.approx(sim.last["flywheel_speed"], abs=0.051)
        assert tick == m.step_count // 10
        assert blows == m.blow_count
    finally:
        await sim.stop()


async def test_mbpoll_reads_the_rtu_units_over_the_pty_line(tmp_path):
    rig = load_rig(ROOT / "configs" / "rigs" / "screw-press.toml")
    rig.devices[0].port = free_port()
    sim = build_simulator(rig, tmp_path)
    await sim.start()
    try:
        await asyncio.sleep(0.5)
        sim.pause()
        line = str(tmp_path / "pty" / "press01-rs485")
        proc = await asyncio.create_subprocess_exec(
            "mbpoll", "-m", "rtu", "-b", "115200", "-P", "none", "-a", "2", "-t", "4", "-r", "1",
            "-c", "3", "-1", "-q", line, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        upper, lower, heater = (float(v) for v in re.findall(r"^\[\d+\]:\s+(\S+)", out.decode(), re.M))
        assert upper * 0.1 == pytest.approx(sim.last["die_temperature"] + 3.0, abs=0.051)
        assert lower * 0.1 == pytest.approx(sim.last["die_temperature"] - 4.0, abs=0.051)
        # the heater controller's output, uint16 at 0.1 %: 8 %/K below its 260 °C set-point (the dies
        # start at their 250 °C preheat: 80 %, inside the 0…100 % it is clipped to)
        power = (260.0 - sim.last["die_temperature"]) * 8.0
        assert 0.0 < power < 100.0
        assert heater * 0.1 == pytest.approx(power, abs=0.051)
        _, server = next(iter(sim.lines.values()))
        assert server.served_units[(2, "holding", 0)] == 1
    finally:
        await sim.stop()
