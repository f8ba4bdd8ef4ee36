"""The API as QA, engineers and operators use it, over real HTTP and WebSocket, on a running service.

One service (simulated press, real influxd) for the module: a run is started through the
API, blows are analysed, then every route is checked against every role, and QA's
downloads (cycles, curve, plot, certification report) are checked for content.
"""

from __future__ import annotations

import io
import json
import os
import time

import httpx
import numpy as np
import pytest
from pypdf import PdfReader
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from analysis.result import samples_hash
from daq.reports.certificate import verify_content_hash
from daq.reports.worker import WORKER
from tests.integration.helpers import (
    bearer,
    check_press_metrics,
    check_press_verdict,
    running_press,
)

ROLES = ("operator", "engineer", "qa", "admin")


@pytest.fixture(scope="module")
def api(tmp_path_factory, influxd):
    st = running_press(tmp_path_factory.mktemp("api"), influxd.url)
    http = httpx.Client(base_url=st.base, timeout=30)
    r = http.post("/api/runs", headers=bearer(st.keys["engineer"]), json={
        "rig": "press-01", "operator": "Zoë O'Neil", "part_number": "CRK-4411/B", "lot": "H23-0917",
        "serial": "DIE-A113", "notes": "first article, ½ scale", "extra": {"customer": "ACME, Inc."}})
    assert r.status_code == 201, r.text
    st.run_id = r.json()["id"]
    st.sim = st.service.simulators["press-01"]
    # on the press's clock the first two contacts come at ≈1.9 s and ≈6.5 s (tests/integration/helpers.py);
    # the run starts before the first, and more blows follow every 4.6 s while the module runs
    assert st.sim.model.t < 1.8, "the run started after the first blow"
    while (page := http.get(f"/api/runs/{st.run_id}/cycles", headers=bearer(st.keys["qa"])).json())["total"] < 2:
        assert st.sim.model.t < 60, "two blows were not filed in 60 s of the press's time"
        time.sleep(0.2)
    st.cycle_id = page["cycles"][0]["id"]
    st.http = http
    yield st
    http.close()
    st.stop()


def _run_cycles(api, *also: str) -> tuple[list[dict], list]:
    """The run's cycles and, read between two identical reads of them, the answers of ``also``.

    Blows go on every 4.6 s while the module runs: two identical reads on either side make
    the answers a consistent snapshot, whose counts can be compared exactly.
    """
    h = bearer(api.keys["admin"])
    for _ in range(5):
        before = api.http.get(f"/api/runs/{api.run_id}/cycles", headers=h).json()["cycles"]
        answers = [api.http.get(path, headers=h).json() for path in also]
        if api.http.get(f"/api/runs/{api.run_id}/cycles", headers=h).json()["cycles"] == before:
            return before, answers
    raise AssertionError("no two identical reads of the run's cycles in five tries")


def _matrix(st):
    """(method, route, path, body, least role, status for the roles allowed) for every route
    (least role None: no key needed)."""
    r, c = st.run_id, st.cycle_id
    return [
        ("GET", "/api/health", "/api/health", None, None, 200),
        ("GET", "/metrics", "/metrics", None, None, 200),
        ("GET", "/", "/", None, "operator", 200),
        ("GET", "/api/rigs", "/api/rigs", None, "operator", 200),
        ("GET", "/api/rigs/{rig}/latest", "/api/rigs/press-01/latest", None, "operator", 200),
        ("GET", "/api/rigs/{rig}/layout", "/api/rigs/press-01/layout", None, "operator", 200),
        ("GET", "/api/runs", "/api/runs", None, "operator", 200),
        ("GET", "/api/runs/{run_id}", f"/api/runs/{r}", None, "operator", 200),
        # a run is active on press-01
        ("POST", "/api/runs", "/api/runs", {"rig": "press-01"}, "engineer", 409),
        ("POST", "/api/runs/{run_id}/stop", "/api/runs/999999/stop", None, "engineer", 404),
        ("GET", "/api/runs/{run_id}/cycles", f"/api/runs/{r}/cycles", None, "qa", 200),
        ("GET", "/api/cycles/{cycle_id}", f"/api/cycles/{c}", None, "qa", 200),
        ("GET", "/api/cycles/{cycle_id}/curve", f"/api/cycles/{c}/curve?format=csv", None, "qa", 200),
        ("GET", "/api/cycles/{cycle_id}/plot.png", f"/api/cycles/{c}/plot.png", None, "qa", 200),
        ("GET", "/api/runs/{run_id}/report", f"/api/runs/{r}/report?format=json", None, "qa", 200),
        ("GET", "/api/keys", "/api/keys", None, "admin", 200),
        ("POST", "/api/keys", "/api/keys", {"name": "matrix", "role": "banana"}, "admin", 422),
        ("DELETE", "/api/keys/{key_id}", "/api/keys/999999", None, "admin", 404),
        # sign-off (QA signatures, metadata edits, revisions) and the audit trail
        ("POST", "/api/runs/{run_id}/signatures", "/api/runs/999999/signatures",
         {"meaning": "approved", "reason": "matrix", "key": "rdq_00000000_x"}, "qa", 404),
        ("GET", "/api/runs/{run_id}/signatures", f"/api/runs/{r}/signatures", None, "qa", 200),
        ("PATCH", "/api/runs/{run_id}", "/api/runs/999999", {"lot": "x"}, "engineer", 404),
        ("POST", "/api/runs/{run_id}/revisions", "/api/runs/999999/revisions", {"lot": "x", "reason": "m"},
         "engineer", 404),
        ("GET", "/api/runs/{run_id}/revisions", f"/api/runs/{r}/revisions", None, "qa", 200),
        ("GET", "/api/audit", "/api/audit", None, "qa", 200),
        ("GET", "/api/audit/verify", "/api/audit/verify", None, "qa", 200),
        ("GET", "/api/alarms", "/api/alarms", None, "operator", 200),
        ("POST", "/api/alarms/{alarm_id}/ack", "/api/alarms/999999/ack", {"comment": "seen"}, "operator", 404),
        ("GET", "/api/runs/{run_id}/export", "/api/runs/999999/export?format=csv", None, "qa", 404),
    ]


