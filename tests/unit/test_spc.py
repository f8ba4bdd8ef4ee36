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


# -- control charts at any run length, and the rules' false-alarm rates ------------------------------
import itertools  # noqa: E402
import math  # noqa: E402

from scipy import integrate, stats  # noqa: E402

from analysis.spc import (  # noqa: E402
    RULE_SPAN,
    RULES,
    XBAR_R,
    XBAR_S,
    c4,
    control_chart,
    expected_false_alarms,
    false_alarm_rate,
    rule_false_alarm_rate,
    subgroup_size,
    xbar_s_constants,
    zigzag,
)


def test_xbar_r_limits_from_the_table_constants():
    # three subgroups of 5, each with range 4; means 3, 4, 2; two values after them are not charted
    x = np.array([1, 2, 3, 4, 5, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 99, -99], dtype=float)
    ch = control_chart(x, n=5)
    assert (ch.kind, ch.n, ch.left_out) == ("Xbar-R", 5, 2)
    assert ch.points.tolist() == [3.0, 4.0, 2.0] and ch.spread.tolist() == [4.0, 4.0, 4.0]
    assert ch.first.tolist() == [0, 5, 10]
    assert ch.center == 3.0
    assert ch.ucl == pytest.approx(3 + 0.577 * 4, abs=1e-12) and ch.lcl == pytest.approx(3 - 0.577 * 4, abs=1e-12)
    assert (ch.spread_center, ch.spread_lcl) == (4.0, 0.0) and ch.spread_ucl == pytest.approx(2.114 * 4, abs=1e-12)
    assert ch.sigma == pytest.approx(4 / 2.326, abs=1e-12)
    seven = control_chart(np.array([0, 1, 2, 3, 4, 5, 6] * 2, dtype=float), n=7)  # D3 > 0 from n = 7
    assert seven.spread_lcl == pytest.approx(0.076 * 6, abs=1e-12) and seven.spread_ucl == pytest.approx(1.924 * 6)


def test_xbar_s_limits_from_the_table_constants():
    a, b = np.array([0.0, 1.0] * 6), np.array([1.0, 2.0] * 6)  # n = 12: s = √(3/11) in each, means 0.5 and 1.5
    ch = control_chart(np.concatenate([a, b]), n=12)
    s = math.sqrt(3 / 11)
    assert (ch.kind, ch.n, ch.left_out) == ("Xbar-S", 12, 0)
    assert ch.points.tolist() == [0.5, 1.5] and ch.spread == pytest.approx([s, s], abs=1e-15)
    assert ch.center == 1.0 and ch.ucl == pytest.approx(1 + 0.886 * s, abs=1e-12)
    assert ch.lcl == pytest.approx(1 - 0.886 * s, abs=1e-12)
    assert ch.spread_ucl == pytest.approx(1.646 * s, abs=1e-12) and ch.spread_lcl == pytest.approx(0.354 * s, abs=1e-12)
    assert ch.sigma == pytest.approx(s / 0.9776, abs=1e-12)


def test_the_constants_formula_reproduces_the_standard_table():
    for n, (a3, b3, b4, c) in XBAR_S.items():
        assert round(c4(n), 4) == c, n
        b = 3 * math.sqrt(1 - c4(n) ** 2) / c4(n)
        assert (round(3 / (c4(n) * math.sqrt(n)), 3), round(max(0.0, 1 - b), 3), round(1 + b, 3)) == (a3, b3, b4), n
    assert XBAR_S[2][2] == XBAR_R[2][2] == 3.267  # n = 2: the S and R charts' upper factors agree
    for n, (a2, _, _, d2) in XBAR_R.items():  # d2 = E[range of n]/σ; A2 = 3 / (d2 √n)
        exact = integrate.quad(lambda z, n=n: 1 - stats.norm.cdf(z) ** n - stats.norm.sf(z) ** n, -np.inf, np.inf)[0]
        assert (round(exact, 3), round(3 / (exact * math.sqrt(n)), 3)) == (d2, a2), n
    c = c4(30)  # beyond the table: the formula
    b = 3 * math.sqrt(1 - c * c) / c
    assert xbar_s_constants(30) == (3 / (c * math.sqrt(30)), 1 - b, 1 + b, c)
    assert xbar_s_constants(25) == XBAR_S[25]


