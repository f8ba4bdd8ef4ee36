"""The certificate: content hash without the signatures, signatures, instruments, the control chart, renderings."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pypdf import PdfReader

from analysis.spc import expected_false_alarms, false_alarm_rate
from api.routes import runs
from daq.catalogue import Catalogue
from daq.catalogue.keys import KeyStore
from daq.cycles import CycleResult
from daq.reports.certificate import (
    ROWS_PER_TABLE,
    ReportError,
    build_report,
    render_csv,
    render_json,
    render_pdf,
    verify_content_hash,
)
from daq.reports.records import iso, run_sweep
from daq.reports.worker import WORKER, render_report

T0 = 1_795_000_000_000_000_000  # 2026-11-17
DAY = 86_400 * 10**9
INSTRUMENTS = [
    {"channel": "force", "device": "press01_amp", "serial": "LC-4471", "model": "HBM C6A", "sensitivity": 2.0,
     "unit": "mV/V", "calibrated_on": "2026-03-01", "due_on": "2027-03-01", "certificate": "DKD-K-1234",
     "status": "valid"},
    # as an older run recorded it: no status, due before the run started
    {"channel": "position", "device": "press01_plc", "serial": "LVDT-9", "model": "Penny+Giles", "sensitivity": 1.0,
     "unit": "mm/V", "calibrated_on": "2025-01-10", "due_on": "2026-11-01", "certificate": "C-77"},
]
LIMITS = {"peak_force_kN": {"max": 100_000.0}, "efficiency": {"min": 0.6, "max": 1.0}}


def _cycle(run_id: int, no: int, peak: float, nok: bool = False) -> CycleResult:
    reasons = ["max_channel_share = 0.34 above max 0.3"] if nok else []
    return CycleResult("press-01", no, T0 + no * 4_600_000_000, "nok" if nok else "ok",
                       {"peak_force_kN": peak, "efficiency": 0.75, "max_channel_share": 0.34 if nok else 0.25},
                       reasons, "press-1.1", f"{no:064x}", str(run_id), kind="screw_press",
                       end_ns=T0 + no * 4_600_000_000 + 10**8, info={"part": no})


@pytest.fixture
def filed(tmp_path):
    """A stopped press run of 150 blows (3 nok) with two instruments; the catalogue and the run's id."""
    cat = Catalogue(f"sqlite:///{tmp_path}/cat.sqlite")
    run = cat.start_run("press-01", T0, operator="Zoë O'Neil", part_number="CRK-4411/B", lot="H23-0917",
                        serial="DIE-A113", config={"kind": "screw_press", "description": "test press",
                                                   "limits": LIMITS, "instruments": INSTRUMENTS})
    peaks = 90_000.0 + 1_000.0 * np.random.default_rng(7).standard_normal(150)
    for i, peak in enumerate(peaks):
        cat.file_cycle(_cycle(run.id, i + 1, float(peak), nok=i in (10, 70, 140)))
    cat.stop_run(run.id, T0 + DAY)
    yield cat, run.id, peaks
    cat.close()


def test_counts_come_from_sql_and_cycles_are_read_in_pages(filed):
    cat, rid, _ = filed
    assert cat.verdict_counts(rid) == {"ok": 147, "nok": 3}
    assert cat.verdict_counts(rid + 1) == {}
    _, rows = cat.cycles_of_run(rid, 1000)
    paged = list(cat.iter_cycles_of_run(rid, page=7))  # 150 = 21 pages of 7 and one of 3
    assert paged == rows and [r["cycle_no"] for r in paged] == list(range(1, 151))
    assert list(cat.iter_cycles_of_run(rid, page=150)) == rows  # a last page that is exactly full
    assert list(cat.iter_cycles_of_run(rid + 1)) == []


