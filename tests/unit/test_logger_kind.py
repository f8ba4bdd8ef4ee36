"""The logger rig kind: its run summary against numpy and an independent hash, its schema, its simulator."""

from __future__ import annotations

import hashlib
import itertools
import math
import struct

import numpy as np
import pytest

from daq.acquisition.transports import transport_of
from daq.cli import main
from daq.config import ConfigError, load_rig
from daq.cycles import RunArtifact
from daq.rigs import KINDS, kind_of
from daq.rigs.logger import LoggerRig, RunSummaryTracker
from daq.rigs.logger.sim import LoggerModel, UnknownChannelError, model_rate
from daq.simulators import build_simulator
from drivers.block import QUALITY_BAD, QUALITY_PARTIAL, QUALITY_STALE, Block
from tests.conftest import ROOT

RIG = ROOT / "configs" / "rigs" / "lab-logger.toml"


# -- the documented hash, computed independently (struct, one sample at a time) ---------------
def channel_sha256(t_ns, values) -> bytes:
    """SHA-256 over (t_ns int64 LE, value float64 LE) of each stored value, in time order."""
    h = hashlib.sha256()
    for t, v in zip(list(t_ns), list(values), strict=True):
        h.update(struct.pack("<qd", int(t), float(v) + 0.0))
    return h.digest()


def device_sha256(series: dict[str, tuple]) -> str:
    """SHA-256 over (UTF-8 name, 0x00, channel digest) of the channels with values, sorted by name."""
    h = hashlib.sha256()
    for name in sorted(series):
        t, v = series[name]
        if len(t):
            h.update(name.encode("utf-8") + b"\x00" + channel_sha256(t, v))
    return h.hexdigest()


def _split(n: int, rng: np.random.Generator) -> list[int]:
    """Arbitrary block boundaries, with empty and one-sample blocks among them."""
    return sorted([*rng.integers(0, n + 1, 12).tolist(), 0, 0, 1, 2, 2, n - 1, n, n])


def _feed(tracker, device, t, chans, cuts, quality=None, valid=None, rig="lab"):
    for a, b in itertools.pairwise(cuts):
        tracker.feed(rig, Block(device, t[a:b], {k: v[a:b] for k, v in chans.items()},
                                None if quality is None else quality[a:b],
                                None if valid is None else {k: m[a:b] for k, m in valid.items()}))


