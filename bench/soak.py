"""Soak: both rigs at full rate under a real ``daq run``, a fault every ≈20 s, and an exact account.

    .venv/bin/python -m bench.soak --minutes N [--seed S] [--keep] [--kinds K,K…] [--sabotage]

``--kinds`` restricts the matrix, ``--keep`` keeps the temporary directory (kept anyway
when the soak fails), ``--sabotage`` deletes 1 s of stored samples and stores one
counter twice before the account, to show that the account then fails.

**What runs.** The shipped rigs (``configs/rigs/screw-press.toml``: 10 kHz amplifier
stream, PLC at 50 Hz + 1 Hz, two RS-485 units; ``configs/rigs/srm-rig.toml``: 20 kHz
power analyser stream, rig controller at 20 Hz, its test sequence looping) are copied
with a free PLC port into a service file in a temporary directory, as ``configs/demo.toml``
does, but with ``managed = false``: the soak starts its own ``influxd``
(:class:`daq.storage.influxd.ManagedInfluxd`) with HTTP auth on, an admin user and a non-admin
service user ``rigdaq`` (``GRANT ALL`` on the database), and ``timeout_s = 2`` for
InfluxDB requests. The spool lives under the temporary data dir; as root it is a tmpfs
mounted there before the start, so that a full disk can be made real (fsync then costs
nothing, unlike on the data disk). ``daq run``
runs as a subprocess (``python -m bench.soak_daq run``: ``daq.cli.main`` unchanged, plus
a record of the acquired counts written after its clean stop — see that module), so
it can be killed with SIGKILL and restarted; the simulated instruments keep their
counters across restarts (``var/sim/<rig>.json``), so a kill shows up as an exact
``data_gap``.

**Faults.** After 20 s of warm-up, one fault every 20 s (``fault_times``), the kind
drawn by a seeded shuffle of the matrix and cycling through it (``schedule``), each
restored before the next (a fault that takes longer delays the next):

==================  ===============================================================
credentials         ``SET PASSWORD`` for the service user; restored after 10 s
influxd_kill        influxd SIGKILL, restarted on the same data 4 s later
influxd_sigstop     influxd SIGSTOP for 8 s (requests time out after 2 s), SIGCONT
body_too_large      influxd restarted with ``max-body-size`` 100 kB for 15 s, then
                    restarted without the limit
spool_full          the spool's tmpfs filled to the last byte by a ballast file for
                    8 s (needs root for the mount; skipped with the reason otherwise).
                    Batches InfluxDB confirms free space meanwhile, so some spool
                    writes still succeed: the disk fault comes and goes, as on a real
                    full disk that something else keeps filling
catalogue_locked    ``BEGIN EXCLUSIVE`` held on ``var/catalogue.sqlite`` for 8 s, or
                    longer (≤ 20 s) until health shows the catalogue failing: a
                    filing that starts near the end of the lock just waits it out
                    (SQLite's 5 s busy timeout) and would not notice
service_kill        ``daq run`` SIGKILL, restarted 1 s later
==================  ===============================================================

A *partial write* (InfluxDB storing some lines of a batch and refusing others for a
field type conflict) cannot be injected from outside the process: it needs the service
itself to send a conflicting line. ``tests/integration/test_storage_faults.py``
(``test_fault_partial_write``) covers it; so is "influxd down at start".

**Measured per fault** (from ``GET /api/health`` polled every second): outage (from the
injection to the restoration), lines waiting at peak (``spool_depth``, max from the
injection to the next one), recovery (from the restoration to the first health reading
with status ``ok``, storage ``ok`` and no more than one second of acquisition waiting
in the spool), samples lost and duplicated in its window (see below), and what the
service reported meanwhile (its stored events); RSS of the ``daq`` process
(``/proc/PID/status`` VmRSS) at the start and end of each process life.

**Checked at the end**, after SIGTERM and a clean drain, against InfluxDB. What the
clean stop could not send within its 10 s stays in the spool for the next start; the
soak then does what that start does (the product's writer on the same spool, no
acquisition) and reports how many lines that took and how long, before the account:

* streams (measurements with a ``sample`` field: ``press01_amp``, ``srm01_analyser``):
  no counter value stored twice (``count − count(distinct)``), and the counter's holes
  (``max − min + 1 − distinct``) equal to the ``missing_samples`` of the device's
  ``data_gap`` events plus the ``lines`` of its ``data_lost`` events. Lost = holes no
  ``data_gap`` explains (``data_lost`` lines included). The gap a ``service_kill`` causes
  (samples read but not committed at the kill plus the instrument counting on while no
  process ran) is a ``data_gap`` counted exactly at the restart: it is shown in the
  ``gaps`` column, not as lost. Per fault, holes are attributed to the window (injection
  to next injection) holding the first sample after the hole; events by their time.
* polled devices (each poll group; the PLC's ``press01_plc`` and ``press01_plc/slow``
  share a measurement and are told apart by their fields): for the process life that
  ended cleanly (the last one), points stored with a timestamp inside the life equal
  the samples it acquired (recorded after its stop). For lives ended by SIGKILL the
  acquired count is only known from a health reading taken just before the kill; what
  that reading counted but InfluxDB does not hold is what the kill took (announced by
  the ``unclean_shutdown`` event at the next start, without a number): it is reported
  per kill, *not* counted as lost, and not checked (±1 poll at the reading's edge).
  Polled losses of the clean life cannot be placed in time: they are a row of their own.
  Duplicates: points − distinct timestamps.
* the spool is empty after the stop and ``spool/rejected/`` holds nothing;
* dead tasks: supervised task restarts (``task_restarts`` of the last health reading of
  each life, or its ``task_restarted`` events if more; the final count for the clean
  life), plus every ``daq run`` process that died without being killed.
* cycles: none filed twice in the catalogue, no cycle number used twice; how many are
  in InfluxDB but not in the catalogue and vice versa is reported, not judged (a
  SIGKILL may legitimately cut a cycle in flight).
* every SIGKILL (or death) of ``daq run`` is followed by one ``unclean_shutdown`` event.
* not checked: cycle verdicts and metrics; InfluxDB's own durability (the data is read
  back from the same influxd); faults on top of each other (each is restored before the
  next: a kill while the spool cannot write, say, is not in the schedule).

The last line is ``soak: <faults> faults, lost <n>, duplicated <m>, dead tasks <k>``;
the exit status is 1 if any of them is non-zero, or if an accounting check above fails
(each failure is printed as a ``FAIL:`` line before it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from daq.acquisition.transports.serial_stream import SerialStreamDevice
from daq.bus import SampleBus
from daq.config import load_settings
from daq.storage.influx_v1 import InfluxV1Client
from daq.storage.influxd import ManagedInfluxd, free_port
from daq.storage.spool import Spool
from daq.storage.writer import StorageWriter
from tests.integration.faults import admin_query, field_keys, influxql, rejected_lines, stored_events

ROOT = Path(__file__).resolve().parents[1]
DB = "soak"
ADMIN = ("admin", "soak-admin-pw")
USER, PASSWORD = "rigdaq", "soak-rigdaq-pw"
SPACING_S = 20.0  # one fault every 20 s, the first after 20 s of warm-up
KINDS = ("credentials", "influxd_kill", "influxd_sigstop", "body_too_large", "spool_full",
         "catalogue_locked", "service_kill")
HOLD_S = {"credentials": 10.0, "influxd_kill": 4.0, "influxd_sigstop": 8.0, "body_too_large": 15.0,
          "spool_full": 8.0, "catalogue_locked": 8.0, "service_kill": 1.0}
SMALL_BODY = 100_000  # bytes: a 0.2 s commit of both streams is ≈ 2 MB
TMPFS_SIZE = "1g"
CATALOGUE_HOLD_MAX_S = 20.0
SETTLE_MAX_S = 60.0  # after the last slot: wait at most this long for recovery before the stop
REACTIONS = ("storage_fault", "storage_recovered", "spool_fault", "spool_recovered", "spool_high", "data_lost",
             "storage_rejected", "catalogue_fault", "catalogue_recovered", "catalogue_refused", "unclean_shutdown",
             "data_gap", "counter_reset", "task_restarted", "device_fault", "device_recovered")


def fault_times(minutes: float, spacing_s: float = SPACING_S) -> list[float]:
    """Seconds after the start at which faults are injected: every ``spacing_s``, none at or after the end.

    The first ``spacing_s`` are warm-up; 2 minutes give 20, 40, 60, 80 and 100 s: 5 faults.
    """
    end = minutes * 60.0
    return [k * spacing_s for k in range(1, math.ceil(end / spacing_s) + 1) if k * spacing_s < end - 1e-9]


def schedule(minutes: float, seed: int, kinds: tuple[str, ...] = KINDS) -> list[tuple[float, str]]:
    """(time, kind) of every fault: a seeded shuffle of ``kinds``, cycled, no kind twice in a row."""
    rng = random.Random(seed)
    out: list[tuple[float, str]] = []
    bag: list[str] = []
    for t in fault_times(minutes):
        if not bag:
            bag = list(kinds)
            rng.shuffle(bag)
            if out and len(bag) > 1 and bag[0] == out[-1][1]:
                bag[0], bag[-1] = bag[-1], bag[0]
        out.append((t, bag.pop(0)))
    return out


# -- records -------------------------------------------------------------------------------
@dataclass
class Life:
    """One ``daq run`` process."""

    n: int
    proc: subprocess.Popen
    log: Path
    final_path: Path
    started_ns: int
    ended_ns: int = 0
    end: str = "running"  # running | sigterm | kill9 | died | hung
    last_health: dict | None = None
    last_health_ns: int = 0
    before_kill: dict | None = None  # health read just before the SIGKILL
    before_kill_ns: int = 0
    final: dict | None = None
    rss_kb: list[int] = field(default_factory=list)


@dataclass
class Fault:
    """One injected fault and what it did."""

    n: int
    kind: str
    planned_s: float
    injected_ns: int = 0
    injected_mono: float = 0.0
    restored_ns: int = 0
    restored_mono: float = 0.0
    note: str = ""
    error: str = ""
    peak_lines: int | None = None
    recovery_s: float | None = None
    lost: int = 0
    duplicated: int = 0
    gaps: int = 0
    not_recovered_s: float | None = None  # still not recovered this long after the restoration

    @property
    def outage_s(self) -> float:
        """From the injection to the restoration."""
        return self.restored_mono - self.injected_mono if self.restored_mono else float("nan")


@dataclass
class Reading:
    """One health reading (None when the API did not answer)."""

    mono: float
    ns: int
    life: int
    health: dict | None


def _rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _mb(kb: int | None) -> str:
    return "-" if kb is None else f"{kb / 1024:.0f} MB"


# -- the soak ------------------------------------------------------------------------------
class Soak:
    """Runs the service, injects the faults, keeps the readings, accounts at the end."""

    def __init__(self, minutes: float, seed: int, work: Path, kinds: tuple[str, ...] = KINDS,
                 sabotage: bool = False):
        self.minutes, self.seed, self.work, self.kinds = minutes, seed, work, kinds
        self.sabotage = sabotage
        self.data = work / "var"
        self.spool = self.data / "spool"
        self.leftover_lines, self.leftover_s = 0, 0.0
        self.db = ManagedInfluxd(work / "influxd", port=free_port(), auth_enabled=True)
        self.api_port = free_port()
        self.cfg = work / "soak.toml"
        self.lives: list[Life] = []
        self.faults: list[Fault] = []
        self.readings: list[Reading] = []
        self.problems: list[str] = []
        self.skipped: dict[str, str] = {}
        self.mounted = False
        self.t0 = 0.0
        self._lock = asyncio.Lock()  # spawning, killing and watching lives
        self.http: httpx.AsyncClient | None = None

    # -- setup ---------------------------------------------------------------------------
    def write_config(self) -> None:
        """The service file and the two rig files in the work dir (free PLC and API ports)."""
        (self.work / "rigs").mkdir(parents=True, exist_ok=True)
        press = (ROOT / "configs/rigs/screw-press.toml").read_text()
        assert "port = 15020" in press
        (self.work / "rigs/screw-press.toml").write_text(press.replace("port = 15020", f"port = {free_port()}"))
        shutil.copy(ROOT / "configs/rigs/srm-rig.toml", self.work / "rigs/srm-rig.toml")
        self.cfg.write_text(f"""# bench/soak.py: configs/demo.toml with its own influxd (auth on) and free ports
