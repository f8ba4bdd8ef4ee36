"""Real components: an influxd and a PostgreSQL on free ports with temporary data dirs."""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from daq.storage.influx_v1 import InfluxV1Client
from daq.storage.influxd import ManagedInfluxd, free_port
from tests.integration.conftest_mqtt import mosquitto  # noqa: F401


def pytest_configure(config):
    config.addinivalue_line("markers", "fault_matrix: a row of the storage fault matrix (issue 11), "
                                       "each with its own influxd")


@pytest.fixture(scope="session")
def influxd(tmp_path_factory):
    if shutil.which("influxd") is None:
        pytest.fail("influxd is not installed: apt-get install influxdb (scripts/setup does it)")
    server = ManagedInfluxd(tmp_path_factory.mktemp("influxd"), port=free_port())
    asyncio.run(server.start())
    yield server
    server.stop()


@pytest.fixture
def database(influxd) -> str:
    """A fresh database name for one test."""
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def influx(influxd, database):
    client = InfluxV1Client(influxd.url, database)
    await client.create_database()
    yield client
    await client.aclose()


@dataclass
class PostgresServer:
    """A PostgreSQL cluster of the test session (trust authentication, user ``postgres``)."""

    bindir: Path
    data: Path
    port: int
    as_owner: list[str]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE) on the ``postgres`` database."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as con:
            con.execute(sql)

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*self.as_owner, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args],
                              capture_output=True, text=True, timeout=60, check=check)


def postgres_bindir() -> Path | None:
    """Where initdb and pg_ctl are: Debian keeps them off PATH, in /usr/lib/postgresql/<major>/bin."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of our own on a free port, its cluster in a temporary dir (stopped at the end)."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql "
                    "(scripts/setup does it)")
    # initdb refuses to run as root: as root, the cluster belongs to the postgres OS user; the dir is
    # made under /tmp (pytest's own base dir is private to root)
    root = Path(tempfile.mkdtemp(prefix="rigdaq-pg-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_owner = ["runuser", "-u", "postgres", "--"]
    server = PostgresServer(bindir, root / "data", free_port(), as_owner)
    try:
        subprocess.run([*as_owner, str(bindir / "initdb"), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                        "--no-locale", "--no-sync", "-D", str(server.data)],
                       capture_output=True, text=True, timeout=120, check=True)
        opts = f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        server.pg_ctl("-o", opts, "-l", str(root / "server.log"), "-w", "-t", "60", "start")
    except subprocess.CalledProcessError as e:
        log = (root / "server.log").read_text(errors="replace") if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"cannot start PostgreSQL: {e.cmd}: {e.stdout}{e.stderr}{log}")
    yield server
    server.pg_ctl("-m", "fast", "-w", "stop", check=False)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres):
    """A fresh database of its own for one test, dropped after it."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres.admin(f'CREATE DATABASE "{name}"')
    yield postgres.url(name)
    postgres.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
