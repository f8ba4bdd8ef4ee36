"""Real components: an influxd and a PostgreSQL on free ports with temporary data dirs."""

from __future__ import annotations

import asyncio
import shutil
import uuid

import pytest

from daq.storage.influx_v1 import InfluxV1Client
from daq.storage.influxd import ManagedInfluxd, free_port
from tests.integration.conftest_mqtt import mosquitto  # noqa: F401
from tests.servers import ServerError, postgres_bindir, start_postgres


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


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of our own on a free port, its cluster in a temporary dir (stopped at the end)."""
    if postgres_bindir() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql "
                    "(scripts/setup does it)")
    try:
        server = start_postgres()
    except ServerError as e:
        pytest.fail(str(e))
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres):
    """A fresh database of its own for one test, dropped after it."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres.admin(f'CREATE DATABASE "{name}"')
    yield postgres.url(name)
    postgres.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    """A new, empty catalogue database of each kind: a SQLite file, and a database on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/catalogue.sqlite"
    return request.getfixturevalue("postgres_url")
