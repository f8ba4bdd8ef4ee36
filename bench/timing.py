"""Timestamps against the truth: how far each stored sample's time is from when it was taken.

    .venv/bin/python -m bench.timing [--seconds N] [--restart-seconds M] [--backlog S] [--no-restart]
                                     [--keep] [--verbose]

The simulators know the true moment of every sample they show; with the developer
option ``RIGDAQ_SIM_TRUTH=DIR`` (:mod:`daq.simulators`, :mod:`drivers.sim.truth`) they
record it: for each streamed frame its counter and the host-clock time its sample was
taken (the model's time, on the rig's clock with its ``clock_ppm``, mapped to the host
clock), for each register image its ``plc_tick`` and scan time, and for each Modbus read
which image it served and when. The bench reads the stored samples back from InfluxDB
and compares.

**What runs.** The shipped rigs (``configs/rigs/screw-press.toml``: 10 kHz amplifier
stream, PLC at 50 Hz, two RS-485 units; ``configs/rigs/srm-rig.toml``: 20 kHz power
analyser, rig controller at 20 Hz), copied with a free PLC port into a service file like
``configs/demo.toml`` but with ``managed = false``: the bench starts its own ``influxd``.

* **Phase A — start-up and steady state:** a real ``daq run`` subprocess with its
  in-process simulators, for ``--seconds`` (default 65) after its API answers; then SIGTERM.
* **Phase B — restart onto a backlog:** the simulators in their own ``daq sim`` process
  and ``daq run --no-sim`` for ``--restart-seconds`` (default 20). The instruments are
  silent (a ``timeout`` fault scheduled at 0 s) until that first ``daq run`` is up, then
  switched on through ``daq sim``'s stdin (``clear DEVICE``), so it starts clean, not onto
  the backlog of its own start-up. Then SIGTERM; nobody reads while the instruments keep
  streaming into their output buffers (``[simulation] stream_buffer_s = 15`` in the bench's
  rig files: the default 2 s holds less than a restart takes); a second ``daq run
  --no-sim`` (another database) for ``--restart-seconds``. It is launched so that it
  starts reading about ``--backlog`` seconds (default 3) after the first one stopped: the
  first one's start-up time earlier than that (at once if its start-up took longer). The
  backlog it really met is printed.

**Joins.** Streams by the stored ``sample`` counter (exact). The press PLC by its stored
``plc_tick`` (exact: the image the poll read). Polled devices without a scan counter (the
RS-485 units, the SRM controller) by the read the simulator served nearest to the
sample's timestamp (within 40 % of a poll period; the bench says how many matched).

**Windows** (by true time): *first 5 s* from each device's first stored sample, *steady*
from 5 s to the end; after the restart: *backlog* (samples taken before the second
``daq run`` began reading: the sim sees its output FIFO shrink), *first 5 s* and *5 s–end*
from that moment. Figures are |timestamp − truth| in ms, p50 / p99 / max, with the
median signed error (positive: late).

**Cross-device** at each blow's contact: the PLC's first poll with force above the rig's
``contact_threshold_kN`` and the amplifier's first sample above it; reported is
``(ts_plc − ts_amp) − (truth_plc − truth_amp)`` — how far the two devices' timestamps
disagree beyond what truly separates the samples (``truth_plc − truth_amp`` is printed
too: the PLC's own sampling lag, up to a poll period).

**Drift** estimates are printed wherever the service shows them: a device key containing
``drift`` in ``/api/health`` (read every second), the saved stream clocks
(``DATA_DIR/stream_clocks.json``, read when they change) and ``clock drift`` log lines;
against the truth in the same convention (ppm of the sample period, positive when the
samples come slower: a rig clock 40 ppm fast is −39.998). If none shows one, the bench
says so.

The last line is ``timing: stream p99 X ms, plc p99 Y ms, cross-device p99 Z ms``, steady
state of phase A: stream = the worse of the two streams, plc = the worse of the polled
devices joined by a scan counter (the press PLC). Figures, not a pass/fail: the exit status
is non-zero only if the bench itself could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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

from daq.acquisition.transports.modbus import ModbusRtuDevice, ModbusTcpDevice
from daq.acquisition.transports.serial_stream import SerialStreamDevice
from daq.config import load_rig, load_settings
from daq.simulators import TRUTH_ENV
from daq.storage.influxd import ManagedInfluxd, free_port
from drivers.sim.truth import load_truth

ROOT = Path(__file__).resolve().parents[1]
S = 1_000_000_000  # ns per second
START_S = 5.0  # the start-up window
BACKLOG_BUFFER_S = 15.0  # the instruments' output buffers in phase B


def load_settings_rig(text: str, path: Path):
    """A rig file's text, parsed (written to ``path`` first)."""
    path.write_text(text)
    return load_rig(path)


