"""The export's writers and rules without a server: batches in, each file read back with its own library."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from asammdf import MDF
from nptdms import TdmsFile

from daq.config import load_settings
from daq.export import ExportError, plan_for
from daq.export.common import cycle_table, flat_meta
from daq.export.hdf5 import Hdf5Writer
from daq.export.mdf4 import Mdf4Writer
from daq.export.source import Channel, Device, RunInfo, common_type
from daq.export.tables import CsvExportWriter, ParquetExportWriter, columns_of
from daq.export.tdms import TdmsExportWriter
from tests.conftest import ROOT

T0 = 1_700_000_000_000_000_000
META = {"run_id": 7, "rig": "rig-1", "kind": "srm_rig", "operator": "Zoë", "part_number": "P/1", "lot": "L",
        "serial": "S", "notes": "a\nb", "extra": {"k": "v, w"}, "started_by": "eng", "start_ns": T0,
        "stop_ns": T0 + 10**9, "active": False, "start": "2023-11-14T22:13:20.000000000Z",
        "stop": "2023-11-14T22:13:21.000000000Z", "rigdaq_version": "0.1.0"}
DEV_A = Device("dev_a", [Channel("v", "float", "V"), Channel("n", "integer", ""), Channel("text", "string", "")])
DEV_B = Device("dev_b", [Channel("v", "float", "mV"), Channel("time", "float", "s"), Channel("n", "boolean", "")])
CYCLES = [{"cycle_no": 1, "t_ns": T0 + 10, "end_ns": T0 + 20, "verdict": "ok", "reasons": [],
           "metrics": {"speed_rpm": 1500.0}, "samples_sha256": "a" * 64, "version": "x", "kind": "srm_rig"},
          {"cycle_no": 2, "t_ns": T0 + 30, "end_ns": T0 + 40, "verdict": "nok", "reasons": ["too slow"],
           "metrics": {"speed_rpm": None, "efficiency": 0.5}, "samples_sha256": "b" * 64, "version": "x",
           "kind": "srm_rig"}]


def _batches():
    """dev_a in two batches (a null in each kind of column), dev_b in one."""
    a1 = pa.RecordBatch.from_arrays([pa.array([T0, T0 + 5], pa.int64()), pa.array([0.1, None]),
                                     pa.array([3, None], pa.int64()), pa.array(["µ,\"x\"", None])],
                                    names=["time", "v", "n", "text"])
    a2 = pa.RecordBatch.from_arrays([pa.array([T0 + 9], pa.int64()), pa.array([1e-300]), pa.array([2**62], pa.int64()),
                                     pa.array(["日本"])], names=["time", "v", "n", "text"])
    b = pa.RecordBatch.from_arrays([pa.array([T0 + 1], pa.int64()), pa.array([-0.0]), pa.array([2.5]),
                                    pa.array([True])], names=["time", "v", "time_", "n"])
    return {"dev_a": [a1, a2], "dev_b": [b]}


def _write(cls, path, cycles=CYCLES):
    info = RunInfo(dict(META), [DEV_A, DEV_B], cycles)
    w = cls(path, info)
    for dev in info.devices:
        w.begin(dev)
        for batch in _batches()[dev.name]:
            w.write(dev, batch)
        w.end(dev)
    w.close()


def _bits(a) -> list[int]:
    return np.asarray(a, dtype=np.float64).view(np.int64).tolist()


NAN = float("nan")


def test_common_type_of_a_field_typed_differently_in_two_shards():
    assert common_type({"integer"}) == "integer"
    assert common_type({"integer", "float"}) == "float"
    assert common_type({"boolean", "float"}) == "string"
    assert common_type({"string", "integer"}) == "string"


def test_columns_of_name_the_clashes():
    cols, where = columns_of(RunInfo(META, [DEV_A, DEV_B], []))
    assert where == {("dev_a", "v"): "v", ("dev_a", "n"): "n", ("dev_a", "text"): "text", ("dev_b", "v"): "v",
                     ("dev_b", "time"): "dev_b.time", ("dev_b", "n"): "dev_b.n"}
    assert cols["v"] == (pa.float64(), {"dev_a": "V", "dev_b": "mV"})


def test_flat_meta_and_cycle_table():
    flat = flat_meta(META)
    assert flat["run_id"] == 7 and flat["active"] == "false" and flat["extra.k"] == "v, w"
    assert json.loads(flat["extra"]) == {"k": "v, w"}
    t = cycle_table(CYCLES, ["speed_rpm", "efficiency"])
    assert t["cycle_no"].tolist() == [1, 2] and t["reasons"].tolist() == ["", "too slow"]
    assert _bits(t["speed_rpm"]) == _bits([1500.0, NAN]) and _bits(t["efficiency"]) == _bits([NAN, 0.5])


def test_hdf5(tmp_path):
    _write(Hdf5Writer, tmp_path / "x.h5")
    with h5py.File(tmp_path / "x.h5", "r") as f:
        assert f.attrs["operator"] == "Zoë" and f.attrs["run_id"] == 7
        assert f["dev_a/time_ns"][:].tolist() == [T0, T0 + 5, T0 + 9]
        assert _bits(f["dev_a/v"][:]) == _bits([0.1, NAN, 1e-300])
        assert _bits(f["dev_a/n"][:]) == _bits([3.0, NAN, 2.0**62])
        assert [s.decode() for s in f["dev_a/text"][:]] == ["µ,\"x\"", "", "日本"]
        assert f["dev_b/v"].attrs["unit"] == "mV" and f["dev_b/n"][:].tolist() == [1.0]
        assert f["cycles/efficiency"].shape == (2,)


def test_tdms(tmp_path):
    _write(TdmsExportWriter, tmp_path / "x.tdms")
    f = TdmsFile.read(tmp_path / "x.tdms")
    assert f.properties["notes"] == "a\nb" and f.properties["extra.k"] == "v, w"
    assert f["dev_a"]["time_ns"][:].tolist() == [T0, T0 + 5, T0 + 9]
    assert _bits(f["dev_a"]["v"][:]) == _bits([0.1, NAN, 1e-300])
    assert f["dev_a"]["text"][:].tolist() == ["µ,\"x\"", "", "日本"]
    assert f["dev_a"]["v"].properties["unit_string"] == "V"
    assert f["dev_b"]["time"][:].tolist() == [1e-9]  # since the run's start
    assert f["dev_b"]["dev_b.time"][:].tolist() == [2.5]  # the device's own field named time
    assert f["cycles"]["verdict"][:].tolist() == ["ok", "nok"]


def test_mdf4_without_cycles(tmp_path):
    _write(Mdf4Writer, tmp_path / "x.mdf", cycles=[])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mdf"]  # saved as asked, no .mf4 twin left
    with MDF(tmp_path / "x.mdf") as mdf:
        assert [g.channel_group.acq_name for g in mdf.groups] == ["dev_a", "dev_b"]
        assert _bits(mdf.get("v", group=0).samples) == _bits([0.1, NAN, 1e-300])
        assert mdf.get("v", group=1).unit == "mV"
        assert [s.decode() for s in mdf.get("text", group=0).samples] == ["µ,\"x\"", "", "日本"]
        assert mdf.header._common_properties["extra.k"] == "v, w"


def test_parquet(tmp_path):
    _write(ParquetExportWriter, tmp_path / "x.parquet")
    t = pq.read_table(tmp_path / "x.parquet")
    assert t.column_names == ["device", "time", "v", "n", "text", "dev_b.time", "dev_b.n"]
    assert t.column("n").to_pylist() == [3, None, 2**62, None]
    assert t.column("dev_b.n").to_pylist() == [None, None, None, True]
    assert t.schema.field("v").metadata[b"unit"] == b'{"dev_a": "V", "dev_b": "mV"}'
    meta = json.loads(t.schema.metadata[b"rigdaq"])
    assert meta["cycles"] == CYCLES and meta["run"] == META


def test_csv(tmp_path):
    import pandas as pd

    _write(CsvExportWriter, tmp_path / "x.csv")
    lines = (tmp_path / "x.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "# rigdaq run export 1; 6 comment lines before the header (skiprows)"
    assert lines[6:] == ["device,time_ns,v,n,text,dev_b.time,dev_b.n",  # strings quoted, nothing for a null
                         f'"dev_a",{T0},0.1,3,"µ,""x""",,',
                         f'"dev_a",{T0 + 5},,,,,',
                         f'"dev_a",{T0 + 9},1e-300,{2**62},"日本",,',
                         f'"dev_b",{T0 + 1},-0,,,2.5,true']
    assert json.loads(lines[1].removeprefix("# run: ")) == META
    assert [json.loads(line.removeprefix("# cycle: ")) for line in lines[4:6]] == CYCLES
    df = pd.read_csv(tmp_path / "x.csv", skiprows=6)
    assert df["time_ns"].tolist() == [T0, T0 + 5, T0 + 9, T0 + 1]
    assert df["text"].tolist()[0] == "µ,\"x\""


