"""Plant sizing: how many simulated presses one ``daq agent`` carries, and catalogue filing, PostgreSQL vs SQLite.

    .venv/bin/python -m bench.plant [--max-presses N] [--seconds S] [--filing-cycles M] [--blow-seconds B]
                                    [--sim-process] [--keep]

**Presses per agent.** For n = 1, 2, 4, 6, 8 … (every even n after 2, up to
``--max-presses``, default 12; it stops after the first n that loses samples) the bench
writes a service file with n copies of the shipped press (``configs/rigs/screw-press.toml``:
PLC over Modbus TCP at 50 Hz + a 1 Hz group, the 10 kHz × 6-channel amplifier stream on
a pty, two RS-485 units at 5 and 2 Hz): rigs ``press-01`` … , devices ``press01_plc``,
``press02_amp`` … (device names are measurement names: each copy has its own), pty links
``pty/pressNN-amp`` and ``pty/pressNN-rs485``, a free PLC port each, ``[simulation] seed``
= the copy's number. All n presses start together, so their blows come at the same
moments (the worst case for segmentation and the catalogue). One ``influxd`` started by
the bench (a database per n), the default SQLite catalogue under the agent's data dir.
``python -m daq.cli agent FILE`` runs as a subprocess; the simulated presses run inside it,
on its event loop, as ``daq agent`` starts them (``--sim-process``: in a ``daq sim``
process of their own, started first, and ``daq agent --no-sim``; the agent then meets the
backlog its start-up let build). The window starts 3 s after its ``/api/health`` first
answers and lasts ``--seconds`` (default 20), health read every second; then SIGTERM and
its clean stop.

Measured over the window: CPU seconds per second of the agent process (``/proc/PID/stat``
utime+stime, all its threads; children too, though it has none), of its main thread alone
(the event loop: one core at most), of ``influxd`` and of ``daq sim``. Samples lost, from
the health readings at the window's start and end: the devices' ``missing_samples``
(stream counter gaps) + ``overruns`` (poll slots skipped because the poll loop fell behind)
+ ``failed_polls`` + storage ``dropped_lines`` and ``rejected_lines`` + every bus
consumer's ``lost_samples``; after the clean stop, holes in each press's amplifier counter
stored in InfluxDB for the window (``max − min + 1 − count`` of its ``sample`` field) that
its ``missing_samples`` do not explain. What was lost before the window (start-up) is
shown, not counted. Also shown: the largest bus queue and spool depth seen, the blows the
catalogue filed, the start-up time and the 1-min load average (the bench does not own the
machine: other work slows the agent and shows up as PLC overruns first). The figure is the
largest n with nothing lost. The development machine has 2 cores, shared by the agent
(whose event loop is one core), its catalogue and spool threads, and ``influxd``.

**Filing throughput.** ``--filing-cycles`` (default 500) cycle results, each with the
archived samples of a ``--blow-seconds`` (default 2) s, 10 kHz, 6-channel blow as the
press's (made once with numpy: a ≈97 MN contact pulse over four tie-rod channels with the
simulator's gauge noise, their sum, a ram position in µm; every cycle reuses it, with its
own number, start time and uid), filed one after the other with
:meth:`daq.catalogue.store.Catalogue.file_cycle` (compression included, as in the
service) into SQLite (a file in a temporary dir on the data disk; WAL,
``synchronous = NORMAL``: no fsync per commit) and into a throwaway PostgreSQL started by
the bench (:func:`tests.servers.start_postgres`: ``initdb`` + ``pg_ctl`` from
``/usr/lib/postgresql/*/bin``, as the ``postgres`` OS user when run as root, on a free
port, data on the data disk, default settings: fsync on, ``synchronous_commit = on``, one
WAL flush per commit), then again into PostgreSQL with ``synchronous_commit = off``
(about SQLite's durability). Schema migrations run before the clock starts; the rows are
counted afterwards. Printed: cycles/s for each, the ratio PostgreSQL/SQLite, what
compressing one blow's samples alone costs, and what the live agents really archived per
blow (pre_s + contact + post_s ≈ 0.55 s, 7 channels with the PLC's flywheel speed).

The last line is ``plant: N presses per agent (0 lost), X CPU-s/s per press; filing
PostgreSQL A cycles/s, SQLite B cycles/s (ratio R)`` (X: the agent's CPU at that n over
n). Figures, not a pass/fail: the exit status is non-zero only if the bench itself could
not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from daq.storage.influxd import ManagedInfluxd, free_port
from tests.servers import start_postgres

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
T0_NS = 1_795_000_000_000_000_000
WARMUP_S = 3.0  # after /api/health first answers, before the window starts
BLOW_EVERY_S = 4.564  # the simulated press: a blow every 4.564 s (tests/integration/helpers.py)


# -- presses per agent -------------------------------------------------------------------------
def press_copy(text: str, k: int, plc_port: int) -> str:
    """The shipped press rig file as press number ``k``: own rig, device and pty names, PLC port, seed."""
    assert 'name = "press-01"' in text and "port = 15020" in text and "\nseed = 1\n" in text
    text = text.replace('name = "press-01"', f'name = "press-{k:02d}"')
    text = text.replace("press01", f"press{k:02d}")  # device names (measurements) and pty links
    text = text.replace("port = 15020", f"port = {plc_port}")
    return text.replace("\nseed = 1\n", f"\nseed = {k}\n")


def press_counts(n_max: int) -> list[int]:
    """1, 2, 4, 6, 8 … up to ``n_max`` (and ``n_max`` itself)."""
    ns = [n for n in [1, 2, *range(4, n_max + 1, 2)] if n <= n_max]
    if n_max not in ns:
        ns.append(n_max)
    return ns


def cpu_ticks(pid: int, tid: int | None = None) -> int | None:
    """CPU time of a process (utime + stime + cutime + cstime) or one thread, in clock ticks; None if gone."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat"
    try:
        f = Path(path).read_text().rpartition(")")[2].split()
    except OSError:
        return None
    # after the ")": state ppid … ; utime is field 14 of stat(5), so index 11 here
    ticks = int(f[11]) + int(f[12])
    return ticks + (int(f[13]) + int(f[14]) if tid is None else 0)


