"""The API over real HTTP on the running app, with the simulated press behind it."""

from __future__ import annotations

import asyncio

import httpx

from api.app import create_app
from api.server import ApiServer
from daq import __version__
from daq.service import Service
from tests.integration.helpers import bearer, keys_for, press_settings


async def test_api_serves_health_rigs_and_changing_latest_values(tmp_path, influxd, database):
    settings = press_settings(tmp_path, influxd.url, database, poll_hz=50)
    service = Service(settings)
    await service.start()
    server = ApiServer(create_app(settings, service), "127.0.0.1", settings.api.port)
    await server.start()
    base = f"http://127.0.0.1:{settings.api.port}"
    try:
        keys = keys_for(service)
        async with httpx.AsyncClient(base_url=base, timeout=5, headers=bearer(keys["operator"])) as http:
            for _ in range(120):  # until every device has been read for a while (1 s on a quiet machine)
                await asyncio.sleep(0.25)
                health = (await http.get("/api/health")).json()
                samples = {d["device"]: d["samples"] for d in health["devices"]}
                if samples.get("press01_plc", 0) > 10 and samples.get("press01_amp", 0) > 5000:
                    break
            assert health["status"] == "ok" and health["version"] == __version__
            assert health["catalogue"]["url"].startswith("sqlite:///") and health["catalogue"]["errors"] == 0
            devs = {d["device"]: d for d in health["devices"]}
            assert set(devs) == {"press01_plc", "press01_plc/slow", "press01_amp", "press01_dies",
                                 "press01_lube"}
            assert all(d["state"] == "ok" for d in devs.values())
            assert devs["press01_plc"]["samples"] > 10 and devs["press01_amp"]["samples"] > 5000
            assert health["storage"]["healthy"] is True and health["storage"]["dropped_lines"] == 0

            rigs = (await http.get("/api/rigs")).json()
            assert [(r["name"], r["kind"], r["state"]) for r in rigs] == [("press-01", "screw_press", "ok")]

            seen = []
            for _ in range(200):  # until the PLC's clock moved 1.5 s (2.4 s of polling on a quiet machine)
                latest = (await http.get("/api/rigs/press-01/latest")).json()
                seen.append(latest["channels"])
                if len(seen) >= 8 and seen[-1]["plc_tick"]["value"] - seen[0]["plc_tick"]["value"] > 1500:
                    break
                await asyncio.sleep(0.3)
            first = seen[0]
            assert first["force"]["unit"] == "kN" and first["position"]["unit"] == "mm"
            assert first["flywheel_speed"]["unit"] == "rpm" and first["force"]["quality"] == 0
            ticks = [c["plc_tick"]["value"] for c in seen]
            assert ticks == sorted(ticks) and ticks[-1] - ticks[0] > 1500
            assert len({c["position"]["value"] for c in seen}) > 1

            r = await http.get("/api/rigs/press-02/latest")
            assert r.status_code == 404 and "press-01" in r.json()["detail"]
            page = await http.get("/")
            assert page.status_code == 200 and "rigdaq" in page.text and '<script src="static/page.js">' in page.text
            login = await http.get("/", headers={"Authorization": ""})
            assert login.status_code == 401 and "API key" in login.text
            by_cookie = await http.get("/", headers={"Authorization": "", "Cookie": f"rigdaq_key={keys['qa']}"})
            assert by_cookie.status_code == 200 and by_cookie.text == page.text
            assert (await http.get("/openapi.json")).status_code == 200
            text = (await http.get("/metrics")).text
            assert 'rigdaq_samples_acquired_total{device="press01_amp",rig="press-01"}' in text
            assert "rigdaq_dropped_lines_total 0.0" in text and "rigdaq_spool_bytes" in text
            assert 'rigdaq_cycles_analysed_total{rig="press-01"}' in text and "rigdaq_live_clients 0.0" in text
            assert "rigdaq_catalogue_errors_total 0.0" in text
            amp = [ln for ln in text.splitlines()
                   if ln.startswith('rigdaq_samples_acquired_total{device="press01_amp"')]
            assert float(amp[0].split()[-1]) > 5000
    finally:
        await server.stop()
        await service.stop()
