"""Simulated equipment for rigs marked ``simulate = true``, built from their rig files."""

from __future__ import annotations

import logging
import math

from daq.config import Rig, ScrewPressParameters
from drivers.sim.press import PressParameters
from drivers.sim.press_sim import ScrewPressSimulator

log = logging.getLogger(__name__)


def press_parameters(p: ScrewPressParameters) -> PressParameters:
    """Rig-file parameters (engineering units) → model parameters (SI)."""
    return PressParameters(
        inertia_kg_m2=p.flywheel_inertia_kg_m2,
        lead_m=p.screw_lead_m,
        ram_mass_kg=p.ram_mass_kg,
        stroke_m=p.stroke_mm / 1e3,
        torque_max_Nm=p.motor_torque_max_kNm * 1e3,
        power_max_W=p.motor_power_max_kW * 1e3,
        blow_speed_rad_s=p.blow_speed_rpm * 2 * math.pi / 60,
        frame_stiffness_N_m=p.frame_stiffness_kN_mm * 1e6,
        nominal_force_N=p.nominal_force_kN * 1e3,
        blow_interval_s=p.blow_interval_s,
    )


def build_simulators(rig: Rig, record: bool = False, seed: int = 1) -> list[ScrewPressSimulator]:
    """One simulator per Modbus device of the rig, listening where the rig file says."""
    sims = []
    for dev in rig.devices:
        sims.append(ScrewPressSimulator(press_parameters(rig.parameters), dev.fields(),
                                        dev.host, dev.port, dev.unit_id, seed=seed,
                                        record=record))
    return sims