def test_auth_matrix_every_route_and_role(api):
    for method, _, path, body, least, status in _matrix(api):
        anonymous = api.http.request(method, path, json=body)
        bad = api.http.request(method, path, json=body, headers=bearer("rdq_00000000_not-a-key"))
        if least is None:
            assert anonymous.status_code == bad.status_code == status, path
            continue
        assert anonymous.status_code == 401, (method, path, anonymous.status_code)
        assert bad.status_code == 401, (method, path, bad.status_code)
        for role in ROLES:
            got = api.http.request(method, path, json=body, headers=bearer(api.keys[role])).status_code
            allowed = ROLES.index(role) >= ROLES.index(least)
            if allowed:
                assert got == status, (method, path, role, got)
            else:
                assert got == 403, (method, path, role, got)


def test_the_matrix_covers_every_route_in_the_openapi(api):
    spec = api.http.get("/openapi.json").json()
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    covered = {(m, route) for m, route, *_ in _matrix(api)}
    assert documented <= covered, documented - covered
    for path, ops in spec["paths"].items():  # every operation has a summary
        for op in ops.values():
            assert op.get("summary"), path


def test_bad_input_is_422_with_a_message(api):
    h = bearer(api.keys["admin"])
    for method, path, body in [
        ("POST", "/api/runs", {"rig": "press-01", "operator": "x" * 201}),
        ("POST", "/api/runs", {"rig": "press-01", "colour": "red"}),
        ("POST", "/api/runs", {"rig": "press-01", "notes": "bell\x07"}),
        ("POST", "/api/runs", {"rig": "press-01", "extra": {"customer": "nul\x00"}}),
        ("POST", "/api/runs", {"rig": "press-01", "extra": {"cust\x1bomer": "ACME"}}),
        ("PATCH", f"/api/runs/{api.run_id}", {"extra": {"customer": "nul\x00"}}),
        ("GET", "/api/runs?limit=0", None),
        ("GET", "/api/runs?since=yesterday", None),
        ("GET", f"/api/cycles/{api.cycle_id}/curve?format=xml", None),
        ("GET", f"/api/runs/{api.run_id}/report?format=docx", None),
        ("GET", "/api/cycles/-3", None),
        ("POST", "/api/keys", {"name": "x", "role": "superuser"}),
    ]:
        r = api.http.request(method, path, json=body, headers=h)
        assert r.status_code == 422, (path, body, r.status_code)
        assert r.json()["detail"], r.text
        if body and "extra" in body:
            assert "extra" in r.json()["detail"] and "control character" in r.json()["detail"], r.text
    r = api.http.post("/api/runs", headers=h, content=b"{not json", )
    assert r.status_code == 422