# -- InfluxDB, column-wise -------------------------------------------------------------------
def query_columns(url: str, db: str, q: str) -> dict[str, np.ndarray]:
    """One InfluxQL SELECT as columns (``time`` int64 ns; integers int64; floats float64)."""
    params = {"db": db, "q": q, "epoch": "ns", "chunked": "true", "chunk_size": "100000"}
    cols: dict[str, list] = {}
    with httpx.Client(timeout=300.0) as http, http.stream("GET", f"{url}/query", params=params) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.strip():
                continue
            body = json.loads(line)
            if "error" in body:
                raise RuntimeError(f"{q}: {body['error']}")
            for res in body.get("results", []):
                if "error" in res:
                    raise RuntimeError(f"{q}: {res['error']}")
                for s in res.get("series", []):
                    for i, name in enumerate(s["columns"]):
                        vals = [v[i] for v in s["values"]]
                        kind = np.int64 if all(type(v) is int for v in vals) else np.float64
                        cols.setdefault(name, []).append(np.array(
                            [np.nan if v is None else v for v in vals] if kind is np.float64 else vals,
                            dtype=kind))
    return {k: np.concatenate(v) for k, v in cols.items()}


def _q(name: str) -> str:
    return '"' + name.replace('"', '\\"') + '"'


# -- pure analysis ---------------------------------------------------------------------------
@dataclass
class Errors:
    """Timestamp errors of one device's stored samples, by true time."""

    device: str
    how: str
    truth_ns: np.ndarray  # per matched sample
    err_ns: np.ndarray  # timestamp − truth
    stored: int  # samples stored
    note: str = ""

    def window(self, lo_ns: float, hi_ns: float) -> np.ndarray:
        """Errors of the samples truly taken in [lo, hi)."""
        m = (self.truth_ns >= lo_ns) & (self.truth_ns < hi_ns)
        return self.err_ns[m]


