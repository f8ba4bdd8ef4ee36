"""The sample bus: fan-out of blocks and events to bounded subscriber queues.

Publishing never blocks or awaits: acquisition must keep its timing whatever the
consumers do. A subscriber whose queue is full loses the item, and that loss is
counted and reported as a ``queue_overflow`` event to every other subscriber (storage
records it), never silently.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from daq.events import Event
from drivers.block import Block

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Tagged:
    """A block with the rig it came from."""

    rig: str
    block: Block


Item = Tagged | Event | object  # blocks, events, cycle results


class Subscription:
    """One consumer's bounded queue."""

    def __init__(self, name: str, maxsize: int, accepts: tuple[type, ...] | None = None):
        self.name = name
        self.queue: asyncio.Queue[Item] = asyncio.Queue(maxsize)
        self.accepts = accepts  # only items of these types (None: everything)
        self.lost_blocks = 0
        self.lost_samples = 0
        self.lost_by_device: dict[str, int] = {}  # samples lost, per device
        self.lost_other = 0  # events and results lost

    async def get(self) -> Item:
        """Wait for the next item."""
        return await self.queue.get()

    def get_nowait(self) -> Item | None:
        """The next item, or None when the queue is empty."""
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return None


class SampleBus:
    """Fan-out to every subscription; never blocks the publisher."""

    def __init__(self) -> None:
        self.subscriptions: list[Subscription] = []
        self.published_samples = 0

    def subscribe(self, name: str, maxsize: int = 10_000,
                  accepts: tuple[type, ...] | None = None) -> Subscription:
        """A new bounded queue receiving every item (of ``accepts``' types) published from now on."""
        sub = Subscription(name, maxsize, accepts)
        self.subscriptions.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop delivering to ``sub``."""
        if sub in self.subscriptions:
            self.subscriptions.remove(sub)

    def publish(self, item: Item) -> None:
        """Deliver ``item`` to every subscriber that has room; count and report the rest."""
        if isinstance(item, Tagged):
            self.published_samples += len(item.block)
        overflowed: list[Subscription] = []
        for sub in self.subscriptions:
            if sub.accepts is not None and not isinstance(item, sub.accepts):
                continue
            try:
                sub.queue.put_nowait(item)
            except asyncio.QueueFull:
                sub.lost_blocks += 1
                if isinstance(item, Tagged):
                    sub.lost_samples += len(item.block)
                    dev = item.block.device
                    sub.lost_by_device[dev] = sub.lost_by_device.get(dev, 0) + len(item.block)
                else:
                    sub.lost_other += 1
                overflowed.append(sub)
        for sub in overflowed:
            what = (f"{len(item.block)} samples of {item.rig}/{item.block.device}"
                    if isinstance(item, Tagged) else type(item).__name__)
            log.error("bus: consumer %s is full, lost %s", sub.name, what)
            event = Event(
                "queue_overflow", f"consumer {sub.name} fell behind and lost {what}",
                rig=getattr(item, "rig", ""),
                device=item.block.device if isinstance(item, Tagged) else getattr(item, "device", ""),
                level="error",
            )
            for other in self.subscriptions:
                if other is not sub and (other.accepts is None or Event in other.accepts):
                    try:
                        other.queue.put_nowait(event)
                    except asyncio.QueueFull:
                        other.lost_blocks += 1
                        other.lost_other += 1
