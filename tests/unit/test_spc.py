import numpy as np
import pytest

from analysis.spc import capability, imr, nelson


def test_capability_from_known_spreads():
    x = np.array([10.0, 12.0] * 50)  # moving range always 2, mean 11
    c = capability(x, lsl=5.0, usl=17.0)
    assert c.sigma_within == pytest.approx(2 / 1.128)
    assert c.cp == pytest.approx(12 / (6 * 2 / 1.128))
    assert c.cpk == pytest.approx(6 / (3 * 2 / 1.128))
    assert c.sigma_overall == pytest.approx(np.std(x, ddof=1))
    assert c.pp == pytest.approx(12 / (6 * np.std(x, ddof=1)))
    one = capability(x, usl=17.0)
    assert one.cp is None and one.cpk == pytest.approx(c.cpk)


def test_imr_limits():
    x = np.array([5.0, 7.0, 6.0, 8.0, 6.0])
    chart = imr(x)
    mr = np.mean([2, 1, 2, 2])
    assert chart.mr_center == pytest.approx(mr) and chart.mr_ucl == pytest.approx(3.267 * mr)
    assert chart.ucl - chart.center == pytest.approx(3 * mr / 1.128)


@pytest.mark.parametrize(("rule", "values", "flags"), [
    (1, [0, 0.5, -0.5, 3.5], [(1, 3)]),
    (2, [0.5] * 9, [(2, 8)]),
    (3, [-1, -0.6, -0.2, 0.2, 0.6, 0.9], [(3, 5)]),
    (4, [0.5, -0.5] * 7, [(4, 13)]),
    (5, [2.5, 0, 2.5], [(5, 2)]),
    (6, [1.5, 1.5, 0, 1.5, 1.5], [(6, 4)]),
    # 15 points within 1σ, the first 14 (and 15) also alternating up and down: rule 4 too
    (7, [0.2, -0.2] * 7 + [0.1], [(4, 13), (4, 14), (7, 14)]),
    (8, [1.5, -1.5, 1.5, -1.5, 1.5, -1.5, 1.5, -1.5], [(8, 7)]),
])
def test_each_nelson_rule_fires_on_its_pattern(rule, values, flags):
    x = np.array(values, dtype=float)
    assert nelson(x, center=0.0, sigma=1.0) == flags  # exactly these, nothing else
    # it fires when the pattern completes: one point fewer, and the rule is silent
    assert [f for f in nelson(x[:-1], center=0.0, sigma=1.0) if f[0] == rule] == []


def test_a_quiet_process_raises_nothing_but_rule_7():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 12)
    assert {r for r, _ in nelson(x, 0.0, 10.0)} <= {7}
    assert nelson(x, 0.0, 10.0) == []  # only 12 points: not 15 in a row yet