def stats_ms(err_ns: np.ndarray) -> dict:
    """n, p50/p99/max of |error| and the median signed error, in ms."""
    if len(err_ns) == 0:
        return {"n": 0}
    a = np.abs(err_ns) / 1e6
    return {"n": len(a), "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max()), "signed": float(np.median(err_ns) / 1e6)}


def fmt_stats(st: dict) -> str:
    if not st.get("n"):
        return "        (no samples)"
    return (f"{st['n']:>8}  {st['p50']:8.3f} {st['p99']:8.3f} {st['max']:9.3f}  {st['signed']:+9.3f}")


def join_exact(truth_keys: np.ndarray, truth_ns: np.ndarray, keys: np.ndarray,
               modulus: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Truth for each of ``keys`` (``truth_keys`` unique); returns (truth_ns, matched mask)."""
    tk = truth_keys % modulus if modulus else truth_keys
    k = keys % modulus if modulus else keys
    order = np.argsort(tk, kind="stable")
    tk, tn = tk[order], truth_ns[order]
    if len(tk) == 0:
        return np.zeros(len(k), dtype=np.int64), np.zeros(len(k), dtype=bool)
    i = np.clip(np.searchsorted(tk, k), 0, len(tk) - 1)
    ok = tk[i] == k
    return tn[i], ok


def join_nearest(times_ns: np.ndarray, values: np.ndarray, at_ns: np.ndarray,
                 max_ns: float) -> tuple[np.ndarray, np.ndarray]:
    """``values`` of the ``times_ns`` nearest each of ``at_ns`` (sorted times); (value, within max_ns)."""
    if len(times_ns) == 0:
        return np.zeros(len(at_ns), dtype=values.dtype), np.zeros(len(at_ns), dtype=bool)
    i = np.clip(np.searchsorted(times_ns, at_ns), 1, max(1, len(times_ns) - 1))
    lo = np.clip(i - 1, 0, len(times_ns) - 1)
    hi = np.clip(i, 0, len(times_ns) - 1)
    pick = np.where(np.abs(at_ns - times_ns[lo]) <= np.abs(times_ns[hi] - at_ns), lo, hi)
    return values[pick], np.abs(times_ns[pick] - at_ns) <= max_ns


def run_starts(x: np.ndarray, gap: float) -> np.ndarray:
    """Indices where a new run of ``x`` (ascending) begins: the first, and after every jump > gap."""
    if len(x) == 0:
        return np.zeros(0, dtype=np.intp)
    return np.concatenate(([0], np.flatnonzero(np.diff(x) > gap) + 1))


def read_resumed_ns(link: dict[str, np.ndarray], after_ns: int) -> int | None:
    """When a reader began draining the instrument's FIFO after ``after_ns`` (its queue shrank)."""
    m = link["host_ns"] >= after_ns
    t, q = link["host_ns"][m], link["queued_bytes"][m]
    shrank = np.flatnonzero(np.diff(q) < 0)
    return int(t[shrank[0] + 1]) if len(shrank) else None


# -- the bench -------------------------------------------------------------------------------
@dataclass
class Proc:
    """One ``daq`` subprocess."""

    name: str
    popen: subprocess.Popen
    log: Path
    launched_ns: int
    up_ns: int = 0
    sigterm_ns: int = 0
    health: list[tuple[float, dict]] = field(default_factory=list)  # (s since up, /api/health)
    clocks: list[tuple[float, dict]] = field(default_factory=list)  # (s since up, stream_clocks.json) on change


class Bench:
    """Configs, processes, queries and the report."""

    def __init__(self, seconds: float, restart_seconds: float, backlog_s: float, work: Path,
                 restart: bool = True, verbose: bool = False):
        self.seconds, self.restart_seconds, self.backlog_s = seconds, restart_seconds, backlog_s
        self.work = work
        self.restart = restart
        self.verbose = verbose
        self.db = ManagedInfluxd(work / "influxd", port=free_port())
        self.api_ports: dict[str, int] = {}
        self.procs: list[Proc] = []

    # -- configuration ---------------------------------------------------------------------
    def write_configs(self) -> None:
        """Rig files per phase (free PLC port; phase B: bigger instrument buffers) and service files."""
        for phase, buffer_s in (("a", None), ("b", BACKLOG_BUFFER_S)):
            rigs = self.work / f"rigs-{phase}"
            rigs.mkdir(parents=True, exist_ok=True)
            for name in ("screw-press.toml", "srm-rig.toml"):
                text = (ROOT / "configs" / "rigs" / name).read_text()
                if name == "screw-press.toml":
                    assert "port = 15020" in text
                    text = text.replace("port = 15020", f"port = {free_port()}")
                if buffer_s is not None:  # phase B: big buffers; streams silent until cleared
                    rig = load_settings_rig(text, rigs / name)
                    silent = ", ".join(f'{{ device = "{d.name}", kind = "timeout", at_s = 0 }}'
                                       for d in rig.devices if isinstance(d, SerialStreamDevice))
                    assert text.count("\n[simulation]\n") == 1 and "faults" not in text
                    text = text.replace("\n[simulation]\n", f"\n[simulation]\nstream_buffer_s = {buffer_s}\n"
                                        f"faults = [{silent}]\n")
                (rigs / name).write_text(text)
        for cfg, phase, db in (("a", "a", "timing_a"), ("b1", "b", "timing_b1"), ("b2", "b", "timing_b2")):
            self.api_ports[cfg] = free_port()
            (self.work / f"{cfg}.toml").write_text(f"""# bench/timing.py: configs/demo.toml, its own influxd, free ports
[service]
name = "rigdaq timing {cfg}"
data_dir = "var-{phase}"
rigs = ["rigs-{phase}/screw-press.toml", "rigs-{phase}/srm-rig.toml"]

[api]
host = "127.0.0.1"
port = {self.api_ports[cfg]}

[storage.influxdb]
api = "v1"
url = "{self.db.url}"
database = "{db}"
managed = false
commit_interval_s = 0.2
retention = "2d"
""")
        self.settings = {cfg: load_settings(self.work / f"{cfg}.toml") for cfg in ("a", "b1", "b2")}

    # -- processes -------------------------------------------------------------------------
    def spawn(self, name: str, args: list[str], truth: Path | None, stdin=subprocess.DEVNULL) -> Proc:
        """``python -m daq.cli ARGS`` in the work dir; ``truth``: its simulators record there."""
        log = self.work / f"{name}.log"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", ""))
                                                            if p)}
        env.pop(TRUTH_ENV, None)
        if truth is not None:
            env[TRUTH_ENV] = str(truth)
        with open(log, "wb") as fh:
            popen = subprocess.Popen([sys.executable, "-m", "daq.cli", *(["-v"] if self.verbose else []), *args],
                                     cwd=self.work, stdout=fh, stderr=subprocess.STDOUT, stdin=stdin, env=env)
        proc = Proc(name, popen, log, time.time_ns())
        self.procs.append(proc)
        return proc

    def cleanup(self) -> None:
        """Stop whatever of ours still runs (after a failure), then influxd."""
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
                try:
                    proc.popen.wait(60)
                except subprocess.TimeoutExpired:
                    proc.popen.kill()
                    proc.popen.wait()
        self.db.stop()

    def tail(self, proc: Proc, lines: int = 25) -> str:
        """The end of a process's log, indented."""
        text = proc.log.read_text(errors="replace").splitlines()
        return "\n".join("    " + ln for ln in text[-lines:])

    def health(self, cfg: str) -> dict | None:
        """``GET /api/health`` of the service running ``cfg``; None if it does not answer."""
        try:
            r = httpx.get(f"http://127.0.0.1:{self.api_ports[cfg]}/api/health", timeout=1.0)
            return r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    def wait_up(self, proc: Proc, cfg: str, timeout_s: float = 120.0) -> None:
        """Until the API answers (``daq run``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{self.tail(proc)}")
            if (h := self.health(cfg)) is not None:
                proc.up_ns = time.time_ns()
                proc.health.append((0.0, h))
                return
            time.sleep(0.1)
        raise RuntimeError(f"{proc.name}: no /api/health within {timeout_s:g} s:\n{self.tail(proc)}")

    def wait_sim(self, proc: Proc, devices: list[str], timeout_s: float = 120.0) -> None:
        """Until ``daq sim`` printed every device's endpoint."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{self.tail(proc)}")
            text = proc.log.read_text(errors="replace")
            if all(f"/{d}: " in text for d in devices):
                proc.up_ns = time.time_ns()
                return
            time.sleep(0.1)
        raise RuntimeError(f"{proc.name}: simulators not up within {timeout_s:g} s:\n{self.tail(proc)}")

    def hold(self, proc: Proc, cfg: str, seconds: float) -> None:
        """Let it run for ``seconds`` after it came up, reading /api/health every second.

        Also the service's saved stream clocks (``DATA_DIR/stream_clocks.json``: drift
        estimates kept across restarts), when they change.
        """
        end = proc.up_ns / S + seconds
        clocks_file = self.settings[cfg].data_dir / "stream_clocks.json"
        while (now := time.time_ns() / S) < end:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} died with {proc.popen.returncode}:\n{self.tail(proc)}")
            if (h := self.health(cfg)) is not None:
                proc.health.append((now - proc.up_ns / S, h))
            try:
                saved = json.loads(clocks_file.read_text())
            except (OSError, ValueError):
                saved = None
            if isinstance(saved, dict) and (not proc.clocks or proc.clocks[-1][1] != saved):
                proc.clocks.append((now - proc.up_ns / S, saved))
            time.sleep(max(0.0, min(now + 1.0, end) - time.time_ns() / S))

    def stop(self, proc: Proc, timeout_s: float = 180.0) -> int:
        """SIGTERM and wait for the clean stop; returns when it has exited (ns)."""
        proc.sigterm_ns = time.time_ns()
        proc.popen.send_signal(signal.SIGTERM)
        try:
            proc.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait()
            raise RuntimeError(f"{proc.name} did not stop within {timeout_s:g} s of SIGTERM; killed") from None
        if proc.popen.returncode != 0:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{self.tail(proc)}")
        return time.time_ns()

    def run(self) -> None:
        """Both phases."""
        asyncio.run(self.db.start())
        self.write_configs()
        t0 = time.monotonic()

        def say(msg: str) -> None:
            print(f"  {time.monotonic() - t0:6.1f} s  {msg}", flush=True)

        # phase A: daq run with its simulators in-process
        a = self.spawn("daq-run-a", ["run", str(self.work / "a.toml")], self.work / "truth-a")
        self.wait_up(a, "a")
        say(f"A: daq run up ({(a.up_ns - a.launched_ns) / S:.1f} s after launch); running {self.seconds:g} s")
        self.hold(a, "a", self.seconds)
        self.stop(a)
        say("A: daq run stopped (SIGTERM)")
        self.phase_a = a
        if not self.restart:
            return
        # phase B: simulators in daq sim; daq run --no-sim, stopped, paused, started again
        devices = [d.name for rig in self.settings["b1"].rigs for d in rig.devices]
        streams = [d.name for rig in self.settings["b1"].rigs for d in rig.devices
                   if isinstance(d, SerialStreamDevice)]
        sim = self.spawn("daq-sim-b", ["sim", str(self.work / "b1.toml")], self.work / "truth-b",
                         stdin=subprocess.PIPE)
        self.wait_sim(sim, devices)
        say(f"B: daq sim up, streams silent ({', '.join(streams)})")
        b1 = self.spawn("daq-run-b1", ["run", "--no-sim", str(self.work / "b1.toml")], None)
        self.wait_up(b1, "b1")
        sim.popen.stdin.write("".join(f"clear {d}\n" for d in streams).encode())
        sim.popen.stdin.flush()
        b1.up_ns = time.time_ns()  # its time starts with the streams
        say(f"B: daq run --no-sim up ({(b1.up_ns - b1.launched_ns) / S:.1f} s after launch); streams on; "
            f"running {self.restart_seconds:g} s")
        self.hold(b1, "b1", self.restart_seconds)
        self.stopped_b1_ns = self.stop(b1)
        # it stopped reading at SIGTERM (acquisition is cancelled first); the next one reads after its start-up
        wait = max(0.0, (b1.sigterm_ns - time.time_ns()) / S + self.backlog_s - (b1.up_ns - b1.launched_ns) / S)
        say(f"B: daq run stopped (SIGTERM, exited after {(self.stopped_b1_ns - b1.sigterm_ns) / S:.1f} s); "
            f"nobody reads; the next starts in {wait:.1f} s")
        time.sleep(wait)
        b2 = self.spawn("daq-run-b2", ["run", "--no-sim", str(self.work / "b2.toml")], None)
        self.wait_up(b2, "b2")
        say(f"B: daq run --no-sim started again (up {(b2.up_ns - b2.launched_ns) / S:.1f} s after launch); "
            f"running {self.restart_seconds:g} s")
        self.hold(b2, "b2", self.restart_seconds)
        self.stop(b2)
        self.stop(sim)
        say("B: daq run and daq sim stopped")
        self.phase_b = (sim, b1, b2)

    # -- analysis ----------------------------------------------------------------------------
    def device_errors(self, cfg: str, truth: dict, since_ns: int | None = None) -> dict[str, Errors]:
        """Per device: each stored sample's error against the truth."""
        url, db = self.db.url, self.settings[cfg].storage.influxdb.database
        where = f" WHERE time >= {since_ns}" if since_ns else ""
        out: dict[str, Errors] = {}
        for rig in self.settings[cfg].rigs:
            for dev in rig.devices:
                t = truth.get(dev.name)
                if t is None:
                    continue
                if isinstance(dev, SerialStreamDevice):
                    c = query_columns(url, db, f"SELECT {_q('sample')} FROM {_q(dev.name)}{where}")
                    ts, sample = c.get("time", np.zeros(0, np.int64)), c.get("sample", np.zeros(0, np.int64))
                    tr, ok = join_exact(t["frames"]["counter"], t["frames"]["truth_ns"], sample, 1 << 32)
                    out[dev.name] = Errors(dev.name, "stream: sample counter", tr[ok], ts[ok] - tr[ok], len(ts),
                                           "" if ok.all() else f"{(~ok).sum()} stored samples not in the truth")
                    continue
                names = [f.name for f in dev.fields()]
                scans = t["scans"]
                if "plc_tick" in names:
                    c = query_columns(url, db, f"SELECT {_q('plc_tick')} FROM {_q(dev.name)}{where}")
                    ts, tick = c.get("time", np.zeros(0, np.int64)), c.get("plc_tick", np.zeros(0, np.int64))
                    how = "poll: plc_tick"
                    tick_ok = np.ones(len(ts), dtype=bool)
                else:
                    first = next(f.name for f in dev.fields() if not f.writable)
                    c = query_columns(url, db, f"SELECT {_q(first)} FROM {_q(dev.name)}{where}")
                    ts = c.get("time", np.zeros(0, np.int64))
                    reads = t["reads"]
                    order = np.argsort(reads["served_ns"], kind="stable")
                    period_ns = S / max(g_hz for g_hz in _poll_rates(dev))
                    tick, tick_ok = join_nearest(reads["served_ns"][order], reads["tick"][order], ts,
                                                 0.4 * period_ns)
                    how = "poll: nearest read"
                tr, ok = join_exact(scans["tick"], scans["truth_ns"], tick)
                ok &= tick_ok
                out[dev.name] = Errors(dev.name, how, tr[ok], ts[ok] - tr[ok], len(ts),
                                       "" if ok.all() else f"{(~ok).sum()} of {len(ts)} samples not matched")
        return out

    def blows(self, cfg: str, truth: dict) -> list[dict]:
        """Per blow: the PLC's and the amplifier's first sample above the contact threshold."""
        url, db = self.db.url, self.settings[cfg].storage.influxdb.database
        out = []
        for rig in self.settings[cfg].rigs:
            if rig.kind != "screw_press":
                continue
            thr = rig.parameters.contact_threshold_kN
            amp = next((d for d in rig.devices if isinstance(d, SerialStreamDevice)
                        and any(c.name == "force" for c in d.stream_channels())), None)
            plc = next((d for d in rig.devices if isinstance(d, ModbusTcpDevice | ModbusRtuDevice)
                        and {"force", "plc_tick"} <= {f.name for f in d.fields()}), None)
            if amp is None or plc is None or amp.name not in truth or plc.name not in truth:
                continue
            a = query_columns(url, db, f"SELECT {_q('sample')} FROM {_q(amp.name)} WHERE {_q('force')} > {thr}")
            p = query_columns(url, db, f"SELECT {_q('plc_tick')} FROM {_q(plc.name)} WHERE {_q('force')} > {thr}")
            if not a or not p:
                continue
            a_first = run_starts(a["sample"], amp.sample_rate_hz * 0.5)
            p_first = run_starts(p["plc_tick"], 500)
            a_tr, a_ok = join_exact(truth[amp.name]["frames"]["counter"], truth[amp.name]["frames"]["truth_ns"],
                                    a["sample"][a_first], 1 << 32)
            p_tr, p_ok = join_exact(truth[plc.name]["scans"]["tick"], truth[plc.name]["scans"]["truth_ns"],
                                    p["plc_tick"][p_first])
            for i, ia in enumerate(a_first):
                if not a_ok[i]:
                    continue
                # the PLC's first scan above threshold: within one contact (≈150 ms) after the amplifier's
                near = np.flatnonzero(p_ok & (p_tr >= a_tr[i] - 50e6) & (p_tr < a_tr[i] + 300e6))
                if not len(near):
                    continue
                j = near[0]
                ts_a, ts_p = int(a["time"][ia]), int(p["time"][p_first[j]])
                out.append({"truth_amp": int(a_tr[i]), "true_lag": int(p_tr[j] - a_tr[i]),
                            "offset": (ts_p - ts_a) - int(p_tr[j] - a_tr[i]),
                            "err_amp": ts_a - int(a_tr[i]), "err_plc": ts_p - int(p_tr[j])})
        return out

    # -- report ------------------------------------------------------------------------------
    def report(self) -> int:
        """Print every table; the last line is the summary."""
        print()
        truth_a = load_truth(self.work / "truth-a")
        errs_a = self.device_errors("a", truth_a)
        rows: list[tuple[str, str, Errors, dict]] = []
        steady: dict[str, dict] = {}
        for name, e in errs_a.items():
            if not len(e.truth_ns):
                continue
            t_first = int(e.truth_ns.min())
            first = stats_ms(e.window(t_first, t_first + START_S * S))
            st = stats_ms(e.window(t_first + START_S * S, np.inf))
            steady[name] = st
            rows += [(name, "first 5 s", e, first), (name, "steady (5 s–end)", e, st)]
        print(f"phase A: daq run with in-process simulators, {self.seconds:g} s after its API answered")
        self.table(rows)

        blows = self.blows("a", truth_a)
        t_start = min((int(e.truth_ns.min()) for e in errs_a.values() if len(e.truth_ns)), default=0)
        print("\ncross-device at contact (press): first PLC poll vs first amplifier sample above the threshold")
        print("  blow   at (s)   true PLC lag (ms)   PLC err (ms)   amp err (ms)   misalignment (ms)")
        for k, b in enumerate(blows, 1):
            print(f"  {k:4}  {(b['truth_amp'] - t_start) / S:7.2f}  {b['true_lag'] / 1e6:18.3f}  "
                  f"{b['err_plc'] / 1e6:13.3f}  {b['err_amp'] / 1e6:13.3f}  {b['offset'] / 1e6:+18.3f}")
        steady_blows = [b for b in blows if b["truth_amp"] >= t_start + START_S * S]
        cross = stats_ms(np.array([b["offset"] for b in steady_blows], dtype=np.int64))
        if cross.get("n"):
            print(f"  steady state ({cross['n']} blows): |misalignment| p50 {cross['p50']:.3f} / p99 "
                  f"{cross['p99']:.3f} / max {cross['max']:.3f} ms; true PLC lag median "
                  f"{np.median([b['true_lag'] for b in steady_blows]) / 1e6:.2f} ms")
        else:
            print("  no blow after the first 5 s")

        if self.restart:
            self.report_restart()
        self.report_drift(truth_a)

        stream_p99 = max((st["p99"] for n, st in steady.items() if st.get("n") and errs_a[n].how.startswith("stream")),
                         default=float("nan"))
        plc_p99 = max((st["p99"] for n, st in steady.items() if st.get("n") and errs_a[n].how == "poll: plc_tick"),
                      default=float("nan"))
        cross_p99 = cross.get("p99", float("nan"))
        print(f"\ntiming: stream p99 {stream_p99:.3f} ms, plc p99 {plc_p99:.3f} ms, "
              f"cross-device p99 {cross_p99:.3f} ms")
        return 0

    def table(self, rows: list[tuple[str, str, Errors, dict]]) -> None:
        """One line per (device, window)."""
        print("  |timestamp − truth| in ms")
        print(f"  {'device':<16} {'joined by':<20} {'window':<22} {'n':>8}  {'p50':>8} {'p99':>8} {'max':>9}  "
              f"{'signed':>9}")
        notes = []
        for name, window, e, st in rows:
            print(f"  {name:<16} {e.how:<20} {window:<22} {fmt_stats(st)}")
            if e.note and (name, e.note) not in notes:
                notes.append((name, e.note))
        for name, note in notes:
            print(f"  note: {name}: {note}")

    def report_restart(self) -> None:
        """Phase B: the backlog, both runs' windows, and how the restart's lateness decays."""
        _, _, b2 = self.phase_b
        truth_b = load_truth(self.work / "truth-b")
        errs_1 = self.device_errors("b1", truth_b)
        errs_2 = self.device_errors("b2", truth_b)
        # the moment the second daq run began reading: an instrument's FIFO shrinks
        resumed = [r for name, t in truth_b.items() if len(t["link"]["host_ns"])
                   if (r := read_resumed_ns(t["link"], b2.launched_ns)) is not None]
        t_r = min(resumed) if resumed else b2.up_ns
        print(f"\nphase B: daq sim + daq run --no-sim, {self.restart_seconds:g} s; SIGTERM; "
              f"daq run --no-sim again (target backlog {self.backlog_s:g} s)")
        b1 = self.phase_b[1]
        print(f"  second start: launched {(b2.launched_ns - b1.sigterm_ns) / S:.2f} s after the first got SIGTERM "
              f"(it exited {(self.stopped_b1_ns - b1.sigterm_ns) / S:.2f} s after), up "
              f"{(b2.up_ns - b2.launched_ns) / S:.2f} s after launch, reading "
              f"{(t_r - b1.sigterm_ns) / S:.2f} s after the SIGTERM"
              + ("" if resumed else " (not seen in the FIFOs: the API's answer is taken)"))
        for name, t in truth_b.items():
            if not len(t["link"]["host_ns"]) or name not in errs_1 or name not in errs_2:
                continue
            e2 = errs_2[name]
            info = t["info"]
            lk = t["link"]
            before = lk["host_ns"] < t_r
            peak = int(lk["queued_bytes"][before].max()) if before.any() else 0
            drops = int(lk["dropped_bytes"][-1] - (lk["dropped_bytes"][before][0] if before.any() else 0))
            c1 = query_columns(self.db.url, self.settings["b1"].storage.influxdb.database,
                               f"SELECT max({_q('sample')}) FROM {_q(name)}")
            c2 = query_columns(self.db.url, self.settings["b2"].storage.influxdb.database,
                               f"SELECT min({_q('sample')}) FROM {_q(name)}")
            gap = int(c2["min"][0]) - int(c1["max"][0]) - 1 if c1 and c2 else None
            backlog_s = (t_r - int(e2.truth_ns.min())) / S if len(e2.truth_ns) else float("nan")
            print(f"  {name}: backlog at the second start {backlog_s:.2f} s "
                  f"(FIFO peak {peak / max(1, info['frame_bytes'] or 64) / info['rate_hz']:.2f} s of frames, "
                  f"{info['fifo_bytes'] / max(1, info['frame_bytes'] or 64) / info['rate_hz']:.1f} s capacity, "
                  f"dropped {drops} bytes); samples missing between the two runs: {gap}")
        rows = []
        for name, e in errs_1.items():
            if len(e.truth_ns):
                t_first = int(e.truth_ns.min())
                rows.append((name, "1st: first 5 s", e, stats_ms(e.window(t_first, t_first + START_S * S))))
                rows.append((name, "1st: 5 s–end", e, stats_ms(e.window(t_first + START_S * S, np.inf))))
        for name, e in errs_2.items():
            rows.append((name, "restart: backlog", e, stats_ms(e.window(-np.inf, t_r))))
            rows.append((name, "restart: first 5 s", e, stats_ms(e.window(t_r, t_r + START_S * S))))
            rows.append((name, "restart: 5 s–end", e, stats_ms(e.window(t_r + START_S * S, np.inf))))
        rows.sort(key=lambda r: r[0])
        self.table(rows)
        # how late the restart's timestamps were over time
        for name, e in errs_2.items():
            if not e.how.startswith("stream") or not len(e.truth_ns):
                continue
            marks = []
            for s in (0, 1, 2, 5, 10, 15):
                m = (e.truth_ns >= t_r + s * S) & (e.truth_ns < t_r + (s + 1) * S)
                if m.any():
                    marks.append(f"{s} s: {np.median(e.err_ns[m]) / 1e6:+.1f}")
            print(f"  {name} after the restart, median error (ms) by second: " + ", ".join(marks))

    def report_drift(self, truth: dict) -> None:
        """Drift estimates the service shows (/api/health, its saved stream clocks, its log) vs the rig clocks."""
        print("\ndrift estimate vs truth (ppm of the sample period: positive when samples come slower)")
        procs = [("A", self.phase_a)] + ([("B1", self.phase_b[1]), ("B2", self.phase_b[2])] if self.restart else [])
        found = False
        for label, proc in procs:
            series: dict[tuple[str, str], list[tuple[float, float]]] = {}
            for t, h in proc.health:
                for d in h.get("devices", []):
                    for key, v in _drift_keys(d):
                        series.setdefault((str(d.get("device")), f"/api/health {key}"), []).append((t, v))
            for t, saved in proc.clocks:
                for dev, st in saved.items():
                    if isinstance(st, dict):
                        for key, v in _drift_keys(st):
                            series.setdefault((dev, f"stream_clocks.json {key}"), []).append((t, v))
            logged = [ln for ln in proc.log.read_text(errors="replace").splitlines() if "clock drift" in ln]
            for (dev, source), pts in sorted(series.items()):
                found = True
                ppm = truth.get(dev, {}).get("info", {}).get("clock_ppm")
                true = "" if ppm is None else f"{(1 / (1 + ppm * 1e-6) - 1) * 1e6:+.3f}"
                if source.startswith("/api/health"):  # every second: a few marks
                    pts = [(t, v) for t, v in pts if round(t) in (2, 5, 8, 10, 20, 30, 45, 60)] + [pts[-1]]
                marks = ", ".join(f"{t:.0f} s: {v:+.3f}" for t, v in pts)
                print(f"  {label} {dev} ({source}; truth {true}): {marks}")
            for ln in logged:
                found = True
                print(f"  {label} log: {ln.split('  ', 1)[-1].strip()}")
        if not found:
            print("  not exposed (no drift in /api/health, no stream_clocks.json, nothing logged): skipped")


