"""Live cycle segmentation: press blows and motor test steps, cut from the bus and analysed."""

from __future__ import annotations

from daq.bus import SampleBus
from daq.cycles.press import PressCycleTracker, press_envelope, press_params, press_tracker
from daq.cycles.result import CycleResult
from daq.cycles.srm import RunArtifact, SrmStepTracker, srm_params, srm_tracker

__all__ = ["CycleResult", "PressCycleTracker", "RunArtifact", "SrmStepTracker", "press_envelope",
           "press_params", "srm_params", "tracker_for"]

#: The channel that marks a rig's master stream, by rig kind.
MASTER_CHANNEL = {"screw_press": "force", "srm_rig": "torque"}


def tracker_for(rig, bus: SampleBus) -> PressCycleTracker | SrmStepTracker | None:
    """A tracker on the rig's fastest device carrying its key channel, or None if none does."""
    key = MASTER_CHANNEL[rig.kind]
    best, rate = None, 0.0
    for d in rig.devices:
        hz = getattr(d, "sample_rate_hz", None) or getattr(d, "poll_hz", 0.0)
        if key in d.channel_units() and hz > rate:
            best, rate = d.name, hz
    if best is None:
        return None
    if rig.kind == "screw_press":
        return press_tracker(rig, best, bus)
    return srm_tracker(rig, best, bus)
