"""`daq runs` and `daq keys` as an engineer uses them against the running service."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.integration.helpers import ServiceThread, keys_for, press_settings

DAQ = [sys.executable, "-m", "daq.cli"]


def _daq(*args, key: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("RIGDAQ_API_KEY", None)
    if key:
        env["RIGDAQ_API_KEY"] = key
    return subprocess.run([*DAQ, *args], capture_output=True, text=True, timeout=60, env=env)


def test_runs_start_list_stop_through_the_api(tmp_path, influxd):
    st = ServiceThread(press_settings(tmp_path, influxd.url, "runs_cli"))
    try:
        keys = keys_for(st.service)
        cfg = str(st.settings.path)
        p = _daq("runs", "start", "--rig", "press-01", "--operator", "Zoë", "--part", "P-7", "--lot", "L 9",
                 "--config", cfg, key=keys["engineer"])
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == "run 1 on press-01: active"
        again = _daq("runs", "start", "--rig", "press-01", "--config", cfg, key=keys["engineer"])
        assert again.returncode == 1 and "409" in again.stderr and "still active" in again.stderr
        weak = _daq("runs", "stop", "1", "--config", cfg, key=keys["operator"])
        assert weak.returncode == 1 and "403" in weak.stderr
        nokey = _daq("runs", "list", "--config", cfg)
        assert nokey.returncode == 2 and "RIGDAQ_API_KEY" in nokey.stderr
        listed = _daq("runs", "list", "--config", cfg, key=keys["operator"])
        assert listed.returncode == 0 and "ACTIVE" in listed.stdout and "P-7" in listed.stdout
        assert st.service.runs.active["press-01"].id == 1
        stop = _daq("runs", "stop", "1", "--config", cfg, key=keys["engineer"])
        assert stop.returncode == 0 and stop.stdout.strip() == "run 1 on press-01: stopped"
        assert st.service.runs.active == {}
        ks = _daq("keys", "list", "--config", cfg)
        assert ks.returncode == 0 and "test-qa" in ks.stdout and keys["qa"] not in ks.stdout
        bad = _daq("keys", "create", "--role", "qa", "--name", " ", "--config", cfg)
        assert bad.returncode == 2 and "needs a name" in bad.stderr
    finally:
        st.stop()
