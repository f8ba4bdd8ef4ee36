"""analysis.srm against signals whose answers are known in closed form."""

import math

import numpy as np
import pytest

from analysis.srm import METRICS, SrmParams, analyse, characterise, flux_linkage, steady_window

FS = 20_000.0
RPM = 1500.0
STROKES_PER_REV = 24  # 4 phases × 6 rotor poles


def motor_step(duration_s=1.0, rpm=RPM, t0=0.0, torque0=40.0, ripple_a=0.15, current=12.0, duty=0.25,
               volts=300.0):
    """Ideal 8/6 signals: sinusoidal torque ripple at the stroke rate, rectangular phase currents."""
    t = t0 + np.arange(int(duration_s * FS)) / FS
    rev_s = rpm / 60
    angle = (360 * rev_s * (t - t0)) % 360
    f_ripple = STROKES_PER_REV * rev_s
    ch = {
        "speed": np.full(len(t), rpm),
        "rotor_angle": angle,
        "torque": torque0 * (1 + ripple_a * np.sin(2 * math.pi * f_ripple * (t - t0))),
    }
    elec_period = 1 / (6 * rev_s)
    for k, x in enumerate("abcd"):
        phase = (((t - t0) / elec_period) - k / 4) % 1.0
        on = phase < duty
        ch[f"phase_{x}_current"] = np.where(on, current, 0.0)
        ch[f"phase_{x}_voltage"] = np.where(on, volts, 0.0)
    return t, ch


def test_torque_ripple_power_and_currents_in_closed_form():
    t, ch = motor_step(duration_s=1.001)  # 25 revolutions and a bit
    r = analyse(t, ch, SrmParams(phase_resistance_ohm=0.8, settle_s=0.0))[0]
    m = r.metrics
    assert set(m) == set(METRICS)
    assert r.revolutions == 25
    assert m["speed_rpm"] == pytest.approx(RPM)
    assert m["mean_torque_Nm"] == pytest.approx(40.0, rel=1e-3)
    assert m["torque_ripple_pct"] == pytest.approx(2 * 0.15 * 100, rel=5e-3)
    assert m["torque_ripple_frequency_Hz"] == pytest.approx(STROKES_PER_REV * RPM / 60, rel=1e-3)
    omega = RPM * 2 * math.pi / 60
    assert m["mech_power_W"] == pytest.approx(40.0 * omega, rel=1e-3)
    assert m["phase_a_current_rms_A"] == pytest.approx(12.0 * math.sqrt(0.25), rel=5e-3)
    assert m["phase_current_rms_A"] == pytest.approx(6.0, rel=5e-3)
    assert m["copper_loss_W"] == pytest.approx(4 * 0.8 * 12.0**2 * 0.25, rel=1e-2)
    assert m["elec_power_W"] == pytest.approx(4 * 300.0 * 12.0 * 0.25, rel=1e-2)
    assert m["efficiency"] == pytest.approx(40.0 * omega / 3600.0, rel=1e-2)


def test_dc_channels_take_precedence_for_electrical_power():
    t, ch = motor_step()
    ch["dc_voltage"] = np.full(len(t), 560.0)
    ch["dc_current"] = np.full(len(t), 12.5)
    m = analyse(t, ch, SrmParams(0.8, settle_s=0.0))[0].metrics
    assert m["elec_power_W"] == pytest.approx(560 * 12.5)


def test_missing_optional_channels_give_null_metrics():
    t, ch = motor_step()
    only = {k: ch[k] for k in ("speed", "torque", "rotor_angle")}
    m = analyse(t, only, SrmParams(0.8, settle_s=0.0))[0].metrics
    assert m["mean_torque_Nm"] == pytest.approx(40.0, rel=1e-3)
    assert m["elec_power_W"] is None and m["efficiency"] is None and m["phase_current_rms_A"] is None


