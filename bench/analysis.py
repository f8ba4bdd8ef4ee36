"""Analysis speed: one press blow (2 s at 10 kHz, 6 channels) per call; real-time factor.

python bench/analysis.py [--rounds 50]
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


if __name__ == "__main__":
    main()