@pytest.mark.parametrize(("count", "n", "points", "left_out", "kind"), [
    (2, 1, 2, 0, "I-MR"), (100, 1, 100, 0, "I-MR"), (101, 2, 50, 1, "Xbar-R"), (1000, 10, 100, 0, "Xbar-R"),
    (1001, 11, 91, 0, "Xbar-S"), (10_000, 100, 100, 0, "Xbar-S"), (30_000, 300, 100, 0, "Xbar-S"),
    (30_001, 301, 99, 202, "Xbar-S"),
])
def test_a_long_run_is_charted_in_at_most_a_hundred_subgroups(count, n, points, left_out, kind):
    assert subgroup_size(count) == n
    ch = control_chart(np.random.default_rng(count).normal(50.0, 2.0, count))
    assert (ch.n, len(ch.points), ch.left_out, ch.kind) == (n, points, left_out, kind)
    assert len(ch.spread) == (points - 1 if n == 1 else points)
    assert ch.expected_false_alarms == expected_false_alarms(points)


def test_rule_1_alone_raises_0_27_percent_false_alarms_per_point():
    assert rule_false_alarm_rate(1) == pytest.approx(2 * stats.norm.sf(3), rel=1e-12)
    assert round(rule_false_alarm_rate(1), 4) == 0.0027
    assert false_alarm_rate((1,)) == rule_false_alarm_rate(1)
    assert expected_false_alarms(100, (1,)) == pytest.approx(100 * 2 * stats.norm.sf(3), rel=1e-12)
    ch = control_chart(np.arange(200.0), rules=(1,))
    assert ch.false_alarm_per_point == rule_false_alarm_rate(1)
    assert ch.expected_false_alarms == pytest.approx(100 * 2 * stats.norm.sf(3), rel=1e-12)  # 100 subgroup means


def test_the_rates_of_the_eight_rules():
    p, q = stats.norm.sf(2), stats.norm.sf(1)
    want = {1: 2 * stats.norm.sf(3), 2: 2 / 512, 3: 2 / 720, 4: 2 * 199_360_981 / math.factorial(14),
            5: 2 * p * (1 - (1 - p) ** 2), 6: 2 * q * (4 * q ** 3 * (1 - q) + q ** 4),
            7: (1 - 2 * q) ** 15, 8: (2 * q) ** 8}
    for rule in RULES:
        assert rule_false_alarm_rate(rule) == pytest.approx(want[rule], rel=1e-12), rule
    assert false_alarm_rate() == pytest.approx(sum(want.values()), rel=1e-12)
    # over m points, a rule can only fire from its span's last point on: m − span + 1 chances (none below)
    assert expected_false_alarms(10) == pytest.approx(
        sum(want[r] * (10 - RULE_SPAN[r] + 1) for r in (1, 2, 3, 5, 6, 8)), rel=1e-12)
    assert expected_false_alarms(100) == pytest.approx(sum(want[r] * (101 - RULE_SPAN[r]) for r in RULES), rel=1e-12)
    with pytest.raises(ValueError, match="no Nelson rule 9"):
        rule_false_alarm_rate(9)


def test_zigzag_numbers_count_alternating_orders():
    assert [zigzag(n) for n in range(11)] == [1, 1, 1, 2, 5, 16, 61, 272, 1385, 7936, 50521]
    assert zigzag(14) == 199_360_981
    for n in range(3, 8):  # brute force: up-down orders of n distinct values are 2·E_n
        alternating = sum(all((p[i + 1] - p[i]) * (p[i + 2] - p[i + 1]) < 0 for i in range(n - 2))
                          for p in itertools.permutations(range(n)))
        assert alternating == 2 * zigzag(n)


def _enumerated_rate(rule: int, regions: list[tuple[float, float]], span: int) -> float:
    """P(the last point completes ``rule``) by enumerating every pattern of (value, probability) regions."""
    total = 0.0
    for pattern in itertools.product(regions, repeat=span):
        x = np.array([v for v, _ in pattern])
        if (rule, span - 1) in nelson(x, 0.0, 1.0):
            total += math.prod(pr for _, pr in pattern)
    return total


def test_the_rates_are_what_the_implemented_rules_do():
    p, q = stats.norm.sf(2), stats.norm.sf(1)
    assert _enumerated_rate(2, [(0.5, 0.5), (-0.5, 0.5)], 9) == pytest.approx(rule_false_alarm_rate(2), rel=1e-12)
    assert _enumerated_rate(5, [(2.5, p), (0.0, 1 - 2 * p), (-2.5, p)], 3) == pytest.approx(
        rule_false_alarm_rate(5), rel=1e-12)
    assert _enumerated_rate(6, [(1.5, q), (0.0, 1 - 2 * q), (-1.5, q)], 5) == pytest.approx(
        rule_false_alarm_rate(6), rel=1e-12)
    assert _enumerated_rate(8, [(1.5, 2 * q), (0.0, 1 - 2 * q)], 8) == pytest.approx(
        rule_false_alarm_rate(8), rel=1e-12)
    orders = list(itertools.permutations(np.linspace(-0.9, 0.9, 6)))  # rule 3: every order of 6 values
    assert sum((3, 5) in nelson(np.array(o), 0.0, 1.0) for o in orders) / len(orders) == rule_false_alarm_rate(3)
