"""Real servers on loopback for tests, benchmarks and the plant demo: PostgreSQL and mosquitto.

Each runs from its own temporary directory on a free port and is stopped by its owner.
``tests/integration/conftest.py`` wraps them in fixtures; ``scripts/plant-demo`` and
``bench/plant.py`` start them the same way.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from daq.storage.influxd import free_port

#: PostgreSQL settings for tests: no fsync (a test's data is thrown away), room for many nodes
TEST_SETTINGS = {"fsync": "off", "max_connections": "200"}


class ServerError(RuntimeError):
    """A server that would not start, with what it said."""


@dataclass
class PostgresServer:
    """A PostgreSQL cluster of our own (trust authentication, user ``postgres``)."""

    bindir: Path
    data: Path
    port: int
    as_owner: list[str]
    #: server settings (``-c name=value``) besides port and socket dir
    settings: dict[str, str] = field(default_factory=lambda: dict(TEST_SETTINGS))

    def url(self, database: str = "postgres", **options: str) -> str:
        """The SQLAlchemy URL of one of its databases; ``options``: per-session settings."""
        q = "?options=" + "%20".join(f"-c%20{k}%3D{v}" for k, v in options.items()) if options else ""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}{q}"

    @property
    def version(self) -> str:
        """The server's version (``pg_ctl --version``)."""
        r = subprocess.run([str(self.bindir / "pg_ctl"), "--version"], capture_output=True, text=True, check=False)
        m = re.search(r"\(PostgreSQL\) (\S+)", r.stdout)
        return m.group(1) if m else "?"

    def admin(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE) on the ``postgres`` database."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as con:
            con.execute(sql)

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run pg_ctl on its cluster, as its owner."""
        return subprocess.run([*self.as_owner, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args],
                              capture_output=True, text=True, timeout=60, check=check)

    def halt(self) -> None:
        """Stop the server, keeping its data (an outage); :meth:`resume` starts it again."""
        self.pg_ctl("-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start the server again on the same port, after :meth:`halt`."""
        root = self.data.parent
        opts = f"-p {self.port} -k {root} " + " ".join(f"-c {k}={v}" for k, v in self.settings.items())
        self.pg_ctl("-o", opts, "-l", str(root / "server.log"), "-w", "-t", "60", "start")

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        self.pg_ctl("-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(self.data.parent, ignore_errors=True)


def postgres_bindir() -> Path | None:
    """Where initdb and pg_ctl are: Debian keeps them off PATH, in /usr/lib/postgresql/<major>/bin."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def start_postgres(port: int | None = None, parent: Path | None = None,
                   settings: dict[str, str] | None = None) -> PostgresServer:
    """A PostgreSQL of our own, trust authentication, on ``port`` (default: a free one).

    ``initdb`` runs into a temporary dir under ``parent`` (default /tmp), as the ``postgres``
    OS user when we are root (initdb refuses root). ``settings``: the server's ``-c``
    options (default :data:`TEST_SETTINGS`: no fsync; a benchmark passes ``{}`` for the
    durable defaults); it listens on 127.0.0.1 only.
    """
    bindir = postgres_bindir()
    if bindir is None:
        raise ServerError("PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install "
                          "postgresql (scripts/setup does it)")
    # the dir is made under /tmp (pytest's own base dir is private to root)
    root = Path(tempfile.mkdtemp(prefix="rigdaq-pg-", dir=parent)).resolve()
    as_owner: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_owner = ["runuser", "-u", "postgres", "--"]
    server = PostgresServer(bindir, root / "data", port or free_port(), as_owner,
                            {"listen_addresses": "127.0.0.1", **(TEST_SETTINGS if settings is None else settings)})
    try:
        subprocess.run([*as_owner, str(bindir / "initdb"), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                        "--no-locale", "--no-sync", "-D", str(server.data)],
                       capture_output=True, text=True, timeout=120, check=True)
        server.resume()
    except subprocess.CalledProcessError as e:
        log = (root / "server.log").read_text(errors="replace") if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise ServerError(f"cannot start PostgreSQL: {e.cmd}: {e.stdout}{e.stderr}{log}") from None
    return server


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
