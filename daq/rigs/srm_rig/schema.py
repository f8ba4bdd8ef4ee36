"""The SR-motor test rig's rig file: motor parameters, segmentation, test sequence."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from analysis.srm import METRICS as SRM_METRICS
from daq.config import RigBase
from daq.schema import SimulationSettings, Strict


class SrmSimulationSettings(SimulationSettings):
    """The simulated rig, plus how its controller runs the test sequence."""

    autostart: bool = Field(default=True, description="run the test sequence from the start")
    loop: bool = Field(default=True, description="repeat the sequence after a pause")
    pause_s: float = Field(default=2.0, ge=0, le=86400, description="the pause between repetitions")


class SrmParameters(Strict):
    """A switched-reluctance motor on a dynamometer (SI units unless the name says)."""

    phases: Literal[4] = 4
    stator_poles: Literal[8] = 8
    rotor_poles: Literal[6] = 6
    phase_resistance_ohm: float = Field(gt=0, description="per phase, at 20 °C")
    aligned_inductance_mH: float = Field(gt=0, description="unsaturated, rotor aligned")
    unaligned_inductance_mH: float = Field(gt=0)
    saturated_inductance_mH: float = Field(gt=0, description="aligned, deep in saturation")
    saturation_flux_Wb: float = Field(gt=0, description="knee of the aligned ψ(i) curve")
    rotor_inertia_kg_m2: float = Field(gt=0, description="motor rotor, ahead of the torque flange")
    friction_Nm_per_krpm: float = Field(default=0.3, ge=0, description="viscous bearing + windage")
    dc_voltage_V: float = Field(gt=0)
    current_limit_A: float = Field(gt=0)
    hysteresis_band_A: float = Field(default=1.0, gt=0)
    turn_on_deg: float = Field(default=-5.0, description="electrical deg, 0 = unaligned")
    turn_off_deg: float = Field(default=150.0, description="electrical deg, 180 = aligned")
    rated_speed_rpm: float = Field(gt=0)
    rated_torque_Nm: float = Field(gt=0)
    thermal_resistance_K_W: float = Field(default=0.15, gt=0, description="winding to ambient")
    thermal_time_constant_s: float = Field(default=600.0, gt=0)
    ambient_C: float = 25.0

    @model_validator(mode="after")
    def _inductances(self) -> SrmParameters:
        if not self.unaligned_inductance_mH < self.aligned_inductance_mH:
            raise ValueError("aligned_inductance_mH must be above unaligned_inductance_mH")
        if not self.saturated_inductance_mH < self.aligned_inductance_mH:
            raise ValueError("saturated_inductance_mH must be below aligned_inductance_mH")
        if not self.turn_on_deg < self.turn_off_deg < self.turn_on_deg + 360:
            raise ValueError("turn_off_deg must follow turn_on_deg within one electrical period")
        return self


class SrmSegmentation(Strict):
    """How test steps are cut: settle after the step change, then whole revolutions."""

    settle_s: float = Field(default=0.5, ge=0, le=60)
    min_steady_s: float = Field(default=0.2, gt=0)


class SequenceStep(Strict):
    """One operating point of a test sequence (or a locked-rotor characterisation)."""

    kind: Literal["operating_point", "locked_rotor"] = "operating_point"
    speed_rpm: float = Field(default=0.0, ge=0)
    torque_Nm: float = Field(default=0.0, ge=0)
    hold_s: float = Field(default=2.0, gt=0, le=3600)
    angles_deg: list[float] = Field(default_factory=list, description="locked rotor: electrical deg")
    voltage_V: float = Field(default=60.0, gt=0, description="locked rotor: pulse voltage")
    pulse_ms: float = Field(default=20.0, gt=0, le=1000)

    @model_validator(mode="after")
    def _complete(self) -> SequenceStep:
        if self.kind == "locked_rotor" and not self.angles_deg:
            raise ValueError("a locked_rotor step needs angles_deg")
        if self.kind == "operating_point" and self.speed_rpm <= 0:
            raise ValueError("an operating point needs speed_rpm > 0")
        return self


class SrmRig(RigBase):
    """A switched-reluctance motor test rig."""

    kind: Literal["srm_rig"]
    simulation: SrmSimulationSettings = SrmSimulationSettings()
    parameters: SrmParameters
    segmentation: SrmSegmentation = SrmSegmentation()
    sequence: list[SequenceStep] = Field(default_factory=list, description="the test sequence")
    METRICS: ClassVar[tuple[str, ...]] = SRM_METRICS

    @model_validator(mode="after")
    def _sequence_in_range(self) -> SrmRig:
        p = self.parameters
        for k, st in enumerate(self.sequence):
            if st.speed_rpm > 2 * p.rated_speed_rpm:
                raise ValueError(f"sequence[{k}]: speed_rpm {st.speed_rpm:g} is over twice the rated "
                                 f"{p.rated_speed_rpm:g} rpm")
            if st.torque_Nm > 1.5 * p.rated_torque_Nm:
                raise ValueError(f"sequence[{k}]: torque_Nm {st.torque_Nm:g} is over 1.5× the rated "
                                 f"{p.rated_torque_Nm:g} N·m")
        return self