@dataclass
class Step:
    """One agent run with ``n`` presses."""

    n: int
    seconds: float = 0.0
    startup_s: float = 0.0
    cpu: float = float("nan")  # CPU-s per s, whole process
    loop_cpu: float = float("nan")  # main thread (the event loop)
    influxd_cpu: float = float("nan")
    sim_cpu: float = float("nan")  # the simulators' own process (--sim-process)
    lost: dict[str, int] = field(default_factory=dict)
    holes: int = 0
    stored: int = 0
    amp_rate: float = float("nan")  # mean amplifier samples per s and press, over the window
    max_queue: tuple[str, int] = ("", 0)
    max_spool: int = 0
    filed: int = 0
    catalogue_errors: int = 0
    repeated_scans: int = 0
    startup_lost: int = 0  # lost before the window (start-up): shown, not counted
    load: float = float("nan")  # 1-min load average at the window's end (others' work included)
    archived: tuple[int, float, float, float] = (0, 0.0, 0.0, 0.0)  # blows, samples, channels, bytes (means)
    error: str = ""

    @property
    def lost_total(self) -> int:
        """Samples lost, all kinds."""
        return sum(self.lost.values())


class Presses:
    """The agents, one after the other, against one influxd."""

    def __init__(self, work: Path, seconds: float, sim_process: bool = False):
        self.work, self.seconds, self.sim_process = work, seconds, sim_process
        self.db = ManagedInfluxd(work / "influxd", port=free_port())
        self.missing: dict[str, int] = {}  # amplifier → missing_samples in the last health reading

    def write_config(self, n: int) -> tuple[Path, int, Path]:
        """(service file, API port, data dir) for ``n`` presses."""
        press = (ROOT / "configs/rigs/screw-press.toml").read_text()
        rigs = self.work / f"rigs-{n}"
        rigs.mkdir(parents=True, exist_ok=True)
        names = []
        for k in range(1, n + 1):
            (rigs / f"press-{k:02d}.toml").write_text(press_copy(press, k, free_port()))
            names.append(f"rigs-{n}/press-{k:02d}.toml")
        port = free_port()
        cfg = self.work / f"plant-{n}.toml"
        cfg.write_text(f"""# bench/plant.py: {n} copies of the shipped press, one agent, the bench's influxd
[service]
name = "rigdaq plant {n}"
data_dir = "var-{n}"
rigs = [{", ".join(f'"{r}"' for r in names)}]

[api]
host = "127.0.0.1"
port = {port}

[storage.influxdb]
api = "v1"
url = "{self.db.url}"
database = "plant_{n}"
managed = false
commit_interval_s = 0.2
retention = "2d"
""")
        return cfg, port, self.work / f"var-{n}"

    @staticmethod
    def health(port: int) -> dict | None:
        """``GET /api/health`` of the agent; None if it does not answer."""
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2.0)
            return r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    @staticmethod
    def tail(log: Path, lines: int = 20) -> str:
        """The end of a log, indented."""
        text = log.read_text(errors="replace").splitlines() if log.exists() else []
        return "\n".join("    " + ln for ln in text[-lines:])

    def spawn(self, args: list[str], log: Path) -> subprocess.Popen:
        """``python -m daq.cli ARGS`` in the work dir, output to ``log``."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", ""))
                                                            if p)}
        with open(log, "wb") as fh:
            return subprocess.Popen([sys.executable, "-m", "daq.cli", *args], cwd=self.work, stdout=fh,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    @staticmethod
    def terminate(proc: subprocess.Popen | None, timeout_s: float = 120.0) -> bool:
        """SIGTERM and wait; False if it had to be killed."""
        if proc is None or proc.poll() is not None:
            return True
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
            return True
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return False

    def wait_sim(self, sim: subprocess.Popen, log: Path, n: int, timeout_s: float = 180.0) -> None:
        """Until ``daq sim`` printed every press's amplifier endpoint (the last face it opens)."""
        deadline = time.monotonic() + timeout_s
        want = [f"press-{k:02d}/press{k:02d}_amp: " for k in range(1, n + 1)]
        while time.monotonic() < deadline:
            if sim.poll() is not None:
                raise RuntimeError(f"daq sim ({n} presses) exited with {sim.returncode}:\n{self.tail(log)}")
            text = log.read_text(errors="replace")
            if all(w in text for w in want):
                return
            time.sleep(0.1)
        raise RuntimeError(f"daq sim ({n} presses): simulators not up within {timeout_s:g} s:\n{self.tail(log)}")

    def run(self, n: int) -> Step:
        """One agent with ``n`` presses for ``seconds`` after it came up."""
        step = Step(n)
        cfg, port, _ = self.write_config(n)
        log = self.work / f"agent-{n}.log"
        sim = proc = None
        try:
            if self.sim_process:
                sim_log = self.work / f"sim-{n}.log"
                sim = self.spawn(["sim", str(cfg)], sim_log)
                self.wait_sim(sim, sim_log, n)
            proc = self.spawn(["agent", *(["--no-sim"] if sim else []), str(cfg)], log)
            launched = time.monotonic()
            h0 = None
            while h0 is None:
                if proc.poll() is not None:
                    raise RuntimeError(f"daq agent ({n} presses) exited with {proc.returncode}:\n{self.tail(log)}")
                if time.monotonic() - launched > 180:
                    raise RuntimeError(f"daq agent ({n} presses): no /api/health within 180 s:\n{self.tail(log)}")
                h0 = self.health(port)
                if h0 is None:
                    time.sleep(0.1)
            step.startup_s = time.monotonic() - launched
            time.sleep(WARMUP_S)  # past the start-up (and a backlog the simulators built meanwhile)
            h0 = self.health(port)
            if h0 is None:
                raise RuntimeError(f"daq agent ({n} presses): /api/health stopped answering:\n{self.tail(log)}")
            t0, t0_ns = time.monotonic(), time.time_ns()
            c0, l0 = cpu_ticks(proc.pid), cpu_ticks(proc.pid, proc.pid)
            i0 = cpu_ticks(self.db.proc.pid) if self.db.proc else None
            s0 = cpu_ticks(sim.pid) if sim else None
            h1 = h0
            while (now := time.monotonic()) < t0 + self.seconds:
                time.sleep(min(1.0, t0 + self.seconds - now))
                for p, what in ((proc, "daq agent"), (sim, "daq sim")):
                    if p is not None and p.poll() is not None:
                        raise RuntimeError(f"{what} ({n} presses) died with {p.returncode}:\n{self.tail(log)}")
                if (h := self.health(port)) is not None:
                    h1 = h
                    self._peaks(step, h)
            t1, t1_ns = time.monotonic(), time.time_ns()
            step.load = os.getloadavg()[0]
            c1, l1 = cpu_ticks(proc.pid), cpu_ticks(proc.pid, proc.pid)
            i1 = cpu_ticks(self.db.proc.pid) if self.db.proc else None
            s1 = cpu_ticks(sim.pid) if sim else None
            step.seconds = t1 - t0
            step.cpu = (c1 - c0) / CLK_TCK / step.seconds
            step.loop_cpu = (l1 - l0) / CLK_TCK / step.seconds
            if i0 is not None and i1 is not None:
                step.influxd_cpu = (i1 - i0) / CLK_TCK / step.seconds
            if s0 is not None and s1 is not None:
                step.sim_cpu = (s1 - s0) / CLK_TCK / step.seconds
            self._losses(step, h0, h1)
        except RuntimeError as e:
            step.error = str(e)
        finally:
            if not self.terminate(proc):
                step.error = step.error or f"daq agent ({n} presses) did not stop within 120 s of SIGTERM"
            self.terminate(sim, 30.0)
        if not step.error:
            self._stored(step, n, t0_ns, t1_ns)
            step.archived = archived_blows(self.work / f"var-{n}" / "catalogue.sqlite")
        return step

    @staticmethod
    def _peaks(step: Step, h: dict) -> None:
        for name, b in (h.get("bus") or {}).items():
            if b["queued"] > step.max_queue[1]:
                step.max_queue = (name, b["queued"])
        step.max_spool = max(step.max_spool, h.get("spool_depth") or 0)

    @staticmethod
    def _counts(h: dict) -> dict[str, int]:
        """The loss counters of one health reading (cumulative since the agent started)."""
        devs, storage = h["devices"], h["storage"]
        return {
            "stream gaps": sum(d["missing_samples"] for d in devs),
            "overruns": sum(d["overruns"] for d in devs),
            "failed polls": sum(d["failed_polls"] for d in devs),
            "dropped": (storage.get("dropped_lines") or 0) + (storage.get("rejected_lines") or 0),
            "bus": sum(b["lost_samples"] for b in (h.get("bus") or {}).values()),
        }

    def _losses(self, step: Step, h0: dict, h1: dict) -> None:
        """Losses over the window (h1 − h0), and before it (h0: start-up)."""
        c0, c1 = self._counts(h0), self._counts(h1)
        step.lost = {k: c1[k] - c0[k] for k in c1}
        step.startup_lost = sum(c0.values())
        before = {d["device"]: d for d in h0["devices"]}
        step.repeated_scans = sum((d.get("repeated_scans") or 0) - (before.get(d["device"], {}).get("repeated_scans")
                                                                      or 0) for d in h1["devices"])
        amps = [d for d in h1["devices"] if d["device"].endswith("_amp")]
        if amps:
            step.amp_rate = sum(d["samples"] - before.get(d["device"], {}).get("samples", 0)
                                for d in amps) / len(amps) / step.seconds
        self.missing = {d["device"]: d["missing_samples"] - before.get(d["device"], {}).get("missing_samples", 0)
                        for d in amps}
        cat = h1.get("catalogue") or {}
        step.filed, step.catalogue_errors = cat.get("filed") or 0, cat.get("errors") or 0

    def _stored(self, step: Step, n: int, t0_ns: int, t1_ns: int) -> None:
        """Holes in each press's amplifier counter stored in the window that no reported gap explains."""
        unexplained = 0
        for k in range(1, n + 1):
            dev = f"press{k:02d}_amp"
            q = (f'SELECT count(sample), min(sample), max(sample) FROM "{dev}" '
                 f"WHERE time >= {t0_ns} AND time < {t1_ns}")
            try:
                r = httpx.get(f"{self.db.url}/query", timeout=120, params={"db": f"plant_{n}", "q": q})
                series = r.json()["results"][0].get("series")
            except (httpx.HTTPError, ValueError, KeyError, IndexError) as e:
                step.error = f"cannot count {dev} in InfluxDB: {e}"
                return
            if not series:
                step.error = f"nothing of {dev} stored in InfluxDB for the window"
                return
            _, cnt, lo, hi = series[0]["values"][0]
            step.stored += cnt
            holes = hi - lo + 1 - cnt
            step.holes += holes
            unexplained += max(0, holes - self.missing.get(dev, 0))
        step.lost["stored holes"] = unexplained


