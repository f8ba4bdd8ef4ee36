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


class ServiceThread:
    """A started service and its API server, on their own event loop in a thread.

    For test modules that share one running service across tests (sync clients).
    """

    def __init__(self, settings):
        import asyncio
        import threading

        from api.app import create_app
        from api.server import ApiServer
        from daq.service import Service

        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.service = Service(settings)
        self.server = ApiServer(create_app(settings, self.service), "127.0.0.1", settings.api.port)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.service.start())
        self.call(self.server.start())
        self.base = f"http://127.0.0.1:{settings.api.port}"

    def call(self, coro, timeout: float = 60.0):
        """Run a coroutine on the service's loop and wait for it."""
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        """Stop the server, then the service, then the loop."""
        self.call(self.server.stop())
        self.call(self.service.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def running_press(tmp_path, influx_url: str) -> ServiceThread:
    """The simulated press running with its API on a fresh database, and one key per role (``.keys``)."""
    import uuid

    st = ServiceThread(press_settings(tmp_path, influx_url, f"t_{uuid.uuid4().hex[:12]}"))
    st.keys = keys_for(st.service)
    return st