def test_runs_list_filters_and_run_detail(api):
    h = bearer(api.keys["operator"])
    page = api.http.get("/api/runs", params={"part_number": "CRK-4411/B"}, headers=h).json()
    assert page["total"] == 1 and page["runs"][0]["lot"] == "H23-0917"
    assert api.http.get("/api/runs", params={"lot": "nope"}, headers=h).json()["total"] == 0
    assert api.http.get("/api/runs", params={"since": "2100-01-01T00:00:00Z"}, headers=h).json()["total"] == 0
    run = api.http.get(f"/api/runs/{api.run_id}", headers=h).json()
    assert run["active"] and run["operator"] == "Zoë O'Neil" and run["extra"] == {"customer": "ACME, Inc."}
    for _ in range(20):  # the rigs view shows the last blow analysed: wait out its filing, if it is on the way
        cycles, (run, rigs) = _run_cycles(api, f"/api/runs/{api.run_id}", "/api/rigs")
        if rigs[0]["last_cycle"] == len(cycles):
            break
        time.sleep(0.1)
    assert [c["cycle_no"] for c in cycles] == list(range(1, len(cycles) + 1)) and len(cycles) >= 2
    for c in cycles:
        check_press_verdict(c["verdict"], c["reasons"], c["metrics"])
    ok = sum(c["verdict"] == "ok" for c in cycles)
    assert (run["cycles"], run["ok"], run["nok"]) == (len(cycles), ok, len(cycles) - ok)
    assert rigs[0]["active_run"] == str(api.run_id)
    assert (rigs[0]["last_cycle"], rigs[0]["last_verdict"]) == (len(cycles), cycles[-1]["verdict"])


def test_qa_gets_cycles_curve_and_plot(api):
    h = bearer(api.keys["qa"])
    cycles, (page,) = _run_cycles(api, f"/api/runs/{api.run_id}/cycles?limit=1")
    assert page["total"] == len(cycles) and page["cycles"] == cycles[:1]
    c = api.http.get(f"/api/cycles/{api.cycle_id}", headers=h).json()
    assert c["run"] == api.run_id and c["version"] == "press-1.1" and len(c["samples_sha256"]) == 64
    check_press_metrics(c["metrics"])  # the simulated press's physics, tests/integration/helpers.py
    check_press_verdict(c["verdict"], c["reasons"], c["metrics"])
    # by default the curve is the archive: what was analysed, hashing to the cycle's samples_sha256
    default = api.http.get(f"/api/cycles/{api.cycle_id}/curve", headers=h)
    assert default.headers["x-source"] == "archive" and default.headers["x-samples-sha256-match"] == "true"
    archive = api.http.get(f"/api/cycles/{api.cycle_id}/curve", params={"source": "archive"}, headers=h)
    assert archive.content == default.content
    a = archive.json()
    t = np.array(a["t_ns"], dtype=np.int64)
    chans = {k: np.array(v, dtype=float) for k, v in a["channels"].items()}
    assert samples_hash((t - t[0]) / 1e9, chans) == c["samples_sha256"]  # the archive is what was analysed
    assert archive.headers["x-samples-sha256"] == c["samples_sha256"] and a["samples_sha256_match"] is True
    # InfluxDB's copy is not what was hashed, and says so
    influx = api.http.get(f"/api/cycles/{api.cycle_id}/curve", params={"source": "influxdb"}, headers=h)
    assert influx.headers["x-source"] == "influxdb" and influx.headers["x-samples-sha256-match"] == "false"
    i = influx.json()
    ti = np.array(i["t_ns"], dtype=np.int64)
    served = samples_hash((ti - ti[0]) / 1e9, {k: np.array(v, dtype=float) for k, v in i["channels"].items()})
    assert influx.headers["x-samples-sha256"] == served != c["samples_sha256"]
    assert max(i["channels"]["force"]) == pytest.approx(c["metrics"]["peak_force_kN"], rel=1e-6)
    # the same window of the same stream: InfluxDB is queried by the cycle's start and end, which are on
    # the instrument's time base, its samples carry host time; the two agree within 0.5 ms (5 samples)
    # at either end
    assert len(i["t_ns"]) == pytest.approx(len(a["t_ns"]), abs=10)
    csv_text = api.http.get(f"/api/cycles/{api.cycle_id}/curve", params={"format": "csv"}, headers=h).text
    header = csv_text.splitlines()[0].split(",")
    # a header, then one line per sample of the curve the default (JSON) answer gives
    assert header[:2] == ["time", "t_ns"] and "force" in header and len(csv_text.splitlines()) == len(t) + 1
    png = api.http.get(f"/api/cycles/{api.cycle_id}/plot.png", headers=h)
    assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert api.http.get("/api/cycles/99999999", headers=h).status_code == 404