def test_plan_refuses_what_it_cannot_read(tmp_path):
    (tmp_path / "rigs").mkdir()
    (tmp_path / "rigs" / "srm.toml").write_text((ROOT / "configs" / "rigs" / "srm-rig.toml").read_text())
    (tmp_path / "a.toml").write_text('[service]\nrigs = ["rigs/srm.toml"]\n')
    (tmp_path / "b.toml").write_text('[service]\nrigs = ["rigs/srm.toml"]\n[storage.influxdb]\napi = "v2"\n'
                                     'url = "http://127.0.0.1:8086"\ntoken = "t"\norg = "o"\nbucket = "b"\n')
    with pytest.raises(ExportError) as e:
        plan_for(load_settings(tmp_path / "a.toml"), 1, "csv", "x.csv")
    assert (e.value.status, str(e.value)) == (409, f"{tmp_path / 'a.toml'}: no [storage.influxdb]: there are no "
                                                   "samples to export")
    with pytest.raises(ExportError) as e:
        plan_for(load_settings(tmp_path / "b.toml"), 1, "csv", "x.csv")
    assert e.value.status == 409 and 'api = "v2"' in str(e.value)
    with pytest.raises(ExportError) as e:
        plan_for(load_settings(tmp_path / "b.toml"), 1, "xlsx", "x.xlsx")
    assert (e.value.status, str(e.value)) == (
        422, "no export format 'xlsx'; formats are hdf5, tdms, mdf4, parquet, csv")


