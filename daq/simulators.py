"""Simulated equipment for rigs marked ``simulate = true``, built from their rig files.

Developer option: with the environment variable ``RIGDAQ_SIM_TRUTH=DIR`` set, every
simulator built here (by ``daq run`` or ``daq sim``) records the true time of each sample
it shows into ``DIR`` (:mod:`drivers.sim.truth`; used by ``bench/timing.py``). Not a
product setting: it is meant for benchmark-length runs.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from daq.config import ModbusRtuDevice, ModbusTcpDevice, Rig, ScrewPressParameters, SrmRig
from drivers.sim.faults import Scheduled
from drivers.sim.press import PressParameters
from drivers.sim.press_sim import PlcFace, RigSimulator, RtuFace, ScrewPressSimulator, StreamFace
from drivers.sim.srm import SrmMotor
from drivers.sim.srm_rig import RigMechanics, SeqStep
from drivers.sim.srm_sim import SrmRigSimulator

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


def srm_motor(p) -> SrmMotor:
    """Rig-file motor parameters → model parameters (SI, electrical radians)."""
    return SrmMotor(R=p.phase_resistance_ohm, L_a=p.aligned_inductance_mH / 1e3,
                    L_u=p.unaligned_inductance_mH / 1e3, L_sat=p.saturated_inductance_mH / 1e3,
                    psi_s=p.saturation_flux_Wb, Nr=p.rotor_poles, phases=p.phases, V_dc=p.dc_voltage_V,
                    i_max=p.current_limit_A, band=p.hysteresis_band_A,
                    theta_on=math.radians(p.turn_on_deg), theta_off=math.radians(p.turn_off_deg),
                    friction=p.friction_Nm_per_krpm / (1000 * 2 * math.pi / 60))


def srm_sequence(rig: SrmRig) -> list[SeqStep]:
    """The rig file's test sequence as the simulated controller runs it."""
    return [SeqStep(s.kind, s.speed_rpm, s.torque_Nm, s.hold_s, tuple(s.angles_deg), s.voltage_V,
                    s.pulse_ms / 1e3) for s in rig.sequence]


def device_path(port: str, data_dir: Path) -> Path:
    """A serial port path from a rig file: relative paths live under the data dir."""
    p = Path(port)
    return p if p.is_absolute() else data_dir / p


def counter_origin_file(rig: Rig, data_dir: Path) -> Path:
    """Where the rig's simulated instruments keep their sample counters' origin.

    Shared by ``daq run`` and ``daq sim``: whichever runs the simulator, a restart
    continues each stream's counter as a real instrument that kept running would.
    """
    return data_dir / "sim" / f"{rig.name}.json"


TRUTH_ENV = "RIGDAQ_SIM_TRUTH"


def build_simulator(rig: Rig, data_dir: Path, record: bool = False,
                    truth_dir: Path | None = None) -> RigSimulator:
    """The rig's simulator: one model, a face per device, where the rig file says.

    ``truth_dir`` (default: ``$RIGDAQ_SIM_TRUTH`` if set): record the true sample times there.
    """
    plcs, streams, rtus = [], [], []
    for dev in rig.devices:
        if isinstance(dev, ModbusTcpDevice):
            plcs.append(PlcFace(dev.name, dev.fields(), dev.host, dev.port, dev.unit_id))
        elif isinstance(dev, ModbusRtuDevice):
            rtus.append(RtuFace(dev.name, dev.fields(), device_path(dev.port, data_dir), dev.unit_id,
                                dev.baudrate, dev.parity, dev.stopbits))
        else:
            streams.append(StreamFace(dev.name, device_path(dev.port, data_dir),
                                      dev.stream_channels(), dev.sample_rate_hz, dev.format))
    if rig.kind == "srm_rig":
        p = rig.parameters
        rate = max((s.rate_hz for s in streams), default=20_000.0)
        mech = RigMechanics(rotor_inertia=p.rotor_inertia_kg_m2, thermal_resistance=p.thermal_resistance_K_W,
                            thermal_time_constant=p.thermal_time_constant_s, ambient_C=p.ambient_C,
                            loop=rig.simulation.loop, idle_s=rig.simulation.pause_s)
        sim = SrmRigSimulator(srm_motor(p), srm_sequence(rig), rate, plcs, streams, rtus,
                              seed=rig.simulation.seed, clock_ppm=rig.simulation.clock_ppm,
                              record=record, mech=mech, autostart=rig.simulation.autostart,
                              counter_file=counter_origin_file(rig, data_dir),
                              stream_buffer_s=rig.simulation.stream_buffer_s)
    else:
        sim = ScrewPressSimulator(press_parameters(rig.parameters), plcs, streams, rtus,
                                  seed=rig.simulation.seed, clock_ppm=rig.simulation.clock_ppm,
                                  record=record, counter_file=counter_origin_file(rig, data_dir),
                                  stream_buffer_s=rig.simulation.stream_buffer_s)
    if truth_dir is None and os.environ.get(TRUTH_ENV):
        truth_dir = Path(os.environ[TRUTH_ENV])
    if truth_dir is not None:
        log.warning("%s: recording true sample times in %s (developer option %s)", rig.name, truth_dir,
                    TRUTH_ENV)
        sim.set_truth_sink(truth_dir)
    sim.faults.schedule = [Scheduled(f.device, f.kind, f.at_s, f.duration_s)
                           for f in rig.simulation.faults]
    return sim