def archived_blows(path: Path) -> tuple[int, float, float, float]:
    """What an agent's catalogue archived: (blows, mean samples, mean channels, mean compressed bytes)."""
    import json
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
            rows = con.execute("SELECT n, channels, length(data) FROM cycle_samples").fetchall()
    except sqlite3.Error:
        return (0, 0.0, 0.0, 0.0)
    if not rows:
        return (0, 0.0, 0.0, 0.0)
    return (len(rows), float(np.mean([r[0] for r in rows])), float(np.mean([len(json.loads(r[1])) for r in rows])),
            float(np.mean([r[2] for r in rows])))


HEADER = ("  n   agent  /press    loop influxd     sim  amp S/s    lost  at start  max bus queue        spool"
          "  filed  up s  load  losses in the window")


def print_step(s: Step) -> None:
    """One row of the table under :data:`HEADER`."""
    if s.error:
        print(f"{s.n:>3}  failed: {s.error}", flush=True)
        return
    parts = ", ".join(f"{k} {v}" for k, v in s.lost.items() if v) or "none"
    sim = "     -" if s.sim_cpu != s.sim_cpu else f"{s.sim_cpu:6.2f}"
    print(f"{s.n:>3}  {s.cpu:6.2f}  {s.cpu / s.n:6.3f}  {s.loop_cpu:6.2f}  {s.influxd_cpu:6.2f}  {sim}  "
          f"{s.amp_rate:7.0f}  {s.lost_total:>6}  {s.startup_lost:>8}  {s.max_queue[1]:>6} "
          f"{s.max_queue[0] or '-':<12} {s.max_spool:>7}  {s.filed:>5}  {s.startup_s:4.1f}  {s.load:4.1f}  {parts}",
          flush=True)


