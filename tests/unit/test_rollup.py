"""Rollups against numpy on the same samples, whatever the block boundaries."""

import numpy as np
import pytest

from daq.storage.rollup import Rollup
from drivers.block import QUALITY_BAD, Block

T0 = 1_700_000_000_000_000_000 + 250_000_000  # a quarter into an epoch second


def _samples(n=25_000, rate=10_000.0, seed=3):
    rng = np.random.default_rng(seed)
    t = T0 + np.round(np.arange(n) * 1e9 / rate).astype(np.int64)
    force = rng.normal(500.0, 50.0, n)
    force[rng.integers(0, n, 40)] = np.nan  # no value
    q = np.zeros(n, dtype=np.uint8)
    q[rng.integers(0, n, 60)] = QUALITY_BAD
    speed = np.linspace(0.0, 90.0, n)
    return t, {"force": force, "speed": speed, "sample": np.arange(n)}, q


@pytest.mark.parametrize("cut", [1, 97, 5_000])
def test_one_second_rollups_are_numpys_per_epoch_second(cut):
    t, ch, q = _samples()
    r = Rollup(decimate_hz={"amp": 1_000.0})
    out = []
    for a in range(0, len(t), cut):
        out += r.feed(Block("amp", t[a:a + cut], {k: v[a:a + cut] for k, v in ch.items()}, q[a:a + cut]))
    out += r.flush()
    secs = [b for b in out if b.device == "amp_1s"]
    t1 = np.concatenate([b.t_ns for b in secs])
    sec = t // 1_000_000_000 * 1_000_000_000
    np.testing.assert_array_equal(t1, np.unique(sec))  # 3 seconds: 0.75 s, 1 s and 0.75 s of samples
    for name in ("force", "speed"):
        got = {k: np.concatenate([b.channels[f"{name}_{k}"] for b in secs]) for k in ("min", "max", "mean",
                                                                                       "last", "n")}
        for i, s in enumerate(np.unique(sec)):
            m = (sec == s) & (q == 0) & np.isfinite(ch[name])
            x = ch[name][m]
            assert (got["min"][i], got["max"][i], got["last"][i], got["n"][i]) == (x.min(), x.max(), x[-1], len(x))
            assert got["mean"][i] == pytest.approx(x.mean(), rel=1e-12)
    assert "sample_min" not in secs[0].channels  # the counter is not a reading
    dec = [b for b in out if b.device == "amp_dec"]
    td = np.concatenate([b.t_ns for b in dec])
    bins = t // 1_000_000 * 1_000_000
    np.testing.assert_array_equal(td, np.unique(bins))  # 1 kHz: one point per ms
    speed = np.concatenate([b.channels["speed"] for b in dec])
    for i in (0, 1234, len(td) - 1):
        m = (bins == td[i]) & (q == 0)
        assert speed[i] == pytest.approx(ch["speed"][m].mean(), rel=1e-12)


def test_invalid_samples_do_not_count_and_a_channel_without_any_is_nan_with_n_0():
    # T0 is 0.25 s into a second: samples at 0.25, 0.65 (second S), 1.05, 1.45 (second S + 1)
    t = T0 + np.arange(4, dtype=np.int64) * 400_000_000
    block = Block("plc", t, {"x": np.array([1.0, 2.0, 3.0, 4.0]), "y": np.array([5.0, 6.0, 7.0, 8.0])},
                  np.zeros(4, np.uint8), valid={"x": np.array([True, False, False, True]),
                                                "y": np.array([False, False, True, True])})
    r = Rollup()
    [first] = r.feed(block)  # second S is complete once a sample of S + 1 arrived
    [second] = r.flush()
    s = T0 // 1_000_000_000 * 1_000_000_000
    assert (first.device, first.t_ns.tolist(), second.t_ns.tolist()) == ("plc_1s", [s], [s + 1_000_000_000])
    assert (first.channels["x_n"][0], first.channels["x_mean"][0], first.channels["x_last"][0]) == (1, 1.0, 1.0)
    assert first.channels["y_n"][0] == 0 and np.isnan(first.channels["y_mean"][0])
    assert (second.channels["x_n"][0], second.channels["x_last"][0]) == (1, 4.0)
    assert (second.channels["y_min"][0], second.channels["y_max"][0], second.channels["y_n"][0]) == (7.0, 8.0, 2)
    assert r.flush() == []
