"""`daq export` and GET /api/runs/{id}/export against a real influxd: every format read back with its own library.

Two devices of the shipped press rig are written into influxd through the project's line-protocol
serializer, for a run filed in the catalogue (with two cycles): the force amplifier at 10 kHz
(floats bit for bit, the integer sample counter; a sample exactly at the run's start, one exactly
at its stop) and the PLC at 50 Hz (floats, integers, bits, a string, and reads that failed: fields
missing from some samples). Most samples carry the run's tag; the first and last few do not (they
reached storage before the run_start or after the run_stop event) and must come out too. Samples
of the rig just outside the run's span (start - 1, stop + 1) and of another rig inside the span
(even tagged with the run's id) are written too and must not come out.
"""

from __future__ import annotations

import json
import uuid

import h5py
import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from asammdf import MDF
from nptdms import TdmsFile

from daq import __version__
from daq.catalogue import Catalogue
from daq.cli import main
from daq.cycles import CycleResult
from daq.export.source import InfluxRunReader, InfluxTarget
from daq.storage.influx_v1 import InfluxV1Client
from daq.storage.lineproto import block_bytes
from drivers.block import Block
from tests.integration.helpers import ServiceThread, bearer, keys_for, press_settings

T0 = 1_790_000_000_123_456_789  # the run's start (ns)
N_AMP = 3000  # 0.3 s at 10 kHz
N_PLC = 40  # 0.8 s at 50 Hz
STOP = T0 + 900_000_000
UNITS_AMP = {"force": "kN", "force_1": "kN", "force_2": "kN", "force_3": "kN", "force_4": "kN", "position": "mm"}
UNITS_PLC = {"force": "kN", "flywheel_speed": "rpm", "state_running": "", "blow_count": "", "recipe": ""}
META = {"operator": "Zoë O'Neil", "part_number": "CRK-4411/B", "lot": "H23-0917", "serial": "DIE-A113",
        "notes": "first article,\n½ scale", "extra": {"customer": "ACME, Inc."}}


def _amp(t_ns: np.ndarray, seed: int) -> Block:
    rng = np.random.default_rng(seed)
    n = len(t_ns)
    chans = {"sample": np.arange(n, dtype=np.int64) + 4_000_000_000 + seed}  # past 2**31
    for c in UNITS_AMP:
        chans[c] = rng.standard_normal(n) * 10.0 ** rng.integers(-6, 6, n)  # every bit of a float64
    return Block("press01_amp", t_ns, chans)


def _plc(t_ns: np.ndarray) -> Block:
    n = len(t_ns)
    rng = np.random.default_rng(7)
    chans = {"force": rng.standard_normal(n) * 5e4, "flywheel_speed": rng.standard_normal(n) * 100,
             "state_running": np.arange(n) % 3 == 0, "blow_count": np.arange(n, dtype=np.int64) + 2**40,
             "recipe": np.array([f"R-{i % 4},\"x\"" for i in range(n)])}
    valid = {"force": np.arange(n) % 5 != 2, "blow_count": np.arange(n) % 7 != 3}  # failed reads
    return Block("press01_plc", t_ns, chans, valid=valid)


def _lines(block: Block, run: str | None, rig: str = "press-01") -> bytes:
    tags = {"rig": rig, **({"run": run} if run else {})}
    return block_bytes(block.device, tags, block)[0]


