"""`daq analyse` on CSV recordings: closed-form answers through the command, and bad input."""

import csv
import json
import math

import numpy as np
import pytest

from daq.cli import main
from tests.conftest import ROOT
from tests.unit.test_analysis_press import F_HAT, STROKE, V, blow_signal

RIG = str(ROOT / "configs" / "rigs" / "screw-press.toml")


def _write(path, t, chans):
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        names = list(chans)
        w.writerow(["time", *names])
        for i in range(len(t)):
            w.writerow([repr(float(t[i]))] + [repr(float(chans[n][i])) for n in names])


def test_two_blows_as_json(tmp_path, capsys):
    t, chans, _ = blow_signal(t_end=3.0, blows=(0.2, 1.4))
    p = tmp_path / "blows.csv"
    _write(p, t, chans)
    assert main(["analyse", RIG, str(p), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [c["cycle"] for c in out["cycles"]] == [1, 2]
    for c in out["cycles"]:
        m = c["metrics"]
        assert m["forming_energy_kJ"] == pytest.approx(2 * F_HAT * STROKE / math.pi / 1e3, rel=5e-3)
        assert m["impact_velocity_m_s"] == pytest.approx(V, rel=5e-3)
        assert m["peak_force_kN"] == pytest.approx(F_HAT, rel=5e-3)
        assert c["verdict"] == "ok" and c["reasons"] == [] and len(c["samples_sha256"]) == 64
    assert out["cycles"][0]["metrics"]["cycle_time_s"] == pytest.approx(1.2, abs=1e-3)


def test_limits_make_a_blow_nok_with_reasons(tmp_path, capsys):
    t, chans, _ = blow_signal(weights=(0.1, 0.1, 0.1, 0.7))  # one tie rod takes 70 %
    p = tmp_path / "offcentre.csv"
    _write(p, t, chans)
    assert main(["analyse", RIG, str(p), "--json"]) == 0
    [c] = json.loads(capsys.readouterr().out)["cycles"]
    # only the share is outside the rig file's limits: the 80 MN half-sine is below 100 MN, efficiency
    # 0.87, 0.65 m/s, 61.5 ms are inside theirs, and its 500…540 mm stroke is outside the envelope's positions
    assert c["verdict"] == "nok"
    assert c["reasons"] == ["max_channel_share = 0.7 above max 0.3"]


def test_only_force_gives_null_metrics(tmp_path, capsys):
    t, chans, _ = blow_signal()
    p = tmp_path / "force.csv"
    _write(p, t, {"force": chans["force"]})
    assert main(["analyse", RIG, str(p), "--json"]) == 0
    [c] = json.loads(capsys.readouterr().out)["cycles"]
    m = c["metrics"]
    assert m["peak_force_kN"] == pytest.approx(F_HAT, rel=1e-4)  # what force alone gives
    for name in ("forming_energy_kJ", "impact_velocity_m_s", "blow_energy_kJ", "efficiency", "max_channel_share"):
        assert m[name] is None, name  # each needs position, flywheel_speed or force_1..4


@pytest.mark.parametrize(("text", "message"), [
    ("time,position\n0,1\n0.1,2\n0.2,3\n", "missing column(s) force"),
    ("time,force\n0,1\n0.1,abc\n0.2,3\n", "line 3, column 'force': 'abc' is not a number"),
    ("time,force\n0,1\n0.2,2\n0.1,3\n", "line 4: time 0.1 s does not come after 0.2 s"),
    ("time,force\n0,1\n0.1,2,7\n", "line 3: 3 values for 2 columns"),
    ("", "the file is empty"),
])
def test_bad_csv_is_a_clear_error_with_exit_2(tmp_path, capsys, text, message):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    assert main(["analyse", RIG, str(p)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(p) in err and "Traceback" not in err


def test_unknown_limit_metric_is_a_config_error(tmp_path, capsys):
    rig = tmp_path / "rig.toml"
    text = (ROOT / "configs" / "rigs" / "screw-press.toml").read_text()
    rig.write_text(text.replace("peak_force_kN = { max", "peak_force_kn = { max"))
    p = tmp_path / "x.csv"
    p.write_text("time,force\n0,1\n0.1,2\n0.2,3\n")
    assert main(["analyse", str(rig), str(p)]) == 2
    assert "limits: no such metric: peak_force_kn" in capsys.readouterr().err


SRM_RIG = str(ROOT / "configs" / "rigs" / "srm-rig.toml")


def test_srm_steps_through_the_command(tmp_path, capsys):
    from tests.unit.test_analysis_srm import motor_step

    t1, c1 = motor_step(duration_s=1.0, rpm=1200.0, torque0=45.0, current=15.0)
    t2, c2 = motor_step(duration_s=1.0, rpm=1800.0, torque0=30.0, current=11.0, t0=1.0)
    t = np.concatenate([t1, t2])
    chans = {k: np.concatenate([c1[k], c2[k]]) for k in c1}
    chans["step"] = np.r_[np.full(len(t1), 3), np.full(len(t2), 4)]
    sel = np.arange(0, len(t), 2)  # 10 kHz keeps the CSV small
    p = tmp_path / "steps.csv"
    _write(p, t[sel], {k: v[sel] for k, v in chans.items()})
    assert main(["analyse", SRM_RIG, str(p), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "srm_rig" and [c["step"] for c in out["cycles"]] == [3, 4]
    for c, (rpm, tq, cur) in zip(out["cycles"], [(1200, 45.0, 15.0), (1800, 30.0, 11.0)], strict=True):
        m = c["metrics"]  # settle_s = 0.6 in the rig file; the rest is whole revolutions
        assert m["speed_rpm"] == pytest.approx(rpm, rel=5e-3)
        assert m["mean_torque_Nm"] == pytest.approx(tq, rel=5e-3)
        assert m["torque_ripple_pct"] == pytest.approx(30.0, rel=5e-3)
        assert m["torque_ripple_frequency_Hz"] == pytest.approx(24 * rpm / 60, rel=5e-3)
        assert m["phase_current_rms_A"] == pytest.approx(cur / 2, rel=5e-3)
        assert m["copper_loss_W"] == pytest.approx(4 * 0.6 * cur**2 / 4, rel=1e-2)
        assert m["efficiency"] == pytest.approx(tq * rpm * 2 * math.pi / 60 / (300 * cur), rel=1e-2)
        # the rig file's limits: efficiency ≥ 0.70 (these ideal signals give 1.26 and 1.71: the
        # analyser's DC channels are absent and the synthetic phase power is smaller than T·ω),
        # ripple ≤ 120 % (30 %), phase current RMS ≤ 30 A (7.5 A, 5.5 A): every step passes
        assert (c["verdict"], c["reasons"]) == ("ok", [])
    assert main(["analyse", SRM_RIG, str(p)]) == 0
    assert "step 3" in capsys.readouterr().out
