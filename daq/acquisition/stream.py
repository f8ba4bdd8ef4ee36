"""Acquisition of a streaming serial instrument: bulk reads, vectorised decoding, blocks.

Every read takes all bytes the port has; the frame decoder turns them into samples,
the sample counter is unwrapped and checked for gaps (each gap becomes a ``data_gap``
event with the number of missing samples), and timestamps come from the counter on
the device's clock, corrected against the host clock (:mod:`drivers.stream_clock`).
Until the clock has seen a live read (at start-up the port may hold seconds of
backlog), decoded samples are held and then back-dated from their counters.
A ``sample`` field carries the unwrapped counter into storage, so gaps can be audited.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from daq.acquisition.polling import DeviceStatus, StaleWatch
from daq.bus import SampleBus, Tagged
from daq.events import Event
from drivers.block import QUALITY_STALE, Block
from drivers.modbus import Backoff
from drivers.serial_port import PortClosedError, SerialPort
from drivers.stream import FrameCodec, LineCodec
from drivers.stream_clock import CounterUnwrapper, StreamClock

log = logging.getLogger(__name__)


class StreamAcquisition:
    """Reads one streaming device forever and publishes :class:`Block` s."""

    def __init__(self, rig: str, name: str, port: SerialPort, codec: FrameCodec | LineCodec,
                 rate_hz: float, bus: SampleBus, block_s: float = 0.05,
                 silence_timeout_s: float = 1.0, reconnect_max_s: float = 10.0,
                 stuck_after_s: float = 1.0, read_interval_s: float = 0.01, latency_ms: float = 0.0):
        self.rig, self.name = rig, name
        self.port = port
        self.codec = codec
        self.rate_hz = rate_hz
        self.bus = bus
        self.block_s = block_s
        self.silence_timeout_s = silence_timeout_s
        self.read_interval_s = read_interval_s
        self.backoff = Backoff(0.1, reconnect_max_s)
        self.clock = StreamClock(rate_hz, latency_ns=round(latency_ms * 1e6))
        self.unwrap = CounterUnwrapper()
        self.status = DeviceStatus(rig, name)
        self._parts: list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]] = []
        self._held: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []  # until the clock is ready
        self._last_counter: int | None = None
        self._last_ok_ns = 0
        self._block_started = 0.0
        self.watch = StaleWatch(stuck_after_s)

    def resume_after(self, counter: int) -> None:
        """Continue the count of an earlier run.

        Samples after ``counter`` that never came are then reported as a gap.
        """
        self._last_counter = counter
        self.unwrap.last = counter

    def clock_state(self) -> dict | None:
        """The stream clock's drift estimate (JSON-able), for the service's state file."""
        return self.clock.state()

    def restore_clock(self, state: dict | None) -> bool:
        """Start from a drift estimate saved by :meth:`clock_state` in an earlier run."""
        return self.clock.restore(state)

    def _event(self, kind: str, message: str, level: str = "info", **fields) -> None:
        self.bus.publish(Event(kind, message, rig=self.rig, device=self.name, level=level,
                               fields=fields))

    def _fault(self, reason: str, message: str) -> None:
        st = self.status
        st.last_error = message
        if st.state != "down":
            log.warning("%s/%s: %s", self.rig, self.name, message)
            self._event("device_fault", message, "warning", reason=reason)
            self._last_ok_ns = st.last_sample_ns or time.time_ns()
        st.state = "down"

    def emit(self) -> None:
        """Publish everything collected as one block, timestamping held samples if need be."""
        self._release_held(force=True)
        self._publish_block()

    def _release_held(self, force: bool = False) -> None:
        """Timestamp the held samples once the clock is ready (``force``: make it ready)."""
        if not self._held or not (self.clock.ready or (force and self.clock.force_anchor())):
            return
        if len(self._held) == 1:
            counters, channels = self._held[0]
        else:
            counters = np.concatenate([h[0] for h in self._held])
            channels = {k: np.concatenate([h[1][k] for h in self._held]) for k in self._held[0][1]}
        self._held.clear()
        t_ns = self.clock.timestamps(counters)
        self._parts.append((counters, t_ns, channels))
        self.status.samples += len(counters)
        self.status.last_sample_ns = int(t_ns[-1])

    def _publish_block(self) -> None:
        if not self._parts:
            return
        counters = np.concatenate([p[0] for p in self._parts])
        t_ns = np.concatenate([p[1] for p in self._parts])
        channels = {k: np.concatenate([p[2][k] for p in self._parts]) for k in self._parts[0][2]}
        block = Block(self.name, t_ns, {"sample": counters, **channels})
        self._parts.clear()
        # all channels frozen while the counter runs on: a stuck front end
        signature = np.sum([v for v in channels.values()], axis=0)
        mask, transition = self.watch.update(t_ns, signature)
        block.quality[mask] = QUALITY_STALE
        if transition is True:
            self.status.state = "stale"
            msg = f"every channel frozen for {self.watch.after_ns / 1e9:g} s while samples keep coming"
            log.warning("%s/%s: %s", self.rig, self.name, msg)
            self._event("values_stuck", msg, "warning", reason="stuck")
        elif transition is False:
            self.status.state = "ok"
            self._event("device_recovered", "channels are moving again")
        self.bus.publish(Tagged(self.rig, block))

    def process(self, data: bytes, arrival_ns: int) -> int:
        """Decode ``data`` (arrived by ``arrival_ns``); returns the samples it held."""
        st = self.status
        dec = self.codec.feed(data)
        if dec.skipped_bytes:
            st.skipped_bytes += dec.skipped_bytes
            what = "; ".join(dec.notes) or "corrupt or partial frames"
            self._event("stream_resync", f"skipped {dec.skipped_bytes} bytes in {dec.resyncs} "
                        f"place(s): {what}", "warning", bytes=dec.skipped_bytes)
        if len(dec) == 0:
            return 0
        counters, restarted = self.unwrap.unwrap(dec.seq)
        if restarted:
            if self._last_counter is not None:
                self._event("counter_reset", f"sample counter went back to {int(counters[0])}: "
                            "device restarted", "warning")
            self._release_held(force=True)  # they belong to the old count
            self.clock.reset()
            self._last_counter = None
        prev = self._last_counter
        steps = np.diff(counters, prepend=counters[0] - 1 if prev is None else prev)
        gaps = np.flatnonzero(steps > 1)
        if len(gaps):
            missing = int((steps[gaps] - 1).sum())
            st.missing_samples += missing
            first_missing = int(counters[gaps[0]] - steps[gaps[0]] + 1)
            self._event("data_gap", f"{missing} samples missing in {len(gaps)} gap(s) of the "
                        f"sample counter, first at {first_missing}", "warning",
                        missing_samples=missing, first_missing=first_missing,
                        gap_s=missing / self.rate_hz)
        self._last_counter = int(counters[-1])
        self._held.append((counters, dec.channels))
        if self.clock.observe(self._last_counter, arrival_ns):
            self._release_held()
        return len(counters)

    async def _connect(self) -> bool:
        now = time.monotonic()
        if not self.backoff.due(now):
            await asyncio.sleep(min(self.backoff.next_try - now, 0.5))
            return False
        try:
            self.port.open()
        except OSError as e:
            delay = self.backoff.failed(time.monotonic())
            self._fault("disconnected", f"{e}; retry in {delay:.1f} s")
            return False
        self.codec.reset()
        self.status.connects += 1
        return True

    def _recovered(self) -> None:
        st = self.status
        if st.state == "stale":
            return
        if st.state == "down":
            gap_s = (time.time_ns() - self._last_ok_ns) / 1e9 if self._last_ok_ns else 0.0
            log.info("%s/%s: stream back after %.2f s", self.rig, self.name, gap_s)
            self._event("device_recovered", f"stream flowing again after {gap_s:.2f} s")
        st.state = "ok"
        self.backoff.succeeded()

    async def run(self) -> None:
        """Read, decode and publish until cancelled."""
        loop = asyncio.get_running_loop()
        self._block_started = loop.time()
        prev_arrival = time.time_ns()
        try:
            while True:
                if not self.port.is_open and not await self._connect():
                    continue
                try:
                    data = await self.port.read(self.silence_timeout_s)
                except PortClosedError as e:
                    self.port.close()
                    self.backoff.failed(time.monotonic())
                    self._fault("disconnected", f"port closed: {e}")
                    continue
                arrival = time.time_ns()
                self.status.polls += 1
                if not data:
                    self.emit()  # what came before the silence should not wait for more
                    self._fault("silent", f"no data for {self.silence_timeout_s:g} s")
                    continue
                n = self.process(data, arrival)
                if n:
                    self._recovered()
                now = loop.time()
                if now - self._block_started >= self.block_s:
                    self._publish_block()  # held samples wait for the clock
                    self._block_started = now
                behind = n > (arrival - prev_arrival) * 1e-9 * self.rate_hz
                prev_arrival = arrival
                if not behind:
                    # keeping up: let bytes gather for fewer, larger reads. More samples than
                    # the time since the last read allows are (part of) a backlog: read on at
                    # once, so that it drains as fast as the port gives it.
                    await asyncio.sleep(self.read_interval_s)
        finally:
            self.emit()
            self.port.close()