def _part(block: Block, sl: slice) -> Block:
    return Block(block.device, block.t_ns[sl], {k: v[sl] for k, v in block.channels.items()},
                 valid={k: v[sl] for k, v in block.valid.items()} if block.valid else None)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, influxd):
    """A press service file on a fresh database; the run, its cycles and samples written; every format exported."""
    import asyncio

    tmp = tmp_path_factory.mktemp("export")
    database = f"t_{uuid.uuid4().hex[:12]}"
    settings = press_settings(tmp, influxd.url, database)
    cat = Catalogue(settings.catalogue_url)
    cat.start_run("press-01", T0 - 5_000_000_000, operator="someone else")  # an earlier run: id 1
    cat.stop_run(1, T0 - 1)
    run = cat.start_run("press-01", T0, started_by="test-engineer", **META)
    cat.stop_run(run.id, STOP)
    for no, (a, b, verdict) in enumerate([(0.05, 0.12, "ok"), (0.2, 0.28, "nok")], start=1):
        cat.file_cycle(CycleResult("press-01", no, T0 + int(a * 1e9), verdict,
                                   {"peak_force_kN": 97_000.5 + no, "efficiency": None if no == 2 else 0.91},
                                   reasons=[] if verdict == "ok" else ["peak_force_kN 97002.5 > 97001"],
                                   version="press-1.0", samples_sha256=f"{no:064x}", run=str(run.id),
                                   kind="screw_press", end_ns=T0 + int(b * 1e9)))
    cat.close()
    # 10 kHz from exactly the start, and one sample exactly at the stop
    t_amp = np.append(T0 + np.arange(N_AMP, dtype=np.int64) * 100_000, STOP)
    t_plc = T0 + np.arange(N_PLC, dtype=np.int64) * 20_000_000
    amp, plc = _amp(t_amp, 1), _plc(t_plc)
    before = _amp(np.array([T0 - 1], dtype=np.int64), 2)  # the rig, just before the run (the earlier run's)
    after = _amp(np.array([STOP + 1], dtype=np.int64), 2)  # the rig, just after the run, untagged
    other_rig = _amp(t_amp[:10] + 50, 3)  # another rig inside the span, even with this run's tag
    rid = str(run.id)

    async def write():
        client = InfluxV1Client(influxd.url, database)
        await client.create_database()
        # the first and last samples reached storage before run_start / after run_stop: no run tag
        body = b"".join([_lines(_part(amp, slice(0, 5)), None), _lines(_part(amp, slice(5, -5)), rid),
                         _lines(_part(amp, slice(-5, None)), None), _lines(_part(plc, slice(0, 3)), None),
                         _lines(_part(plc, slice(3, None)), rid), _lines(before, "1"), _lines(after, None),
                         _lines(other_rig, rid, rig="press-02")])
        await client.write(body)
        await client.aclose()

    asyncio.run(write())
    out = {}
    for fmt, suffix in [("hdf5", "h5"), ("tdms", "tdms"), ("mdf4", "mf4"), ("parquet", "parquet"), ("csv", "csv")]:
        path = tmp / f"run.{suffix}"
        assert main(["export", str(run.id), "--format", fmt, "-o", str(path), "--config", str(settings.path)]) == 0
        out[fmt] = path
    return {"settings": settings, "run": run, "amp": amp, "plc": plc, "files": out, "tmp": tmp,
            "database": database}


def _plc_expected(plc: Block) -> dict[str, np.ndarray]:
    """The PLC's channels as the numeric formats hold them: float64, NaN where a read failed."""
    force = np.where(plc.valid["force"], plc.channels["force"], np.nan)
    count = np.where(plc.valid["blow_count"], plc.channels["blow_count"].astype(float), np.nan)
    return {"force": force, "flywheel_speed": plc.channels["flywheel_speed"], "blow_count": count,
            "state_running": plc.channels["state_running"].astype(float)}


def _same(got, want) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    if want.dtype.kind == "f":
        assert np.array_equal(got.astype(np.float64).view(np.int64), want.view(np.int64))  # bit for bit, NaN too
    else:
        assert got.tolist() == want.tolist()


def _check_meta(meta: dict, run_id: int) -> None:
    assert {k: meta[k] for k in ("run_id", "rig", "kind", "operator", "part_number", "lot", "serial", "notes",
                                 "start_ns", "stop_ns", "rigdaq_version", "started_by")} == {
        "run_id": run_id, "rig": "press-01", "kind": "screw_press", **{k: v for k, v in META.items() if k != "extra"},
        "start_ns": T0, "stop_ns": STOP, "rigdaq_version": __version__, "started_by": "test-engineer"}