class _FailingReader:
    """An InfluxRunReader whose InfluxDB fails after the first batch of each device."""

    def __init__(self, target, window_s=30.0):
        pass

    def batches(self, dev, rig, start_ns, stop_ns):
        yield _batches()[dev.name][0]
        raise ExportError("InfluxDB at x failed mid-export: ReadTimeout")

    def close(self):
        pass


def _plan(fmt, output):
    from daq.export import ExportPlan
    from daq.export.plan import InfluxTarget

    return ExportPlan(7, fmt, str(output), "sqlite://", InfluxTarget("http://127.0.0.1:1", "db"))


@pytest.mark.parametrize("fmt", ["hdf5", "tdms", "mdf4", "parquet", "csv"])
def test_a_failed_export_leaves_no_file_behind(tmp_path, monkeypatch, fmt):
    import daq.export.source as source
    from daq.export import export_run

    monkeypatch.setattr(source, "InfluxRunReader", _FailingReader)
    monkeypatch.setattr(source, "load_run", lambda *a: RunInfo(dict(META), [DEV_A, DEV_B], CYCLES))
    with pytest.raises(ExportError, match="mid-export"):
        export_run(_plan(fmt, tmp_path / "new.out"), catalogue=object())
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "old.out").write_bytes(b"an earlier export")  # -o over an existing file: it stays as it was
    with pytest.raises(ExportError, match="mid-export"):
        export_run(_plan(fmt, tmp_path / "old.out"), catalogue=object())
    assert [p.name for p in tmp_path.iterdir()] == ["old.out"] and (tmp_path / "old.out").read_bytes() == (
        b"an earlier export")


