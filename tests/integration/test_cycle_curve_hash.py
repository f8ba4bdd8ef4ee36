"""Cycles in a real influxd: one point per cycle however often it is judged; curves that say what they are.

A blow is cut by the live tracker from synthetic amplifier and PLC blocks, filed in a real
(SQLite) catalogue and its samples written to a real influxd; the curve route then serves
it as QA downloads it.
"""

from __future__ import annotations

import csv
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi import HTTPException

from analysis.result import samples_hash
from api.routes.cycles import curve
from daq.catalogue import Catalogue
from daq.cycles import CycleResult
from daq.storage.influx_v1 import series_rows
from daq.storage.lineproto import block_bytes, cycle_line
from drivers.block import Block
from tests.unit.test_press_segmentation_edges import T0, Bus, feed, recording, tracker


async def test_a_rejudged_cycle_is_one_point_and_its_verdict_a_field(influx):
    c = CycleResult("press-01", 1, T0, "ok", {"peak_force_kN": 91_000.0, "cycle_time_s": None}, [],
                    "press-1.1", "0f" * 32, "12", kind="screw_press", info={"part": 1, "blow_in_part": 1})
    await influx.write(cycle_line(c).encode() + b"\n")
    c.metrics["cycle_time_s"] = 4.6  # the next blow began: the same cycle, judged again
    c.reasons, c.verdict = ["cycle_time_s = 4.6 above max 4.5"], "nok"
    await influx.write(cycle_line(c).encode() + b"\n")

    [n] = series_rows(await influx.query("SELECT count(cycle_no) FROM cycles"))
    assert n["count"] == 1
    [row] = series_rows(await influx.query("SELECT verdict, reasons, cycle_time_s, rig, run FROM cycles"))
    assert row == {"time": T0, "verdict": "nok", "reasons": "cycle_time_s = 4.6 above max 4.5",
                   "cycle_time_s": 4.6, "rig": "press-01", "run": "12"}
    keys = series_rows(await influx.query("SHOW TAG KEYS FROM cycles"))
    assert [k["tagKey"] for k in keys] == ["rig", "run"]
    assert len(series_rows(await influx.query("SELECT cycle_no FROM cycles WHERE verdict = 'nok'"))) == 1
    assert series_rows(await influx.query("SELECT cycle_no FROM cycles WHERE verdict = 'ok'")) == []


def _blow_with_plc():
    """One blow from the tracker, fed by the amplifier (10 kHz) and the PLC's flywheel speed (50 Hz)."""
    b = 5_000
    t_ns, chans = recording(12_000, (b,))
    bus = Bus()
    tr = tracker(bus)
    plc_t = t_ns[::200]
    tr.feed("press-01", Block("plc", plc_t, {"flywheel_speed": np.full(len(plc_t), 90.0),
                                              "force": chans["force"][::200]}, np.zeros(len(plc_t), np.uint8)))
    feed(tr, t_ns, chans, 1_000)
    [c] = bus.cycles().values()
    return t_ns, chans, c


def _hash_of_json(body: bytes) -> str:
    j = json.loads(body)
    t = np.array(j["t_ns"], dtype=np.int64)
    chans = {k: np.array([np.nan if v is None else v for v in vals], dtype=np.float64)
             for k, vals in j["channels"].items()}
    return samples_hash((t - t[0]) / 1e9, chans)


def _hash_of_csv(text: str) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    header, data = rows[0], np.array(rows[1:], dtype=object)
    assert header[:2] == ["time", "t_ns"]
    time_s = np.array([float(v) for v in data[:, 0]])
    return samples_hash(time_s, {name: np.array([float(v) for v in data[:, 2 + k]])
                                 for k, name in enumerate(header[2:])})


