"""Latest value per channel (``/api/rigs/{rig}/latest``) and the live feed (``WS …/live``)."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

import numpy as np
import orjson

from drivers.block import Block


@dataclass(slots=True)
class Reading:
    """One channel's latest value."""

    value: float | int | bool | str | None
    unit: str
    t_ns: int
    quality: int
    device: str



def _cycle_noun(kind: str) -> str:
    """What the rig's kind calls one cycle ("blow", "step"), for the operator page."""
    from daq.rigs import KINDS

    spec = KINDS.get(kind)
    return (spec.cycle_noun if spec is not None else None) or "cycle"

class LatestValues:
    """Keeps, per rig and channel, the last valid sample seen."""

    def __init__(self) -> None:
        self.rigs: dict[str, dict[str, Reading]] = {}
        self.units: dict[tuple[str, str], str] = {}

    def set_units(self, rig: str, units: dict[str, str]) -> None:
        """Declare the unit of each channel of ``rig``."""
        for ch, u in units.items():
            self.units[(rig, ch)] = u

    def update(self, rig: str, block: Block) -> None:
        """Take the newest valid value of every channel in ``block``."""
        if len(block) == 0:
            return
        readings = self.rigs.setdefault(rig, {})
        valid = block.valid or {}
        for ch, arr in block.channels.items():
            ok = valid.get(ch)
            idx = len(arr) - 1 if ok is None else (np.flatnonzero(ok)[-1] if ok.any() else -1)
            if idx < 0:
                continue
            v = arr[idx]
            if arr.dtype.kind == "f":
                if not np.isfinite(v):
                    continue
                v = float(v)
            elif arr.dtype.kind in "iu":
                v = int(v)
            elif arr.dtype.kind == "b":
                v = bool(v)
            else:
                v = str(v)
            readings[ch] = Reading(v, self.units.get((rig, ch), ""), int(block.t_ns[idx]),
                                   int(block.quality[idx]), block.device)

    def latest(self, rig: str) -> dict[str, Reading]:
        """Channel → reading for ``rig`` (empty before the first sample)."""
        return dict(self.rigs.get(rig, {}))


def _jsonable(v):
    """Numpy scalars (and anything else with ``item()``) as plain Python values."""
    if hasattr(v, "item"):
        return v.item()
    raise TypeError(f"cannot send {type(v).__name__} on the live feed")


class LiveClient:
    """One live-feed subscriber: a small queue of serialised messages, oldest dropped when full."""

    def __init__(self, rig: str, maxsize: int = 64):
        self.rig = rig
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize)
        self.dropped = 0

    def offer(self, msg: bytes) -> None:
        """Queue ``msg``; a client that does not keep up loses its oldest messages, nobody waits."""
        while True:
            try:
                self.queue.put_nowait(msg)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()
                self.dropped += 1


class LiveFeed:
    """Decimated readings (at most ``rate_hz``) and cycle events for WebSocket clients.

    Each tick builds one message per rig that has clients and hands the same bytes to
    each of them; acquisition never waits for a client, and a slow client never holds up
    another.
    """

    def __init__(self, live: LatestValues, rate_hz: float = 20.0):
        self.live = live
        self.period_s = 1.0 / rate_hz
        self.clients: dict[str, set[LiveClient]] = {}
        self.sent = 0

    def subscribe(self, rig: str) -> LiveClient:
        """A new client of ``rig``'s feed."""
        c = LiveClient(rig)
        self.clients.setdefault(rig, set()).add(c)
        return c

    def unsubscribe(self, c: LiveClient) -> None:
        """Forget a client."""
        self.clients.get(c.rig, set()).discard(c)

    def _send(self, rig: str, msg: dict) -> None:
        clients = self.clients.get(rig)
        if not clients:
            return
        data = orjson.dumps(msg, option=orjson.OPT_SERIALIZE_NUMPY, default=_jsonable)
        for c in list(clients):
            c.offer(data)
            self.sent += 1

    def readings(self, rig: str) -> dict:
        """The readings message of one rig (what a tick sends)."""
        now = time.time_ns()
        return {"type": "readings", "rig": rig, "t_ns": now,
                "channels": {k: {"value": r.value, "unit": r.unit, "t_ns": r.t_ns, "quality": r.quality}
                             for k, r in self.live.latest(rig).items()}}

    def cycle(self, c) -> None:
        """A new cycle (or its update) with its verdict."""
        self._send(c.rig, {"type": "cycle", "rig": c.rig, "id": c.id, "cycle_no": c.cycle_no, "kind": c.kind,
                           "noun": _cycle_noun(c.kind),
                           "t_ns": c.t_ns, "verdict": c.verdict, "reasons": c.reasons, "run": c.run,
                           "metrics": {k: (float(v) if v is not None and math.isfinite(v) else None)
                                       for k, v in c.metrics.items()}})

    def event(self, e) -> None:
        """A device fault, data gap, run start/stop … of a rig."""
        if e.rig:
            self._send(e.rig, {"type": "event", "rig": e.rig, "kind": e.kind, "level": e.level,
                               "device": e.device, "message": e.message, "t_ns": e.t_ns})

    async def run(self) -> None:
        """Send every rig's readings to its clients, ``rate_hz`` times a second."""
        while True:
            t0 = time.monotonic()
            for rig, clients in list(self.clients.items()):
                if clients:
                    self._send(rig, self.readings(rig))
            await asyncio.sleep(max(0.0, self.period_s - (time.monotonic() - t0)))
