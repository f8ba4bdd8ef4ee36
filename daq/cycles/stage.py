"""The segmentation stage: every rig's blocks to its kind's tracker, on its own bus subscription.

It reads only sample blocks; what the trackers return (cycle results, run artifacts,
events) it puts on the bus for storage, the catalogue and the live view: trackers never
touch the bus they are fed from. A tracker
that fails on one block costs an ``analysis_error`` event, never the stage.
"""

from __future__ import annotations

import logging

from daq.bus import SampleBus, Tagged
from daq.events import Event

log = logging.getLogger(__name__)


class SegmentationStage:
    """Feeds each rig's tracker (``rig → tracker``, see :func:`daq.cycles.tracker_for`)."""

    def __init__(self, bus: SampleBus, trackers: dict, maxsize: int = 10_000):
        self.bus = bus
        self.trackers = trackers
        self.sub = bus.subscribe("segmentation", maxsize=maxsize, accepts=(Tagged,))

    def feed(self, item: Tagged) -> None:
        """One block to its rig's tracker (if the rig has one)."""
        tracker = self.trackers.get(item.rig)
        if tracker is None:
            return
        try:
            results = tracker.feed(item.rig, item.block)
        except Exception as e:  # one bad block must not end segmentation for good
            log.exception("%s: cycle segmentation failed on a block of %s", item.rig, item.block.device)
            self.bus.publish(Event("analysis_error", f"cycle segmentation failed: {e!r}",
                                   rig=item.rig, device=item.block.device, level="error"))
            return
        for r in results or ():
            self.bus.publish(r)

    async def run(self) -> None:
        """Follow the bus until cancelled."""
        while True:
            self.feed(await self.sub.get())
