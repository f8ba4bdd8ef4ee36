"""Live SRM step segmentation on synthetic blocks: step numbers and set-point changes cut cycles."""

import numpy as np
import pytest

from analysis.srm import SrmParams
from daq.bus import SampleBus
from daq.cycles import CycleResult
from daq.rigs.srm_rig import SrmStepTracker
from drivers.block import Block
from tests.staged import Staged
from tests.unit.test_analysis_srm import motor_step

FS = 20_000


def _feed(tracker, step, speed_sp):
    """Feed 4 s of 0.05 s analyser blocks, each followed by a controller poll."""
    segments = [motor_step(duration_s=2.0, rpm=1000.0, torque0=40.0),
                motor_step(duration_s=2.0, rpm=1500.0, torque0=30.0, t0=2.0)]
    t = np.concatenate([s[0] for s in segments])
    chans = {k: np.concatenate([s[1][k] for s in segments]) for k in segments[0][1]}
    chans["sample"] = np.arange(len(t), dtype=np.int64)
    t_ns = (t * 1e9).astype(np.int64)
    per = int(0.05 * FS)
    for k in range(0, len(t), per):
        tracker.feed("srm", Block("analyser", t_ns[k:k + per], {n: v[k:k + per] for n, v in chans.items()}))
        tc = t[k + per - 1]
        tracker.feed("srm", Block("ctrl", np.array([int(tc * 1e9)]), {
            "step": np.array([step(tc)]), "state": np.array([2]),
            "speed_setpoint": np.array([speed_sp(tc)]), "torque_setpoint": np.array([40.0])}))


def _tracker():
    bus = SampleBus()
    sub = bus.subscribe("t", accepts=(CycleResult,))
    tr = SrmStepTracker("srm", "analyser", "ctrl", SrmParams(0.6, settle_s=0.3, min_steady_s=0.2), {},
                        rate_hz=FS)
    return Staged(tr, bus), sub


def _results(sub):
    out = []
    while (item := sub.get_nowait()) is not None:
        out.append(item)
    return out


def test_a_step_number_change_ends_a_step():
    tr, sub = _tracker()
    _feed(tr, step=lambda t: 1 if t < 2.0 else (2 if t < 3.9 else 0), speed_sp=lambda t: 1000.0)
    r = _results(sub)
    assert [c.info["step"] for c in r] == [1, 2]
    # constant speed signals, and whole revolutions of a ripple at 24 per revolution average out exactly
    assert [c.metrics["speed_rpm"] for c in r] == [pytest.approx(1000.0), pytest.approx(1500.0)]
    assert [c.metrics["mean_torque_Nm"] for c in r] == [pytest.approx(40.0, rel=1e-3), pytest.approx(30.0, rel=1e-3)]


def test_a_set_point_change_without_a_new_step_number_cuts_a_cycle_too():
    tr, sub = _tracker()
    _feed(tr, step=lambda t: 1 if t < 3.9 else 0, speed_sp=lambda t: 1000.0 if t < 2.0 else 1500.0)
    r = _results(sub)
    assert [c.info["step"] for c in r] == [1, 1]
    assert [c.info["speed_setpoint"] for c in r] == [1000.0, 1500.0]
    assert [c.metrics["speed_rpm"] for c in r] == [pytest.approx(1000.0), pytest.approx(1500.0)]
    assert [c.metrics["mean_torque_Nm"] for c in r] == [pytest.approx(40.0, rel=1e-3), pytest.approx(30.0, rel=1e-3)]
