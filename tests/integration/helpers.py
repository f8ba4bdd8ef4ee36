"""Build a service config for tests: the shipped press rig on free ports, a given influxd."""

from __future__ import annotations

import re
from pathlib import Path

from daq.config import Settings, load_settings
from daq.influxd import free_port
from tests.conftest import ROOT


def press_settings(tmp_path: Path, influx_url: str, database: str, poll_hz: float = 50,
                   api_port: int = 0) -> Settings:
    """configs/ copied to ``tmp_path`` with free ports and the test's InfluxDB."""
    (tmp_path / "rigs").mkdir(exist_ok=True)
    rig = (ROOT / "configs" / "rigs" / "screw-press.toml").read_text()
    rig = rig.replace("port = 15020", f"port = {free_port()}")
    rig = re.sub(r"^poll_hz = .*$", f"poll_hz = {poll_hz}", rig, count=1, flags=re.M)  # the PLC
    (tmp_path / "rigs" / "screw-press.toml").write_text(rig)
    (tmp_path / "demo.toml").write_text(f"""
[service]
data_dir = "var"
rigs = ["rigs/screw-press.toml"]

[api]
port = {api_port or free_port()}

[storage.influxdb]
url = "{influx_url}"
database = "{database}"
commit_interval_s = 0.2
""")
    return load_settings(tmp_path / "demo.toml")


def keys_for(service) -> dict[str, str]:
    """One API key per role, created in the started service's catalogue."""
    return {role: service.keys.create(f"test-{role}", role)[0]
            for role in ("operator", "engineer", "qa", "admin")}


def bearer(key: str) -> dict[str, str]:
    """The Authorization header for ``key``."""
    return {"Authorization": f"Bearer {key}"}
