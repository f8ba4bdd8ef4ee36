"""The segmentation stage: every rig's blocks to its kind's tracker, on its own bus subscription.

It reads sample blocks and the run events, in bus order; what the trackers return (cycle
results, run artifacts, events) it puts on the bus for storage, the catalogue and the live
view: trackers never touch the bus they are fed from. A tracker that fails on one block
costs an ``analysis_error`` event, never the stage.

**Runs travel with the data.** A run's start (or resumption) and stop events reach this
stage in the same order among the blocks as they reach storage, which tags samples with
the run from those events too. So a tracker's run is exactly the blocks stored with the
run's tag: it is told the run at the start event and closed (``close_run``) at the stop
event. The run manager, which publishes the stop, awaits the closed run's final result
(:meth:`SegmentationStage.closing`) to file it before the stop returns.
"""

from __future__ import annotations

import asyncio
import logging

from daq.bus import SampleBus, Tagged
from daq.cycles.result import CycleResult, RunArtifact
from daq.events import Event

log = logging.getLogger(__name__)

#: run events that begin (or continue after a restart) a rig's run, and that end it
RUN_BEGINS = ("run_start", "run_resumed")
RUN_ENDS = ("run_stop",)


class SegmentationStage:
    """Feeds each rig's tracker (``rig → tracker``, see :func:`daq.cycles.tracker_for`)."""

    def __init__(self, bus: SampleBus, trackers: dict, maxsize: int = 10_000):
        self.bus = bus
        self.trackers = trackers
        self.sub = bus.subscribe("segmentation", maxsize=maxsize, accepts=(Tagged, Event))
        self._closing: dict[tuple[str, str], asyncio.Future] = {}

    def closing(self, rig: str, run_id: str) -> asyncio.Future | None:
        """A future for what closing ``run_id`` on ``rig`` yields, once its stop event is reached.

        None if the rig has no tracker. Call it before publishing the stop event.
        """
        if rig not in self.trackers:
            return None
        fut = asyncio.get_running_loop().create_future()
        self._closing[(rig, run_id)] = fut
        return fut

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

    def run_event(self, e: Event) -> None:
        """A run begins or ends on a rig: its tracker follows, in bus order."""
        tracker = self.trackers.get(e.rig)
        if tracker is None or "run_id" not in e.fields:
            return
        run_id = str(e.fields["run_id"])
        if e.kind in RUN_BEGINS:
            tracker.run = run_id
            return
        if e.kind not in RUN_ENDS:
            return
        final = None
        if tracker.run == run_id:
            try:
                final = tracker.close_run(int(e.fields.get("end_ns", e.t_ns)))
            except Exception as exc:
                log.exception("%s: closing run %s failed", e.rig, run_id)
                self.bus.publish(Event("analysis_error", f"closing run {run_id} failed: {exc!r}", rig=e.rig,
                                       level="error"))
            tracker.run = ""
        fut = self._closing.pop((e.rig, run_id), None)
        waited = fut is not None and not fut.done()
        if waited:
            fut.set_result(final)  # the run manager files it before its stop returns
        if isinstance(final, CycleResult) or (isinstance(final, RunArtifact) and not waited):
            self.bus.publish(final)  # stored and shown live; or filed by the catalogue from the bus

    async def run(self) -> None:
        """Follow the bus until cancelled."""
        while True:
            item = await self.sub.get()
            if isinstance(item, Tagged):
                self.feed(item)
            else:
                self.run_event(item)
