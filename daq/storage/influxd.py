"""Managed InfluxDB 1.x: start ``influxd`` with our own config and data dir, stop it on exit."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "influxd (InfluxDB 1.x) is not installed. On Debian/Ubuntu: sudo apt-get install influxdb "
    "— or set [storage.influxdb] managed = false and point url at a running InfluxDB."
)

_CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{dir}/meta"

[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false
  wal-fsync-delay = "0s"

[http]
  enabled = true
  bind-address = "{host}:{port}"
  auth-enabled = {auth_enabled}
  log-enabled = false
  max-body-size = {max_body_size}

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false
"""


def _child_setup() -> None:  # pragma: no cover - runs in the child before exec
    """Own session (a terminal's Ctrl-C is ours to handle) and die with the parent."""
    os.setsid()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class InfluxdMissingError(RuntimeError):
    """``influxd`` is not on PATH."""


_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now, below the ephemeral range.

    Ports from ``bind(port 0)`` lie in the kernel's ephemeral range, which outgoing
    connections draw from too: between choosing such a port and listening on it, a
    client socket may take it. Ports below that range are only ever taken on purpose.
    No port is handed out twice by one process.
    """
    lo, _ = _ephemeral_range()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, lo - 12000), lo)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # a crowded machine: fall back on the kernel's choice
        s.bind((host, 0))
        return s.getsockname()[1]


class ManagedInfluxd:
    """An ``influxd`` child process with its data under ``data_dir``.

    ``auth_enabled`` turns on HTTP authentication (``/ping`` still answers without
    credentials; the first user must be an admin, created without credentials).
    ``max_body_size`` bounds a write request's body in bytes (0: unlimited); larger
    writes are answered 413.
    """

    def __init__(self, data_dir: str | Path, host: str = "127.0.0.1", port: int = 8086,
                 binary: str = "influxd", auth_enabled: bool = False, max_body_size: int = 0):
        self.data_dir = Path(data_dir)
        self.host, self.port = host, port
        self.binary = binary
        self.auth_enabled = auth_enabled
        self.max_body_size = max_body_size
        self.proc: subprocess.Popen | None = None
        self.paused = False

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://{self.host}:{self.port}"

    @property
    def pidfile(self) -> Path:
        """Where the child's pid is kept, to clean up after a crash of ours."""
        return self.data_dir / "influxd.pid"

    def _stop_stale(self) -> None:
        """Terminate an influxd left over by a killed earlier run on this data dir."""
        try:
            pid = int(self.pidfile.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if b"influxd" in cmdline and str(self.data_dir.resolve()).encode() in cmdline:
            log.warning("stopping influxd (pid %d) left running by an earlier run", pid)
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)

    def _already_serving(self) -> bool:
        try:
            return httpx.get(f"{self.url}/ping", timeout=0.5).status_code == 204
        except httpx.HTTPError:
            return False

    async def start(self, timeout_s: float = 30.0) -> None:
        """Start influxd and wait until ``/ping`` answers. Raises :class:`InfluxdMissingError`."""
        exe = shutil.which(self.binary)
        if exe is None:
            raise InfluxdMissingError(INSTALL_HINT)
        # both may wait (a stale influxd stopping, a ping timing out): not on the event loop
        await asyncio.to_thread(self._stop_stale)
        if await asyncio.to_thread(self._already_serving):
            raise RuntimeError(f"something already answers InfluxDB pings at {self.url}; "
                               "stop it or choose another port in [storage.influxdb] url")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "influxd.conf"
        conf.write_text(_CONFIG.format(dir=self.data_dir.resolve(), host=self.host, port=self.port,
                                       rpc_port=free_port(),
                                       auth_enabled="true" if self.auth_enabled else "false",
                                       max_body_size=int(self.max_body_size)))
        logfile = (self.data_dir / "influxd.log").open("ab")
        self.proc = subprocess.Popen([exe, "-config", str(conf)], stdout=logfile,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=_child_setup)
        logfile.close()
        self.pidfile.write_text(str(self.proc.pid))
        self.paused = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        async with httpx.AsyncClient(timeout=1.0) as http:
            while loop.time() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"influxd exited with code {self.proc.returncode}; "
                                       f"see {self.data_dir / 'influxd.log'}")
                try:
                    if (await http.get(f"{self.url}/ping")).status_code == 204:
                        log.info("managed influxd ready at %s (data in %s)", self.url, self.data_dir)
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        self.stop()
        raise RuntimeError(f"influxd did not answer /ping within {timeout_s:g} s")

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError("influxd is not running")
        self.proc.send_signal(sig)

    def pause(self) -> None:
        """Freeze influxd (SIGSTOP): it keeps its port, accepts connections, answers nothing."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """Let a paused influxd go on (SIGCONT)."""
        self._signal(signal.SIGCONT)
        self.paused = False

    def kill(self) -> None:
        """SIGKILL, as a crash would; the data dir stays, so :meth:`start` restarts on the same data."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._forget()

    def _forget(self) -> None:
        self.proc = None
        self.paused = False
        with contextlib.suppress(OSError):
            self.pidfile.unlink()

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (after SIGCONT if paused), then SIGKILL if it does not exit in time."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if self.paused:  # a stopped process only acts on SIGTERM once it runs again
                self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._forget()
