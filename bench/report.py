"""Certificates of production-length runs: render times, the render worker's memory, and acquisition meanwhile.

python -m bench.report [--sizes 10000 30000] [--old-sizes 10000] [--window 5]

1. Files press blows (realistic metrics and verdicts, a small archived force curve per blow)
   through the catalogue's own path, ``Catalogue.file_cycle``, into one stopped run in the
   catalogue of a simulated press service (service + API in this process, no storage): first
   10 000, measured, then 20 000 more (30 000), measured again.
2. Per size, a fresh render worker (:class:`daq.reports.worker.ReportWorker`, as the API's)
   renders the PDF, JSON and CSV certificates: time to build the content and to write each
   format, file sizes, and the worker's peak RSS.
3. The acquisition's sample rate (samples acquired per second, all devices) and the latency of
   another API route (``GET /api/runs/{id}``, polled from another process) idle, while the
   worker renders the PDF, and — for ``--old-sizes`` — while the old renderer
   (``git show HEAD~N:daq/reports/certificate.py``, the single-table PDF, in the service's own
   process, as the API used to) renders it. Ratios against idle and new against old.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import logging
import multiprocessing as mp
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from api.app import create_app  # noqa: E402
from api.server import ApiServer  # noqa: E402
from daq.catalogue import Catalogue  # noqa: E402
from daq.catalogue.runs import run_config  # noqa: E402
from daq.config import load_settings  # noqa: E402
from daq.cycles import CycleResult  # noqa: E402
from daq.reports.certificate import rig_fallbacks  # noqa: E402
from daq.reports.worker import ReportWorker  # noqa: E402
from daq.service import Service  # noqa: E402
from daq.storage.influxd import free_port  # noqa: E402


def _settings(tmp: Path):
    (tmp / "rigs").mkdir()
    rig = (ROOT / "configs" / "rigs" / "screw-press.toml").read_text().replace("port = 15020", f"port = {free_port()}")
    rig = re.sub(r"^poll_hz = .*$", "poll_hz = 50", rig, count=1, flags=re.M)
    (tmp / "rigs" / "screw-press.toml").write_text(rig)
    (tmp / "svc.toml").write_text(f'[service]\ndata_dir = "var"\nrigs = ["rigs/screw-press.toml"]\n'
                                  f'[api]\nport = {free_port()}\n')
    return load_settings(tmp / "svc.toml")


def _blow(rng: np.random.Generator, rig: str, run_id: int, no: int, t_ns: int) -> CycleResult:
    """A press blow as the analysis files it: the SPEC's metrics around a 90 MN press's working point."""
    peak = float(rng.normal(90_000, 1_500))
    forming = float(rng.normal(2_300, 60))
    blow_e = float(rng.normal(3_100, 40))
    share = float(rng.normal(0.255, 0.012))
    v = float(rng.normal(0.65, 0.02))
    m = {"peak_force_kN": peak, "forming_energy_kJ": forming, "impact_velocity_m_s": v, "blow_energy_kJ": blow_e,
         "efficiency": forming / blow_e, "contact_time_ms": float(rng.normal(150, 8)),
         "reverse_force_ratio": float(abs(rng.normal(0.02, 0.005))), "max_channel_share": share,
         "cycle_time_s": 4.6}
    reasons = [f"max_channel_share = {share:.3g} above max 0.3"] if share > 0.3 else []
    t = t_ns + np.arange(64, dtype=np.int64) * 100_000
    force = peak * np.sin(np.linspace(0, np.pi, 64))
    digest = hashlib.sha256(t.tobytes() + force.tobytes()).hexdigest()
    return CycleResult(rig=rig, cycle_no=no, t_ns=t_ns, verdict="nok" if reasons else "ok", metrics=m,
                       reasons=reasons, version="press-1.1", samples_sha256=digest, run=str(run_id),
                       kind="screw_press", end_ns=t_ns + 150_000_000,
                       info={"part": no, "blow_in_part": 1, "bounces": 0, "device": "press01_amp"},
                       samples=(t, {"force": force}))


T0 = 1_790_000_000_000_000_000


def new_run(cat: Catalogue, rig) -> int:
    """A run of the press (stopped at once: its certificate is final; the blows are filed into it after)."""
    run = cat.start_run(rig.name, T0, operator="bench", part_number="CRK-4411-B", lot="H23-0917",
                        serial="DIE-A113", config=run_config(rig))
    cat.stop_run(run.id, T0 + 10**18)
    return run.id


def file_blows(cat: Catalogue, rig, run_id: int, first: int, last: int, rng) -> float:
    """Blows ``first``..``last`` filed one by one with Catalogue.file_cycle; the seconds it took."""
    start = time.perf_counter()
    for no in range(first, last + 1):
        cat.file_cycle(_blow(rng, rig.name, run_id, no, T0 + 1_000_000_000 + no * 4_600_000_000))
    return time.perf_counter() - start


def old_certificate():
    """The old renderer (the single-table PDF, the I-MR chart of every value) from git, with its own plots."""
    log = subprocess.run(["git", "-C", str(ROOT), "log", "--format=%H", "-n", "20", "--", "daq/reports/certificate.py"],
                         capture_output=True, text=True, check=True).stdout.split()
    for commit in ["HEAD", *log]:
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:daq/reports/certificate.py"],
                             capture_output=True, text=True)
        if src.returncode == 0 and "t = Table(rows, colWidths=widths, repeatRows=1)" in src.stdout:
            break
    else:
        return None
    plots = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:daq/reports/plots.py"],
                           capture_output=True, text=True, check=True).stdout
    mods = {}
    for name, text in (("rigdaq_old_plots", plots),
                       ("rigdaq_old_certificate", src.stdout.replace("daq.reports.plots", "rigdaq_old_plots"))):
        spec = importlib.util.spec_from_loader(name, loader=None)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        exec(compile(text, f"<git {commit[:8]} {name}>", "exec"), mod.__dict__)
        mods[name] = mod
    return mods["rigdaq_old_certificate"]


def _probe(base: str, path: str, key: str, seconds: float, out: mp.Queue) -> None:
    """Latencies (ms) of GET ``path``, one request at a time for ``seconds``."""
    import httpx

    lat = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.perf_counter()
            r = c.get(path)
            lat.append((time.perf_counter() - t) * 1e3)
            assert r.status_code == 200, r.text
            time.sleep(0.02)
    out.put(lat)


def _acquired(service) -> int:
    return sum(a.status.samples for a in service.acquisitions)


class Probe:
    """Another process polling an API route while something runs here."""

    def __init__(self, base: str, path: str, key: str, seconds: float):
        self.ctx = mp.get_context("spawn")
        self.out = self.ctx.Queue()
        self.proc = self.ctx.Process(target=_probe, args=(base, path, key, seconds, self.out))

    async def __aenter__(self):
        self.proc.start()
        await asyncio.sleep(1.5)  # the interpreter up, polling
        return self

    async def __aexit__(self, *exc):
        self.lat = await asyncio.to_thread(self.out.get, True, 120)
        self.proc.join(10)


async def measure(service, during, base: str, path: str, key: str, seconds: float) -> dict:
    """Samples/s acquired and the route's latency while ``during()`` runs (or for ``seconds`` idle)."""
    async with Probe(base, path, key, seconds + 1) as probe:
        s0, t0 = _acquired(service), time.monotonic()
        if during is None:
            await asyncio.sleep(seconds)
        else:
            await during()
        s1, t1 = _acquired(service), time.monotonic()
    # latencies of the requests made while it ran (the probe keeps going a little longer)
    lat = probe.lat
    return {"rate": (s1 - s0) / (t1 - t0), "seconds": t1 - t0, "p50": statistics.median(lat), "max": max(lat),
            "n": len(lat)}