# -- a throwaway PostgreSQL ----------------------------------------------------------------------
# -- filing throughput ---------------------------------------------------------------------------
def press_blow(rate_hz: float = 10_000, seconds: float = 2.0, seed: int = 1) -> tuple[np.ndarray, dict]:
    """Samples of one archived blow: time stamps and 6 channels, as the press's amplifier gives them."""
    rng = np.random.default_rng(seed)
    n = int(rate_hz * seconds)
    t = np.arange(n) / rate_hz
    t_ns = T0_NS + np.rint(np.arange(n) * (1e9 / rate_hz)).astype(np.int64)
    c0, contact_s = 0.3, 0.146  # the archive keeps pre_s = 0.3 s before the contact
    phase = np.clip((t - c0) / contact_s, 0.0, 1.0)
    pulse = np.where((t >= c0) & (t < c0 + contact_s), np.sin(np.pi * phase), 0.0) * 97_500.0  # kN
    shares = 0.25 * (1 + rng.normal(0, 0.03, 4))
    shares /= shares.sum()
    chans = {f"force_{i + 1}": (pulse * s + rng.normal(0, 5.0, n)).astype(np.float32).astype(np.float64)
             for i, s in enumerate(shares)}
    chans["force"] = sum(chans[f"force_{i}"] for i in range(1, 5)).astype(np.float32).astype(np.float64)
    # gauge noise ±5 kN and position noise ±5 µm as drivers/sim/press.py; the ram at 0.687 m/s
    # down to the die face (600 mm), ≈46 mm into the workpiece, back up after
    pos = np.where(t < c0, 600.0 - 687.0 * (c0 - t),
                   np.where(t < c0 + contact_s, 600.0 + 46.0 * np.sin(np.pi / 2 * phase),
                            646.0 - 300.0 * (t - c0 - contact_s)))
    chans["position"] = np.rint((pos + rng.normal(0, 0.005, n)) * 1000) / 1000  # int32 µm × 0.001
    return t_ns, chans


