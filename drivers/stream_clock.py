"""Timestamps for streamed samples: from the device's sample counter, held to the host clock.

A streaming instrument numbers its samples; sample ``c`` was taken at
``t(c) = a + c·T`` on the device's clock, whose period ``T`` differs from the nominal
``1/rate`` by the crystal's error (tens of ppm: milliseconds per minute). The host sees
each chunk's last sample at ``t_host ≥ t(c)``: later by a transport latency that
varies but is never negative.

So the estimate is the lower envelope of the observations: over a sliding window the
drift is the slope between the least-delayed observation of the older half and that
of the newer half, and the line is then lowered until no observation lies below it.
Timestamps are ``a + c·T`` with that line: uniformly spaced, never later than the
host saw the data, and following the host clock over hours without a visible jump.
"""

from __future__ import annotations

from collections import deque

import numpy as np


class CounterUnwrapper:
    """uint32 sequence counters → a monotonic int64 sample counter."""

    def __init__(self, bits: int = 32):
        self.modulus = 1 << bits
        self.last: int | None = None  # last unwrapped counter

    def reset(self) -> None:
        """Start afresh (after a device restart)."""
        self.last = None

    def unwrap(self, raw: np.ndarray) -> tuple[np.ndarray, bool]:
        """Unwrapped counters, and whether the counter went backwards (device restart).

        A jump backwards restarts the count from the new value.
        """
        raw = raw.astype(np.int64)
        if len(raw) == 0:
            return raw, False
        steps = np.diff(raw) % self.modulus
        steps[steps > self.modulus // 2] -= self.modulus  # backwards jumps stay negative
        restarted = False
        if self.last is None:
            first = int(raw[0])
        else:
            step0 = (int(raw[0]) - self.last) % self.modulus
            if step0 > self.modulus // 2 or step0 == 0:
                restarted, first = True, int(raw[0])
            else:
                first = self.last + step0
        if np.any(steps <= 0):
            restarted = True
            steps = np.where(steps <= 0, 1, steps)  # keep it monotonic; caller re-anchors
        out = np.empty(len(raw), dtype=np.int64)
        out[0] = first
        np.cumsum(steps, out=out[1:])
        out[1:] += first
        self.last = int(out[-1])
        return out, restarted


class StreamClock:
    """Maps sample counters to host-clock nanoseconds, correcting the device's drift."""

    def __init__(self, rate_hz: float, window_s: float = 60.0, min_baseline_s: float = 5.0,
                 bucket_s: float = 0.1):
        self.nominal_ns = 1e9 / rate_hz
        self.bucket = max(1, round(bucket_s * rate_hz))
        self._bucket: tuple[int, int] = (0, 0)
        self._bucket_end = 0
        self.period_ns = self.nominal_ns
        self.window_s = window_s
        self.min_baseline = min_baseline_s * rate_hz  # in samples
        self.obs: deque[tuple[int, int]] = deque()
        self.c0: int | None = None
        self.offset_ns = 0.0  # t(c) = t0 + offset + (c - c0)·period
        self.t0 = 0
        self.last_ts = -1

    def reset(self) -> None:
        """Forget everything (device restarted, counter jumped back)."""
        self.obs.clear()
        self.c0 = None
        self.period_ns = self.nominal_ns
        self.last_ts = -1

    @property
    def drift_ppm(self) -> float:
        """Device clock error estimate: positive when the device's samples come slower."""
        return (self.period_ns / self.nominal_ns - 1.0) * 1e6

    def observe(self, counter: int, host_ns: int) -> None:
        """The sample numbered ``counter`` had arrived by ``host_ns``.

        Only the least-delayed observation of each ``bucket_s`` is kept for the drift
        fit, so the cost per observation stays constant however often the port is read.
        """
        if self.c0 is None:
            self.c0, self.t0 = counter, host_ns
            self._bucket = (counter, host_ns)
            self._bucket_end = counter + self.bucket
        c, t = counter - self.c0, host_ns - self.t0
        # keep timestamps causal at once: never later than the data arrived
        if t - (c * self.period_ns + self.offset_ns) < 0:
            self.offset_ns = t - c * self.period_ns
        best_c, best_t = self._bucket
        if (t - c * self.nominal_ns) < (best_t - self.t0 - (best_c - self.c0) * self.nominal_ns):
            self._bucket = (counter, host_ns)
        if counter < self._bucket_end:
            return
        self.obs.append(self._bucket)
        self._bucket = (counter, host_ns)
        self._bucket_end = counter + self.bucket
        horizon = counter - self.window_s * 1e9 / self.nominal_ns
        while len(self.obs) > 2 and self.obs[0][0] < horizon:
            self.obs.popleft()
        arr = np.array(self.obs, dtype=np.int64)
        cs = (arr[:, 0] - self.c0).astype(np.float64)
        ts = (arr[:, 1] - self.t0).astype(np.float64)
        if cs[-1] - cs[0] >= self.min_baseline:
            r = ts - cs * self.nominal_ns
            mid = cs[0] + (cs[-1] - cs[0]) / 2
            old, new = cs < mid, cs >= mid
            i1 = np.flatnonzero(old)[np.argmin(r[old])]
            i2 = np.flatnonzero(new)[np.argmin(r[new])]
            if cs[i2] > cs[i1]:
                self.period_ns = self.nominal_ns + (r[i2] - r[i1]) / (cs[i2] - cs[i1])
        self.offset_ns = float(np.min(ts - cs * self.period_ns))

    def timestamps(self, counters: np.ndarray) -> np.ndarray:
        """int64 ns for each counter, strictly increasing across calls."""
        if self.c0 is None:
            raise RuntimeError("observe() a counter before asking for timestamps")
        rel = (counters - self.c0).astype(np.float64) * self.period_ns + self.offset_ns
        ts = self.t0 + np.rint(rel).astype(np.int64)
        if len(ts) and ts[0] <= self.last_ts:
            ts += self.last_ts + 1 - ts[0]
        if len(ts):
            self.last_ts = int(ts[-1])
        return ts
