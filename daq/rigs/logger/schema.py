"""A logger rig's file: devices and runs, no cycles; optional parameters of its simulated instruments."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from daq.config import RigBase
from daq.schema import Limit, Name, Strict


class SimulatedChannel(Strict):
    """A simulated channel of any name: ``base + amplitude·sin(2π·t/period_s) + noise``."""

    base: float = 0.0
    amplitude: float = 0.0
    period_s: float = Field(default=60.0, gt=0)
    noise: float = Field(default=0.0, ge=0, description="standard deviation of white noise")


class LoggerParameters(Strict):
    """What the simulated instruments show (used only with ``simulate = true``; defaults work).

    A climate chamber steps through ``setpoints_C``, holding each for ``hold_s``; its air
    follows with a first-order lag, each thermocouple follows the air with its own lag,
    and a power meter on its supply sees the heating/cooling effort.
    """

    ambient_C: float = 23.0
    setpoints_C: list[float] = Field(default_factory=lambda: [23.0, 60.0, 85.0, 40.0, -10.0], min_length=1)
    hold_s: float = Field(default=120.0, gt=0, description="dwell at each set-point")
    chamber_time_constant_s: float = Field(default=20.0, gt=0)
    sensor_time_constant_s: float = Field(default=4.0, gt=0, description="thermocouple lag (each a bit different)")
    temperature_noise_C: float = Field(default=0.05, ge=0)
    mains_voltage_V: float = Field(default=230.0, gt=0)
    mains_frequency_Hz: float = Field(default=50.0, gt=0)
    base_power_W: float = Field(default=150.0, ge=0, description="fans and controller")
    heating_W_per_K: float = Field(default=60.0, ge=0, description="effort per kelvin of set-point error")
    max_power_W: float = Field(default=3000.0, gt=0)
    channels: dict[Name, SimulatedChannel] = Field(
        default_factory=dict, description="channel → its own signal (any name; overrides the built-in ones)")


class LoggerRig(RigBase):
    """Instruments logged continuously, without test cycles (``kind = "logger"``)."""

    kind: Literal["logger"]
    parameters: LoggerParameters = LoggerParameters()
    METRICS: ClassVar[tuple[str, ...]] = ()

    @field_validator("limits")
    @classmethod
    def _known_metrics(cls, limits: dict[str, Limit]) -> dict[str, Limit]:
        """A logger has no cycles, so nothing to judge: limits are refused with the reason."""
        if limits:
            raise ValueError(f"a logger rig has no test cycles, so no metrics to judge: remove "
                             f"{', '.join(sorted(limits))}")
        return limits

    @model_validator(mode="after")
    def _simulated_channels_exist(self) -> LoggerRig:
        declared = {name for d in self.devices for name in d.channel_units()}
        unknown = sorted(set(self.parameters.channels) - declared)
        if unknown:
            raise ValueError(f"parameters.channels: no device has a channel {', '.join(map(repr, unknown))}")
        return self
