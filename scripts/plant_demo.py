"""The plant topology on loopback: PostgreSQL, mosquitto, influxd, two agents and an API node.

Run by ``scripts/plant-demo`` (after ``scripts/setup``). Uses the service files in
``configs/plant/`` as they are (their ports are this demo's); prints the operator page's
address and an admin key; Ctrl-C stops everything, servers included.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daq.storage.influxd import ManagedInfluxd  # noqa: E402
from tests.servers import Mosquitto, start_postgres  # noqa: E402

PLANT = ROOT / "configs" / "plant"
DAQ = [sys.executable, "-m", "daq.cli"]
PG_PORT, MQTT_PORT, INFLUX_PORT = 15432, 18830, 18086
NODES = {"agent-line1": ("agent", 18091), "agent-line2": ("agent", 18092), "api": ("api", 18080)}


def _wait_http(url: str, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} does not answer")


def main() -> int:
    """Start the plant, wait for Ctrl-C, stop it."""
    work = Path(tempfile.mkdtemp(prefix="rigdaq-plant-"))
    procs: dict[str, subprocess.Popen] = {}
    pg = start_postgres(PG_PORT)
    broker = Mosquitto(work, MQTT_PORT)
    influxd = ManagedInfluxd(work / "influxd", port=INFLUX_PORT)
    stop = False

    def _stop(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        pg.admin("CREATE DATABASE rigdaq")
        broker.start()
        asyncio.run(influxd.start())
        print(f"== PostgreSQL :{PG_PORT}, mosquitto :{MQTT_PORT}, influxd :{INFLUX_PORT} (data in {work})")
        key = subprocess.run([*DAQ, "keys", "create", "--role", "admin", "--name", "plant-demo", "--config",
                              str(PLANT / "api.toml")], capture_output=True, text=True, check=True, cwd=ROOT)
        for name, (role, _port) in NODES.items():
            log = (work / f"{name}.log").open("ab")
            procs[name] = subprocess.Popen([*DAQ, role, str(PLANT / f"{name}.toml")], cwd=ROOT, stdout=log,
                                           stderr=subprocess.STDOUT)
        for name, (_, port) in NODES.items():
            _wait_http(f"http://127.0.0.1:{port}/api/health", procs[name])
            print(f"== {name}: http://127.0.0.1:{port}/api/health (log {work / (name + '.log')})")
        print(f"== operator page: http://127.0.0.1:18080/  (admin key: {key.stdout.strip().split()[-1]})")
        print("== live data: mosquitto_sub -p 18830 -t 'rigdaq/demo/#' -v ; Ctrl-C stops the plant")
        while not stop:
            dead = [n for n, p in procs.items() if p.poll() is not None]
            if dead:
                print(f"!! {', '.join(dead)} exited; see their logs in {work}", file=sys.stderr)
                return 1
            time.sleep(0.5)
        return 0
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        influxd.stop()
        broker.stop()
        pg.stop()
        print("== plant stopped")


if __name__ == "__main__":
    sys.exit(main())