def test_certification_report_pdf_json_csv(api):
    h = bearer(api.keys["qa"])
    j = api.http.get(f"/api/runs/{api.run_id}/report", params={"format": "json"}, headers=h).json()
    assert verify_content_hash(j)
    assert j["run"]["part_number"] == "CRK-4411/B"
    assert set(j["statistics"]) >= {"peak_force_kN", "efficiency"} and j["spc"]["metric"] == "peak_force_kN"
    assert j["spc"]["chart"] == "I-MR"  # a short run: every blow charted
    assert j["spc"]["individuals"] == [c["metrics"]["peak_force_kN"] for c in j["cycles"]]
    stored = api.service.catalogue.run(api.run_id).config["instruments"]  # recorded at the run's start
    assert j["instruments"] == stored and len(stored) > 0
    cycles = j["cycles"]  # the certificate's own table: one blow per line, in order
    assert [c["cycle_no"] for c in cycles] == list(range(1, len(cycles) + 1)) and len(cycles) >= 2
    for c in cycles:
        check_press_verdict(c["verdict"], c["reasons"], c["metrics"])
    nok = sum(c["verdict"] == "nok" for c in cycles)
    assert j["summary"] == {"cycles": len(cycles), "ok": len(cycles) - nok, "nok": nok}
    assert j["overall_verdict"] == ("nok" if nok else "ok")  # one nok blow makes the run nok
    pdf = api.http.get(f"/api/runs/{api.run_id}/report", params={"format": "pdf"}, headers=h)
    assert pdf.headers["content-type"] == "application/pdf"
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    for field in ("CRK-4411/B", "H23-0917", "DIE-A113", "Zoë O'Neil", "press-01", "press-1.1",
                  "Cpk", "Nelson", "Signature", "Overall verdict"):
        assert field in text, field
    assert j["certificate_number"] in text
    pdf_json = api.http.get(f"/api/runs/{api.run_id}/report", params={"format": "json"}, headers=h).json()
    for c in pdf_json["cycles"][: j["summary"]["cycles"]]:
        assert c["samples_sha256"] in text, c["cycle_no"]  # whole, on one line: searchable
    assert pdf.headers["x-content-sha256"] in text
    csv_text = api.http.get(f"/api/runs/{api.run_id}/report", params={"format": "csv"}, headers=h).text
    assert j["cycles"][0]["samples_sha256"] in csv_text and "CRK-4411/B" in csv_text
    operator = api.http.get(f"/api/runs/{api.run_id}/report", headers=bearer(api.keys["operator"]))
    assert operator.status_code == 403
    missing = api.http.get("/api/runs/999999/report", headers=h)
    assert (missing.status_code, missing.json()) == (404, {"detail": "no run 999999"})
    # rendered in a worker process of its own, not in the service's (this test's) interpreter
    assert WORKER.pid() is not None and WORKER.pid() != os.getpid()


def test_live_feed_pushes_decimated_readings_and_cycles(api):
    url = api.base.replace("http", "ws") + "/api/rigs/press-01/live"
    with connect(url, additional_headers=bearer(api.keys["operator"]), open_timeout=5) as ws:
        readings, cycles = [], []
        # a blow every 4.6 s of the press's clock (analysed 0.25 s after contact); and ≥ 3 s of readings
        until = api.sim.model.t + 4.6 + 3.0 + 1.0

        def samples_seen():
            return readings[-1]["channels"]["sample"]["value"] - readings[0]["channels"]["sample"]["value"]

        while not cycles or not readings or samples_seen() < 30_000:
            assert api.sim.model.t < until, "no cycle event within a blow interval"
            msg = json.loads(ws.recv(timeout=5))
            (readings if msg["type"] == "readings" else cycles if msg["type"] == "cycle" else []).append(msg)
        for c in cycles:  # a new blow, or the blow before it again, now with its cycle time
            assert c["rig"] == "press-01"
            check_press_verdict(c["verdict"], c["reasons"], c["metrics"])
        # at most 20 Hz, decimated from 10 kHz: the feed stamps each tick, and its ticks are ≥ 50 ms apart
        ticks = np.array([m["t_ns"] for m in readings])
        assert len(ticks) >= 2 and np.diff(ticks).min() >= 50e6 - 1e6
        # the latest amplifier sample at each tick: its counter only moves forward, 10 000 a second of
        # its own timestamps (the stream clock follows the instrument within a millisecond)
        counters = np.array([m["channels"]["sample"]["value"] for m in readings])
        stamps = np.array([m["channels"]["sample"]["t_ns"] for m in readings])
        # a tick shows the same sample again (no new block yet) or a later one; its timestamp moves by
        # exactly 100 µs per count, to within the clock's correction (< 1 ms), and only when it does
        assert np.array_equal(counters, np.sort(counters))  # never backwards
        assert np.array_equal(np.diff(counters) == 0, np.diff(stamps) == 0)
        assert np.abs(np.diff(stamps) - np.diff(counters) * 100_000).max() < 1_000_000
        assert (counters[-1] - counters[0]) / ((stamps[-1] - stamps[0]) / 1e9) == pytest.approx(10_000, rel=1e-3)
        assert "force" in readings[-1]["channels"] and readings[-1]["channels"]["force"]["unit"] == "kN"
    for headers in (None, bearer("rdq_00000000_not-a-key")):  # the handshake itself is refused
        with pytest.raises(InvalidStatus) as refused:
            connect(url, additional_headers=headers, open_timeout=5)
        assert refused.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as refused:
        connect(url.replace("press-01", "press-99"), additional_headers=bearer(api.keys["operator"]))
    assert refused.value.response.status_code == 404


