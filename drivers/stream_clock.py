"""Timestamps for streamed samples: from the device's sample counter, held to the host clock.

A streaming instrument numbers its samples; sample ``c`` was taken at
``t(c) = a + c·T`` on the host clock, where the period ``T`` differs from the nominal
``1/rate`` by the crystal's error (tens of ppm: milliseconds per minute). A read that
ends with sample ``c_k`` arrives at ``A_k ≥ t(c_k) + L``: later by a constant latency
``L`` (optionally calibrated: ``latency_ns``) and a jitter that is never negative. So
every arrival is an upper bound on its last sample's time, and the clock is a lower
envelope of the arrivals:

* **Backlog.** A read is *confirmed* when the next read holds no more samples than the
  time between them allows: ``(c_{k+1} − c_k)·T ≤ A_{k+1} − A_k + tolerance``. More
  means those samples were already buffered when read ``k`` happened, so read ``k``
  left a backlog behind and its arrival says little about when its samples were taken.
  Only confirmed reads enter the drift fit (a backlog read confirmed by a stall before
  the next read lies above the envelope, so it cannot tilt it). That pairwise test cannot
  tell when to start giving timestamps: a backlog drained 4 KiB at a time, 3 ms apart, at
  20 kHz (1.6× real time) passes it on every read, and any backlog passes it at the read
  before a stall. So no timestamp is given before the reads are *live* over ``anchor_s``
  of samples — with ``r`` a read's arrival relative to the line, a read ``i`` that no
  later read undercut by more than the tolerance, no two reads since more than
  ``max_read_gap_s`` apart, and reads coming back to within the tolerance of ``r_i``
  throughout (see :meth:`StreamClock._hold`). A backlog that drains faster than real time
  undercuts every read before it; one that grows (a reader slower than the stream) leaves
  its level for as long as it grows. Failing that, timestamps start after
  ``max_unanchored_s`` if no backlog is still draining, after ``max_backlog_s`` in any
  case. The samples read before are held by the caller and then back-dated from their
  counters, on a line below every read so far.
* **Drift.** Per ``bucket_s`` of samples the confirmed read that arrived earliest
  relative to the line is kept; over ``window_s`` those points form a lower convex hull
  (kept incrementally; rebuilt when the oldest eighth of the window expires). The
  period is the slope of the hull edge that spans the window's middle: the highest
  line below every point at the middle, i.e. the line that minimises the mean delay
  above it (the linear program of Moon, Skelly and Towsley for clock-skew estimation).
  Its error is bounded by the least delays at either end of the window divided by half
  the window. A latency rise in the newer half or a fall in the older half does not tilt
  it; the other way round a step Δ tilts it by at most 2Δ/window until it passes the
  middle or expires. It is fitted once the points span ``min_baseline_s``; before, the
  nominal (or restored) period is used.
* **Offset.** The line is lowered onto the earliest of the points of the last
  ``offset_window_s`` and of every read since: a slope error then costs at most
  ``|ΔT|`` times that span, and a lasting rise of latency is followed within it (a fall
  at once). The sample times do not move when the latency rises, so a longer span only
  trades that slope error for a steadier minimum: reads that catch a sample right after
  it left the instrument are rare when it sends in chunks and the reader polls.
* **Output.** Timestamps move from the last one given towards that line by at most
  ``slew`` periods per sample (so they stay strictly increasing and never jump back),
  and never later than the read arrived: when a read arrives earlier than the slewed
  timestamps would be, its samples are spread evenly between the last timestamp and its
  arrival instead. Then ``latency_ns`` is subtracted.

The drift estimate can be kept across restarts: :meth:`StreamClock.state` gives it
(with when and over how long it was measured) and :meth:`StreamClock.restore` takes it
back, to be used until a fit over ``restored_baseline_s`` replaces it.
"""

from __future__ import annotations

import math
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


def _push_lower_hull(hull: list[tuple[int, int]], p: tuple[int, int]) -> None:
    """Append ``p`` (right of every vertex) to a lower convex hull; exact integer arithmetic."""
    x3, y3 = p
    while len(hull) >= 2:
        x1, y1 = hull[-2]
        x2, y2 = hull[-1]
        if (x2 - x1) * (y3 - y1) - (y2 - y1) * (x3 - x1) > 0:  # a left turn: convex from below
            break
        hull.pop()
    hull.append(p)


