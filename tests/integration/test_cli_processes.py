"""`daq run` and `daq sim` as real processes, stopped with SIGTERM as a service manager would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pymodbus.client import ModbusTcpClient

from daq.storage.influxd import free_port
from tests.conftest import ROOT

DAQ = [sys.executable, "-m", "daq.cli"]


def _config(tmp_path: Path, managed: bool) -> tuple[Path, int, int, int]:
    influx_port, api_port, plc_port = free_port(), free_port(), free_port()
    (tmp_path / "rigs").mkdir()
    rig = (ROOT / "configs" / "rigs" / "screw-press.toml").read_text()
    (tmp_path / "rigs" / "screw-press.toml").write_text(rig.replace("port = 15020", f"port = {plc_port}"))
    cfg = tmp_path / "demo.toml"
    cfg.write_text(f"""
[service]
data_dir = "var"
rigs = ["rigs/screw-press.toml"]
[api]
port = {api_port}
[storage.influxdb]
url = "http://127.0.0.1:{influx_port}"
managed = {"true" if managed else "false"}
commit_interval_s = 0.2
""")
    key = subprocess.run([*DAQ, "keys", "create", "--role", "operator", "--name", "test", "--config", str(cfg)],
                         capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / "key").write_text(key)
    return cfg, influx_port, api_port, plc_port


def _wait_latest(api_port: int, proc: subprocess.Popen, timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            key = (Path(proc.args[-1]).parent / "key").read_text()
            r = httpx.get(f"http://127.0.0.1:{api_port}/api/rigs/press-01/latest", timeout=1,
                          headers={"Authorization": f"Bearer {key}"})
            if r.status_code == 200 and {"force", "plc_tick"} <= set(r.json()["channels"]):
                return r.json()["channels"]
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("no readings within 30 s")


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)  # faulthandler: dump every thread's stack
        proc.send_signal(signal.SIGUSR2)  # and every asyncio task's
        time.sleep(1)
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"daq did not stop within 30 s after SIGTERM:\n{out}") from None
    return out


def test_daq_run_with_managed_influxd_serves_blows_and_stops_cleanly(tmp_path, influxd):
    cfg, influx_port, api_port, _ = _config(tmp_path, managed=True)
    proc = subprocess.Popen([*DAQ, "run", str(cfg)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        first = _wait_latest(api_port, proc)
        time.sleep(3.0)
        later = _wait_latest(api_port, proc)
        assert later["plc_tick"]["value"] > first["plc_tick"]["value"]
        assert later["position"]["value"] != first["position"]["value"]
        q = httpx.get(f"http://127.0.0.1:{influx_port}/query",
                      params={"db": "rigdaq", "q": "SELECT count(force) FROM press01_plc"}).json()
        assert q["results"][0]["series"][0]["values"][0][1] > 50
        pid = int((tmp_path / "var" / "influxdb" / "influxd.pid").read_text())
    finally:
        out = _stop(proc)
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert "stopped" in out
    assert not Path(f"/proc/{pid}").exists() or b"zombie" in Path(f"/proc/{pid}/status").read_bytes()


def test_daq_run_without_influxd_says_how_to_install_and_keeps_acquiring(tmp_path):
    cfg, _, api_port, _ = _config(tmp_path, managed=True)
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    proc = subprocess.Popen([*DAQ, "run", str(cfg)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        _wait_latest(api_port, proc)
        for _ in range(50):  # the first commit to the spool comes within a commit interval
            health = httpx.get(f"http://127.0.0.1:{api_port}/api/health").json()
            if health["storage"]["spool"]["lines"] > 0:
                break
            time.sleep(0.1)
        assert health["devices"][0]["samples"] > 0
        assert "apt-get install influxdb" in health["storage"]["note"]
        assert health["storage"]["healthy"] is False
        assert health["storage"]["spool"]["lines"] > 0  # kept on disk for when InfluxDB comes
    finally:
        out = _stop(proc)
    assert "apt-get install influxdb" in out and "Traceback" not in out


def test_daq_sim_prints_its_endpoint_and_answers_modbus(tmp_path):
    cfg, _, _, plc_port = _config(tmp_path, managed=False)
    log = (tmp_path / "sim.log").open("w")
    proc = subprocess.Popen([*DAQ, "sim", str(cfg)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=log, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == f"press-01/press01_plc: Modbus TCP 127.0.0.1:{plc_port} unit 1"
        line = proc.stdout.readline()
        pty = tmp_path / "var" / "pty" / "press01-amp"
        assert line.strip() == f"press-01/press01_amp: serial stream {pty} (binary, 10000 Hz)"
        assert pty.is_symlink() and os.readlink(pty).startswith("/dev/pts/")
        client = ModbusTcpClient("127.0.0.1", port=plc_port)
        assert client.connect()
        rr = client.read_holding_registers(0, count=11, device_id=1)
        assert not rr.isError() and len(rr.registers) == 11
        client.close()
    finally:
        _stop(proc)
        log.close()
    assert proc.returncode == 0, (tmp_path / "sim.log").read_text()


def test_daq_run_refuses_invalid_config_with_exit_2(tmp_path):
    cfg, *_ = _config(tmp_path, managed=False)
    cfg.write_text(cfg.read_text().replace("commit_interval_s = 0.2", "commit_interval_s = -1"))
    r = subprocess.run([*DAQ, "run", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "storage.influxdb.commit_interval_s" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("busy", ["api", "plc"])
def test_daq_run_reports_a_busy_port_without_traceback(tmp_path, busy):
    import socket

    cfg, _, api_port, plc_port = _config(tmp_path, managed=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", api_port if busy == "api" else plc_port))
        s.listen()
        r = subprocess.run([*DAQ, "run", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "in use" in r.stderr and "Traceback" not in r.stderr


def test_daq_sim_takes_fault_commands_on_stdin(tmp_path):
    cfg, _, _, plc_port = _config(tmp_path, managed=False)
    log = (tmp_path / "sim.log").open("w")
    proc = subprocess.Popen([*DAQ, "sim", str(cfg)], cwd=tmp_path, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        while "commands:" not in (line := proc.stdout.readline()):
            assert line, (tmp_path / "sim.log").read_text()
        client = ModbusTcpClient("127.0.0.1", port=plc_port)
        assert client.connect()
        assert not client.read_holding_registers(0, count=2, device_id=1).isError()
        proc.stdin.write("fault press01_plc exception 30\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "ok: exception on press01_plc"
        rr = client.read_holding_registers(0, count=2, device_id=1)
        assert rr.isError() and rr.exception_code == 6
        proc.stdin.write("clear press01_plc\nfault press01_plc nonsense\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "ok: cleared"
        assert "unknown fault 'nonsense'" in proc.stdout.readline()
        assert not client.read_holding_registers(0, count=2, device_id=1).isError()
        client.close()
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