METRICS = {"peak_force_kN": 97_490.0, "forming_energy_kJ": 2_314.0, "impact_velocity_m_s": 0.6867,
           "blow_energy_kJ": 2_522.4, "efficiency": 0.9174, "contact_time_ms": 146.3,
           "max_channel_share": 0.2575, "cycle_time_s": 4.564}


def cycle_results(count: int, blow: tuple[np.ndarray, dict]):
    """``count`` results of one rig, one blow every 4.564 s, each with the same archived samples."""
    from daq.cycles import CycleResult

    t_ns, _ = blow
    step = int(BLOW_EVERY_S * 1e9)
    return [CycleResult("press-01", i + 1, int(t_ns[0]) + 3_000_000 + i * step, "ok", dict(METRICS), [],
                        "press-1.1", f"{i:064x}", "", kind="screw_press",
                        end_ns=int(t_ns[0]) + 149_000_000 + i * step,
                        info={"part": i + 1, "blow_in_part": 1, "bounces": 0, "device": "press01_amp"},
                        samples=blow)
            for i in range(count)]


def file_into(url: str, results) -> tuple[float, int, int]:
    """(seconds, cycles filed, archived bytes): every result through ``Catalogue.file_cycle``."""
    from daq.catalogue import Catalogue

    cat = Catalogue(url)  # migrations: before the clock
    try:
        t0 = time.perf_counter()
        for c in results:
            cat.file_cycle(c)
        dt = time.perf_counter() - t0
        with cat.engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT count(*) FROM cycles").scalar()
        return dt, rows, cat.archive_bytes()
    finally:
        cat.close()