class StreamClock:
    """Maps sample counters to host-clock nanoseconds, correcting the device's drift.

    Call :meth:`observe` with the last counter of every read and its arrival time; once
    it returns True (:attr:`ready`), call :meth:`timestamps` with the counters of that
    read, preceded by those of the reads held while it was not ready. ``latency_ns`` is
    the device's calibrated constant latency, subtracted from every timestamp.
    """

    DRAIN_QUIET_NS = 1_000_000_000  # a backlog still drains if the earliest arrival fell by tol within this

    MIN_ANCHOR_SAMPLES = 4.0
    MIN_READ_GAP_SAMPLES = 2.5

    def __init__(self, rate_hz: float, latency_ns: int = 0, *, window_s: float = 120.0,
                 offset_window_s: float = 5.0, bucket_s: float = 0.1, min_baseline_s: float = 2.0,
                 restored_baseline_s: float = 30.0, slew: float = 0.5, backlog_tol_s: float = 0.002,
                 anchor_s: float = 0.5, max_read_gap_s: float = 0.1, max_unanchored_s: float = 5.0,
                 max_backlog_s: float = 30.0, max_drift_ppm: float = 1000.0):
        if not 0 < slew < 1:
            raise ValueError("slew must lie between 0 and 1 period per sample")
        if latency_ns < 0:
            raise ValueError("latency_ns must be ≥ 0")
        self.rate_hz = float(rate_hz)
        self.nominal_ns = 1e9 / rate_hz
        self.latency_ns = int(latency_ns)
        self.period_ns = self.nominal_ns
        self.bucket = max(1, round(bucket_s * rate_hz))  # samples per fit bucket
        self.window = max(self.bucket, round(window_s * rate_hz))  # samples
        self.offset_window = max(self.bucket, round(offset_window_s * rate_hz))
        self.min_span = min_baseline_s * rate_hz
        self.restored_span = restored_baseline_s * rate_hz
        self.slew = slew
        self.backlog_tol_ns = backlog_tol_s * 1e9
        # samples of live reads before timestamps, and the longest gap between reads of a live run:
        # a slow stream (a 5 Hz sensor) reads a sample at a time, so both hold at least a few samples
        self.anchor_span = max(anchor_s * rate_hz, self.MIN_ANCHOR_SAMPLES)
        self.max_read_gap_ns = max(max_read_gap_s, self.MIN_READ_GAP_SAMPLES / rate_hz) * 1e9
        self.max_unanchored_ns = max_unanchored_s * 1e9
        self.max_backlog_ns = max(max_backlog_s, max_unanchored_s) * 1e9
        self.max_drift_ppm = max_drift_ppm
        self._measured: dict | None = None  # the drift estimate in use: fitted or restored
        self._restored = False  # the period came from restore() or an earlier session
        self._last_ts: int | None = None  # last timestamp given (before latency), all sessions
        self._new_session()

    def _new_session(self) -> None:
        self.ready = False
        self._origin: tuple[int, int] | None = None  # (counter, host ns) that coordinates count from
        self._session_ns = 0
        self._prev: tuple[int, int] | None = None  # previous read, awaiting confirmation
        self._held_r: list[float] = []  # each held read's arrival relative to the line then
        self._live_from = 0  # index into _held: the oldest read that may start a live run
        self._back_c = 0  # counter of the last read back at its level (within tol)
        self._back_gap = 0  # the most samples between two such reads since it
        self._floor_r = math.inf  # the earliest held arrival relative to the line
        self._drain_ref = math.inf  # the same, lowered only by steps of tol
        self._drained_ns = 0  # host time it last stepped down: a backlog still draining
        self._offset: float | None = None  # line: t = offset + c·period (relative to origin)
        self._cap = (0, 0)  # latest read: its samples arrived by then
        self._held: list[tuple[int, int]] = []  # reads observed before the clock was ready
        self._bucket_end: int | None = None
        self._best: tuple[int, int, float] | None = None  # the bucket's earliest confirmed read
        self._points: deque[tuple[int, int]] = deque()  # one per bucket, within the window
        self._hull: list[tuple[int, int]] = []  # lower convex hull of _points
        self._out: tuple[float, float] | None = None  # last counter and timestamp given

    def reset(self) -> None:
        """The device restarted (its counter jumped back): re-anchor, keep the drift estimate."""
        self._new_session()
        self._restored = self._measured is not None

    @property
    def drift_ppm(self) -> float:
        """Device clock error estimate: positive when the device's samples come slower."""
        return (self.period_ns / self.nominal_ns - 1.0) * 1e6

    # -- drift estimate across restarts ---------------------------------------------------
    def state(self) -> dict | None:
        """The drift estimate in use (JSON-able), or None before there is one."""
        return dict(self._measured) if self._measured else None

    def restore(self, state: dict | None) -> bool:
        """Use a drift estimate from :meth:`state` (of the same device at the same rate).

        It is kept until the fit spans ``restored_baseline_s``. Returns False (and
        changes nothing) for a missing, malformed or implausible state.
        """
        try:
            rate, ppm = float(state["rate_hz"]), float(state["drift_ppm"])
            measured_ns, baseline_s = int(state.get("measured_ns", 0)), float(state.get("baseline_s", 0.0))
        except (KeyError, TypeError, ValueError):
            return False
        if not (math.isfinite(ppm) and abs(ppm) <= self.max_drift_ppm
                and abs(rate - self.rate_hz) <= 1e-9 * self.rate_hz):
            return False
        self.period_ns = self.nominal_ns * (1.0 + ppm * 1e-6)
        self._measured = {"rate_hz": rate, "drift_ppm": ppm, "measured_ns": measured_ns,
                          "baseline_s": baseline_s}
        self._restored = True
        return True

    # -- observations ------------------------------------------------------------------
    def observe(self, counter: int, host_ns: int) -> bool:
        """The read ending with sample ``counter`` arrived at ``host_ns``; True once :attr:`ready`.

        O(1) per read, besides the hull update when a bucket closes.
        """
        if self._origin is None:
            self._origin = (counter, host_ns)
            self._session_ns = host_ns
        c0, t0 = self._origin
        c, t = counter - c0, host_ns - t0
        if self._prev is not None:
            pc, pt = self._prev
            if c <= pc:
                return self.ready  # nothing new
            if (c - pc) * self.period_ns <= (t - pt) + self.backlog_tol_ns:
                self._confirm(pc, pt)  # no more samples came than time passed: the previous read was live
        self._prev = (c, t)
        if self._bucket_end is None:
            self._bucket_end = (c // self.bucket + 1) * self.bucket
        elif c >= self._bucket_end:
            self._close_bucket(c, t)
        r = t - c * self.period_ns  # every arrival is an upper bound: it may lower the line
        if self._offset is None or r < self._offset:
            self._offset = r
        self._cap = (c, t)
        if not self.ready:
            self._hold(c, t, r, host_ns)
        return self.ready

    def _hold(self, c: int, t: int, r: float, host_ns: int) -> None:
        """Keep a read while the clock is not ready; anchor once the reads are live.

        With ``r`` a read's arrival relative to the line, read ``i`` *starts a live run* if
        no later read came earlier by more than the tolerance (``r_m ≥ r_i − tol``: read
        ``i`` left no backlog behind) and no two reads since came more than
        ``max_read_gap_s`` apart (a stall lets a backlog build up that the reads after it
        drain quickly). The clock anchors at a read ``k`` once the oldest such ``i`` is
        ``anchor_s`` of samples behind it, if the reads kept coming back to that level
        (``r ≤ r_i + tol``: read ``k``, and no half of ``anchor_s`` without one). A
        backlog drained at any speed above real time breaks the first condition within
        ``tol`` of the samples it gains, however its reads are spaced; one that grows (a
        reader slower than the stream) breaks the second, also when it then drains back
        through that level; one drained exactly as fast as it grows is latency to any
        timing. Without a live run the clock anchors after ``max_unanchored_s`` at a read
        back at the earliest level so far, unless a backlog is still draining (that level
        fell by ``tol`` within the last second): then it waits for the end of it, up to
        ``max_backlog_s``. Costs O(1) per read, and O(reads since the candidate) when it
        changes.
        """
        held, held_r = self._held, self._held_r
        held.append((c, t))
        held_r.append(r)
        k = len(held) - 1
        tol = self.backlog_tol_ns
        i = self._live_from
        if k and t - held[k - 1][1] > self.max_read_gap_ns:
            i = k  # a stall: a live run starts after it, at the earliest
        elif held_r[i] > r + tol:  # this read came earlier: the oldest candidate left a backlog
            rs = np.array(held_r[i:])
            later = np.minimum.accumulate(rs[::-1])[::-1]  # min over each read and those after it
            alive = rs[:-1] <= later[1:] + tol
            # reads that die stay dead (later reads only lower the minimum), so the oldest
            # survivor is the only candidate worth keeping; the newest read is one by itself
            i += int(np.argmax(alive)) if alive.any() else len(rs) - 1
        if i != self._live_from or k == 0:  # a new candidate: which reads since came back to its level
            self._live_from = i
            back = [cc for (cc, _), rr in zip(held[i:], held_r[i:], strict=True) if rr <= held_r[i] + tol]
            self._back_c = back[-1]
            self._back_gap = int(np.max(np.diff(back))) if len(back) > 1 else 0
        elif r <= held_r[i] + tol:
            self._back_gap = max(self._back_gap, c - self._back_c)
            self._back_c = c
        self._floor_r = min(self._floor_r, r)
        if r < self._drain_ref - tol:
            self._drain_ref, self._drained_ns = r, host_ns
        waited = host_ns - self._session_ns
        if ((c - held[i][0] >= self.anchor_span and self._back_c == c and self._back_gap <= self.anchor_span / 2)
                or waited >= self.max_backlog_ns
                or (waited >= self.max_unanchored_ns and host_ns - self._drained_ns >= self.DRAIN_QUIET_NS
                    and r <= self._floor_r + tol)):
            self._anchor()

    def force_anchor(self) -> bool:
        """Give timestamps now although no read is confirmed live yet (silence, shutdown)."""
        if not self.ready and self._origin is not None:
            self._anchor()
        return self.ready

    def _anchor(self) -> None:
        # the line goes below every read held so far, so back-dated samples stay causal
        held = np.array(self._held, dtype=np.float64).reshape(-1, 2)
        if len(held):
            self._offset = min(self._offset, float(np.min(held[:, 1] - held[:, 0] * self.period_ns)))
        self._held.clear()
        self._held_r.clear()
        self.ready = True

    def _confirm(self, c: int, t: int) -> None:
        r = t - c * self.period_ns
        if self._best is None or r < self._best[2]:
            self._best = (c, t, r)

    def _close_bucket(self, c: int, t: int) -> None:
        if self._best is not None:
            p = (self._best[0], self._best[1])
            self._points.append(p)
            _push_lower_hull(self._hull, p)
            self._best = None
        self._bucket_end = (c // self.bucket + 1) * self.bucket
        pts = self._points
        if pts and pts[0][0] < c - self.window - self.window // 8:  # expire an eighth at a time
            while pts and pts[0][0] < c - self.window:
                pts.popleft()
            self._hull = []
            for p in pts:
                _push_lower_hull(self._hull, p)
        self._refit(t)
        recent = []
        for pc, pt in reversed(pts):
            if pc < c - self.offset_window:
                break
            recent.append(pt - pc * self.period_ns)
        if recent:
            self._offset = min(recent)  # the caller lowers it onto this read too

    def _refit(self, t: int) -> None:
        pts, hull = self._points, self._hull
        if len(hull) < 2:
            return
        span = pts[-1][0] - pts[0][0]
        if span < (self.restored_span if self._restored else self.min_span):
            return
        mid = (pts[0][0] + pts[-1][0]) / 2
        i = 0
        while hull[i + 1][0] < mid:
            i += 1
        (x1, y1), (x2, y2) = hull[i], hull[i + 1]
        slope = (y2 - y1) / (x2 - x1)
        if x2 == mid and i + 2 < len(hull):  # on a vertex: any slope between its edges supports it
            x3, y3 = hull[i + 2]
            slope = (slope + (y3 - y2) / (x3 - x2)) / 2
        ppm = (slope / self.nominal_ns - 1.0) * 1e6
        if abs(ppm) > self.max_drift_ppm:
            return  # not a crystal: a latency change inside the window; keep the last estimate
        self.period_ns = slope
        self._restored = False
        self._measured = {"rate_hz": self.rate_hz, "drift_ppm": ppm, "measured_ns": self._origin[1] + t,
                          "baseline_s": span / self.rate_hz}

    # -- output ------------------------------------------------------------------------
    def timestamps(self, counters: np.ndarray) -> np.ndarray:
        """int64 ns for each counter (increasing, none before the last call's), strictly increasing.

        ``counters`` are the samples of the reads observed since the last call.
        """
        if not self.ready:
            raise RuntimeError("no timestamps before observe() returned True (or force_anchor())")
        c0, t0 = self._origin
        u = (np.asarray(counters, dtype=np.int64) - c0).astype(np.float64)
        n = len(u)
        if n == 0:
            return np.empty(0, dtype=np.int64)
        period = self.period_ns
        est = self._offset + u * period  # the line
        if self._out is not None and u[-1] > self._out[0]:
            oc, ot = self._out
            excess = ot - (self._offset + oc * period)  # how far the last timestamp is off the line
            if excess:
                left = abs(excess) - self.slew * period * (u - oc)
                est += np.copysign(np.maximum(left, 0.0), excess)
            cap = self._cap[1]
            if est[-1] > cap:  # the read came earlier than that: spread its samples up to its arrival
                est = ot + (u - oc) * ((cap - ot) / (u[-1] - oc))
        ts = t0 + np.rint(est).astype(np.int64)
        # strictly increasing, also across sessions (a no-op unless < 1 ns per sample is left)
        k = np.arange(n, dtype=np.int64)
        w = np.maximum.accumulate(ts - k)
        if self._last_ts is not None:
            np.maximum(w, self._last_ts + 1, out=w)
        ts = w + k
        self._out = (float(u[-1]), float(ts[-1] - t0))
        self._last_ts = int(ts[-1])
        if self.latency_ns:
            ts -= self.latency_ns
        return ts
