"""Run export: time, file size and peak RSS per format, at two run lengths (memory stays flat).

    .venv/bin/python -m bench.export [--minutes 2 10] [--formats hdf5 tdms mdf4 parquet csv] [--keep]

**What runs.** A real ``influxd`` of the bench's own (a temporary data dir, a free port) and
a service file with the shipped SRM rig (``configs/rigs/srm-rig.toml``) pointing at it, its
catalogue in SQLite. For each run length a run is filed in the catalogue and its samples
are written into InfluxDB through the project's line-protocol serializer
(:func:`daq.storage.lineproto.block_bytes`), tagged as the storage writer tags them
(``rig``, ``run``): the power analyser ``srm01_analyser`` at 20 kHz with its 13 channels and
the ``sample`` counter (14 fields; synthetic 4-phase currents and voltages, torque with
ripple, speed, rotor angle, quantised as the instrument's int16/uint16 scales), and the rig
controller ``srm01_ctrl`` at 20 Hz (its 8 registers); one test step (cycle) filed every
10 s. Runs lie 1 min apart in time.

**Measured.** Each export is a real ``daq export`` subprocess, started through a small
Python process that reports its child's ``ru_maxrss`` (``RUSAGE_CHILDREN``): the export's
own peak RSS (a child of the bench itself would count the bench's memory it was forked with).
Figures per format and length: wall time, output size, peak RSS, and the samples per
second exported; then, per format, the peak RSS of the longer run over the shorter one —
1.0 when memory does not grow with the run's length.

The last line is ``export: peak RSS <format> A MB → B MB … (runs of X and Y min)``.
Figures, not a pass/fail: the exit status is non-zero only if the bench itself could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from daq.catalogue import Catalogue
from daq.config import load_settings
from daq.cycles import CycleResult
from daq.storage.influxd import ManagedInfluxd, free_port
from daq.storage.lineproto import block_bytes
from drivers.block import Block

ROOT = Path(__file__).resolve().parent.parent
RATE = 20_000
FORMATS = ["hdf5", "tdms", "mdf4", "parquet", "csv"]
SUFFIX = {"hdf5": "h5", "tdms": "tdms", "mdf4": "mf4", "parquet": "parquet", "csv": "csv"}


def analyser_block(t0_ns: int, first: int, n: int, rng: np.random.Generator) -> Block:
    """``n`` samples of the power analyser from sample number ``first``: a motor at 1500 rpm, 4 phases."""
    k = np.arange(first, first + n, dtype=np.int64)
    t = k / RATE
    speed = 1500.0 + 0.5 * np.sin(2 * np.pi * 0.2 * t) + rng.normal(0, 0.05, n)
    angle = (speed / 60.0 * 360.0 * t) % 360.0
    chans: dict[str, np.ndarray] = {"sample": k}
    chans["speed"] = speed.astype(np.float32).astype(np.float64)
    chans["torque"] = (47.7 + 6.0 * np.sin(np.deg2rad(angle) * 24) + rng.normal(0, 0.1, n)
                       ).astype(np.float32).astype(np.float64)
    chans["rotor_angle"] = np.round(angle / 0.01) * 0.01
    for i, ph in enumerate("abcd"):
        el = np.deg2rad(angle * 6 - 90 * i)
        amps = 18 * np.clip(np.sin(el), 0, None) + rng.normal(0, 0.05, n)
        chans[f"phase_{ph}_current"] = np.round(amps / 0.01) * 0.01
    for i, ph in enumerate("abcd"):
        el = np.deg2rad(angle * 6 - 90 * i)
        chans[f"phase_{ph}_voltage"] = np.round(540 * np.sign(np.sin(el + 0.3)) / 0.05) * 0.05
    chans["dc_voltage"] = (540.0 + rng.normal(0, 0.5, n)).astype(np.float32).astype(np.float64)
    chans["dc_current"] = (15.0 + rng.normal(0, 0.2, n)).astype(np.float32).astype(np.float64)
    return Block("srm01_analyser", t0_ns + k * (1_000_000_000 // RATE), chans)


def ctrl_block(t0_ns: int, second: int) -> Block:
    """One second of the rig controller at 20 Hz."""
    n = 20
    t = t0_ns + second * 1_000_000_000 + np.arange(n, dtype=np.int64) * 50_000_000
    chans = {"step": np.full(n, 1 + second // 10, dtype=np.int64), "state": np.full(n, 2, dtype=np.int64),
             "speed_setpoint": np.full(n, 1500.0), "torque_setpoint": np.full(n, 47.7),
             "winding_temperature": np.full(n, 60.0 + second * 0.01), "dyno_temperature": np.full(n, 40.0),
             "sequence_running": np.ones(n, dtype=bool), "command": np.zeros(n, dtype=np.int64)}
    return Block("srm01_ctrl", t, chans)


def write_run(url: str, cat: Catalogue, t0_ns: int, seconds: int) -> int:
    """File a run of ``seconds`` starting at ``t0_ns`` and write its samples; its id."""
    run = cat.start_run("srm-01", t0_ns, operator="bench", part_number="SRM-7.5", lot="B1", serial="M-0001")
    tags = {"rig": "srm-01", "run": str(run.id)}
    rng = np.random.default_rng(run.id)
    http = httpx.Client(base_url=url, timeout=120)

    def post(body: bytes) -> None:
        r = http.post("/write", params={"db": "bench", "precision": "ns"}, content=body)
        if r.status_code != 204:
            raise RuntimeError(f"influxd refused a write: {r.status_code} {r.text[:200]}")

    with ThreadPoolExecutor(2) as pool:
        pending = []
        for s in range(seconds):
            body = block_bytes("srm01_analyser", tags, analyser_block(t0_ns, s * RATE, RATE, rng))[0]
            body += block_bytes("srm01_ctrl", tags, ctrl_block(t0_ns, s))[0]
            pending.append(pool.submit(post, body))
            if len(pending) > 3:
                pending.pop(0).result()
            if s % 10 == 9:
                start = t0_ns + (s - 9) * 1_000_000_000
                cat.file_cycle(CycleResult("srm-01", s // 10 + 1, start, "ok", {"speed_rpm": 1500.0,
                                           "mean_torque_Nm": 47.7}, version="bench", samples_sha256="0" * 64,
                                           run=str(run.id), kind="srm_rig", end_ns=start + 9_000_000_000))
        for p in pending:
            p.result()
    http.close()
    cat.stop_run(run.id, t0_ns + seconds * 1_000_000_000)
    return run.id


#: a small process between the bench and ``daq export``: on Linux a child's ``ru_maxrss`` includes what
#: it had before ``exec`` (a copy of its parent, the bench with its generated samples), so the export
#: is started from this small one, which reports the peak RSS of its child alone (RUSAGE_CHILDREN)
WRAPPER = """
import resource, subprocess, sys
p = subprocess.run(sys.argv[1:], stderr=subprocess.PIPE)
sys.stderr.buffer.write(p.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(p.returncode)
"""


def export(cfg: Path, run_id: int, fmt: str, out: Path) -> tuple[float, int, float]:
    """One ``daq export`` subprocess: (seconds, bytes written, its peak RSS in MB)."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", WRAPPER, sys.executable, "-m", "daq.cli", "export", str(run_id),
                        "--format", fmt, "-o", str(out), "--config", str(cfg)], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"daq export {run_id} --format {fmt} failed ({p.returncode}): {p.stderr[-500:]}")
    return time.perf_counter() - t, out.stat().st_size, int(p.stdout.split()[-1]) / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, nargs=2, default=[2, 10], help="the two run lengths")
    ap.add_argument("--formats", nargs="+", default=FORMATS, choices=FORMATS)
    ap.add_argument("--keep", action="store_true", help="keep the temporary dir (influxd data, exports)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rigdaq-bench-export-"))
    influxd = ManagedInfluxd(tmp / "influxd", port=free_port())
    asyncio.run(influxd.start())
    try:
        (tmp / "rigs").mkdir()
        shutil.copy(ROOT / "configs" / "rigs" / "srm-rig.toml", tmp / "rigs" / "srm-rig.toml")
        cfg = tmp / "bench.toml"
        cfg.write_text(f'[service]\ndata_dir = "var"\nrigs = ["rigs/srm-rig.toml"]\n\n[storage.influxdb]\n'
                       f'url = "{influxd.url}"\ndatabase = "bench"\n')
        settings = load_settings(cfg)
        httpx.post(f"{influxd.url}/query", params={"q": 'CREATE DATABASE "bench"'}).raise_for_status()
        cat = Catalogue(settings.catalogue_url)
        t0 = (time.time_ns() // 1_000_000_000 - 86_400) * 1_000_000_000
        runs = []
        for minutes in args.minutes:
            seconds = int(minutes * 60)
            w = time.perf_counter()
            rid = write_run(influxd.url, cat, t0, seconds)
            dt = time.perf_counter() - w
            print(f"run {rid}: {minutes:g} min, {seconds * RATE:,} analyser samples × 14 fields written in "
                  f"{dt:.1f} s ({seconds * RATE / dt:,.0f} samples/s)", flush=True)
            runs.append((rid, minutes, seconds * RATE + seconds * 20))
            t0 += (seconds + 60) * 1_000_000_000
        cat.close()
        peaks: dict[str, list[float]] = {f: [] for f in args.formats}
        print(f"{'format':8s} {'run':>7s} {'time s':>8s} {'samples/s':>11s} {'size MB':>9s} {'peak RSS MB':>12s}")
        for rid, minutes, samples in runs:
            for fmt in args.formats:
                out = tmp / f"run-{rid}.{SUFFIX[fmt]}"
                secs, size, rss = export(cfg, rid, fmt, out)
                peaks[fmt].append(rss)
                print(f"{fmt:8s} {minutes:5g} m {secs:8.1f} {samples / secs:11,.0f} {size / 1e6:9.1f} {rss:12.0f}",
                      flush=True)
                out.unlink()
        print("peak RSS, longer run / shorter run: " + ", ".join(
            f"{f} {p[1] / p[0]:.2f}" for f, p in peaks.items()))
        print("export: peak RSS " + ", ".join(f"{f} {p[0]:.0f} MB → {p[1]:.0f} MB" for f, p in peaks.items())
              + f" (runs of {args.minutes[0]:g} and {args.minutes[1]:g} min)")
    finally:
        influxd.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