[service]
name = "rigdaq soak"
data_dir = "var"
rigs = ["rigs/screw-press.toml", "rigs/srm-rig.toml"]

[catalogue]
archive_max_mb = 2000

[api]
host = "127.0.0.1"
port = {self.api_port}

[storage.influxdb]
api = "v1"
url = "{self.db.url}"
database = "{DB}"
username = "{USER}"
password = "{PASSWORD}"
managed = false
timeout_s = 2.0
commit_interval_s = 0.2
spool_max_mb = 2048
spool_policy = "drop_oldest"
""")
        self.settings = load_settings(self.cfg)

    def mount_spool(self) -> None:
        """As root: a tmpfs on the spool dir, so a full disk can be made real; else skip that kind."""
        self.spool.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            self.skipped["spool_full"] = f"mounting a tmpfs for the spool needs root (euid {os.geteuid()})"
            return
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0755", "tmpfs", str(self.spool)],
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:
            self.skipped["spool_full"] = f"cannot mount a tmpfs on {self.spool}: {(r.stderr or r.stdout).strip()}"
            return
        self.mounted = True

    def unmount_spool(self) -> None:
        """Undo :meth:`mount_spool`."""
        if not self.mounted:
            return
        r = subprocess.run(["umount", str(self.spool)], capture_output=True, check=False)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", str(self.spool)], capture_output=True, check=False)
        self.mounted = False

    async def start_influxd(self) -> None:
        """Start influxd with auth on: an admin, the database, a service user with ALL on it."""
        await self.db.start()
        await asyncio.to_thread(admin_query, self.db.url,
                                f"CREATE USER admin WITH PASSWORD '{ADMIN[1]}' WITH ALL PRIVILEGES")
        for q in (f'CREATE DATABASE "{DB}"', f"CREATE USER {USER} WITH PASSWORD '{PASSWORD}'",
                  f'GRANT ALL ON "{DB}" TO "{USER}"'):
            await asyncio.to_thread(admin_query, self.db.url, q, ADMIN)

    # -- the service -----------------------------------------------------------------------
    def life(self) -> Life:
        """The current (last started) process."""
        return self.lives[-1]

    async def health(self, timeout: float = 3.0) -> dict | None:
        """``GET /api/health`` of the running service; None if it does not answer."""
        try:
            r = await self.http.get(f"http://127.0.0.1:{self.api_port}/api/health", timeout=timeout)
            return r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    async def spawn(self) -> Life:
        """Start ``daq run`` and wait until its API answers."""
        n = len(self.lives) + 1
        log = self.work / f"daq-{n}.log"
        env = {**os.environ, "RIGDAQ_SOAK_FINAL": str(self.work / f"final-{n}.json"),
               "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        with open(log, "wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "bench.soak_daq", "run", str(self.cfg)], cwd=self.work,
                                    stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        life = Life(n, proc, log, self.work / f"final-{n}.json", time.time_ns())
        self.lives.append(life)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"daq run exited with {proc.returncode} at start; see {log}:\n"
                                   + self.tail(life))
            h = await self.health(1.0)
            if h is not None:
                life.last_health, life.last_health_ns = h, time.time_ns()
                if (rss := _rss_kb(proc.pid)) is not None:
                    life.rss_kb.append(rss)
                return life
            await asyncio.sleep(0.2)
        raise RuntimeError(f"daq run did not answer /api/health within 90 s; see {log}")

    def tail(self, life: Life, lines: int = 30) -> str:
        """The end of a process's log, indented."""
        try:
            text = life.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    " + ln for ln in text[-lines:])

    async def watch(self) -> None:
        """Every second: health, RSS, and whether the process died on its own (then restart it)."""
        while True:
            started = time.monotonic()
            async with self._lock:
                life = self.life()
                if life.end == "running" and life.proc.poll() is not None:
                    life.end, life.ended_ns = "died", time.time_ns()
                    self.problems.append(f"daq run (life {life.n}, pid {life.proc.pid}) died on its own "
                                         f"with exit status {life.proc.returncode}; its log ends:\n{self.tail(life)}")
                    print(f"  !! daq run life {life.n} died on its own (exit {life.proc.returncode}); "
                          "restarting it", flush=True)
                    await self.spawn()
                    life = self.life()
            if life.end == "running":
                h = await self.health()
                now = time.time_ns()
                self.readings.append(Reading(time.monotonic(), now, life.n, h))
                with open(self.work / "readings.jsonl", "a") as fh:
                    fh.write(json.dumps({"t": round(time.monotonic() - self.t0, 2), "life": life.n, "health": h})
                             + "\n")
                if h is not None and life.end == "running":
                    life.last_health, life.last_health_ns = h, now
                    if (rss := _rss_kb(life.proc.pid)) is not None:
                        life.rss_kb.append(rss)
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))

    async def kill_service(self) -> None:
        """SIGKILL the service, with a health reading taken just before."""
        async with self._lock:
            life = self.life()
            h = await self.health()
            life.before_kill, life.before_kill_ns = (h, time.time_ns()) if h else (life.last_health,
                                                                                 life.last_health_ns)
            if (rss := _rss_kb(life.proc.pid)) is not None:
                life.rss_kb.append(rss)
            life.end = "kill9"
            life.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(life.proc.wait)
            life.ended_ns = time.time_ns()

    async def stop_service(self) -> None:
        """SIGTERM and wait for the clean stop; read the counts it recorded."""
        async with self._lock:
            life = self.life()
            if (rss := _rss_kb(life.proc.pid)) is not None:
                life.rss_kb.append(rss)
            life.end = "sigterm"
            life.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(life.proc.wait, 180)
            except subprocess.TimeoutExpired:
                life.end = "hung"
                self.problems.append(f"daq run (life {life.n}) did not stop within 180 s of SIGTERM; killed")
                life.proc.kill()
                await asyncio.to_thread(life.proc.wait)
            life.ended_ns = time.time_ns()
            if life.proc.returncode not in (0, -signal.SIGKILL):
                self.problems.append(f"daq run (life {life.n}) exited with {life.proc.returncode} after SIGTERM:\n"
                                     + self.tail(life))
            try:
                life.final = json.loads(life.final_path.read_text())
            except (OSError, ValueError) as e:
                if life.end == "sigterm":
                    self.problems.append(f"no record of the final counts from life {life.n}: {e}")

    # -- faults ---------------------------------------------------------------------------
    async def inject(self, f: Fault) -> None:
        """Inject one fault, hold it, restore it; times go into ``f``."""
        def mark() -> None:
            f.injected_ns, f.injected_mono = time.time_ns(), time.monotonic()

        def restored() -> None:
            f.restored_ns, f.restored_mono = time.time_ns(), time.monotonic()

        hold = HOLD_S[f.kind]
        db = self.db
        if f.kind == "credentials":
            mark()
            await asyncio.to_thread(admin_query, db.url, f"SET PASSWORD FOR \"{USER}\" = 'refused-{f.n}'", ADMIN)
            await asyncio.sleep(hold)
            await asyncio.to_thread(admin_query, db.url, f"SET PASSWORD FOR \"{USER}\" = '{PASSWORD}'", ADMIN)
            restored()
            f.note = f"password of {USER!r} changed for {hold:g} s"
        elif f.kind == "influxd_kill":
            mark()
            db.kill()
            await asyncio.sleep(hold)
            await db.start()
            restored()
            f.note = f"SIGKILL, restarted after {hold:g} s"
        elif f.kind == "influxd_sigstop":
            mark()
            db.pause()
            try:
                await asyncio.sleep(hold)
            finally:
                db.resume()
            restored()
            f.note = f"SIGSTOP for {hold:g} s"
        elif f.kind == "body_too_large":
            mark()
            db.stop()
            db.max_body_size = SMALL_BODY
            try:
                await db.start()
                probe = await self.http.post(f"{db.url}/write", params={"db": DB}, auth=ADMIN,
                                             content=b"soak_probe v=1 1\n" * (SMALL_BODY // 16 + 1))
                f.note = (f"max-body-size {SMALL_BODY // 1000} kB for {hold:g} s "
                          f"(a {SMALL_BODY // 1000 + 6} kB probe got {probe.status_code})")
                if probe.status_code != 413:
                    self.problems.append(f"body_too_large: the limit is not real, a larger write got "
                                         f"{probe.status_code} {probe.text.strip()}")
                await asyncio.sleep(hold)
            finally:
                db.stop()
                db.max_body_size = 0
                await db.start()
            restored()
        elif f.kind == "spool_full":
            ballast = self.spool / ".soak-ballast"
            mark()
            try:
                filled = await asyncio.to_thread(self._fill, ballast)
                await asyncio.sleep(hold)
            finally:
                ballast.unlink(missing_ok=True)
            restored()
            f.note = f"spool tmpfs ({TMPFS_SIZE}) filled with {filled / 1e6:.0f} MB of ballast for {hold:g} s"
        elif f.kind == "catalogue_locked":
            path = self.data / "catalogue.sqlite"
            con = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            try:
                await asyncio.to_thread(con.execute, "BEGIN EXCLUSIVE")
                mark()
                await asyncio.sleep(hold)
                # a filing that started in the last 5 s (SQLite's busy timeout) would just wait for the
                # lock: hold on until the service has noticed (a cycle comes every few seconds), ≤ 20 s
                while time.monotonic() - f.injected_mono < CATALOGUE_HOLD_MAX_S and not any(
                        r.mono > f.injected_mono and r.health and (r.health.get("catalogue") or {}).get("last_error")
                        for r in self.readings[-40:]):
                    await asyncio.sleep(0.5)
                con.execute("ROLLBACK")
            finally:
                con.close()
            restored()
            f.note = f"BEGIN EXCLUSIVE held {f.restored_mono - f.injected_mono:.1f} s (until the service noticed)"
        elif f.kind == "service_kill":
            mark()
            await self.kill_service()
            await asyncio.sleep(hold)
            async with self._lock:
                await self.spawn()
            restored()
            f.note = f"daq run SIGKILL, restarted after {hold:g} s (API up again)"
        else:  # pragma: no cover
            raise ValueError(f.kind)

    def _fill(self, path: Path) -> int:
        """Fill the spool's file system to the last byte with ``path``; returns the ballast's size."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            st = os.statvfs(self.spool)
            written = 0
            with contextlib.suppress(OSError):  # most of it at once
                os.posix_fallocate(fd, 0, max(0, st.f_bavail * st.f_frsize - (4 << 20)))
                written = os.fstat(fd).st_size
            os.lseek(fd, written, os.SEEK_SET)
            for size in (1 << 20, 64 << 10, 4 << 10, 512):  # then ever smaller pieces until nothing fits
                piece = b"\0" * size
                while True:
                    try:
                        n = os.write(fd, piece)
                    except OSError:
                        break
                    written += n
                    if n < size:
                        break
            return written
        finally:
            os.close(fd)

    # -- the run ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Start everything, inject the schedule, settle, stop cleanly."""
        self.http = httpx.AsyncClient()
        plan = [(t, k) for t, k in schedule(self.minutes, self.seed,
                                            tuple(k for k in self.kinds if k not in self.skipped))]
        self.faults = [Fault(i + 1, k, t) for i, (t, k) in enumerate(plan)]
        await self.start_influxd()
        await self.spawn()
        self.t0 = time.monotonic()
        self.start_ns = time.time_ns()
        print(f"soak: daq run up (pid {self.life().proc.pid}); {len(self.faults)} faults planned over "
              f"{self.minutes:g} min, seed {self.seed}", flush=True)
        watcher = asyncio.create_task(self.watch())
        try:
            for f in self.faults:
                await asyncio.sleep(max(0.0, self.t0 + f.planned_s - time.monotonic()))
                print(f"  {time.monotonic() - self.t0:6.1f} s  fault {f.n}: {f.kind}", flush=True)
                try:
                    await self.inject(f)
                except Exception as e:
                    f.error = f"{type(e).__name__}: {e}"
                    self.problems.append(f"fault {f.n} ({f.kind}) could not be injected or restored: {f.error}")
                    if not f.injected_mono:
                        f.injected_ns, f.injected_mono = time.time_ns(), time.monotonic()
                    if not f.restored_mono:
                        f.restored_ns, f.restored_mono = time.time_ns(), time.monotonic()
                print(f"  {time.monotonic() - self.t0:6.1f} s  fault {f.n} restored ({f.note or f.error})",
                      flush=True)
            await asyncio.sleep(max(0.0, self.t0 + self.minutes * 60 - time.monotonic()))
            self._baseline = self.baseline_depth()
            settle_until = time.monotonic() + SETTLE_MAX_S
            since = max([self.t0, *(f.restored_mono for f in self.faults)])
            while time.monotonic() < settle_until:  # recovered from the last fault: a reading after it says so
                last = self.readings[-1] if self.readings else None
                if last is not None and last.mono > since and last.health and self.recovered(last.health):
                    break
                await asyncio.sleep(0.5)
            print(f"  {time.monotonic() - self.t0:6.1f} s  SIGTERM (clean stop)", flush=True)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await self.stop_service()
        await self.drain_leftover()
        self.end_ns = time.time_ns()
        await self.http.aclose()

    async def drain_leftover(self) -> None:
        """What the clean stop could not send in its 10 s stays in the spool for the next start.

        Do what that next start does (the product's writer on the same spool, no
        acquisition) until the spool is empty, so the account sees every line.
        """
        spool = Spool(self.spool, 10**12)
        self.leftover_lines = spool.lines
        if not spool.batches:
            return
        t0 = time.monotonic()
        client = InfluxV1Client(self.db.url, DB, USER, PASSWORD, timeout_s=30.0)
        writer = StorageWriter(client, SampleBus().subscribe("none"), spool)
        writer.start()
        while spool.batches and time.monotonic() - t0 < 300:
            await asyncio.sleep(0.5)
        await writer.stop()
        await client.aclose()
        self.leftover_s = time.monotonic() - t0
        print(f"  the clean stop left {self.leftover_lines} lines in the spool; the next start's writer "
              f"sent them in {self.leftover_s:.1f} s", flush=True)

    # -- analysis of the readings ---------------------------------------------------------
    def baseline_depth(self) -> int:
        """Spool depth that counts as caught up: one second of acquisition (warm-up rate), or 3× the warm-up's p90."""
        first = self.faults[0].injected_mono if self.faults else float("inf")
        warm = [r for r in self.readings if r.health and r.mono < first and r.life == 1]
        depths = [r.health["spool_depth"] for r in warm]
        p90 = statistics.quantiles(depths, n=10)[-1] if len(depths) >= 2 else (depths[0] if depths else 0)
        rate = 0.0
        if len(warm) >= 2 and warm[-1].mono > warm[0].mono:
            total = [sum(d["samples"] for d in r.health["devices"]) for r in (warm[0], warm[-1])]
            rate = (total[1] - total[0]) / (warm[-1].mono - warm[0].mono)
        return max(int(rate), int(3 * p90), 1000)

    def recovered(self, h: dict) -> bool:
        """Health ok, storage ok and no more than one second of data waiting."""
        return (h.get("status") == "ok" and (h.get("storage") or {}).get("state") == "ok"
                and h.get("spool_depth", 0) <= self._baseline)

    def readings_stats(self) -> None:
        """Peak spool depth and recovery time of every fault, from the health readings."""
        self._baseline = self.baseline_depth()
        for i, f in enumerate(self.faults):
            end = self.faults[i + 1].injected_mono if i + 1 < len(self.faults) else float("inf")
            window = [r for r in self.readings if f.injected_mono <= r.mono < end and r.health]
            f.peak_lines = max((r.health["spool_depth"] for r in window), default=None)
            after = [r for r in window if r.mono >= f.restored_mono]
            done = next((r for r in after if self.recovered(r.health)), None)
            f.recovery_s = None if done is None else max(0.0, done.mono - f.restored_mono)
            if done is None and window:  # not back to normal before the next fault (or the end): at least this long
                f.not_recovered_s = window[-1].mono - f.restored_mono

    # -- the account -----------------------------------------------------------------------
    def q(self, text: str) -> list[dict]:
        """Rows of an InfluxQL query on the soak database (as admin)."""
        return influxql(self.db.url, DB, text, ADMIN)

    def devices(self) -> tuple[list[str], list[tuple[str, str, list[str]]]]:
        """(stream measurements, [(label, measurement, fields)] of polled groups)."""
        streams, polled = [], []
        for rig in self.settings.rigs:
            for dev in rig.devices:
                if isinstance(dev, SerialStreamDevice):
                    streams.append(dev.name)
                else:
                    for group, _hz, fields in dev.poll_groups():
                        label = dev.name if group is None else f"{dev.name}/{group}"
                        polled.append((label, dev.name, [f.name for f in fields]))
        return streams, polled

    def account(self) -> dict:
        """Streams, polled devices and per-window figures from InfluxDB and the recorded counts."""
        bounds = [f.injected_ns for f in self.faults]
        edges = [None, *bounds, None]  # window w: [edges[w], edges[w + 1]); 0 is the warm-up

        def window_of(t_ns: int) -> int:
            w = 0
            for i, b in enumerate(bounds):
                if t_ns >= b:
                    w = i + 1
            return w

        def where(lo, hi) -> str:
            cond = [c for c in (f"time >= {lo}" if lo is not None else "",
                                f"time < {hi}" if hi is not None else "") if c]
            return f" WHERE {' AND '.join(cond)}" if cond else ""

        events = stored_events(self.db.url, DB, ADMIN)
        nwin = len(bounds) + 1
        per_win = {k: [0] * nwin for k in ("lost", "dup", "gaps")}
        report: dict = {"streams": {}, "polled": {}, "events": events}
        streams, polled = self.devices()
        for m in streams:
            if "sample" not in field_keys(self.db.url, DB, m, ADMIN):
                self.problems.append(f"{m}: no sample field stored at all")
                continue
            [g] = self.q(f'SELECT count(sample), min(sample), max(sample) FROM "{m}"') or [{}]
            [gd] = self.q(f'SELECT count(distinct(sample)) FROM "{m}"') or [{}]
            count, distinct = int(g.get("count") or 0), int(gd.get("count") or 0)
            holes = int(g["max"]) - int(g["min"]) + 1 - distinct if distinct else 0
            mine = [e for e in events if e.get("device") == m]
            gaps = sum(int(e.get("missing_samples") or 0) for e in mine if e.get("kind") == "data_gap")
            lost_ev = sum(int(e.get("lines") or 0) for e in mine if e.get("kind") == "data_lost")
            resets = sum(1 for e in mine if e.get("kind") == "counter_reset")
            rej = self.rejected_of(m)
            lost = max(holes - gaps, lost_ev, 0)
            report["streams"][m] = dict(stored=count, distinct=distinct, holes=holes, gaps=gaps, lost_events=lost_ev,
                                        dup=count - distinct, lost=lost, resets=resets, rejected=rej)
            if holes != gaps + lost_ev:
                self.problems.append(f"{m}: {holes} counter values missing, but data_gap events count {gaps} "
                                     f"and data_lost events {lost_ev}")
            if resets:
                self.problems.append(f"{m}: {resets} counter_reset event(s): the counter did not resume")
            if rej:
                self.problems.append(f"{m}: {rej} sample lines set aside in spool/rejected/")
            prev_max = None
            win_dup_sum = 0
            for w in range(nwin):
                [r] = self.q(f'SELECT count(sample), min(sample), max(sample) FROM "{m}"'
                             f"{where(edges[w], edges[w + 1])}") or [{}]
                [d] = self.q(f'SELECT count(distinct(sample)) FROM "{m}"{where(edges[w], edges[w + 1])}') or [{}]
                c, dd = int(r.get("count") or 0), int(d.get("count") or 0)
                h = 0
                if dd:
                    h = int(r["max"]) - int(r["min"]) + 1 - dd
                    if prev_max is not None:
                        h += int(r["min"]) - prev_max - 1
                    prev_max = int(r["max"])
                gw = sum(int(e.get("missing_samples") or 0) for e in mine
                         if e.get("kind") == "data_gap" and window_of(e["time"]) == w)
                per_win["gaps"][w] += gw
                per_win["lost"][w] += max(h - gw, 0)
                per_win["dup"][w] += c - dd
                win_dup_sum += c - dd
            report["streams"][m]["dup_across_windows"] = (count - distinct) - win_dup_sum
        # polled: per life, and duplicates
        for label, m, fields in polled:
            keys = set(field_keys(self.db.url, DB, m, ADMIN))
            wanted = [f for f in fields if f in keys]
            times = [int(r["time"]) for r in self.q(f'SELECT {", ".join(chr(34) + f + chr(34) for f in wanted)} '
                                                      f'FROM "{m}"')] if wanted else []
            seen = Counter(times)
            dup = len(times) - len(seen)
            for t, k in seen.items():
                if k > 1:
                    per_win["dup"][window_of(t)] += k - 1
            lives = []
            lost = 0
            for life in self.lives:
                lo, hi = life.started_ns, life.ended_ns or self.end_ns
                stored = sum(1 for t in times if lo <= t <= hi)
                mine_lost = sum(int(e.get("lines") or 0) for e in events
                                if e.get("kind") == "data_lost" and e.get("device") == m and lo <= e["time"] <= hi)
                entry = {"life": life.n, "end": life.end, "stored": stored, "lost_events": mine_lost}
                if life.end == "sigterm" and life.final is not None:
                    acquired = int(life.final["devices"].get(label, 0))
                    entry["acquired"] = acquired
                    entry["lost"] = acquired - stored
                    if acquired == 0:
                        self.problems.append(f"{label}: life {life.n} acquired nothing: the account proves nothing")
                    if stored > acquired:
                        self.problems.append(f"{label}: life {life.n} stored {stored} points but acquired "
                                             f"{acquired}: {stored - acquired} more than acquired")
                    lost += max(acquired - stored, 0)
                else:
                    snap = life.before_kill or life.last_health
                    snap_ns = life.before_kill_ns or life.last_health_ns
                    dev = next((d for d in (snap or {}).get("devices", []) if d["device"] == label), None)
                    if dev is not None:
                        upto = sum(1 for t in times if lo <= t <= snap_ns)
                        entry.update(acquired_seen=int(dev["samples"]), stored_upto_seen=upto,
                                     at_kill=int(dev["samples"]) - upto)
                    lost += mine_lost
                lives.append(entry)
            rej = self.rejected_of(m) if label == m else 0
            report["polled"][label] = dict(measurement=m, stored=len(times), dup=dup, lives=lives, lost=lost,
                                           rejected=rej)
            if rej:
                self.problems.append(f"{m}: {rej} sample lines set aside in spool/rejected/")
        # data_lost of polled devices, by time
        polled_ms = {m for _, m, _ in polled}
        for e in events:
            if e.get("kind") == "data_lost" and e.get("device") in polled_ms:
                per_win["lost"][window_of(e["time"])] += int(e.get("lines") or 0)
        report["per_window"] = per_win
        report["polled_clean_lost"] = sum(max(le.get("lost", 0), 0) for p in report["polled"].values()
                                          for le in p["lives"] if le["end"] == "sigterm")
        return report

    def rejected_of(self, measurement: str) -> int:
        """Lines of ``measurement`` in ``spool/rejected/``."""
        return sum(1 for ln in self._rejected if ln.startswith(measurement.encode() + b",")
                   or ln.startswith(measurement.encode() + b" "))

    def dead_tasks(self, events: list[dict]) -> tuple[int, list[str]]:
        """Task restarts summed over the lives, plus processes that died on their own."""
        total, notes = 0, []
        for life in self.lives:
            lo, hi = life.started_ns, life.ended_ns or self.end_ns
            ev = [e for e in events if e.get("kind") == "task_restarted" and lo <= e["time"] <= hi]
            if life.final is not None:
                n = int(life.final.get("task_restarts", 0))
            else:
                snap = life.before_kill or life.last_health or {}
                n = int(snap.get("task_restarts", 0))
            n = max(n, len(ev))
            total += n
            if n:
                names = sorted({str(e.get("task")) for e in ev}) or sorted((life.final or {}).get("tasks", {}))
                notes.append(f"life {life.n}: {n} task restart(s): {', '.join(names)}")
            if life.end == "died":
                total += 1
                notes.append(f"life {life.n}: the daq run process died on its own")
        return total, notes

    # -- report ----------------------------------------------------------------------------
    def spoil(self) -> None:
        """``--sabotage``: delete 1 s of amplifier and PLC samples and store one amplifier counter twice.

        Shows that the account can fail: it must then report ≈10 000 + ≈50 lost, 1 duplicated.
        """
        t = self.start_ns + 10 * 10**9
        for m in ("press01_amp", "press01_plc"):
            self.q(f'DELETE FROM "{m}" WHERE time >= {t} AND time < {t + 10**9}')
        [row] = self.q(f'SELECT sample, rig FROM "press01_amp" WHERE time >= {t + 2 * 10**9} LIMIT 1')
        line = f"press01_amp,rig={row['rig']} sample={int(row['sample'])}i {int(row['time']) + 1}\n"
        r = httpx.post(f"{self.db.url}/write", params={"db": DB}, auth=ADMIN, content=line.encode())
        r.raise_for_status()
        print(f"soak: --sabotage: deleted 1 s of press01_amp and press01_plc at +10 s, stored counter "
              f"{int(row['sample'])} twice", flush=True)

    def reaction(self, i: int, events: list[dict]) -> str:
        """The service's own account of fault ``i``: its events and split requests in the fault's window."""
        f = self.faults[i]
        hi = self.faults[i + 1].injected_ns if i + 1 < len(self.faults) else self.end_ns
        seen: Counter[str] = Counter()
        for e in events:
            if not f.injected_ns <= e["time"] < hi or e.get("kind") not in REACTIONS:
                continue
            what = e["kind"]
            if what == "storage_fault":
                what += f"({e.get('cause')}/{int(e['status']) if e.get('status') is not None else '-'})"
            elif what in ("data_gap", "device_fault", "device_recovered"):
                what += f"({e.get('device')})"
            seen[what] += 1
        window = [r.health for r in self.readings
                  if r.health and f.injected_mono - 1.5 <= r.mono and (i + 1 >= len(self.faults)
                                                                      or r.mono < self.faults[i + 1].injected_mono)]
        splits = [h["storage"].get("split_requests", 0) for h in window]
        if splits and max(splits) > splits[0]:
            seen["split requests (413)"] = max(splits) - splits[0]
        text = ", ".join(f"{k} ×{n}" for k, n in seen.items())
        return text or "nothing (the fault went unnoticed)"

    def report(self) -> int:
        """Print the tables and the last line; returns the exit status."""
        if self.sabotage:
            self.spoil()
        self.readings_stats()
        self._rejected = rejected_lines(self.spool)
        acct = self.account()
        per_win = acct["per_window"]
        for i, f in enumerate(self.faults):
            f.lost, f.duplicated, f.gaps = per_win["lost"][i + 1], per_win["dup"][i + 1], per_win["gaps"][i + 1]
        streams, polled = acct["streams"], acct["polled"]
        lost = sum(s["lost"] for s in streams.values()) + sum(p["lost"] for p in polled.values())
        dup = sum(s["dup"] for s in streams.values()) + sum(p["dup"] for p in polled.values())
        dead, dead_notes = self.dead_tasks(acct["events"])
        left = sorted(p.name for p in self.spool.glob("*") if p.is_file() and p.suffix in (".lp", ".tmp"))
        if left:
            self.problems.append(f"spool not empty after the clean stop: {len(left)} file(s), e.g. {left[:3]}")
        if self._rejected:
            self.problems.append(f"spool/rejected/ holds {len(self._rejected)} line(s), e.g. "
                                 f"{self._rejected[0][:160]!r}")
        kills = sum(1 for life in self.lives if life.end in ("kill9", "died"))
        unclean = sum(1 for e in acct["events"] if e.get("kind") == "unclean_shutdown")
        if unclean != kills:
            self.problems.append(f"{kills} process(es) ended uncleanly but {unclean} unclean_shutdown event(s) stored")

        def fmt(v, spec: str) -> str:
            return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

        def rec(f: Fault) -> str:
            if f.recovery_s is not None:
                return f"{f.recovery_s:.1f}"
            return f">{f.not_recovered_s:.1f}" if f.not_recovered_s is not None else "-"

        print()
        print(f"faults injected (one row each; recovered = health ok and at most {self._baseline} lines waiting, "
              "one second of acquisition; >x: not yet after x s, when the next fault came):")
        print(f"  {'#':>2}  {'at_s':>6}  {'kind':<17} {'outage_s':>8}  {'peak_lines':>10}  {'recovery_s':>10}  "
              f"{'gaps':>7}  {'lost':>5}  {'duplicated':>10}  note")
        for f in self.faults:
            at = f.injected_mono - self.t0
            print(f"  {f.n:>2}  {at:>6.1f}  {f.kind:<17} {fmt(f.outage_s, '8.1f')}  {fmt(f.peak_lines, '>10')}  "
                  f"{rec(f):>10}  {f.gaps:>7}  {f.lost:>5}  {f.duplicated:>10}  "
                  f"{f.note or f.error}")
        print()
        print("what the service reported in each fault's window (stored events; split requests from health):")
        for i, f in enumerate(self.faults):
            print(f"  {f.n:>2}  {f.kind:<17} {self.reaction(i, acct['events'])}")
        print()
        print("per fault kind (outage: summed; peak and recovery: the worst; gaps, lost, duplicated: summed):")
        print(f"  {'kind':<22} {'count':>5}  {'outage_s':>8}  {'peak_lines':>10}  {'recovery_s':>10}  "
              f"{'gaps':>7}  {'lost':>5}  {'duplicated':>10}")
        for kind in KINDS:
            fs = [f for f in self.faults if f.kind == kind]
            if kind in self.skipped:
                print(f"  {kind:<22} {'-':>5}  skipped: {self.skipped[kind]}")
                continue
            if not fs:
                print(f"  {kind:<22} {0:>5}  {'-':>8}  {'-':>10}  {'-':>10}  {'-':>7}  {'-':>5}  {'-':>10}")
                continue
            outage = sum(f.outage_s for f in fs)
            peak = max((f.peak_lines for f in fs if f.peak_lines is not None), default=None)
            worst = max(fs, key=lambda f: (f.recovery_s is None, f.recovery_s or f.not_recovered_s or 0.0))
            print(f"  {kind:<22} {len(fs):>5}  {outage:>8.1f}  {fmt(peak, '>10')}  {rec(worst):>10}  "
                  f"{sum(f.gaps for f in fs):>7}  {sum(f.lost for f in fs):>5}  {sum(f.duplicated for f in fs):>10}")
        warm = [r.health["spool_depth"] for r in self.readings if r.health
                and r.mono < (self.faults[0].injected_mono if self.faults else float("inf"))]
        print(f"  {'(warm-up, no fault)':<22} {'-':>5}  {'-':>8}  {fmt(max(warm, default=None), '>10')}  {'-':>10}  "
              f"{per_win['gaps'][0]:>7}  {per_win['lost'][0]:>5}  {per_win['dup'][0]:>10}")
        cross = sum(s.get("dup_across_windows", 0) for s in streams.values())
        print(f"  {'(not attributable)':<22} {'-':>5}  {'-':>8}  {'-':>10}  {'-':>10}  {'-':>7}  "
              f"{acct['polled_clean_lost']:>5}  {cross:>10}")
        print(f"  {'total':<22} {len(self.faults):>5}  {sum(f.outage_s for f in self.faults):>8.1f}  "
              f"{fmt(max((f.peak_lines or 0 for f in self.faults), default=None), '>10')}  {'-':>10}  "
              f"{sum(s['gaps'] for s in streams.values()):>7}  {lost:>5}  {dup:>10}")
        print("  (not attributable: lost = polled samples acquired but not stored in the clean life, which "
              "cannot be placed in time;\n   duplicated = stream counter values stored twice in different windows)")
        print()
        print("streams (sample counter):")
        print(f"  {'device':<16} {'stored':>10} {'distinct':>10} {'holes':>8} {'data_gap':>9} {'data_lost':>9} "
              f"{'lost':>6} {'dup':>5} {'rejected':>8}")
        for m, s in streams.items():
            print(f"  {m:<16} {s['stored']:>10} {s['distinct']:>10} {s['holes']:>8} {s['gaps']:>9} "
                  f"{s['lost_events']:>9} {s['lost']:>6} {s['dup']:>5} {s['rejected']:>8}")
        print("polled devices (stored vs acquired per process life; acquired of a killed life: last health "
              "reading before the kill):")
        for label, p in polled.items():
            parts = []
            for le in p["lives"]:
                if "acquired" in le:
                    parts.append(f"life {le['life']} ({le['end']}): stored {le['stored']} = acquired "
                                 f"{le['acquired']}" if le["lost"] == 0 else
                                 f"life {le['life']} ({le['end']}): stored {le['stored']} != acquired "
                                 f"{le['acquired']} ({le['lost']:+d} not stored)")
                elif "acquired_seen" in le:
                    parts.append(f"life {le['life']} ({le['end']}): stored {le['stored']}, read {le['acquired_seen']}"
                                 f" before the kill, {le['at_kill']} of them not stored (unclean_shutdown)")
                else:
                    parts.append(f"life {le['life']} ({le['end']}): stored {le['stored']}")
            print(f"  {label:<20} dup {p['dup']}; " + "; ".join(parts))
        for life in self.lives:
            if life.end in ("kill9", "died"):
                gap = [e for e in acct["events"] if e.get("kind") == "data_gap" and e["time"] >= life.ended_ns
                       and e.get("device") in streams and e["time"] <= life.ended_ns + 30e9]
                first = {}
                for e in sorted(gap, key=lambda e: e["time"]):
                    first.setdefault(e["device"], int(e.get("missing_samples") or 0))
                print(f"  kill of life {life.n} (pid {life.proc.pid}): stream gaps at the restart (uncommitted + "
                      f"down time, counted exactly by data_gap): "
                      + ", ".join(f"{d} {n}" for d, n in first.items()))
        print()
        print("daq run processes (RSS from /proc/PID/status VmRSS):")
        for life in self.lives:
            rs = life.rss_kb
            dur = ((life.ended_ns or self.end_ns) - life.started_ns) / 1e9
            print(f"  life {life.n}: pid {life.proc.pid}, {dur:.0f} s, ended by {life.end}; "
                  f"RSS start {_mb(rs[0] if rs else None)}, end {_mb(rs[-1] if rs else None)}, "
                  f"max {_mb(max(rs) if rs else None)}")
        first, last = self.lives[0].rss_kb, self.lives[-1].rss_kb
        print(f"  RSS at start (first life) {_mb(first[0] if first else None)}, at end (last life) "
              f"{_mb(last[-1] if last else None)}")
        final = self.lives[-1].final or {}
        print(f"  at the clean stop: dropped_lines {final.get('dropped_lines')}, spool lines left "
              f"{final.get('spool_lines_left')}, catalogue outbox left {final.get('catalogue_outbox_left')}")
        self.report_cycles()
        restarts = []
        for life in self.lives:
            src = life.final if life.final is not None else (life.before_kill or life.last_health or {})
            restarts.append(f"life {life.n} {src.get('task_restarts', '?')}")
        died = sum(1 for life in self.lives if life.end == "died")
        print(f"  supervised task restarts: {', '.join(restarts)}; processes that died on their own: {died}")
        for note in dead_notes:
            print(f"  dead: {note}")
        for p in self.problems:
            print(f"FAIL: {p}")
        print(f"soak: {len(self.faults)} faults, lost {lost}, duplicated {dup}, dead tasks {dead}")
        return 1 if (lost or dup or dead or self.problems) else 0

    def report_cycles(self) -> None:
        """Cycles in InfluxDB against the catalogue (reported, not judged)."""
        try:
            influx = {(r["rig"], int(r["time"])) for r in self.q("SELECT cycle_no FROM cycles GROUP BY rig")}
            with contextlib.closing(sqlite3.connect(self.data / "catalogue.sqlite", timeout=30)) as con:
                rows = con.execute("SELECT rig, t_ns, cycle_no FROM cycles").fetchall()
        except (RuntimeError, sqlite3.Error, httpx.HTTPError) as e:
            print(f"  cycles: cannot compare ({e})")
            return
        filed = {(r, t) for r, t, _ in rows}
        twice = len(rows) - len(filed)
        numbers = len(rows) - len({(r, n) for r, _, n in rows})
        print(f"  cycles: {len(influx)} in InfluxDB, {len(rows)} filed in the catalogue; "
              f"{len(influx - filed)} only in InfluxDB, {len(filed - influx)} only in the catalogue "
              f"(a kill can cut one in flight); filed twice {twice}, cycle number used twice {numbers}")
        if twice or numbers:
            self.problems.append(f"catalogue: {twice} cycle(s) filed twice, {numbers} cycle number(s) used twice")


async def _main(args) -> int:
    work = Path(tempfile.mkdtemp(prefix="rigdaq-soak-"))
    kinds = tuple(args.kinds.split(",")) if args.kinds else KINDS
    unknown = set(kinds) - set(KINDS)
    if unknown:
        print(f"soak: unknown fault kind(s) {sorted(unknown)}; known: {', '.join(KINDS)}", file=sys.stderr)
        return 2
    soak = Soak(args.minutes, args.seed, work, kinds, args.sabotage)
    status = 1
    try:
        soak.write_config()
        soak.mount_spool()
        for kind, why in soak.skipped.items():
            print(f"soak: fault kind {kind} skipped: {why}", flush=True)
        try:
            await soak.run()
        finally:
            for life in soak.lives:  # whatever went wrong: no daq run is left behind
                if life.proc.poll() is None:
                    life.proc.kill()
                    life.proc.wait()
            if soak.db.paused:
                soak.db.resume()
        status = soak.report()
    finally:
        soak.db.stop()
        soak.unmount_spool()
        if args.keep or status != 0:
            print(f"soak: data kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return status


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=2.0, help="how long both rigs run under faults")
    p.add_argument("--seed", type=int, default=1, help="seed of the fault schedule")
    p.add_argument("--kinds", default="", help="comma-separated subset of the fault kinds (default: all)")
    p.add_argument("--sabotage", action="store_true",
                   help="self-check: spoil the stored data before the account (it must then fail)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (kept anyway on failure)")
    args = p.parse_args(argv)
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
