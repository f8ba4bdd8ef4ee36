"""A tracker as the service runs it, for unit tests: what it returns goes onto a bus."""

from __future__ import annotations


class Staged:
    """Publishes what the tracker returns, as the segmentation stage (and the run manager at a stop) do."""

    def __init__(self, tracker, bus):
        self.tracker, self.bus = tracker, bus

    def __getattr__(self, name):
        return getattr(self.tracker, name)

    def feed(self, rig, block) -> None:
        """Feed a block; publish its results."""
        for r in self.tracker.feed(rig, block):
            self.bus.publish(r)

    def close_run(self, end_ns):
        """Close the run; publish its final result, if any."""
        final = self.tracker.close_run(end_ns)
        if final is not None:
            self.bus.publish(final)
        return final