async def test_curve_serves_what_hashes_to_samples_sha256_or_says_it_does_not(tmp_path, influx):
    t_ns, chans, c = _blow_with_plc()
    assert "flywheel_speed" in c.samples[1]  # the PLC's speed at impact was analysed, and hashed
    cat = Catalogue(f"sqlite:///{tmp_path}/catalogue.sqlite")
    cid = cat.file_cycle(c)
    body, _, _ = block_bytes("amp", {"rig": "press-01"}, Block(
        "amp", t_ns, {**chans, "sample": np.arange(len(t_ns), dtype=np.float64)}, np.zeros(len(t_ns), np.uint8)))
    await influx.write(body)
    rig = SimpleNamespace(kind="screw_press", segmentation=SimpleNamespace(pre_s=0.3, post_s=0.1))
    service = SimpleNamespace(catalogue=cat, client=influx, rigs={"press-01": rig})

    # by default: the archived samples, which hash to the cycle's samples_sha256, in JSON and CSV
    for fmt, hash_of in (("json", lambda r: _hash_of_json(r.body)), ("csv", lambda r: _hash_of_csv(r.body.decode()))):
        r = await curve(cid, service, None, format=fmt, source="auto")
        assert r.headers["x-source"] == "archive" and r.headers["x-samples-sha256-match"] == "true"
        assert r.headers["x-samples-sha256"] == c.samples_sha256 == hash_of(r)
        assert "x-samples-note" not in r.headers
    j = json.loads((await curve(cid, service, None, format="json", source="archive")).body)
    assert j["samples_sha256_match"] is True and j["served_sha256"] == j["samples_sha256"] == c.samples_sha256

    # InfluxDB's copy has no PLC channel: served on request, and plainly not what was hashed
    r = await curve(cid, service, None, format="json", source="influxdb")
    served = _hash_of_json(r.body)
    assert r.headers["x-source"] == "influxdb" and r.headers["x-samples-sha256-match"] == "false"
    assert r.headers["x-samples-sha256"] == served != c.samples_sha256
    assert c.samples_sha256 in r.headers["x-samples-note"]
    assert sorted(json.loads(r.body)["channels"]) == ["force", "force_1", "force_2", "force_3", "force_4", "position"]

    # the archive pruned (archive_max_mb): auto falls back to InfluxDB and says so
    assert cat.prune_archive(0) == 1
    r = await curve(cid, service, None, format="csv", source="auto")
    assert r.headers["x-source"] == "influxdb" and r.headers["x-samples-sha256-match"] == "false"
    assert r.headers["x-samples-sha256"] == _hash_of_csv(r.body.decode()) == served
    with pytest.raises(HTTPException) as gone:
        await curve(cid, service, None, format="json", source="archive")
    assert gone.value.status_code == 404 and "source=influxdb" in gone.value.detail
    cat.close()


async def test_curve_from_influxdb_that_is_the_analysed_data_matches(tmp_path, influx):
    """The match header is computed, not assumed: InfluxDB's copy, when identical, says true."""
    b = 5_000
    t_ns, chans = recording(12_000, (b,))
    bus = Bus()
    feed(tracker(bus), t_ns, chans, 1_000)  # no PLC: the analysed channels are the amplifier's
    [c] = bus.cycles().values()
    cat = Catalogue(f"sqlite:///{tmp_path}/catalogue.sqlite")
    cid = cat.file_cycle(c)
    body, _, _ = block_bytes("amp", {"rig": "press-01"}, Block("amp", t_ns, chans, np.zeros(len(t_ns), np.uint8)))
    await influx.write(body)
    rig = SimpleNamespace(kind="screw_press", segmentation=SimpleNamespace(pre_s=0.3, post_s=0.1))
    service = SimpleNamespace(catalogue=cat, client=influx, rigs={"press-01": rig})
    r = await curve(cid, service, None, format="json", source="influxdb")
    assert r.headers["x-source"] == "influxdb" and r.headers["x-samples-sha256-match"] == "true"
    assert r.headers["x-samples-sha256"] == c.samples_sha256 == _hash_of_json(r.body)
    cat.close()
