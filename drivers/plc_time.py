"""Timestamps for polled samples from the device's own clock: a scan counter or time register.

A PLC that counts its scans, or keeps a millisecond clock, in a register says when the
values read with it were taken: the scan showing tick ``c`` was taken at ``t(c) = a + c·T``
on the host clock, ``T`` being ``time_unit_s`` off by the PLC crystal's error. A reply
showing tick ``c`` arrives after that scan, by however long the scan waited for the
request, the PLC's answer and the reply's way back: every reply's arrival is an upper
bound on its scan's time, as a stream read's arrival is on its last sample's. So the
same clock (:class:`drivers.stream_clock.StreamClock`, at ``1/time_unit_s`` counts per
second) fits ``a`` and ``T`` to the lower envelope of (tick, reply arrival): a scan's
timestamp is its time on the PLC's clock, held to the host clock, plus the least delay
seen recently; never later than the reply arrived, and evenly spaced on the PLC's clock.

A PLC never answers from a backlog (every reply shows its latest scan), so the clock is
anchored on the first reply and nothing is held back.

Per poll (:meth:`PlcClock.stamp`):

* **Same value as the previous poll**: the PLC has not scanned since; the poll shows the
  same scan and gets no timestamp (None). The caller does not store it again.
* **Unwrapping**: the register counts modulo ``wrap``; the advance is the step modulo
  ``wrap`` plus the whole wraps that the host time elapsed since the previous new tick
  calls for, so a gap longer than half a wrap is not misread.
* **Restart**: an advance that disagrees with the host time elapsed by more than
  ``tolerance_s`` (the tick went back, jumped ahead, or stood still and resumed) means
  the PLC restarted, was stopped or had its clock set: the clock re-anchors, keeping its
  drift estimate, as a stream clock does on a counter reset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drivers.stream_clock import StreamClock


@dataclass(frozen=True, slots=True)
class TimeRegister:
    """Which register holds the device's clock, and how it counts.

    ``unit_s``: seconds per count (0.001 for a millisecond clock, 0.005 for a 5 ms scan
    counter); ``wrap``: it counts modulo this; ``tolerance_s``: how far its advance may
    disagree with the host time elapsed (reply delays and the time between scans) before
    it is taken as a restart; ``latency_ns``: a calibrated constant delay from the scan to
    the reply's arrival, subtracted from every timestamp.
    """

    name: str
    unit_s: float
    wrap: int
    tolerance_s: float = 1.0
    latency_ns: int = 0


class PlcClock:
    """Maps a PLC's time register, poll by poll, to host-clock nanoseconds."""

    def __init__(self, unit_s: float, wrap: int, tolerance_s: float = 1.0, latency_ns: int = 0, **clock_kw):
        if not unit_s > 0:
            raise ValueError("unit_s must be > 0")
        if wrap < 2:
            raise ValueError("wrap must be ≥ 2")
        self.wrap = int(wrap)
        self.tolerance_ns = tolerance_s * 1e9
        self.clock = StreamClock(1.0 / unit_s, latency_ns, **clock_kw)
        self.repeats = 0  # polls that showed the previous poll's scan
        self.restarts = 0  # re-anchors: the register jumped
        #: the last jump: (previous raw value, new raw value, counts the host time called for)
        self.jump: tuple[int, int, float] | None = None
        self.raw: int | None = None  # the last new raw value
        self.count = 0  # its unwrapped counter (restarts from the raw value after a jump)
        self._arrival = 0  # its reply's arrival

    @classmethod
    def of(cls, reg: TimeRegister) -> PlcClock:
        """The clock for a configured time register."""
        return cls(reg.unit_s, reg.wrap, reg.tolerance_s, reg.latency_ns)

    def stamp(self, raw: int, reply_ns: int) -> int | None:
        """Timestamp (int ns) of the scan a reply showed, or None if the last poll showed it too.

        ``raw``: the register's value in the reply; ``reply_ns``: when the reply arrived.
        The timestamp is never later than ``reply_ns − latency_ns``. O(1) besides the
        clock's own work.
        """
        raw = int(raw) % self.wrap
        if self.raw is None:
            count = raw
        elif raw == self.raw:
            self.repeats += 1
            return None
        else:
            step = (raw - self.raw) % self.wrap
            elapsed = (reply_ns - self._arrival) / self.clock.period_ns  # counts on the host clock
            advance = step + max(0, round((elapsed - step) / self.wrap)) * self.wrap
            if abs(advance - elapsed) * self.clock.period_ns > self.tolerance_ns:
                self.jump = (self.raw, raw, elapsed)
                self.restarts += 1
                self.clock.reset()
                count = raw
            else:
                count = self.count + advance
        self.raw, self.count, self._arrival = raw, count, reply_ns
        if not self.clock.observe(count, reply_ns):
            self.clock.force_anchor()  # never a backlog: the first reply is as good as any
        return int(self.clock.timestamps(np.array([count], dtype=np.int64))[0])
