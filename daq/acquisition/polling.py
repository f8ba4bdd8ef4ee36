"""Acquisition: one asyncio task per device, polling at its rate, publishing columnar blocks.

Raw register rows are collected into a preallocated ``uint16[n, R]`` buffer and decoded
in one go when a block is emitted (every ``block_s``), so per-poll Python work is the
transport call and a timestamp. Device faults and recoveries become events with the
reason; the gap between the last good and the next good sample is recorded as a
``data_gap``.

Timestamps: a device that names a ``time_register`` (its scan counter or clock, read in
the same request as the values) stamps each poll with the time of the scan it shows, on
the PLC's clock held to the host's (:mod:`drivers.plc_time`): the reply's arrival is an
upper bound on that scan's time and the clock fits the lower envelope. A poll that shows
the same scan as the one before (the PLC has not scanned since) is not stored again; it
still counts for the heartbeat. Without a time register a poll's timestamp is the
midpoint of its request and reply on the host clock: off by up to half the round trip
either way, plus up to one PLC scan late (the scan shown may be that old).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from daq.bus import SampleBus, Tagged
from daq.events import Event
from drivers.block import QUALITY_BAD, QUALITY_STALE, Block
from drivers.plc_time import PlcClock, TimeRegister

log = logging.getLogger(__name__)


@dataclass
class DeviceStatus:
    """What ``/api/health`` says about a device."""

    rig: str
    device: str
    state: str = "starting"  # starting | ok | degraded | down
    polls: int = 0
    samples: int = 0
    failed_polls: int = 0
    overruns: int = 0
    last_error: str = ""
    last_sample_ns: int = 0
    connects: int = 0
    skipped_bytes: int = 0  # streams: bytes outside valid frames
    missing_samples: int = 0  # streams: gaps in the sample counter
    repeated_scans: int = 0  # time register: polls that showed the previous poll's scan (not stored)


class StaleWatch:
    """Notices a signal that stops changing: a hung PLC's heartbeat, a frozen amplifier.

    ``update`` returns a mask of the samples taken more than ``after_s`` after the last
    change (their quality becomes stale) and reports transitions through ``changed``.
    """

    def __init__(self, after_s: float):
        self.after_ns = int(after_s * 1e9)
        self.last_change_ns: int | None = None
        self.last_value = None
        self.stale = False

    def update(self, t_ns: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, bool | None]:
        """(stale mask for these samples, True/False on becoming stale/live again, else None)."""
        if len(values) == 0:
            return np.zeros(0, dtype=bool), None
        prev = values[:1] if self.last_value is None else np.array([self.last_value])
        moved = np.flatnonzero(np.concatenate((prev, values))[1:] != np.concatenate((prev, values))[:-1])
        if self.last_change_ns is None:
            self.last_change_ns = int(t_ns[0])
        # each sample's time since the latest change at or before it
        change_idx = np.full(len(values), -1)
        change_idx[moved] = moved
        np.maximum.accumulate(change_idx, out=change_idx)
        since = np.where(change_idx >= 0, t_ns[np.maximum(change_idx, 0)], self.last_change_ns)
        mask = (t_ns - since) > self.after_ns
        if len(moved):
            self.last_change_ns = int(t_ns[moved[-1]])
        self.last_value = values[-1]
        now = bool(mask[-1])
        transition = now if now != self.stale else None
        self.stale = now
        return mask, transition


class Poller(Protocol):
    """A device read by a fixed plan of requests into a raw row (what the Modbus transport builds).

    ``codec`` decodes raw rows into channels (:class:`drivers.registers.RegisterCodec`);
    ``poll`` fills one row and says which requests failed.
    """

    name: str
    measurement: str
    requests: list
    codec: Any

    async def poll(self, row: np.ndarray) -> Any:
        """Read the plan into ``row``; a result with ``quality``, ``failed``, ``errors``, ``reconnected``."""

    def close(self) -> None:
        """Close the connection."""


class DeviceAcquisition:
    """Polls one device forever and publishes :class:`Block` s on the bus.

    ``time_register``: the device's clock (see the module docstring); it must be read in
    the poller's only request. Unless ``heartbeat`` names another register it is also the
    heartbeat: a PLC whose clock stops is hung.
    """

    def __init__(self, rig: str, poller: Poller, bus: SampleBus, poll_hz: float,
                 block_s: float = 0.1, heartbeat: str | None = None, stale_after_s: float = 2.0,
                 time_register: TimeRegister | None = None):
        self.rig = rig
        self.poller = poller
        self.bus = bus
        self.period = 1.0 / poll_hz
        self.rows = max(1, math.ceil(block_s * poll_hz))
        self.block_s = block_s
        self.status = DeviceStatus(rig, poller.name)
        codec = poller.codec
        self._raw = codec.new_buffer(self.rows)
        self._t = np.zeros(self.rows, dtype=np.int64)
        self._q = np.zeros(self.rows, dtype=np.uint8)
        self._failed = np.zeros((self.rows, len(poller.requests)), dtype=bool)
        self._new = np.ones(self.rows, dtype=bool)  # False: the previous poll's scan again
        self._n = 0
        self.time_register = time_register
        self.plc: PlcClock | None = None
        if time_register is not None:
            if len(poller.requests) != 1:
                raise ValueError(f"{poller.name}: time register {time_register.name!r} must be read in the "
                                 f"same request as every other field (the plan has {len(poller.requests)})")
            self.plc = PlcClock.of(time_register)
            self._tick = codec.uint_reader(time_register.name)
            if heartbeat is None:
                heartbeat = time_register.name
        self.heartbeat = heartbeat
        self.watch = StaleWatch(stale_after_s)
        self._down_since_ns = 0
        self._last_error_kind = ""
        self._now = time.time_ns  # the host clock (tests may replace it)

    def clock_state(self) -> dict | None:
        """Nothing kept across restarts: a PLC's clock is fitted afresh from its first reply."""
        return None

    def _event(self, kind: str, message: str, level: str = "info", **fields) -> None:
        self.bus.publish(Event(kind, message, rig=self.rig, device=self.poller.name,
                               level=level, fields=fields))

    def emit(self) -> None:
        """Decode the collected rows and publish them as one block.

        Polls that showed a scan again are decoded for the heartbeat, not published.
        """
        n = self._n
        if n == 0:
            return
        channels = self.poller.codec.decode(self._raw[:n])
        t_ns = self._t[:n].copy()
        quality = self._q[:n].copy()
        valid = None
        failed = self._failed[:n]
        if failed.any():
            valid = {}
            for j, names in enumerate(self.poller.request_channels):
                if failed[:, j].any():
                    for name in names:
                        valid[name] = ~failed[:, j]
        if self.heartbeat is not None and self.heartbeat in channels:
            beat = channels[self.heartbeat]
            ok = valid.get(self.heartbeat) if valid else None
            t = t_ns if ok is None else t_ns[ok]
            mask, transition = self.watch.update(t, beat if ok is None else beat[ok])
            if ok is None:
                quality[mask] = QUALITY_STALE
            else:
                quality[np.flatnonzero(ok)[mask]] = QUALITY_STALE
            if transition is True:
                self.status.state = "stale"
                msg = f"{self.heartbeat} has not changed for {self.watch.after_ns / 1e9:g} s: device hung?"
                log.warning("%s/%s: %s", self.rig, self.poller.name, msg)
                self._event("device_stale", msg, "warning", reason="stale")
            elif transition is False:
                self.status.state = "ok"
                self._event("device_recovered", f"{self.heartbeat} is moving again")
        self._n = 0
        self._failed[:n] = False
        keep = self._new[:n]
        if not keep.all():
            keep = keep.copy()
            t_ns, quality = t_ns[keep], quality[keep]
            channels = {k: v[keep] for k, v in channels.items()}
            valid = None if valid is None else {k: v[keep] for k, v in valid.items()}
            if len(t_ns) == 0:
                return
        self.bus.publish(Tagged(self.rig, Block(self.poller.measurement, t_ns, channels, quality, valid)))

    def _note(self, result, t_ns: int) -> None:
        st = self.status
        st.polls += 1
        if result.errors:
            err = result.errors[0]
            st.failed_polls += 1
            st.last_error = str(err)
            if result.quality == QUALITY_BAD:
                if st.state != "down":
                    self._down_since_ns = st.last_sample_ns or t_ns
                    log.warning("%s/%s: device down: %s", self.rig, self.poller.name, err)
                    self._event("device_fault", f"device down: {err}", "warning", reason=err.kind)
                st.state = "down"
            else:
                if st.state == "ok" or err.kind != self._last_error_kind:
                    log.warning("%s/%s: partial read: %s", self.rig, self.poller.name, err)
                    self._event("device_fault", f"partial read: {err}", "warning", reason=err.kind)
                st.state = "degraded"
            self._last_error_kind = err.kind
            return
        if st.state in ("down", "degraded"):
            gap_s = (t_ns - self._down_since_ns) / 1e9 if self._down_since_ns else 0.0
            log.info("%s/%s: device back after %.2f s", self.rig, self.poller.name, gap_s)
            self._event("device_recovered", f"device answering again after {gap_s:.2f} s", "info")
            if st.state == "down" and self._down_since_ns:
                self._event("data_gap", f"no samples for {gap_s:.2f} s", "warning",
                            gap_s=gap_s, gap_start_ns=self._down_since_ns, gap_end_ns=t_ns)
        if st.state != "stale":
            st.state = "ok"
        self._last_error_kind = ""
        self._down_since_ns = 0

    async def poll_once(self) -> None:
        """One poll into the next row (emits the block when the buffer is full)."""
        row = self._raw[self._n]
        t0 = self._now()
        result = await self.poller.poll(row)
        t1 = self._now()
        t_ns = (t0 + t1) // 2  # without a time register: the request/reply midpoint
        new = True
        if result.reconnected:
            self.status.connects += 1
        if self.plc is not None and result.quality != QUALITY_BAD:
            restarts = self.plc.restarts
            stamp = self.plc.stamp(self._tick(row), t1)
            if self.plc.restarts != restarts:
                self._clock_jumped()
            if stamp is None:  # the same scan as the last poll: it keeps that poll's timestamp
                new = False
                t_ns = self.status.last_sample_ns or t1
            else:
                t_ns = stamp
        self._note(result, t_ns)
        if result.quality == QUALITY_BAD:
            return
        i = self._n
        self._q[i] = result.quality
        if result.failed:
            self._failed[i, result.failed] = True
        self._new[i] = new
        self._n += 1
        if new:
            self._t[i] = t_ns
            self.status.samples += 1
            self.status.last_sample_ns = t_ns
        else:
            self._t[i] = t1  # for the heartbeat only: when it was seen unchanged
            self.status.repeated_scans += 1
        if self._n == self.rows:
            self.emit()

    def _clock_jumped(self) -> None:
        prev, raw, due = self.plc.jump
        name = self.time_register.name
        msg = (f"{name} went from {prev} to {raw} where about {due:.0f} counts had passed: the device "
               "restarted, was stopped or its clock was set; timestamps re-anchored")
        log.warning("%s/%s: %s", self.rig, self.poller.name, msg)
        self._event("counter_reset", msg, "warning", reason="time_register")

    async def run(self) -> None:
        """Poll at the configured rate until cancelled; emit partial blocks on cancel."""
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        next_t = loop.time()
        last_emit = next_t
        try:
            while True:
                now = loop.time()
                if next_t > now:
                    await asyncio.sleep(next_t - now)
                await self.poll_once()
                if me is not None and me.cancelling():
                    # Python 3.11's asyncio.wait_for (used inside pymodbus) can swallow a
                    # cancellation that races with a reply; honour it here.
                    raise asyncio.CancelledError
                now = loop.time()
                if self._n and now - last_emit >= self.block_s:
                    self.emit()
                if self._n == 0:
                    last_emit = now
                next_t += self.period
                if next_t < now - self.period:  # fell behind: skip the missed slots
                    missed = int((now - next_t) / self.period)
                    self.status.overruns += missed
                    next_t += missed * self.period
        finally:
            self.emit()
            self.poller.close()