def test_hdf5(exported):
    amp, plc, run = exported["amp"], exported["plc"], exported["run"]
    with h5py.File(exported["files"]["hdf5"], "r") as f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v)
                 for k, v in f.attrs.items()}
        _check_meta(attrs, run.id)
        assert json.loads(attrs["extra"]) == META["extra"] and attrs["extra.customer"] == "ACME, Inc."
        assert attrs["start"] == "2026-09-21T14:13:20.123456789Z"
        assert sorted(f) == ["cycles", "press01_amp", "press01_plc"]
        g = f["press01_amp"]
        assert sorted(g) == sorted(["time_ns", "sample", *UNITS_AMP])
        _same(g["time_ns"][:], amp.t_ns)
        _same(g["sample"][:], amp.channels["sample"].astype(float))
        for c, unit in UNITS_AMP.items():
            _same(g[c][:], amp.channels[c])
            assert g[c].attrs["unit"] == unit
        g = f["press01_plc"]
        _same(g["time_ns"][:], plc.t_ns)
        for c, want in _plc_expected(plc).items():
            _same(g[c][:], want)
            assert g[c].attrs["unit"] == UNITS_PLC[c]
        assert [s.decode() for s in g["recipe"][:]] == plc.channels["recipe"].tolist()
        c = f["cycles"]
        assert c["cycle_no"][:].tolist() == [1, 2]
        assert c["t_ns"][:].tolist() == [T0 + 50_000_000, T0 + 200_000_000]
        assert c["end_ns"][:].tolist() == [T0 + 120_000_000, T0 + 280_000_000]
        assert [v.decode() for v in c["verdict"][:]] == ["ok", "nok"]
        assert [v.decode() for v in c["samples_sha256"][:]] == [f"{1:064x}", f"{2:064x}"]
        assert c["peak_force_kN"][:].tolist() == [97_001.5, 97_002.5]
        _same(c["efficiency"][:], np.array([0.91, np.nan]))


