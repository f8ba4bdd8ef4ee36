"""Certificates of long runs on SQLite and on a real PostgreSQL: SQL counts, paged reading, the render worker.

* a run's cycle counts come from one ``COUNT … GROUP BY verdict``, past the 100 000 cycles the
  API used to stop counting at;
* a run's cycles are read in time order (not filing order) in pages;
* the render worker opens the catalogue by its URL in a process of its own and writes the
  same certificate as one built here.
"""

from __future__ import annotations

import json
import os

import pytest
from sqlalchemy import insert

from daq.catalogue import Catalogue
from daq.catalogue.tables import cycles
from daq.reports.certificate import build_report, render_csv
from daq.reports.records import run_sweep
from daq.reports.worker import ReportWorker, worker_can_open

pytestmark = pytest.mark.timeout(180)

T0 = 1_795_000_000_000_000_000


@pytest.fixture(params=["sqlite", "postgresql"])
def cat(request, tmp_path):
    url = f"sqlite:///{tmp_path}/catalogue.sqlite" if request.param == "sqlite" else request.getfixturevalue(
        "postgres_url")
    c = Catalogue(url)
    yield c
    c.close()


def _rows(run_id: int, nos, nok_every: int = 0, rig: str = "press-01") -> list[dict]:
    return [{"rig": rig, "run_id": run_id, "cycle_no": no, "kind": "screw_press", "t_ns": T0 + no * 4_600_000_000,
             "end_ns": T0 + no * 4_600_000_000 + 10**8,
             "verdict": "nok" if nok_every and no % nok_every == 0 else "ok",
             "reasons": [], "metrics": {"peak_force_kN": 90_000.0 + (no % 97)}, "info": {"part": no},
             "version": "press-1.1", "samples_sha256": f"{no:064x}", "uid": f"{rig}-{no:027d}"} for no in nos]


def test_counts_past_a_hundred_thousand_cycles(cat):
    run = cat.start_run("press-01", T0)
    with cat.engine.begin() as c:
        c.execute(insert(cycles), _rows(run.id, range(1, 100_008), nok_every=1000))  # 100 007 blows, 100 nok
    assert cat.verdict_counts(run.id) == {"ok": 99_907, "nok": 100}
    assert cat.verdict_counts(run.id + 1) == {}


def test_cycles_are_read_in_time_order_in_pages(cat):
    run = cat.start_run("press-01", T0, config={"kind": "screw_press", "limits": {"peak_force_kN": {"max": 1e5}}})
    other = cat.start_run("press-02", T0)
    order = list(range(1000, 0, -1))  # filed newest first: ids run against time
    with cat.engine.begin() as c:
        c.execute(insert(cycles), _rows(run.id, order, nok_every=7))
        c.execute(insert(cycles), _rows(other.id, range(1, 50), rig="press-02"))
    got = list(cat.iter_cycles_of_run(run.id, page=64))
    assert [r["cycle_no"] for r in got] == list(range(1, 1001))
    assert got == cat.cycles_of_run(run.id, 1000)[1]
    assert cat.verdict_counts(run.id) == {"ok": 858, "nok": 142}
    assert run_sweep(cat, cat.run(run.id)) == []  # a press has no sweep table: nothing read


def test_the_worker_renders_from_the_catalogue_url(cat):
    run = cat.start_run("press-01", T0, operator="A. Prüfer",
                        config={"kind": "screw_press", "limits": {"peak_force_kN": {"max": 1e5}}})
    with cat.engine.begin() as c:
        c.execute(insert(cycles), _rows(run.id, range(1, 301), nok_every=50))
    cat.stop_run(run.id, T0 + 10**15)
    assert worker_can_open(cat.url) and not worker_can_open("sqlite://") and not worker_can_open("sqlite:///:memory:")
    here = build_report(cat, run.id)
    assert here["summary"] == {"cycles": 300, "ok": 294, "nok": 6}
    assert (here["spc"]["chart"], here["spc"]["subgroup_size"], here["spc"]["points"]) == ("Xbar-R", 3, 100)
    worker = ReportWorker()
    try:
        for fmt in ("json", "csv"):
            done = worker.submit(cat.url, run.id, fmt).result(timeout=120)
            with open(done.path, "rb") as f:
                data = f.read()
            os.unlink(done.path)
            assert data == render_csv(here) if fmt == "csv" else json.loads(data) == here
            assert (done.content_sha256, done.cycles) == (here["content_sha256"], 300)
        assert worker.pid() != os.getpid()
    finally:
        worker.shutdown()
