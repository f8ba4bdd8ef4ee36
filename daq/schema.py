"""Building blocks every configuration model shares: strict models, names, limits, simulation."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$", max_length=64)]


#: Polling faster than this is refused: no Modbus TCP device answers it reliably.
MAX_POLL_HZ = 1000.0


#: A time register's advance may disagree with the host time by timeout_s plus this (the
#: time between the PLC's updates of it) before it is taken for a restart.
TIME_SLACK_S = 1.0


class Strict(BaseModel):
    """Base model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


def check_rate(v: float) -> float:
    """A poll rate in (0, MAX_POLL_HZ] Hz, else a clear error."""
    if not 0 < v <= MAX_POLL_HZ:
        raise ValueError(f"must be > 0 and ≤ {MAX_POLL_HZ:g} Hz (got {v:g})")
    return v


class Limit(Strict):
    """Acceptance limits of one metric."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some(self) -> Limit:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        return self

    def as_dict(self) -> dict[str, float]:
        """Only the bounds that are set."""
        return {k: v for k, v in (("min", self.min), ("max", self.max)) if v is not None}


class ScheduledFault(Strict):
    """A simulated fault switched on ``at_s`` after the simulator starts."""

    device: Name
    kind: Literal["disconnect", "timeout", "exception", "corrupt", "truncated", "stuck"]
    at_s: float = Field(ge=0)
    duration_s: float | None = Field(default=None, gt=0)


class SimulationSettings(Strict):
    """How the simulated rig behaves (only used with ``simulate = true``)."""

    seed: int = 1
    clock_ppm: float = Field(default=0.0, ge=-1000, le=1000, description="rig clock error vs host")
    faults: list[ScheduledFault] = Field(default_factory=list)
    stream_buffer_s: float = Field(default=2.0, gt=0, le=60,
                                   description="seconds of frames a simulated instrument buffers while nobody reads")