def test_tdms_as_diadem_sees_it(exported):
    amp, plc, run = exported["amp"], exported["plc"], exported["run"]
    f = TdmsFile.read(exported["files"]["tdms"])
    p = f.properties
    assert p["name"] == f"run {run.id}"
    _check_meta(p, run.id)
    # TDMS time stamps (2⁻⁶⁴ s) as npTDMS shows them, in µs; the ns are in start_ns/stop_ns
    assert p["start_time"] == np.datetime64(T0 // 1000, "us") and p["stop_time"] == np.datetime64(STOP // 1000, "us")
    assert p["author"] == META["operator"] and p["extra.customer"] == "ACME, Inc."
    assert [g.name for g in f.groups()] == ["press01_plc", "press01_amp", "cycles"]
    g = f["press01_amp"]
    assert [c.name for c in g.channels()] == ["time", "time_ns", "sample", *UNITS_AMP]  # the rig file's order
    _same(g["time_ns"][:], amp.t_ns)
    _same(g["time"][:], (amp.t_ns - T0) / 1e9)
    assert g["time"].properties["unit_string"] == "s"
    for c, unit in UNITS_AMP.items():
        _same(g[c][:], amp.channels[c])
        assert g[c].properties["unit_string"] == unit
    _same(g["sample"][:], amp.channels["sample"].astype(float))
    g = f["press01_plc"]
    _same(g["time_ns"][:], plc.t_ns)
    for c, want in _plc_expected(plc).items():
        _same(g[c][:], want)
        assert g[c].properties["unit_string"] == UNITS_PLC[c]
    assert g["recipe"][:].tolist() == plc.channels["recipe"].tolist()
    c = f["cycles"]
    assert c["cycle_no"][:].tolist() == [1, 2]
    _same(c["start_s"][:], np.array([0.05, 0.2]))
    assert c["verdict"][:].tolist() == ["ok", "nok"]
    assert c["peak_force_kN"][:].tolist() == [97_001.5, 97_002.5]


def test_mdf4_as_asammdf_sees_it(exported):
    amp, plc, run = exported["amp"], exported["plc"], exported["run"]
    with MDF(exported["files"]["mdf4"]) as mdf:
        h = mdf.header
        assert h.start_time.timestamp() == pytest.approx((T0 // 1000) / 1e6, abs=1e-6)
        assert h.author == META["operator"] and h.project == META["part_number"] and h.subject == META["serial"]
        props = h._common_properties  # what asammdf shows as the file's comment properties
        assert {k: props[k] for k in ("run_id", "rig", "operator", "lot", "notes", "start_ns", "stop_ns")} == {
            "run_id": str(run.id), "rig": "press-01", "operator": META["operator"], "lot": META["lot"],
            "notes": META["notes"], "start_ns": str(T0), "stop_ns": str(STOP)}
        assert [g.channel_group.acq_name for g in mdf.groups] == ["press01_plc", "press01_amp", "cycles"]
        _same(mdf.get("time_ns", group=1).samples, amp.t_ns)
        _same(mdf.get("time_ns", group=1).timestamps, (amp.t_ns - T0) / 1e9)
        for c, unit in UNITS_AMP.items():
            sig = mdf.get(c, group=1)
            _same(sig.samples, amp.channels[c])
            assert sig.unit == unit
        _same(mdf.get("sample", group=1).samples, amp.channels["sample"].astype(float))
        _same(mdf.get("time_ns", group=0).samples, plc.t_ns)
        for c, want in _plc_expected(plc).items():
            sig = mdf.get(c, group=0)
            _same(sig.samples, want)
            assert sig.unit == UNITS_PLC[c]
        assert [s.decode() for s in mdf.get("recipe", group=0).samples] == plc.channels["recipe"].tolist()
        assert mdf.get("cycle_no", group=2).samples.tolist() == [1, 2]
        _same(mdf.get("cycle_no", group=2).timestamps, np.array([0.05, 0.2]))
        assert [v.decode() for v in mdf.get("verdict", group=2).samples] == ["ok", "nok"]
        assert mdf.get("peak_force_kN", group=2).samples.tolist() == [97_001.5, 97_002.5]


def test_parquet_as_pandas_sees_it(exported):
    amp, plc, run = exported["amp"], exported["plc"], exported["run"]
    path = exported["files"]["parquet"]
    df = pq.read_table(path).to_pandas()
    assert df["device"].tolist() == ["press01_plc"] * N_PLC + ["press01_amp"] * (N_AMP + 1)
    assert str(df["time"].dtype) == "datetime64[ns, UTC]"
    a = df[df.device == "press01_amp"]
    _same(a["time"].astype("int64").to_numpy(), amp.t_ns)
    for c in UNITS_AMP:
        _same(a[c].to_numpy(), amp.channels[c])
    assert a["sample"].tolist() == amp.channels["sample"].tolist()  # the integer, exactly
    p = df[df.device == "press01_plc"]
    _same(p["time"].astype("int64").to_numpy(), plc.t_ns)
    _same(p["force"].to_numpy(), _plc_expected(plc)["force"])
    _same(p["flywheel_speed"].to_numpy(), plc.channels["flywheel_speed"])
    count = pq.read_table(path).column("blow_count")[:N_PLC]  # an integer column with nulls
    assert count.to_pylist() == [v if ok else None for v, ok in
                                 zip(plc.channels["blow_count"].tolist(), plc.valid["blow_count"], strict=True)]
    assert p["state_running"].tolist() == plc.channels["state_running"].tolist()
    assert p["recipe"].tolist() == plc.channels["recipe"].tolist()
    assert a["recipe"].isna().all() and p["force_1"].isna().all()
    schema = pq.read_schema(path)
    assert schema.field("force_1").metadata[b"unit"].decode() == "kN"
    assert schema.field("flywheel_speed").metadata[b"unit"].decode() == "rpm"
    meta = json.loads(schema.metadata[b"rigdaq"])
    _check_meta(meta["run"], run.id)
    assert meta["run"]["extra"] == META["extra"]
    assert [(c["cycle_no"], c["t_ns"], c["end_ns"], c["verdict"], c["metrics"]) for c in meta["cycles"]] == [
        (1, T0 + 50_000_000, T0 + 120_000_000, "ok", {"peak_force_kN": 97_001.5, "efficiency": 0.91}),
        (2, T0 + 200_000_000, T0 + 280_000_000, "nok", {"peak_force_kN": 97_002.5, "efficiency": None})]
    assert meta["devices"]["press01_amp"]["position"] == {"column": "position", "unit": "mm", "influx_type": "float"}


def test_csv_as_pandas_sees_it(exported):
    import pandas as pd

    amp, plc, run = exported["amp"], exported["plc"], exported["run"]
    path = exported["files"]["csv"]
    head = path.read_text(encoding="utf-8").splitlines()
    k = int(head[0].split("; ")[1].split()[0])
    assert k == 6 and all(line.startswith("# ") for line in head[:k]) and head[k].startswith("device,time_ns,")
    _check_meta(json.loads(head[1].removeprefix("# run: ")), run.id)
    assert json.loads(head[2].removeprefix("# units: "))["force_1"] == "kN"
    cycles = [json.loads(line.removeprefix("# cycle: ")) for line in head[4:6]]
    assert [(c["cycle_no"], c["verdict"], c["samples_sha256"]) for c in cycles] == [
        (1, "ok", f"{1:064x}"), (2, "nok", f"{2:064x}")]
    df = pd.read_csv(path, skiprows=k)
    assert df.equals(pd.read_csv(path, comment="#"))
    a, p = df[df.device == "press01_amp"], df[df.device == "press01_plc"]
    _same(a["time_ns"].to_numpy(), amp.t_ns)
    for c in UNITS_AMP:
        _same(a[c].to_numpy(), amp.channels[c])
    assert a["sample"].astype("int64").tolist() == amp.channels["sample"].tolist()
    _same(p["time_ns"].to_numpy(), plc.t_ns)
    _same(p["force"].to_numpy(), _plc_expected(plc)["force"])
    _same(p["flywheel_speed"].to_numpy(), plc.channels["flywheel_speed"])
    _same(p["blow_count"].to_numpy(), _plc_expected(plc)["blow_count"])
    assert p["state_running"].tolist() == plc.channels["state_running"].tolist()
    assert p["recipe"].tolist() == plc.channels["recipe"].tolist()


@pytest.mark.parametrize("window_s", [0.01, 0.0123])
def test_small_windows_and_chunks_give_the_same_samples(exported, window_s):
    """The reader's windows and CSV blocks cut anywhere: the samples are the same, none twice, none lost.

    With 10 ms windows every window edge from the start to 290 ms, and the stop, falls exactly on a sample.
    """
    s = exported["settings"].storage.influxdb
    from daq.export.source import Channel, Device

    dev = Device("press01_amp", [Channel("force_2", "float"), Channel("sample", "integer")])
    reader = InfluxRunReader(InfluxTarget(s.url, exported["database"]), window_s=window_s, chunk_rows=7,
                             block_bytes=4096)
    try:
        batches = list(reader.batches(dev, "press-01", T0, STOP))
    finally:
        reader.close()
    assert len(batches) > 30
    t = np.concatenate([b.column(0).to_numpy() for b in batches])
    assert len(t) == N_AMP + 1 and t[0] == T0 and t[-1] == STOP and len(np.unique(t)) == len(t)
    if window_s == 0.01:
        edges = T0 + np.arange(0, 91, dtype=np.int64) * 10_000_000
        on_edges = edges[np.isin(edges, t)]
        assert len(on_edges) == 31 and on_edges[-1] == STOP  # T0, T0 + 10 ms, …, T0 + 290 ms, and the stop
    _same(t, exported["amp"].t_ns)
    _same(np.concatenate([b.column(1).to_numpy() for b in batches]), exported["amp"].channels["force_2"])


def test_cli_errors(exported, capsys):
    cfg = str(exported["settings"].path)
    out = exported["tmp"] / "nothing.h5"
    assert main(["export", "999", "--format", "hdf5", "-o", str(out), "--config", cfg]) == 1
    assert capsys.readouterr().err.strip() == "rigdaq: no run 999"
    assert not out.exists()
    with pytest.raises(SystemExit) as e:
        main(["export", "2", "--format", "xlsx", "-o", str(out), cfg])
    assert e.value.code == 2
    assert "invalid choice: 'xlsx'" in capsys.readouterr().err
    assert main(["export", "2", cfg, "--format", "csv", "-o", str(exported["tmp"] / "no-dir" / "x.csv")]) == 1
    assert "rigdaq: cannot write" in capsys.readouterr().err


def test_api_export(exported, tmp_path, monkeypatch):
    """The route, as QA downloads it, from the running service (its worker process writes the file)."""
    settings = exported["settings"]
    st = ServiceThread(settings)
    try:
        keys = keys_for(st.service)
        run_id = exported["run"].id
        with httpx.Client(base_url=st.base, timeout=60) as http:
            r = http.get(f"/api/runs/{run_id}/export", params={"format": "parquet"}, headers=bearer(keys["qa"]))
            assert r.status_code == 200, r.text
            assert r.headers["content-disposition"] == f'attachment; filename="run-{run_id}-press-01.parquet"'
            got = tmp_path / "got.parquet"
            got.write_bytes(r.content)
            a, b = pq.read_table(got), pq.read_table(exported["files"]["parquet"])
            ma, mb = json.loads(a.schema.metadata[b"rigdaq"]), json.loads(b.schema.metadata[b"rigdaq"])
            assert ma == mb
            assert a.equals(b)
            r = http.get(f"/api/runs/{run_id}/export", params={"format": "csv"}, headers=bearer(keys["qa"]))
            assert r.status_code == 200 and r.content == exported["files"]["csv"].read_bytes()
            r = http.get(f"/api/runs/{run_id}/export", params={"format": "hdf5"}, headers=bearer(keys["operator"]))
            assert r.status_code == 403
            r = http.get("/api/runs/999/export", params={"format": "hdf5"}, headers=bearer(keys["qa"]))
            assert (r.status_code, r.json()["detail"]) == (404, "no run 999")
            r = http.get(f"/api/runs/{run_id}/export", params={"format": "xlsx"}, headers=bearer(keys["qa"]))
            assert r.status_code == 422 and "format" in r.json()["detail"]
            # both export slots taken (as by two long exports): the next request waits briefly, then 503
            import asyncio

            import api.routes.export as route

            monkeypatch.setattr(route, "SLOT_WAIT_S", 0.2)
            st.server.app.state.export_slots = asyncio.Semaphore(0)
            r = http.get(f"/api/runs/{run_id}/export", params={"format": "csv"}, headers=bearer(keys["qa"]))
            assert r.status_code == 503 and r.headers["retry-after"] == "60"
            assert r.json()["detail"] == (f"2 exports are running already; try again in a minute, or export on "
                                          f"the service's machine: daq export {run_id} --format csv -o FILE")
            st.server.app.state.export_slots = None
            r = http.get(f"/api/runs/{run_id}/export", params={"format": "csv"}, headers=bearer(keys["qa"]))
            assert r.status_code == 200
            import time

            for _ in range(100):  # the spool dir goes once the file is sent (a background task)
                if not list((settings.data_dir / "exports").iterdir()):
                    break
                time.sleep(0.02)
            assert list((settings.data_dir / "exports").iterdir()) == []
    finally:
        st.stop()