def test_the_content_hash_leaves_out_the_signatures_they_sign_it(filed):
    cat, rid, _ = filed
    report = build_report(cat, rid)
    assert verify_content_hash(report) and report["signatures"] == []
    assert report["run"]["revision"] == 1 and report["run"]["supersedes"] is None
    key_id = KeyStore(cat).create("qa desk", "qa")[1].id
    older = cat.add_signature(rid, 1, signer="Ann QA", role="qa", key_id=key_id, meaning="rejected",
                              reason="hash of a draft", signed_ns=T0 + 2 * DAY, content_sha256="ab" * 32)
    cat.add_signature(rid, 1, signer="Ann QA", role="qa", key_id=key_id, meaning="approved",
                      reason="all blows within limits", signed_ns=T0 + 3 * DAY,
                      content_sha256=report["content_sha256"])
    signed = build_report(cat, rid)
    assert signed["content_sha256"] == report["content_sha256"] and verify_content_hash(signed)
    assert signed["signatures"] == [
        {"id": older["id"], "run_id": rid, "revision": 1, "signer": "Ann QA", "role": "qa", "meaning": "rejected",
         "reason": "hash of a draft", "signed_at": iso(T0 + 2 * DAY), "signed_ns": T0 + 2 * DAY,
         "content_sha256": "ab" * 32, "signs_this_content": False},
        {"id": older["id"] + 1, "run_id": rid, "revision": 1, "signer": "Ann QA", "role": "qa",
         "meaning": "approved", "reason": "all blows within limits", "signed_at": iso(T0 + 3 * DAY),
         "signed_ns": T0 + 3 * DAY, "content_sha256": report["content_sha256"], "signs_this_content": True}]
    assert not verify_content_hash(dict(signed, overall_verdict="ok"))  # the content is still covered
    assert verify_content_hash(dict(signed, signatures=[]))  # the signatures are not
    # nor the software's own wording: an upgrade that rewords it keeps the signed hash …
    reworded = dict(signed, issuer="rigdaq 9.9", method=dict(signed["method"], description="other words"),
                    spc=dict(signed["spc"], method="other words", false_alarm_basis="other words"))
    assert verify_content_hash(reworded) and signed["issuer"] != "rigdaq 9.9"
    # … while what the software computed is covered, down to one analysis version or control limit
    assert not verify_content_hash(dict(signed, method=dict(signed["method"], analysis_versions=["x"])))
    assert not verify_content_hash(dict(signed, spc=dict(signed["spc"], center=signed["spc"]["center"] + 1)))
    csv_text = render_csv(signed).decode()
    assert "signature 2,meaning,approved" in csv_text and "signature 2,reason,all blows within limits" in csv_text
    assert f"signature 2,content_sha256,{report['content_sha256']}" in csv_text
    assert "signature 1,signs,an earlier content (not this certificate's)" in csv_text
    assert "signature 2,signs,this certificate's content" in csv_text
    assert json.loads(render_json(signed)) == signed
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(render_pdf(signed))).pages)
    for field in ("Ann QA", "APPROVED", "REJECTED", "all blows within limits", iso(T0 + 3 * DAY),
                  "this certificate's content", "an earlier content (not this certificate's)", "ab" * 32):
        assert field in text, field
    assert "Inspector (test performed by)" not in text  # signed: no empty lines to sign on paper


def test_an_unsigned_certificate_keeps_the_lines_to_sign(filed):
    cat, rid, _ = filed
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(render_pdf(build_report(cat, rid)))).pages)
    assert "Inspector (test performed by)" in text and "Quality assurance (released by)" in text
    assert "Zoë O'Neil" in text


def test_instruments_and_their_calibration_are_listed_inside_the_hash(filed):
    cat, rid, _ = filed
    report = build_report(cat, rid)
    assert report["instruments"] == [INSTRUMENTS[0], dict(INSTRUMENTS[1], status="overdue")]
    forged = json.loads(json.dumps(report))
    forged["instruments"][1]["due_on"] = "2027-11-01"
    assert not verify_content_hash(forged)
    csv_text = render_csv(report).decode()
    assert ("instrument,force,device=press01_amp serial=LC-4471 model=HBM C6A sensitivity=2 unit=mV/V "
            "calibrated_on=2026-03-01 due_on=2027-03-01 certificate=DKD-K-1234 status=valid") in csv_text
    assert "status=overdue" in csv_text
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(render_pdf(report))).pages)
    for field in ("Instruments and calibration", "LC-4471", "DKD-K-1234", "2027-03-01", "VALID", "LVDT-9",
                  "OVERDUE"):
        assert field in text, field


def test_the_control_chart_states_its_rules_false_alarm_rate(filed):
    cat, rid, peaks = filed
    report = build_report(cat, rid)
    spc = report["spc"]
    # 150 values: subgroups of two (75 points), an X̄–R chart
    assert (spc["metric"], spc["chart"], spc["subgroup_size"], spc["points"], spc["left_out"], spc["cycles"]) == (
        "peak_force_kN", "Xbar-R", 2, 75, 0, 150)
    groups = peaks.reshape(75, 2)
    rbar = float(np.mean(groups.max(axis=1) - groups.min(axis=1)))
    assert spc["means"] == pytest.approx(groups.mean(axis=1).tolist(), rel=1e-15)
    assert spc["center"] == pytest.approx(peaks.mean(), rel=1e-12)
    assert spc["ucl"] == pytest.approx(peaks.mean() + 1.880 * rbar, rel=1e-12)
    assert spc["spread"]["ucl"] == pytest.approx(3.267 * rbar, rel=1e-12)
    assert spc["first_cycle_no"] == list(range(1, 150, 2)) and spc["last_cycle_no"] == list(range(2, 151, 2))
    assert [r["rule"] for r in spc["rules"]] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert spc["false_alarm_rate_per_point"] == false_alarm_rate()
    assert spc["expected_false_alarms"] == expected_false_alarms(75)
    csv_text = render_csv(report).decode()
    assert f"spc,false_alarm_rate_per_point,{false_alarm_rate():.6g}" in csv_text
    assert f"spc,expected_false_alarms,{expected_false_alarms(75):.6g}" in csv_text
    assert "spc,chart,Xbar-R" in csv_text and "spc,subgroup_size,2" in csv_text
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(render_pdf(report))).pages).replace("\n", " ")
    assert "Control chart: X-bar–R (subgroup means and ranges) of peak_force_kN" in text
    assert (f"expected false alarms of an in-control process {false_alarm_rate():.4f} per point, "
            f"{expected_false_alarms(75):.2f} over the chart") in text