def _poll_rates(dev) -> list[float]:
    rates = [dev.poll_hz]
    rates += list((getattr(dev, "groups", None) or {}).values())
    return [r for r in rates if r]


def _drift_keys(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _drift_keys(v, f"{prefix}{k}.")
        elif "drift" in k.lower() and isinstance(v, int | float):
            yield f"{prefix}{k}", v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.timing", description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=65.0, help="phase A: how long daq run runs (default 65)")
    ap.add_argument("--restart-seconds", type=float, default=20.0,
                    help="phase B: how long each daq run --no-sim runs (default 20)")
    ap.add_argument("--backlog", type=float, default=3.0,
                    help="phase B: seconds of frames waiting when the second daq run starts reading (default 3)")
    ap.add_argument("--no-restart", action="store_true", help="skip phase B")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--verbose", action="store_true", help="daq processes log at debug level")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="rigdaq-timing-"))
    bench = Bench(args.seconds, args.restart_seconds, args.backlog, work, restart=not args.no_restart,
                  verbose=args.verbose)
    print(f"bench.timing: both rigs as daq run runs them, timestamps vs the simulators' truth (work dir {work})",
          flush=True)
    ok = False
    try:
        bench.run()
        rc = bench.report()
        ok = True
        return rc
    finally:
        bench.cleanup()
        if args.keep or not ok:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
