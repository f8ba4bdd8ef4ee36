"""A real mosquitto on a free port (``mosquitto`` fixture), which a test can stop, restart or kill."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.servers import MOSQUITTO, Mosquitto


@pytest.fixture
def mosquitto(tmp_path):
    """A started mosquitto of this test's own; stopped at the end."""
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed: apt-get install mosquitto (scripts/setup does it)")
    broker = Mosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()
