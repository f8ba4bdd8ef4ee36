"""Acquisition: one asyncio task per device, polling at its rate, publishing columnar blocks.

Raw register rows are collected into a preallocated ``uint16[n, R]`` buffer and decoded
in one go when a block is emitted (every ``block_s``), so per-poll Python work is the
transport call and a timestamp. A poll's timestamp is the midpoint of its request and
reply on the host clock. Device faults and recoveries become events with the reason;
the gap between the last good and the next good sample is recorded as a ``data_gap``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from daq.bus import SampleBus, Tagged
from daq.events import Event
from drivers.block import QUALITY_BAD, QUALITY_STALE, Block
from drivers.modbus import ModbusPoller

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


class DeviceAcquisition:
    """Polls one device forever and publishes :class:`Block` s on the bus."""

    def __init__(self, rig: str, poller: ModbusPoller, bus: SampleBus, poll_hz: float,
                 block_s: float = 0.1, heartbeat: str | None = None, stale_after_s: float = 2.0):
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
        self._n = 0
        self.heartbeat = heartbeat
        self.watch = StaleWatch(stale_after_s)
        self._down_since_ns = 0
        self._last_error_kind = ""

    def _event(self, kind: str, message: str, level: str = "info", **fields) -> None:
        self.bus.publish(Event(kind, message, rig=self.rig, device=self.poller.name,
                               level=level, fields=fields))

    def emit(self) -> None:
        """Decode the collected rows and publish them as one block."""
        n = self._n
        if n == 0:
            return
        channels = self.poller.codec.decode(self._raw[:n])
        valid = None
        failed = self._failed[:n]
        if failed.any():
            valid = {}
            for j, names in enumerate(self.poller.request_channels):
                if failed[:, j].any():
                    for name in names:
                        valid[name] = ~failed[:, j]
        block = Block(self.poller.measurement, self._t[:n].copy(), channels, self._q[:n].copy(), valid)
        if self.heartbeat is not None and self.heartbeat in channels:
            beat = channels[self.heartbeat]
            ok = valid.get(self.heartbeat) if valid else None
            t = block.t_ns if ok is None else block.t_ns[ok]
            mask, transition = self.watch.update(t, beat if ok is None else beat[ok])
            if ok is None:
                block.quality[mask] = QUALITY_STALE
            else:
                block.quality[np.flatnonzero(ok)[mask]] = QUALITY_STALE
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
        self.bus.publish(Tagged(self.rig, block))

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
        t0 = time.time_ns()
        result = await self.poller.poll(self._raw[self._n])
        t1 = time.time_ns()
        t_ns = (t0 + t1) // 2
        if result.reconnected:
            self.status.connects += 1
        self._note(result, t_ns)
        if result.quality == QUALITY_BAD:
            return
        i = self._n
        self._t[i] = t_ns
        self._q[i] = result.quality
        if result.failed:
            self._failed[i, result.failed] = True
        self._n += 1
        self.status.samples += 1
        self.status.last_sample_ns = t_ns
        if self._n == self.rows:
            self.emit()

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