def filing(work: Path, cycles: int, blow_s: float = 2.0,
           archived: tuple[int, float, float, float] = (0, 0.0, 0.0, 0.0)) -> dict[str, float | None]:
    """cycles/s into SQLite, PostgreSQL and PostgreSQL with synchronous_commit off.

    ``archived``: what the agents' catalogues held (:func:`archived_blows`), shown for comparison.
    """
    import psycopg
    from sqlalchemy.exc import SQLAlchemyError

    from daq.catalogue.store import pack_samples

    blow = press_blow(seconds=blow_s)
    t0 = time.perf_counter()
    reps = 20
    for _ in range(reps):
        _, data = pack_samples(*blow)
    pack_ms = (time.perf_counter() - t0) / reps * 1e3
    raw = (len(blow[0]) * (len(blow[1]) + 1) * 8)
    print(f"\nFiling {cycles} cycles one after the other through Catalogue.file_cycle, each with the archived "
          f"samples of a {blow_s:g} s, 10 kHz, 6-channel blow ({raw / 1e6:.2f} MB raw, {len(data) / 1e3:.0f} kB "
          f"compressed; compressing it alone takes {pack_ms:.1f} ms, in every back end):", flush=True)
    if archived[0]:
        print(f"  (for comparison, the live agents above archived {archived[0]} blows of {archived[1]:.0f} samples "
              f"× {archived[2]:.0f} channels, {archived[3] / 1e3:.0f} kB compressed on average)", flush=True)
    out: dict[str, float | None] = {"sqlite": None, "postgresql": None, "postgresql_async": None}

    def show(name: str, key: str, url: str) -> None:
        dt, rows, size = file_into(url, cycle_results(cycles, blow))
        if rows != cycles:
            raise RuntimeError(f"{name}: {rows} cycles in the catalogue after filing {cycles}")
        out[key] = cycles / dt
        print(f"  {name:<55} {cycles / dt:7.1f} cycles/s  ({dt / cycles * 1e3:6.2f} ms per cycle; "
              f"archive {size / 1e6:.0f} MB)", flush=True)

    sdir = Path(tempfile.mkdtemp(prefix="sqlite-", dir=work))
    show("SQLite (WAL, synchronous=NORMAL)", "sqlite", f"sqlite:///{sdir / 'catalogue.sqlite'}")
    pg = None
    try:
        # durable defaults (fsync on, one WAL flush per commit), data on the data disk
        pg = start_postgres(parent=work, settings={"max_connections": "20"})
        pg.admin('CREATE DATABASE "plant"')
        pg.admin('CREATE DATABASE "plant_async"')
        show(f"PostgreSQL {pg.version} (defaults: fsync, synchronous_commit on)", "postgresql", pg.url("plant"))
        show(f"PostgreSQL {pg.version}, synchronous_commit = off", "postgresql_async",
             pg.url("plant_async", synchronous_commit="off"))
    except (RuntimeError, OSError, SQLAlchemyError, psycopg.Error) as e:  # no server binaries, or it would not start
        print(f"  PostgreSQL: skipped: {e}", flush=True)
    finally:
        if pg is not None:
            pg.stop()
    if out["sqlite"] and out["postgresql"]:
        print(f"  ratio PostgreSQL/SQLite {out['postgresql'] / out['sqlite']:.2f}"
              + (f"; with synchronous_commit off {out['postgresql_async'] / out['sqlite']:.2f}"
                 if out["postgresql_async"] else ""), flush=True)
        print(f"  with blows of this size, one catalogue writer (one thread, one cycle at a time) keeps up with "
              f"≈{out['postgresql'] * BLOW_EVERY_S:.0f} presses on PostgreSQL, ≈{out['sqlite'] * BLOW_EVERY_S:.0f} "
              f"on SQLite at a blow every {BLOW_EVERY_S} s each (the simulated press)", flush=True)
    return out


