"""Press metrics on signals whose answers are known in closed form."""

import math
import re

import numpy as np
import pytest

from analysis.press import PressParams, analyse, contacts, judge

FS = 10_000.0
F_HAT = 80_000.0        # kN
STROKE = 40.0           # mm of forming
V = 0.65                # m/s at impact (= mm/ms)
J, M, LEAD = 52_000.0, 95_000.0, 0.44
RPM = 90.0


def blow_signal(t0=0.2, reverse=0.05, weights=(0.2, 0.3, 0.25, 0.25), t_end=1.0, blows=(0.2,)):
    t = np.arange(0, t_end, 1 / FS)
    x = np.zeros_like(t)
    f = np.zeros_like(t)
    tau = STROKE / (V * 1e3)  # s in contact
    for tb in blows:
        approach = t < tb
        x = np.where(approach & (t >= tb - 0.1), (t - tb) * V * 1e3 + 500.0, x)
        inside = (t >= tb) & (t <= tb + tau)
        x = np.where(inside, 500.0 + (t - tb) * V * 1e3, x)
        f = np.where(inside, F_HAT * np.sin(np.pi * (t - tb) / tau), f)
        rebound = (t > tb + tau) & (t < tb + tau + 0.02)
        f = np.where(rebound, -reverse * F_HAT * np.sin(np.pi * (t - tb - tau) / 0.02), f)
        x = np.where(t > tb + tau, 500.0 + STROKE, x)
    chans = {"force": f, "position": x, "flywheel_speed": np.full_like(t, RPM)}
    for i, w in enumerate(weights, 1):
        chans[f"force_{i}"] = f * w
    return t, chans, tau


PARAMS = PressParams(contact_threshold_kN=F_HAT * 1e-3, contact_hysteresis_kN=0.0,
                     flywheel_inertia_kg_m2=J, ram_mass_kg=M, screw_lead_m=LEAD)


def test_half_sine_blow_matches_closed_forms():
    t, chans, tau = blow_signal()
    [r] = analyse(t, chans, PARAMS)
    m = r.metrics
    assert m["peak_force_kN"] == pytest.approx(F_HAT, rel=1e-4)
    assert m["forming_energy_kJ"] == pytest.approx(2 * F_HAT * STROKE / math.pi / 1e3, rel=5e-3)
    assert m["impact_velocity_m_s"] == pytest.approx(V, rel=5e-3)
    omega = RPM * 2 * math.pi / 60
    blow = 0.5 * J * omega**2 + 0.5 * M * (omega * LEAD / (2 * math.pi)) ** 2
    assert m["blow_energy_kJ"] == pytest.approx(blow / 1e3, rel=1e-9)
    assert m["efficiency"] == pytest.approx(m["forming_energy_kJ"] / m["blow_energy_kJ"])
    assert m["contact_time_ms"] == pytest.approx(tau * 1e3, rel=5e-3)
    assert m["reverse_force_ratio"] == pytest.approx(0.05, rel=5e-3)
    assert m["max_channel_share"] == pytest.approx(0.3, rel=1e-6)
    assert m["cycle_time_s"] == pytest.approx(1.0 - 0.2 - 1 / FS, abs=2 / FS)
    assert len(r.samples_sha256) == 64 and r.version.startswith("press-")


def test_several_blows_and_cycle_time():
    t, chans, _ = blow_signal(t_end=3.0, blows=(0.2, 1.4))
    results = analyse(t, chans, PARAMS)
    assert len(results) == 2
    assert results[0].metrics["cycle_time_s"] == pytest.approx(1.2, abs=2 / FS)
    assert results[1].metrics["impact_velocity_m_s"] == pytest.approx(V, rel=5e-3)
    assert results[1].metrics["cycle_time_s"] == pytest.approx(3.0 - 1.4, abs=2 / FS)


def test_missing_optional_channels_give_none():
    t, chans, _ = blow_signal()
    only = {"force": chans["force"]}
    [r] = analyse(t, only, PARAMS)
    assert r.metrics["peak_force_kN"] == pytest.approx(F_HAT, rel=1e-4)
    for name in ("forming_energy_kJ", "impact_velocity_m_s", "blow_energy_kJ", "efficiency",
                 "max_channel_share"):
        assert r.metrics[name] is None


def test_hysteresis_keeps_a_ringing_edge_one_contact():
    f = np.array([0, 5, 11, 9.5, 11, 20, 11, 9.5, 8, 0], dtype=float)
    assert contacts(f, 10.0, 0.0) == [(2, 2), (4, 6)]
    assert contacts(f, 10.0, 2.0) == [(2, 8)]  # 8 is not below 10 − 2