def test_step_column_splits_and_settle_time_skips_the_transient():
    t1, c1 = motor_step(duration_s=1.0, rpm=1000.0, torque0=60.0)
    t2, c2 = motor_step(duration_s=1.0, rpm=2000.0, torque0=20.0, t0=1.0)
    t = np.concatenate([t1, t2])
    ch = {k: np.concatenate([c1[k], c2[k]]) for k in c1}
    ch["step"] = np.r_[np.full(len(t1), 1), np.full(len(t2), 2)]
    ch["torque"][len(t1): len(t1) + 2000] = 500.0  # 0.1 s of transient after the change
    results = analyse(t, ch, SrmParams(0.8, settle_s=0.2))
    assert [r.step for r in results] == [1, 2]
    assert results[0].metrics["speed_rpm"] == pytest.approx(1000.0)
    assert results[1].metrics["mean_torque_Nm"] == pytest.approx(20.0, rel=1e-3)  # transient left out
    assert results[1].start_s == pytest.approx(1.2, abs=1e-4)


def test_steady_window_is_whole_revolutions():
    t, ch = motor_step(duration_s=0.53)  # 13.25 revolutions at 1500 rpm
    win, revs = steady_window(t, ch["rotor_angle"], 0.0)
    assert revs == 13
    assert (t[win.stop] - t[win.start]) == pytest.approx(13 / 25, abs=1 / FS)


def test_a_short_step_gives_no_result():
    t, ch = motor_step(duration_s=0.3)
    assert analyse(t, ch, SrmParams(0.8, settle_s=0.5)) == []


def psi_of_i(i, psi_sat=0.9, l0=0.06, l_sat=0.004):
    return psi_sat * (1 - np.exp(-l0 * i / psi_sat)) + l_sat * i


def locked_rotor_pulse(angle_scale, r=0.8, offset_v=0.4, peak=30.0):
    """Current rises and falls smoothly; the voltage that drives it is R·i + dψ/dt, plus an ADC offset."""
    t = np.arange(int(0.08 * FS)) / FS
    rise = (t > 0.01) & (t < 0.05)
    i = np.where(rise, peak * np.sin(math.pi * (t - 0.01) / 0.04) ** 2, 0.0)
    psi = angle_scale * psi_of_i(i)
    v = r * i + np.gradient(psi, t) + offset_v
    return t, v, i


def test_characterisation_recovers_a_known_flux_curve_within_2_percent():
    pulses = [(ang, *locked_rotor_pulse(scale)) for ang, scale in ((0.0, 1.0), (15.0, 0.5), (30.0, 0.12))]
    ch = characterise(pulses, resistance_ohm=0.8)
    grid = np.array(ch.current_A)
    for k, scale in enumerate((1.0, 0.5, 0.12)):
        want = scale * psi_of_i(grid[1:])
        got = np.array(ch.flux_Wb[k][1:])
        assert np.max(np.abs(got - want) / want) < 0.02
    assert ch.aligned_inductance_H == pytest.approx(ch.inductance_H[0])
    assert ch.unaligned_inductance_H == pytest.approx(ch.inductance_H[2])
    # ψ/i at 10 % of the 30 A grid top (3 A) on the aligned (scale 1) and unaligned (scale 0.12) curves
    assert ch.aligned_inductance_H == pytest.approx(psi_of_i(3.0) / 3.0, rel=0.02)
    assert ch.unaligned_inductance_H == pytest.approx(0.12 * psi_of_i(3.0) / 3.0, rel=0.02)
    assert ch.aligned_inductance_H / ch.unaligned_inductance_H == pytest.approx(1 / 0.12, rel=1e-3)


def test_flux_linkage_removes_the_integrator_offset():
    t, v, i = locked_rotor_pulse(1.0, offset_v=2.0)
    psi = flux_linkage(t, v, i, 0.8)
    assert abs(psi[-1]) < 1e-3 and np.max(psi) == pytest.approx(psi_of_i(30.0), rel=0.02)