def _line(name: str, m: dict, idle: dict) -> str:
    return (f"    {name:34s} {m['rate']:10,.0f} samples/s (×{m['rate'] / idle['rate']:.3f} of idle) over "
            f"{m['seconds']:5.1f} s;  GET latency p50 {m['p50']:6.1f} ms, max {m['max']:7.1f} ms")


async def bench(sizes: list[int], old_sizes: list[int], window: float) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        settings = _settings(tmp)
        rig = settings.rigs[0]
        old = old_certificate() if old_sizes else None
        if old_sizes and old is None:
            print("(the old single-table renderer is not in this repository's history: no comparison)")
        service = Service(settings)
        app = create_app(settings, service)
        server = ApiServer(app, "127.0.0.1", settings.api.port)
        await service.start()
        await server.start()
        base = f"http://127.0.0.1:{settings.api.port}"
        key = service.keys.create("bench", "admin")[0]
        rigs = rig_fallbacks(service.rigs)
        url = settings.catalogue_url
        cat = Catalogue(url)
        rid, filed, rng = new_run(cat, rig), 0, np.random.default_rng(1)
        path = f"/api/runs/{rid}"
        worker = None
        try:
            for n in sorted(sizes):
                took = await asyncio.to_thread(file_blows, cat, rig, rid, filed + 1, n, rng)
                print(f"\nfiled blows {filed + 1:,}–{n:,} of run {rid} with Catalogue.file_cycle in {took:.1f} s "
                      f"({(n - filed) / took:,.0f} blows/s, the service acquiring meanwhile)")
                filed = n
                print(f"{n:,} blows:")
                worker = ReportWorker()  # a fresh worker per size: its peak RSS is this size's
                await asyncio.to_thread(worker.warm)
                times = {}
                for fmt in ("pdf", "json", "csv"):
                    t = time.perf_counter()
                    r = await worker.render(url, rid, fmt, rigs)
                    times[fmt] = time.perf_counter() - t
                    size = os.path.getsize(r.path)
                    os.unlink(r.path)
                    assert r.cycles == n, (r.cycles, n)
                    print(f"  new {fmt.upper():4s} {times[fmt]:6.2f} s (content {r.build_s:5.2f} s + writing "
                          f"{r.render_s:5.2f} s), {size / 1e6:6.1f} MB, worker peak RSS {r.max_rss_kb / 1024:6.0f} MiB")
                if old is not None and n in old_sizes:
                    ocat = Catalogue(url)
                    t = time.perf_counter()
                    content = old.build_report(ocat, rid, service.rigs)
                    build = time.perf_counter() - t
                    for fmt in ("pdf", "json", "csv"):
                        t = time.perf_counter()
                        data = old.RENDER[fmt][0](content)
                        took = build + time.perf_counter() - t
                        print(f"  old {fmt.upper():4s} {took:6.2f} s (content {build:5.2f} s, in-process), "
                              f"{len(data) / 1e6:6.1f} MB;  old / new = {took / times[fmt]:.2f}")
                    del content, data
                    ocat.close()
                print("  samples acquired per second (all devices) and GET /api/runs/{id} latency:")
                idle = await measure(service, None, base, path, key, window)
                print(_line("idle", idle, idle))

                async def in_worker(worker=worker):
                    r = await worker.render(url, rid, "pdf", rigs)
                    os.unlink(r.path)

                m = await measure(service, in_worker, base, path, key, window)
                print(_line("PDF rendering in the worker", m, idle))
                if old is not None and n in old_sizes:
                    async def in_process():  # as the API did: build, then render, in threads of its process
                        ocat = Catalogue(url)
                        content = await asyncio.to_thread(old.build_report, ocat, rid, service.rigs)
                        await asyncio.to_thread(old.RENDER["pdf"][0], content)
                        ocat.close()

                    m_old = await measure(service, in_process, base, path, key, window)
                    print(_line("old PDF rendering in-process", m_old, idle))
                    print(f"    worker against in-process: samples/s ×{m['rate'] / m_old['rate']:.3f}, GET latency "
                          f"p50 {m_old['p50'] / m['p50']:.1f}× lower, max {m_old['max'] / m['max']:.1f}× lower")
                worker.shutdown()
                worker = None
        finally:
            if worker is not None:
                worker.shutdown()
            cat.close()
            await server.stop()
            await service.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000], help="blows per run")
    p.add_argument("--old-sizes", type=int, nargs="*", default=[10_000],
                   help="sizes the old renderer is also timed at (it is quadratic: 30 000 take ~40 s)")
    p.add_argument("--window", type=float, default=5.0, help="seconds of idle acquisition measured")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in ("pymodbus", "daq", "api", "asyncua", "uvicorn"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the simulated devices' chatter and alarms
    asyncio.run(bench(a.sizes, a.old_sizes, a.window))


if __name__ == "__main__":
    main()
