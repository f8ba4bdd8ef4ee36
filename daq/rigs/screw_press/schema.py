"""The screw press's rig file: physical parameters, segmentation, envelope."""

from __future__ import annotations

import itertools
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from analysis.press import METRICS as PRESS_METRICS
from daq.config import RigBase
from daq.schema import Strict


class ScrewPressParameters(Strict):
    """Physical parameters of an electric screw press (SI units unless the name says)."""

    flywheel_inertia_kg_m2: float = Field(gt=0, description="flywheel + screw + motor rotor")
    screw_lead_m: float = Field(gt=0, le=2, description="ram travel per screw revolution")
    ram_mass_kg: float = Field(gt=0)
    nominal_force_kN: float = Field(gt=0)
    stroke_mm: float = Field(gt=0, description="ram travel from top to the die face")
    contact_threshold_kN: float = Field(gt=0, description="force above which the ram is in contact")
    contact_hysteresis_kN: float = Field(default=0.0, ge=0)
    motor_torque_max_kNm: float = Field(gt=0)
    motor_power_max_kW: float = Field(gt=0)
    blow_speed_rpm: float = Field(gt=0, description="flywheel speed set-point for a blow")
    frame_stiffness_kN_mm: float = Field(gt=0, description="frame + die stiffness in series")
    blow_interval_s: float = Field(default=6.0, gt=0)


class PressSegmentation(Strict):
    """How blows are cut out of the force stream and counted into parts."""

    pre_s: float = Field(default=0.3, ge=0, le=5, description="kept before contact (impact speed)")
    post_s: float = Field(default=0.1, ge=0, le=5, description="kept after contact")
    min_contact_ms: float = Field(default=5.0, ge=0, description="shorter contacts are spikes")
    blows_per_part: int = Field(default=1, ge=0, description="multi-blow forging; 0: count by pause only")
    part_gap_s: float | None = Field(default=None, gt=0, description="a longer pause starts a new part")
    speed_max_age_ms: float = Field(
        default=100.0, gt=0, description="a flywheel speed scan further than this from the contact (stalled "
        "polls) is carried to it by the ram's speed change, or the blow energy is not measured")

class Envelope(Strict):
    """Force–position band for the contact: force must stay between min and max (kN over mm)."""

    position_mm: list[float] = Field(min_length=2)
    force_min_kN: list[float]
    force_max_kN: list[float]

    @model_validator(mode="after")
    def _shape(self) -> Envelope:
        n = len(self.position_mm)
        if len(self.force_min_kN) != n or len(self.force_max_kN) != n:
            raise ValueError(f"position_mm, force_min_kN and force_max_kN need the same length ({n})")
        if any(b <= a for a, b in itertools.pairwise(self.position_mm)):
            raise ValueError("position_mm must increase")
        bad = [x for x, lo, hi in zip(self.position_mm, self.force_min_kN, self.force_max_kN, strict=True)
               if lo > hi]
        if bad:
            raise ValueError(f"force_min_kN is above force_max_kN at {', '.join(f'{x:g} mm' for x in bad)}")
        return self


class PressRig(RigBase):
    """An electric screw press."""

    kind: Literal["screw_press"]
    parameters: ScrewPressParameters
    segmentation: PressSegmentation = PressSegmentation()
    envelope: Envelope | None = None
    METRICS: ClassVar[tuple[str, ...]] = PRESS_METRICS
