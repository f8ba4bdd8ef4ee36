"""Faults a simulated device can be told to show, now or on a schedule.

=============  ===============================================  ========================
kind           Modbus device                                    stream device
=============  ===============================================  ========================
disconnect     stops listening, drops connections               hangs up the pty
timeout        answers ``delay_s`` late (default 2 s)           falls silent
exception      answers exception 06 (server device busy)        —
corrupt        flips bytes in replies                           flips bytes in frames
truncated      cuts the end off replies                         cuts the end off chunks
stuck          register image stops updating                    values stop changing
=============  ===============================================  ========================
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

KINDS = ("disconnect", "timeout", "exception", "corrupt", "truncated", "stuck")


@dataclass
class Fault:
    """One active fault; ``until`` is a monotonic time or None (until cleared)."""

    kind: str
    until: float | None = None
    params: dict = field(default_factory=dict)


@dataclass
class Scheduled:
    """A fault to switch on ``at_s`` seconds after the simulator started."""

    device: str
    kind: str
    at_s: float
    duration_s: float | None = None
    params: dict = field(default_factory=dict)


class FaultBoard:
    """Which faults are on, per device."""

    def __init__(self) -> None:
        self._on: dict[str, dict[str, Fault]] = {}
        self.schedule: list[Scheduled] = []
        self._t0 = time.monotonic()

    def inject(self, device: str, kind: str, duration_s: float | None = None, **params) -> None:
        """Switch a fault on (for ``duration_s`` seconds, or until cleared)."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(KINDS)}")
        until = time.monotonic() + duration_s if duration_s is not None else None
        self._on.setdefault(device, {})[kind] = Fault(kind, until, params)
        log.warning("simulated fault on %s: %s%s", device, kind,
                    f" for {duration_s:g} s" if duration_s is not None else "")

    def clear(self, device: str | None = None, kind: str | None = None) -> None:
        """Switch faults off (all, a device's, or one kind)."""
        for dev in [device] if device else list(self._on):
            faults = self._on.get(dev, {})
            for k in [kind] if kind else list(faults):
                faults.pop(k, None)

    def active(self, device: str, kind: str) -> Fault | None:
        """The fault if it is on now."""
        f = self._on.get(device, {}).get(kind)
        if f is not None and f.until is not None and time.monotonic() >= f.until:
            del self._on[device][kind]
            log.info("simulated fault on %s cleared: %s", device, kind)
            return None
        return f

    async def tick(self) -> None:
        """Start scheduled faults that are due."""
        now = time.monotonic() - self._t0
        due = [s for s in self.schedule if s.at_s <= now]
        for s in due:
            self.schedule.remove(s)
            self.inject(s.device, s.kind, s.duration_s, **s.params)
