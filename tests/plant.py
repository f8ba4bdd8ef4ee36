"""The plant topology of ``scripts/plant-demo`` for tests: real servers, real ``daq`` processes.

:class:`Plant` copies ``configs/plant/`` with free ports, the test's PostgreSQL database,
mosquitto and influxd, starts two agents (the press on line 1, the SRM rig on line 2) and
API nodes as subprocesses, and gives each an HTTP client. Every process can be killed and
started again.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx

from daq.storage.influxd import free_port
from tests.servers import Mosquitto

ROOT = Path(__file__).resolve().parents[1]
PLANT = ROOT / "configs" / "plant"
DAQ = [sys.executable, "-m", "daq.cli"]


class Node:
    """One ``daq agent`` or ``daq api`` process."""

    def __init__(self, name: str, role: str, config: Path, port: int, workdir: Path):
        self.name, self.role, self.config, self.port = name, role, config, port
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.base = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        """Start the process and wait until its health endpoint answers."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([*DAQ, self.role, str(self.config)], cwd=ROOT, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.base + "/api/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no health after 60 s:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (SIGKILL: a crash, ``kill -9``)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def health(self) -> dict:
        """Its ``/api/health``."""
        return httpx.get(self.base + "/api/health", timeout=5.0).json()


class Plant:
    """Two agents and ``api_nodes`` API nodes on one PostgreSQL database, one broker, one influxd."""

    def __init__(self, workdir: Path, pg_url: str, mqtt_port: int, influx_url: str, database: str,
                 api_nodes: int = 2):
        self.workdir = workdir
        self.pg_url = pg_url
        self.nodes: dict[str, Node] = {}
        conf = workdir / "plant"
        conf.mkdir(parents=True, exist_ok=True)
        names = [("agent-line1", "agent"), ("agent-line2", "agent")] + [
            (f"api{k + 1}", "api") for k in range(api_nodes)]
        for name, role in names:
            src = (PLANT / ("api.toml" if role == "api" else f"{name}.toml")).read_text()
            port = free_port()
            text = src.replace("../rigs/", f"{ROOT}/configs/rigs/")
            text = text.replace("../../var/plant/", f"{workdir}/var/")
            text = re.sub(r"^port = 18\d\d\d$", f"port = {port}", text, count=1, flags=re.M)  # [api]
            text = text.replace("postgresql+psycopg://postgres@127.0.0.1:15432/rigdaq", pg_url)
            text = text.replace("port = 18830", f"port = {mqtt_port}")
            text = text.replace("http://127.0.0.1:18086", influx_url)
            text = text.replace('database = "line1"', f'database = "{database}_line1"')
            text = text.replace('database = "line2"', f'database = "{database}_line2"')
            text = text.replace('database = "plant"', f'database = "{database}_plant"')
            text = text.replace('node = "api1"', f'node = "{name}"')
            if role == "agent":  # the rigs' own endpoints must not collide with other tests'
                text = text.replace(f"{ROOT}/configs/rigs/", f"{conf}/")
            path = conf / f"{name}.toml"
            path.write_text(text)
            self.nodes[name] = Node(name, role, path, port, workdir)
        for rig in ("screw-press.toml", "srm-rig.toml"):
            text = (ROOT / "configs" / "rigs" / rig).read_text().replace("port = 15020", f"port = {free_port()}")
            (conf / rig).write_text(text)
        api = next(n for n in self.nodes.values() if n.role == "api")
        out = subprocess.run([*DAQ, "keys", "create", "--role", "admin", "--name", "plant-test", "--config",
                              str(api.config)], cwd=ROOT, capture_output=True, text=True, check=True)
        self.key = out.stdout.strip().splitlines()[0]

    def start(self) -> None:
        """Agents first (they create the schema as they open the catalogue), then the API nodes."""
        for node in self.nodes.values():
            node.start()

    def stop(self) -> None:
        """Every process, cleanly."""
        for node in self.nodes.values():
            node.stop()

    def api(self, name: str = "api1") -> httpx.Client:
        """An HTTP client of an API node, with the admin key."""
        return httpx.Client(base_url=self.nodes[name].base, headers={"Authorization": f"Bearer {self.key}"},
                            timeout=10.0)


@contextmanager
def running_plant(postgres, influx_url: str, workdir: Path, api_nodes: int = 2):
    """A started :class:`Plant` on its own PostgreSQL database and mosquitto; everything stopped after.

    ``postgres`` is a :class:`tests.servers.PostgresServer`. The plant gets ``broker`` (its
    :class:`~tests.servers.Mosquitto`) and ``postgres`` attributes for fault tests.
    """
    name = "plant_" + uuid.uuid4().hex[:10]
    postgres.admin(f'CREATE DATABASE "{name}"')
    broker = Mosquitto(workdir)
    broker.start()
    plant = Plant(workdir, postgres.url(name), broker.port, influx_url, name, api_nodes=api_nodes)
    plant.broker, plant.postgres = broker, postgres
    try:
        plant.start()
        yield plant
    finally:
        plant.stop()
        broker.stop()
        postgres.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