# -- main ------------------------------------------------------------------------------------------
def presses(work: Path, n_max: int, seconds: float, sim_process: bool = False) -> list[Step]:
    """Agents with 1, 2, 4 … presses until one loses samples; the table as it goes."""
    bench = Presses(work, seconds, sim_process)
    asyncio.run(bench.db.start())
    steps: list[Step] = []
    try:
        where = "in a `daq sim` process of their own" if sim_process else "in the agent"
        print(f"Presses per agent: n copies of configs/rigs/screw-press.toml (simulated, {where}), "
              f"`daq agent` for {seconds:g} s after its health answers; {os.cpu_count()} CPUs. "
              f"CPU in CPU-s per s of run.", flush=True)
        print("(agent: the whole process; loop: its main thread, the event loop; sim: the `daq sim` process "
              "(--sim-process); amp S/s: amplifier samples acquired per s and press; lost: in the window; "
              "at start: lost before it, not counted; up s: launch to health answering; load: 1-min load "
              "average, others' work included)", flush=True)
        print(HEADER, flush=True)
        for n in press_counts(n_max):
            s = bench.run(n)
            steps.append(s)
            print_step(s)
            if s.error or s.lost_total:
                break
    finally:
        bench.db.stop()
    return steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.plant", description=__doc__.split("\n\n")[0])
    p.add_argument("--max-presses", type=int, default=12, help="the largest n tried (1, 2, 4, 6 … up to it)")
    p.add_argument("--seconds", type=float, default=20.0, help="how long each agent runs after it came up")
    p.add_argument("--filing-cycles", type=int, default=500, help="cycles filed into each catalogue database")
    p.add_argument("--blow-seconds", type=float, default=2.0, help="length of the archived blow filed")
    p.add_argument("--sim-process", action="store_true",
                   help="simulators in a `daq sim` process, the agent with --no-sim (default: in the agent)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    base = ROOT / "var"
    base.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-plant-", dir=base))  # on the data disk, not a tmpfs
    os.chmod(work, 0o755)  # the postgres OS user must reach its cluster dir inside
    t_start = time.monotonic()
    try:
        steps = presses(work, args.max_presses, args.seconds, args.sim_process)
        archived = next((s.archived for s in reversed(steps) if s.archived[0]), (0, 0.0, 0.0, 0.0))
        fil = filing(work, args.filing_cycles, args.blow_seconds, archived)
    finally:
        if args.keep:
            print(f"plant: data kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    good = [s for s in steps if not s.error and s.lost_total == 0]
    best = good[-1] if good else None
    failed = next((s for s in steps if s.error or s.lost_total), None)
    if failed is not None:
        why = failed.error.splitlines()[0] if failed.error else (
            f"lost {failed.lost_total} ({', '.join(f'{k} {v}' for k, v in failed.lost.items() if v)})")
        print(f"\nfirst n with losses or a failure: {failed.n}: {why}")
    elif steps:
        print(f"\nno losses up to n = {steps[-1].n} (--max-presses): the limit lies beyond")
    print(f"run time {time.monotonic() - t_start:.0f} s")

    def rate(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    ratio = (f"{fil['postgresql'] / fil['sqlite']:.2f}" if fil["postgresql"] and fil["sqlite"] else "-")
    per_press = f"{best.cpu / best.n:.3f}" if best else "-"
    print(f"plant: {best.n if best else 0} presses per agent (0 lost), {per_press} CPU-s/s per press; "
          f"filing PostgreSQL {rate(fil['postgresql'])} cycles/s, SQLite {rate(fil['sqlite'])} cycles/s "
          f"(ratio {ratio})")
    return 0 if steps and not steps[0].error else 1


if __name__ == "__main__":
    sys.exit(main())
