"""Real components: an influxd on a free port with a temporary data dir."""

from __future__ import annotations

import asyncio
import shutil
import uuid

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
