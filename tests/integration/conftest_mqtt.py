"""A real mosquitto on a free port (``mosquitto`` fixture), which a test can stop, restart or kill."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from daq.storage.influxd import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Mosquitto:
    """One mosquitto process with a two-line config: ``listener PORT 127.0.0.1``, ``allow_anonymous true``."""

    def __init__(self, workdir: Path, port: int | None = None):
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} {self.host}\nallow_anonymous true\n")
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout_s: float = 10.0) -> None:
        """Start it (on the same port as before) and wait until it accepts connections."""
        assert self.proc is None or self.proc.poll() is not None, "mosquitto is already running"
        self.starts += 1
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}:\n{self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto does not accept on port {self.port}") from None
                time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (SIGTERM: clients see their connections closed; SIGKILL: a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def restart(self, sig: int = signal.SIGTERM) -> None:
        """Stop and start again on the same port (retained messages are gone: no persistence)."""
        self.stop(sig)
        self.start()

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def mosquitto(tmp_path):
    """A started mosquitto of this test's own; stopped at the end."""
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed: apt-get install mosquitto (scripts/setup does it)")
    broker = Mosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()
