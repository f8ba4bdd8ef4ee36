"""API under load: 50 live-feed clients, and GET /api/runs/{id}/cycles against a bare route.

python -m bench.api [--clients 50] [--seconds 30]

1. The simulated press runs in this process (service + API, managed influxd if installed).
   For ``--seconds`` without clients, then ``--seconds`` with ``--clients`` WebSocket
   clients (in another process, as a browser would be), the samples acquired per device
   are counted: acquisition must not notice the clients. Each client measures delivery
   latency (arrival − the message's server timestamp) and rate.
2. ``GET /api/runs/{id}/cycles`` (auth, catalogue query, response model) against a bare
   FastAPI route added to the same app, from a load process with 16 concurrent
   connections: requests/s and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
sys.path.insert(0, str(ROOT))

from api.app import create_app  # noqa: E402
from api.server import ApiServer  # noqa: E402
from daq.config import load_settings  # noqa: E402
from daq.service import Service  # noqa: E402
from daq.storage.influxd import InfluxdMissingError, ManagedInfluxd, free_port  # noqa: E402


def _ws_clients(url: str, key: str, n: int, seconds: float, out: mp.Queue) -> None:
    import websockets

    async def one(stats: list) -> None:
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if msg["type"] == "readings":
                    stats.append((time.time_ns() - msg["t_ns"]) / 1e6)

    async def main() -> None:
        per = [[] for _ in range(n)]
        await asyncio.gather(*(one(p) for p in per))
        out.put(per)

    asyncio.run(main())


def _load(base: str, path: str, key: str, seconds: float, out: mp.Queue) -> None:
    import httpx

    async def worker(http, stop: float, counts: list) -> None:
        while time.monotonic() < stop:
            r = await http.get(path)
            counts.append(r.status_code)

    async def main() -> None:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"},
                                     limits=httpx.Limits(max_connections=16), timeout=30) as http:
            await http.get(path)
            counts: list[int] = []
            t0 = time.monotonic()
            await asyncio.gather(*(worker(http, t0 + seconds, counts) for _ in range(16)))
            out.put((len(counts) / (time.monotonic() - t0), sorted(set(counts))))

    asyncio.run(main())


def _settings(tmp: Path, influx_url: str | None):
    (tmp / "rigs").mkdir()
    rig = (ROOT / "configs" / "rigs" / "screw-press.toml").read_text().replace("port = 15020", f"port = {free_port()}")
    rig = re.sub(r"^poll_hz = .*$", "poll_hz = 50", rig, count=1, flags=re.M)
    (tmp / "rigs" / "screw-press.toml").write_text(rig)
    storage = f'[storage.influxdb]\nurl = "{influx_url}"\ndatabase = "bench"\n' if influx_url else ""
    (tmp / "svc.toml").write_text(f'[service]\ndata_dir = "var"\nrigs = ["rigs/screw-press.toml"]\n'
                                  f'[api]\nport = {free_port()}\n{storage}')
    return load_settings(tmp / "svc.toml")


def _acquired(service) -> dict[str, int]:
    return {a.status.device: a.status.samples for a in service.acquisitions}


async def bench(clients: int, seconds: float) -> None:
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        influxd = ManagedInfluxd(tmp / "influxdb", port=free_port())
        try:
            await influxd.start()
            url = influxd.url
        except (InfluxdMissingError, RuntimeError) as e:
            print(f"(no influxd: {e}; running without storage)")
            influxd, url = None, None
        settings = _settings(tmp, url)
        service = Service(settings)
        app = create_app(settings, service)

        @app.get("/bench/bare")
        def bare() -> dict:
            return {"ok": True}

        server = ApiServer(app, "127.0.0.1", settings.api.port)
        await service.start()
        await server.start()
        base = f"http://127.0.0.1:{settings.api.port}"
        key = service.keys.create("bench", "admin")[0]
        run = await service.runs.start("press-01", operator="bench")
        try:
            await asyncio.sleep(3)  # connected, first blow
            a0 = _acquired(service)
            await asyncio.sleep(seconds)
            a1 = _acquired(service)
            out = ctx.Queue()
            proc = ctx.Process(target=_ws_clients, args=(base.replace("http", "ws") + "/api/rigs/press-01/live",
                                                          key, clients, seconds, out))
            proc.start()
            await asyncio.sleep(2)  # clients connected
            b0 = _acquired(service)
            t0 = time.monotonic()
            while proc.is_alive() and time.monotonic() - t0 < seconds:
                await asyncio.sleep(0.2)
            b1 = _acquired(service)
            span_b = time.monotonic() - t0
            per = await asyncio.to_thread(out.get, True, 60)
            proc.join(10)
            lat = sorted(x for p in per for x in p)
            rates = [len(p) / seconds for p in per]
            print(f"live feed: {clients} clients × {seconds:g} s: {len(lat):,} readings delivered, "
                  f"{statistics.mean(rates):.1f} msg/s per client (min {min(rates):.1f})")
            print(f"  delivery latency p50 {lat[len(lat) // 2]:.1f} ms, p99 {lat[int(len(lat) * 0.99)]:.1f} ms, "
                  f"max {lat[-1]:.1f} ms")
            print("  samples acquired per second, without → with clients:")
            for dev in a0:
                ra, rb = (a1[dev] - a0[dev]) / seconds, (b1[dev] - b0[dev]) / span_b
                print(f"    {dev:18s} {ra:10.1f} → {rb:10.1f}   ratio {rb / ra if ra else float('nan'):.3f}")
            missing = sum(a.status.missing_samples for a in service.acquisitions)
            overruns = sum(a.status.overruns for a in service.acquisitions)
            lost = sum(s.lost_samples for s in service.bus.subscriptions)
            print(f"  stream samples missing {missing}, poll overruns {overruns}, bus samples lost {lost}")

            results = {}
            for name, path in (("cycles", f"/api/runs/{run.id}/cycles"), ("bare", "/bench/bare")):
                out = ctx.Queue()
                proc = ctx.Process(target=_load, args=(base, path, key, min(seconds, 10), out))
                proc.start()
                while proc.is_alive():
                    await asyncio.sleep(0.2)
                results[name] = out.get(timeout=10)
            n_cycles = (await asyncio.to_thread(service.catalogue.cycles_of_run, run.id))[0]
            (rc, codes_c), (rb_, codes_b) = results["cycles"], results["bare"]
            print(f"GET /api/runs/{{id}}/cycles ({n_cycles} cycles, auth + catalogue + model): {rc:,.0f} req/s "
                  f"{codes_c}")
            print(f"GET bare FastAPI route, same app and process:              {rb_:,.0f} req/s {codes_b}")
            print(f"ratio cycles / bare: {rc / rb_:.2f}")
        finally:
            await server.stop()
            await service.stop()
            if influxd is not None:
                influxd.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30.0)
    a = ap.parse_args()
    asyncio.run(bench(a.clients, a.seconds))


if __name__ == "__main__":
    main()