def test_revoked_key_is_refused(api):
    h = bearer(api.keys["admin"])
    new = api.http.post("/api/keys", json={"name": "temp", "role": "operator"}, headers=h).json()
    assert api.http.get("/api/rigs", headers=bearer(new["key"])).status_code == 200
    keys = api.http.get("/api/keys", headers=h).json()
    assert all("hash" not in k and "key" not in k for k in keys)
    assert api.http.delete(f"/api/keys/{new['id']}", headers=h).status_code == 204
    assert api.http.get("/api/rigs", headers=bearer(new["key"])).status_code == 401


def test_curve_falls_back_to_the_archive_after_retention(api, influxd):
    h = bearer(api.keys["qa"])
    row = api.http.get(f"/api/cycles/{api.cycle_id}", headers=h).json()
    db = api.settings.storage.influxdb.database
    r = httpx.post(f"{influxd.url}/query", params={
        "db": db, "q": f"DELETE FROM press01_amp WHERE time <= {row['t_ns'] + 10**9}"})
    assert r.status_code == 200, r.text
    curve = api.http.get(f"/api/cycles/{api.cycle_id}/curve", headers=h)
    assert curve.status_code == 200 and curve.headers["x-source"] == "archive"
    assert curve.headers["x-samples-sha256"] == row["samples_sha256"]
    strict = api.http.get(f"/api/cycles/{api.cycle_id}/curve", params={"source": "influxdb"}, headers=h)
    assert strict.status_code == 404 and "retention" in strict.json()["detail"]
    assert api.http.get(f"/api/cycles/{api.cycle_id}/plot.png", headers=h).status_code == 200


def test_daq_report_writes_the_same_certificate_as_the_api(api, tmp_path):
    import subprocess
    import sys

    stop = api.http.post(f"/api/runs/{api.run_id}/stop", headers=bearer(api.keys["engineer"]))
    assert stop.status_code == 200 and stop.json()["active"] is False
    h = bearer(api.keys["qa"])
    via_api = api.http.get(f"/api/runs/{api.run_id}/report", params={"format": "json"}, headers=h).json()
    assert via_api["status"] == "final"
    cfg = str(api.settings.path)
    for fmt in ("json", "pdf", "csv"):
        out = tmp_path / f"report.{fmt}"
        p = subprocess.run([sys.executable, "-m", "daq.cli", "report", str(api.run_id), "--format", fmt,
                            "-o", str(out), "--config", cfg], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        assert via_api["content_sha256"] in p.stderr
    assert json.loads((tmp_path / "report.json").read_text()) == via_api  # the same certificate
    text = "".join(pg.extract_text() for pg in PdfReader(str(tmp_path / "report.pdf")).pages)
    assert via_api["certificate_number"] in text and via_api["content_sha256"] in text.replace("\n", "")
    p = subprocess.run([sys.executable, "-m", "daq.cli", "report", "999999", "--format", "pdf", "-o",
                        str(tmp_path / "x.pdf"), "--config", cfg], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stderr.strip() == "rigdaq: no run 999999"


def test_start_sequence_on_a_rig_without_a_command_register_is_refused_before_the_run(api):
    h = bearer(api.keys["engineer"])
    before = api.http.get("/api/runs", headers=h).json()["total"]
    r = api.http.post("/api/runs", headers=h, json={"rig": "press-01", "start_sequence": True})
    assert r.status_code == 422 and "no channel 'command'" in r.json()["detail"]
    assert api.http.get("/api/runs", headers=h).json()["total"] == before