def test_export_to_a_directory_leaves_nothing(tmp_path, monkeypatch):
    import daq.export.source as source
    from daq.export import export_run

    monkeypatch.setattr(source, "load_run", lambda *a: RunInfo(dict(META), [DEV_A, DEV_B], CYCLES))
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        export_run(_plan("hdf5", tmp_path / "d"), catalogue=object())
    assert [p.name for p in tmp_path.iterdir()] == ["d"] and list((tmp_path / "d").iterdir()) == []


def test_mdf4_leaves_no_part_file_when_the_move_fails(tmp_path, monkeypatch):
    import daq.export.mdf4 as mdf4

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(mdf4.os, "replace", refuse)
    with pytest.raises(PermissionError):
        _write(Mdf4Writer, tmp_path / "x.mf4")
    assert list(tmp_path.iterdir()) == []


def test_worker_timeout_grows_with_the_run():
    from daq.export import worker_timeout_s

    assert worker_timeout_s(60 * 10**9) == 600.0
    assert worker_timeout_s(8 * 3600 * 10**9) == 2 * 8 * 3600.0


def test_sweep_removes_only_stale_spool_dirs(tmp_path):
    import os

    from api.routes.export import sweep

    now = 1_800_000_000.0
    spool = tmp_path / "exports"
    for name in ("run-1-old", "run-2-fresh", "run-3-kept", "other"):
        (spool / name).mkdir(parents=True)
        (spool / name / "f").write_bytes(b"x")
    for name, age in (("run-1-old", 7200), ("run-2-fresh", 60), ("run-3-kept", 7200), ("other", 7200)):
        for p in (spool / name / "f", spool / name):
            os.utime(p, (now - age, now - age))
    os.utime(spool / "run-2-fresh", (now - 7200, now - 7200))  # an old dir whose file is still being written
    sweep(spool, {spool / "run-3-kept"}, now=now)
    assert sorted(p.name for p in spool.iterdir()) == ["other", "run-2-fresh", "run-3-kept"]


def test_a_worker_that_takes_too_long_is_killed_and_gives_504(monkeypatch):
    import asyncio

    from daq.export import export_in_worker

    real = asyncio.create_subprocess_exec
    started = []

    async def sleeper(*args, **kw):  # a child that never answers, instead of the export worker
        proc = await real("sleep", "30", **kw)
        started.append(proc)
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", sleeper)
    with pytest.raises(ExportError) as e:
        asyncio.run(export_in_worker(_plan("tdms", "x.tdms"), timeout_s=0.2))
    assert e.value.status == 504
    assert "daq export 7 --format tdms -o FILE" in str(e.value)
    assert started[0].returncode is not None  # killed and reaped


class _Reader:
    """What load_run asks InfluxDB: the rig's measurements, which fields the run has, their types."""

    def measurements(self, rig):
        return ["press01_amp"]

    def present_fields(self, name, rig, start_ns, stop_ns):
        return {"force", "position"}

    def field_types(self, name):
        return {"force": "float", "position": "float"}


def test_an_export_names_the_units_the_run_recorded_not_the_rig_file_now():
    from daq.catalogue import Catalogue
    from daq.catalogue.runs import run_config
    from daq.config import load_rig
    from daq.export.source import load_run

    rig = load_rig(ROOT / "configs" / "rigs" / "screw-press.toml")
    cat = Catalogue("sqlite://")
    recorded = cat.start_run("press-01", 1, config=run_config(rig))
    older = cat.start_run("press-02", 1)  # a run from before units were recorded
    assert recorded.config["units"]["press01_amp"] == {  # the stream's sample counter has none
        "sample": "", **{f: "kN" for f in ("force", "force_1", "force_2", "force_3", "force_4")}, "position": "mm"}
    now = {"press-01": {"kind": "screw_press", "devices": {"press01_amp": {"force": "MN", "position": "m"}}},
           "press-02": {"kind": "screw_press", "devices": {"press01_amp": {"force": "MN", "position": "m"}}}}
    got = load_run(cat, _Reader(), recorded.id, now)
    assert [(c.name, c.unit) for c in got.devices[0].channels] == [("force", "kN"), ("position", "mm")]
    got = load_run(cat, _Reader(), older.id, now)
    assert [(c.name, c.unit) for c in got.devices[0].channels] == [("force", "MN"), ("position", "m")]