def test_limits_give_every_violated_reason():
    t, chans, _ = blow_signal()
    [r] = analyse(t, chans, PARAMS)
    judge(r, {"peak_force_kN": {"max": 70_000.0}, "efficiency": {"min": 0.0, "max": 10.0}})
    # the half-sine's sampled peak (79 999.9 kN) is the only value outside; 0 ≤ efficiency ≤ 10 holds
    assert r.verdict == "nok"
    assert r.reasons == ["peak_force_kN = 79999.9 above max 70000"]
    judge(r, {"peak_force_kN": {"max": 90_000.0}})
    assert r.verdict == "ok" and r.reasons == []


def test_hash_changes_with_the_samples():
    t, chans, _ = blow_signal()
    [a] = analyse(t, chans, PARAMS)
    chans["position"] = chans["position"].copy()
    chans["position"][2500] += 1e-9
    [b] = analyse(t, chans, PARAMS)
    assert a.samples_sha256 != b.samples_sha256


def test_envelope_band_names_the_worst_point():
    from analysis.press import Envelope, envelope_reasons

    t, chans, _ = blow_signal()
    [r] = analyse(t, chans, PARAMS)
    wide = Envelope((500.0, 540.0), (0.0, 0.0), (F_HAT * 1.1, F_HAT * 1.1))
    assert envelope_reasons(t, chans["position"], chans["force"], r, wide) == []
    # max 60 MN over the middle of the stroke: the half-sine peak (80 MN at 520 mm) is outside
    tight = Envelope((500.0, 540.0), (0.0, 0.0), (60_000.0, 60_000.0))
    [reason] = envelope_reasons(t, chans["position"], chans["force"], r, tight)
    n, worst, at = re.match(r"envelope: force above the band's max at (\d+) samples; worst (\S+) kN at (\S+) mm "
                            r"\(limit 60000 kN\)", reason).groups()
    above_s = (1 - 2 * math.asin(60_000 / F_HAT) / math.pi) * STROKE / (V * 1e3)  # time above 60 MN
    assert int(n) == pytest.approx(above_s * FS, abs=2)
    assert float(worst) == pytest.approx(F_HAT, rel=1e-5) and float(at) == pytest.approx(520.0, abs=0.1)
    floor = Envelope((505.0, 535.0), (50_000.0, 50_000.0), (F_HAT * 2, F_HAT * 2))  # too little force early
    [low] = envelope_reasons(t, chans["position"], chans["force"], r, floor)
    n, worst, at = re.match(r"envelope: force below the band's min at (\d+) samples; worst (\S+) kN at (\S+) mm "
                            r"\(limit 50000 kN\)", low).groups()
    # F_HAT·sin(π(x − 500)/40) < 50 MN for x − 500 < 40·asin(0.625)/π = 8.60 mm (and the mirror image
    # above 531.40 mm): 3.60 mm at each end of 505…535, at 0.065 mm per sample (0.65 m/s, 10 kHz)
    below_mm = 40 * math.asin(50_000 / F_HAT) / math.pi - 5.0
    assert int(n) == pytest.approx(2 * below_mm / (V * 1e3 / FS), abs=2)
    # the worst is the first sample inside the band, 505.005 mm (the mirror end, 534.97 mm, is 0.025 mm deeper in)
    assert float(at) == pytest.approx(505.005, abs=1e-3)
    assert float(worst) == pytest.approx(F_HAT * math.sin(math.pi * 5.005 / 40), rel=1e-5)
    judged = judge(r, {}, [low])
    assert judged.verdict == "nok" and judged.reasons == [low]
    assert envelope_reasons(t, None, chans["force"], r, wide)[0].startswith("envelope: no position")


def test_multi_blow_parts_and_spikes():
    t, chans, _ = blow_signal(t_end=6.0, blows=(0.2, 1.4, 2.6, 4.6))
    spike = (t > 5.5) & (t < 5.5 + 2 / FS)
    chans["force"] = np.where(spike, F_HAT, chans["force"])  # 2 samples: a spike, not a blow
    p = PressParams(**{**PARAMS.__dict__, "blows_per_part": 3, "min_contact_s": 0.005})
    results = analyse(t, chans, p)
    assert [(r.part, r.blow_in_part) for r in results] == [(1, 1), (1, 2), (1, 3), (2, 1)]
    gap = PressParams(**{**PARAMS.__dict__, "blows_per_part": 0, "part_gap_s": 1.5, "min_contact_s": 0.005})
    assert [(r.part, r.blow_in_part) for r in analyse(t, chans, gap)] == [(1, 1), (1, 2), (1, 3), (2, 1)]