def test_a_short_run_keeps_the_i_mr_chart(tmp_path):
    cat = Catalogue(f"sqlite:///{tmp_path}/cat.sqlite")
    run = cat.start_run("press-01", T0, config={"kind": "screw_press", "limits": LIMITS})
    for i, peak in enumerate([90_000.0, 91_000.0, 90_500.0, 89_000.0]):
        cat.file_cycle(_cycle(run.id, i + 1, peak))
    spc = build_report(cat, run.id)["spc"]
    assert (spc["chart"], spc["subgroup_size"], spc["individuals"], spc["first_cycle_no"]) == (
        "I-MR", 1, [90_000.0, 91_000.0, 90_500.0, 89_000.0], [1, 2, 3, 4])
    assert spc["spread"]["values"] == [1000.0, 500.0, 1500.0] and spc["center"] == 90_125.0
    assert spc["expected_false_alarms"] == expected_false_alarms(4)
    cat.close()


def test_every_cycle_is_in_the_pdf_across_its_page_tables(filed):
    cat, rid, _ = filed
    report = build_report(cat, rid)
    pages = PdfReader(io.BytesIO(render_pdf(report))).pages
    text = "".join(p.extract_text() for p in pages)
    assert ROWS_PER_TABLE == 30  # 150 blows: five tables, each laid out on its own
    for c in report["cycles"]:
        assert c["samples_sha256"] in text, c["cycle_no"]
    assert report["content_sha256"] in text.replace("\n", "")


def test_the_worker_renders_in_its_own_process_and_ends_with_the_app(filed, tmp_path):
    cat, rid, _ = filed
    app = FastAPI()
    app.include_router(runs.router)  # the API's worker ends with the app (the runs router's lifespan)
    with TestClient(app):
        done = WORKER.submit(cat.url, rid, "json").result(timeout=120)
        pid = WORKER.pid()
        assert pid is not None and pid != os.getpid()
        with open(done.path, "rb") as f:
            assert json.load(f) == build_report(cat, rid)
        os.unlink(done.path)
        assert (done.cycles, done.filename) == (150, f"{build_report(cat, rid)['certificate_number']}.json")
        assert done.max_rss_kb > 0
        with pytest.raises(ReportError, match=f"^no run {rid + 5}$"):
            WORKER.submit(cat.url, rid + 5, "pdf").result(timeout=60)
    assert WORKER.pid() is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone, not left behind
    here = render_report(cat, rid, "csv", None, str(tmp_path))  # the CLI's way: the same function, in-process
    assert here.path.startswith(str(tmp_path))
    with open(here.path, "rb") as f:
        assert f.read() == render_csv(build_report(cat, rid))


def test_a_motor_runs_sweep_table_is_read_page_by_page(tmp_path):
    cat = Catalogue(f"sqlite:///{tmp_path}/cat.sqlite")
    run = cat.start_run("srm-01", T0, config={"kind": "srm_rig", "limits": {}})
    legacy = cat.start_run("srm-02", T0)  # a run from before runs kept their config: the cycles' kind
    for rid, rig in ((run.id, "srm-01"), (legacy.id, "srm-02")):
        for step in range(1, 4):
            m = {"speed_rpm": 1000.0 * step, "mean_torque_Nm": 10.0 / step, "mech_power_W": 1047.2,
                 "elec_power_W": 1200.0 + step, "efficiency": 1047.2 / (1200.0 + step), "phase_current_rms_A": 8.0,
                 "torque_ripple_pct": 12.5}
            cat.file_cycle(CycleResult(rig, step, T0 + step * 10**10, "nok" if step == 2 else "ok", m, [], "srm-1.0",
                                       f"{step:064x}", str(rid), kind="srm_rig", end_ns=T0 + step * 10**10 + 10**9,
                                       info={"step": step}))
    want = [{"step": s, "speed_rpm": 1000.0 * s, "torque_Nm": 10.0 / s, "mech_power_W": 1047.2,
             "elec_power_W": 1200.0 + s, "efficiency": 1047.2 / (1200.0 + s), "phase_current_rms_A": 8.0,
             "torque_ripple_pct": 12.5, "verdict": "nok" if s == 2 else "ok"} for s in (1, 2, 3)]
    assert run_sweep(cat, cat.run(run.id)) == want
    assert run_sweep(cat, cat.run(legacy.id)) == want
    assert build_report(cat, run.id)["sweep"] == want
    cat.close()