def _signals(n: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    t = 1_700_000_000_000_000_000 + np.cumsum(rng.integers(90_000_000, 110_000_000, n)).astype(np.int64)
    return t, {
        "tc1": 1000.0 + 1e-3 * rng.standard_normal(n),  # a large mean, a tiny spread: cancellation-prone
        "power": 1500.0 + 400.0 * np.sin(np.arange(n) / 7.0) + rng.standard_normal(n),
        "counts": rng.integers(-5000, 5000, n).astype(np.int64),  # an unscaled integer register
        "flat": np.full(n, 0.1),  # exactly constant
        "sample": np.arange(n, dtype=np.int64),  # a stream's counter: not summarised
        "state": rng.integers(0, 2, n).astype(bool),  # bits: not numeric
        "recipe": np.array(["A113"] * n),  # strings: not numeric
    }


def test_the_summary_equals_numpy_whatever_the_block_boundaries():
    rng = np.random.default_rng(7)
    t, chans = _signals(1000, rng)
    numeric = ("tc1", "power", "counts", "flat")
    for trial in range(4):
        tracker = RunSummaryTracker("lab", {"scanner": {"tc1": "°C", "power": "W"}})
        tracker.run = "5"
        _feed(tracker, "scanner", t, chans, _split(len(t), rng) if trial else [0, len(t)])
        art = tracker.close_run(int(t[-1]) + 1)
        assert isinstance(art, RunArtifact)
        assert (art.rig, art.run, art.name, art.t_ns) == ("lab", "5", "channel_summary", int(t[-1]) + 1)
        dev = art.data["devices"]["scanner"]
        assert set(dev["channels"]) == set(numeric)
        assert (dev["samples"], dev["first_ns"], dev["last_ns"]) == (len(t), int(t[0]), int(t[-1]))
        for name in numeric:
            x, c = chans[name].astype(np.float64), dev["channels"][name]
            assert (c["count"], c["missing"], c["bad_quality"], c["stored"]) == (len(x), 0, 0, len(x))
            assert (c["min"], c["max"]) == (x.min(), x.max())
            # relative to the mean, or to the values' magnitude where the mean is near 0 (counts)
            assert c["mean"] == pytest.approx(np.mean(x), rel=1e-12, abs=1e-13 * np.max(np.abs(x)))
            if name != "flat":  # numpy's std of a constant is a rounding error (1e-17); the summary's is 0
                assert c["std"] == pytest.approx(np.std(x), rel=1e-12, abs=0)
            assert (c["first_ns"], c["last_ns"]) == (int(t[0]), int(t[-1]))
            assert c["span_s"] == (int(t[-1]) - int(t[0])) / 1e9
            assert (c["stored_first_ns"], c["stored_last_ns"]) == (int(t[0]), int(t[-1]))
            assert c["sha256"] == channel_sha256(t, x).hex()
        assert dev["channels"]["flat"]["std"] == 0.0 and dev["channels"]["flat"]["mean"] == 0.1
        assert (dev["channels"]["tc1"]["unit"], dev["channels"]["counts"]["unit"]) == ("°C", "")
        assert dev["sha256"] == device_sha256({k: (t, chans[k]) for k in numeric})
        assert art.data["std"] == "population (ddof = 0)"
        assert art.data["hash_layout"] == "rigdaq-logger-sha256/1"
        assert (art.data["run"], art.data["start_ns"], art.data["end_ns"]) == ("5", int(t[0]), int(t[-1]) + 1)


def test_invalid_samples_are_left_out_and_counted():
    rng = np.random.default_rng(11)
    n = 400
    t = 1_000_000_000 + np.arange(n, dtype=np.int64) * 10_000_000
    a = rng.normal(20.0, 2.0, n)
    b = rng.normal(-3.0, 0.5, n)
    a[[3, 50, 51]] = np.nan
    a[77] = np.inf
    b[[5, 6]] = -np.inf
    quality = np.zeros(n, np.uint8)
    quality[[10, 11]] = QUALITY_PARTIAL
    quality[[12, 50]] = QUALITY_BAD
    quality[200:220] = QUALITY_STALE
    valid_b = np.ones(n, bool)
    valid_b[[7, 8, 9, 10]] = False
    tracker = RunSummaryTracker("lab")
    tracker.run = "1"
    _feed(tracker, "dev", t, {"a": a, "b": b}, _split(n, rng), quality, {"b": valid_b})
    chans = tracker.close_run(0).data["devices"]["dev"]["channels"]
    good_q = quality == 0
    has_a = np.isfinite(a)
    has_b = np.isfinite(b) & valid_b
    for name, x, has in (("a", a, has_a), ("b", b, has_b)):
        c, good = chans[name], has & good_q
        assert c["missing"] == int((~has).sum())
        assert c["bad_quality"] == int((has & ~good_q).sum())
        assert c["count"] == int(good.sum()) == n - c["missing"] - c["bad_quality"]
        assert (c["min"], c["max"]) == (x[good].min(), x[good].max())
        assert c["mean"] == pytest.approx(np.mean(x[good]), rel=1e-12)
        assert c["std"] == pytest.approx(np.std(x[good]), rel=1e-12)
        assert (c["first_ns"], c["last_ns"]) == (int(t[good][0]), int(t[good][-1]))
        # the hash covers what storage keeps: every finite, unmasked value, whatever its quality
        assert c["stored"] == int(has.sum())
        assert c["sha256"] == channel_sha256(t[has], x[has]).hex()
    assert (chans["a"]["missing"], chans["a"]["bad_quality"]) == (4, 23)  # NaN 3, 50, 51 and inf 77
    assert (chans["b"]["missing"], chans["b"]["bad_quality"]) == (6, 23)


def test_negative_zero_is_hashed_as_zero():
    tracker = RunSummaryTracker("lab")
    tracker.run = "1"
    t = np.array([1, 2], np.int64)
    tracker.feed("lab", Block("d", t, {"x": np.array([-0.0, 1.0])}))
    c = tracker.close_run(3).data["devices"]["d"]["channels"]["x"]
    assert c["sha256"] == channel_sha256(t, [0.0, 1.0]).hex()
    assert c["min"] == 0.0


def test_two_runs_are_never_mixed():
    t = np.arange(10, dtype=np.int64) * 1_000_000_000
    first, second = np.arange(10.0), np.arange(10.0) + 100.0
    tracker = RunSummaryTracker("lab")
    tracker.feed("lab", Block("d", t, {"x": first}))  # no run yet: not summarised
    assert tracker.close_run(0) is None
    tracker.run = "1"
    tracker.feed("lab", Block("d", t[:5], {"x": first[:5]}))
    tracker.run = "2"  # a new run without close_run: run 1's samples are dropped
    tracker.feed("lab", Block("d", t[5:], {"x": second[5:]}))
    tracker.feed("other-rig", Block("d", t, {"x": first}))  # another rig's block
    art = tracker.close_run(int(t[-1]))
    assert art.run == "2" and art.data["run"] == "2"
    c = art.data["devices"]["d"]["channels"]["x"]
    assert (c["count"], c["min"], c["max"], c["mean"]) == (5, 105.0, 109.0, 107.0)
    # after close_run, until the run manager clears the run, blocks are no run's
    tracker.feed("lab", Block("d", t, {"x": first}))
    assert tracker.close_run(0) is None
    tracker.run = ""
    tracker.run = "3"
    tracker.feed("lab", Block("d", t[:2], {"x": first[:2]}))
    c = tracker.close_run(0).data["devices"]["d"]["channels"]["x"]
    assert (c["count"], c["min"], c["max"]) == (2, 0.0, 1.0)
    assert tracker.cycle_no == 0


def test_odd_blocks_never_raise():
    tracker = RunSummaryTracker("lab", {"d": {"x": "V"}, "idle": {"y": "A"}})
    tracker.run = "9"
    t3 = np.array([1, 2, 3], np.int64)
    odd = [
        Block("d", np.zeros(0, np.int64), {}),
        Block("d", np.zeros(0, np.int64), {"x": np.zeros(0)}),
        Block("d", t3, {}),
        Block("d", t3, {"s": np.array(["a", "b", "c"]), "b": np.array([True, False, True])}),
        Block("d", t3, {"x": np.array([np.nan, np.nan, np.nan])}),
        Block("d", t3, {"x": np.array([1.0, 2.0])}),  # too short
        Block("d", t3, {"x": np.ones((3, 2))}),  # two-dimensional
        Block("d", t3, {"x": np.array([1, "a", None], dtype=object)}),
        Block("d", t3, {"x": np.ones(3)}, quality=np.zeros(2, np.uint8)),  # quality of another length
        Block("d", t3, {"x": np.ones(3)}, valid={"x": np.ones(2, bool)}),  # a mask of another length
        Block("d", t3.astype(float), {"x": np.ones(3)}),  # float timestamps
        Block("d", t3, {"x": np.ones(3)}),
    ]
    odd[-1].t_ns = np.int64(5)  # a scalar for timestamps
    for b in odd:
        tracker.feed("lab", b)
    tracker.feed("lab", Block("d", np.array([4, 5], np.int64), {"x": np.array([2.0, 4.0])}))
    data = tracker.close_run(6).data
    c = data["devices"]["d"]["channels"]["x"]
    assert (c["count"], c["missing"], c["mean"], c["std"]) == (2, 3, 3.0, 1.0)
    assert c["sha256"] == channel_sha256([4, 5], [2.0, 4.0]).hex()
    # a device of the rig file that sent nothing is listed, empty
    assert data["devices"]["idle"] == {"samples": 0, "first_ns": None, "last_ns": None,
                                       "sha256": hashlib.sha256(b"").hexdigest(), "channels": {}}
    tracker.run = "10"
    tracker.feed("lab", Block("d", t3, {"x": np.array([np.nan, np.nan, np.nan])}))
    c = tracker.close_run(7).data["devices"]["d"]["channels"]["x"]
    assert (c["count"], c["missing"], c["stored"], c["min"], c["mean"], c["std"], c["span_s"]) == (
        0, 3, 0, None, None, None, None)
    assert tracker.summary()["devices"]["d"]["sha256"] == hashlib.sha256(b"").hexdigest()


def test_several_devices_each_have_their_hash():
    rng = np.random.default_rng(3)
    tracker = RunSummaryTracker("lab")
    tracker.run = "4"
    series = {}
    for dev, names, period in (("scanner", ("tc1", "tc2"), 200_000_000), ("meter", ("power",), 500_000_000)):
        t = 10**18 + np.arange(50, dtype=np.int64) * period
        chans = {n: rng.normal(50, 5, 50) for n in names}
        series[dev] = {n: (t, v) for n, v in chans.items()}
        _feed(tracker, dev, t, chans, _split(50, rng))
    devices = tracker.close_run(0).data["devices"]
    assert sorted(devices) == ["meter", "scanner"]
    for dev, s in series.items():
        assert devices[dev]["sha256"] == device_sha256(s)


# -- the kind ---------------------------------------------------------------------------------
def test_the_kind_declares_no_cycles():
    kind = KINDS["logger"]
    assert kind_of("logger") is kind
    assert (kind.name, kind.schema, kind.cycle_noun, kind.master_channel) == ("logger", LoggerRig, None, None)
    assert (kind.key_metric, kind.metrics, kind.csv_columns) == ("", (), ())
    assert kind.method.startswith("Continuous logging; per run")
    rig = load_rig(RIG)
    tracker = kind.tracker_for(rig)
    assert isinstance(tracker, RunSummaryTracker)
    assert (tracker.rig, tracker.run, tracker.cycle_no) == ("lab-01", "", 0)
    assert tracker.units["lab01_scanner"]["tc1"] == "°C"


def test_the_shipped_logger_rig_loads():
    rig = load_rig(RIG)
    assert isinstance(rig, LoggerRig)
    assert (rig.name, rig.kind, rig.simulate) == ("lab-01", "logger", True)
    assert [(d.name, d.transport) for d in rig.devices] == [
        ("lab01_scanner", "modbus_tcp"), ("lab01_power", "modbus_rtu"), ("lab01_room", "serial_stream")]
    assert [r.name for r in rig.devices[0].registers] == [f"tc{k}" for k in range(1, 9)]
    assert 2 <= rig.devices[0].poll_hz <= 10
    assert rig.limits == {}


def test_an_unknown_kind_lists_the_logger(tmp_path):
    p = tmp_path / "rig.toml"
    p.write_text(RIG.read_text().replace('kind = "logger"', 'kind = "lathe"'))
    with pytest.raises(ConfigError) as e:
        load_rig(p)
    assert e.value.problems == [f"{p}: kind: must be one of screw_press, srm_rig, logger (got 'lathe')"]


def test_a_logger_has_no_limits_and_simulates_only_its_channels(tmp_path):
    p = tmp_path / "rig.toml"
    p.write_text(RIG.read_text() + "\n[limits]\ntc1 = { max = 90.0 }\n")
    with pytest.raises(ConfigError) as e:
        load_rig(p)
    assert e.value.problems == [f"{p}: limits: a logger rig has no test cycles, so no metrics to judge: remove tc1"]
    p.write_text(RIG.read_text() + "\n[parameters.channels.tc9]\nbase = 1.0\n")
    with pytest.raises(ConfigError) as e:
        load_rig(p)
    assert e.value.problems == [f"{p}: (top level): parameters.channels: no device has a channel 'tc9'"]


def test_daq_analyse_says_a_logger_has_no_cycles(tmp_path, capsys):
    csv = tmp_path / "log.csv"
    csv.write_text("time,tc1\n0.0,20.0\n0.1,20.1\n")
    assert main(["analyse", str(RIG), str(csv)]) == 2
    out = capsys.readouterr()
    assert out.err.strip() == "rigdaq: rig kind logger has no test cycles to analyse"
    assert out.out == ""


# -- the simulated instruments ------------------------------------------------------------------
def test_the_simulator_shows_every_declared_channel_on_every_face(tmp_path):
    rig = load_rig(RIG)
    sim = build_simulator(rig, tmp_path)
    ends = sim.endpoints()
    assert ends["lab01_scanner"] == "Modbus TCP 127.0.0.1:15030 unit 1"
    assert ends["lab01_power"] == f"Modbus RTU {tmp_path / 'pty' / 'lab01-rs485'} unit 1 (19200 baud)"
    assert ends["lab01_room"] == f"serial stream {tmp_path / 'pty' / 'lab01-room'} (ascii, 20 Hz)"
    declared = [n for d in rig.devices for n in d.channel_units() if n != "sample"]
    out = sim.model.advance(50)
    assert sorted(out) == sorted(declared)
    assert all(v.shape == (50,) and np.all(np.isfinite(v)) for v in out.values())


def _step_response(t_s: float, tau_air: float, tau_tc: float) -> float:
    """Two first-order lags in series after a unit step, at ``t_s``."""
    return 1 - (tau_air * math.exp(-t_s / tau_air) - tau_tc * math.exp(-t_s / tau_tc)) / (tau_air - tau_tc)


def test_the_simulated_chamber_behaves():
    rig = load_rig(RIG)  # set-points 23, 60, 85 … °C, 60 s each; the air's τ 20 s, the thermocouples' 4–7 s
    model = LoggerModel(["tc1", "tc8", "voltage", "current", "power", "power_factor", "energy", "frequency",
                         "ambient_temperature", "humidity", "pressure"], rig.parameters, seed=1)
    out = model.advance(59_999)  # 60 s at 23 °C
    for name in ("tc1", "tc8", "ambient_temperature"):  # an offset of at most 0.4 °C, 0.05 °C noise
        assert abs(np.mean(out[name]) - 23.0) < 0.41, name
    assert np.mean(out["power"]) == pytest.approx(150.0, abs=0.1)  # nothing to heat: the base load
    energy_before = out["energy"][-1]
    out = model.advance(60_000)  # the step to 60 °C, for 60 s
    for name, tau in (("tc1", 5.0), ("tc8", 4.0)):
        want = 23.0 + 37.0 * _step_response(59.95, 20.0, tau)
        assert abs(np.mean(out[name][-100:]) - want) < 0.42, (name, want)
    p = out["power"]
    assert np.mean(p[:10]) == pytest.approx(150.0 + 60.0 * 37.0, abs=3.0)
    assert np.mean(p[-100:]) == pytest.approx(150.0 + 60.0 * 37.0 * math.exp(-3.0), abs=1.0)
    i_of = p / (out["voltage"] * out["power_factor"])  # each of them noisy: compared over 1 s
    assert np.mean(out["current"][-1000:]) == pytest.approx(np.mean(i_of[-1000:]), rel=3e-3)
    assert np.mean(out["current"][:1000]) == pytest.approx(np.mean(i_of[:1000]), rel=3e-3)
    assert np.all(np.diff(out["energy"]) > 0)
    assert out["energy"][-1] - energy_before == pytest.approx(np.sum(p) * 1e-3 / 3.6e6, rel=1e-3)
    assert 225 < np.min(out["voltage"]) < np.max(out["voltage"]) < 235
    assert np.all(np.abs(out["frequency"] - 50.0) < 0.03)
    assert 30 < np.mean(out["humidity"]) < 60 and 1010 < np.mean(out["pressure"]) < 1017


def test_an_unknown_channel_is_named_when_the_simulator_is_built(tmp_path):
    text = RIG.read_text().replace('name = "humidity"', 'name = "dew_point_offset"')
    (tmp_path / "rig.toml").write_text(text)
    with pytest.raises(UnknownChannelError, match=r"^lab-01/lab01_room: the simulated logger has no signal for "
                                                   r"channel 'dew_point_offset'"):
        build_simulator(load_rig(tmp_path / "rig.toml"), tmp_path)
    (tmp_path / "rig.toml").write_text(text + "\n[parameters.channels.dew_point_offset]\nbase = 2.0\n"
                                              "amplitude = 0.5\nperiod_s = 10.0\n")
    sim = build_simulator(load_rig(tmp_path / "rig.toml"), tmp_path)
    x = sim.model.advance(10_000)["dew_point_offset"]  # 10 s: one period
    assert x.mean() == pytest.approx(2.0, abs=1e-3) and x.max() == pytest.approx(2.5, abs=1e-4)


def test_a_face_the_rig_simulator_cannot_show_is_an_error(tmp_path):
    rig = load_rig(RIG)
    faces: dict[str, list] = {}
    for dev in rig.devices:
        kind, face = transport_of(dev).sim_face(dev, tmp_path)
        faces.setdefault(kind, []).append(face)
    assert sorted(faces) == ["plcs", "rtus", "streams"]
    sim = KINDS["logger"].simulator(rig, faces, tmp_path, False, tmp_path / "counters.json")
    assert sorted(sim.endpoints()) == ["lab01_power", "lab01_room", "lab01_scanner"]
    faces["carrier_pigeons"] = [object()]
    with pytest.raises(ValueError, match=r"^lab-01: the simulated logger cannot show faces of kind carrier_pigeons$"):
        KINDS["logger"].simulator(rig, faces, tmp_path, False, tmp_path / "counters.json")


def test_an_opcua_device_is_simulated_too(tmp_path):
    nodes = "".join(f'\n  [[devices.nodes]]\n  name = "{c}"\n  node = "ns=2;s=lab01_ua.{c}"\n  type = "Double"\n'
                    for c in ("chamber_temperature", "chamber_setpoint"))
    (tmp_path / "rig.toml").write_text(RIG.read_text() + '\n[[devices]]\nname = "lab01_ua"\ntransport = "opcua"\n'
                                       'endpoint = "opc.tcp://127.0.0.1:4841/chamber"\npoll_hz = 2\n' + nodes)
    sim = build_simulator(load_rig(tmp_path / "rig.toml"), tmp_path)
    assert list(sim.opcua) == ["lab01_ua"]
    out = sim.model.advance(10)
    assert out["chamber_setpoint"][-1] == 23.0 and abs(out["chamber_temperature"][-1] - 23.0) < 0.3


def test_the_model_steps_at_a_rate_every_stream_divides():
    assert model_rate([]) == 1000.0
    assert model_rate([10.0, 2.0, 1000.0]) == 1000.0
    assert model_rate([20_000.0]) == 20_000.0
    assert model_rate([3.0]) == 3000.0
    assert model_rate([1500.0, 400.0]) == 6000.0
    with pytest.raises(ValueError, match="no model rate"):
        model_rate([math.pi])
