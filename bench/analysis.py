"""Analysis speed: a press blow (2 s, 10 kHz, 6 ch) and an SRM step (2 s, 20 kHz, 11 ch); real-time factors.

python -m bench.analysis [--rounds 50]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

# this file is named like the package it measures: keep bench/ off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
from analysis.press import PressParams, analyse  # noqa: E402
from analysis.srm import SrmParams  # noqa: E402
from analysis.srm import analyse as analyse_srm  # noqa: E402
from drivers.sim.srm import SrmMotor, solve_operating_point  # noqa: E402


def blow(fs: float = 10_000.0, seconds: float = 2.0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    t = np.arange(0, seconds, 1 / fs)
    tau, tb = 0.145, 0.6
    inside = (t >= tb) & (t <= tb + tau)
    force = np.where(inside, 95_000 * np.sin(np.pi * (t - tb) / tau), 0.0)
    force += np.random.default_rng(0).normal(0, 20, len(t))
    pos = np.where(t < tb, 600 - (tb - t) * 660, 600 + np.minimum(t - tb, tau) * 300)
    chans = {"force": force, "position": pos, "flywheel_speed": np.full(len(t), 90.0)}
    for i, w in enumerate((0.24, 0.26, 0.25, 0.25), 1):
        chans[f"force_{i}"] = force * w
    del chans["flywheel_speed"]  # 6 channels: force, position, force_1..4
    return t, chans


def srm_step(fs: float = 20_000.0, seconds: float = 2.0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A steady 1500 rpm step from the simulator's solved period: 11 channels."""
    op = solve_operating_point(SrmMotor(), 1500.0, 40.0)
    t = np.arange(0, seconds, 1 / fs)
    theta = 1500 / 60 * 2 * np.pi * t
    rng = np.random.default_rng(0)
    chans = {"speed": 1500 + rng.normal(0, 0.1, len(t)), "rotor_angle": np.degrees(theta % (2 * np.pi))}
    torque = np.zeros(len(t))
    for k, x in enumerate("abcd"):
        ang = np.mod(theta * 6 - k * np.pi / 2, 2 * np.pi)
        chans[f"phase_{x}_current"] = np.interp(ang, op.angle, op.current, period=2 * np.pi)
        chans[f"phase_{x}_voltage"] = np.interp(ang, op.angle, op.voltage, period=2 * np.pi)
        torque += np.interp(ang, op.angle, op.torque, period=2 * np.pi)
    chans["torque"] = torque
    return t, chans


def rate(fn, rounds: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - t0) / rounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=50)
    a = ap.parse_args()
    t, chans = blow()
    p = PressParams(contact_threshold_kN=2000, contact_hysteresis_kN=500, flywheel_inertia_kg_m2=52000,
                    ram_mass_kg=95000, screw_lead_m=0.44)
    assert len(analyse(t, chans, p)) == 1
    t0 = time.perf_counter()
    for _ in range(a.rounds):
        analyse(t, chans, p)
    per = (time.perf_counter() - t0) / a.rounds
    print(f"press blow, {len(t):,} samples × {len(chans)} channels (2 s of data): "
          f"{per * 1e3:.2f} ms per analysis")
    print(f"real-time factor: {2.0 / per:,.0f}x   target >= 200x")
    ts, cs = srm_step()
    sp = SrmParams(0.6, settle_s=0.0)
    assert len(analyse_srm(ts, cs, sp)) == 1
    per = rate(lambda: analyse_srm(ts, cs, sp), a.rounds)
    print(f"srm step, {len(ts):,} samples × {len(cs)} channels (2 s of data): {per * 1e3:.2f} ms per analysis")
    print(f"real-time factor: {2.0 / per:,.0f}x   target >= 200x")


if __name__ == "__main__":
    main()
