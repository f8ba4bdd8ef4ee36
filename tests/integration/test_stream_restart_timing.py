"""A restart onto an instrument that kept streaming: real simulator, real pty, real acquisition.

The press's amplifier simulator streams 10 kHz frames into a pseudo-terminal and records
the true time of every frame (its truth hook). A first acquisition reads it for 2 s and
stops; for 1.5 s nobody reads while the instrument keeps sending into its output buffer;
a second acquisition opens the port onto that backlog and reads on for 2 s. Its first
second holds the whole backlog (back-dated from the counter) and the clock's anchoring.

What is checked, exactly:

* nothing lost: the second run's counters continue the first's without a gap, and every
  frame the instrument sent before the second run stopped reading was delivered once;
* the backlog is real: the second run's first read held samples taken more than 1 s
  before it arrived;
* every timestamp the second run published is within the bounds the clock guarantees:
  the reads it really made (counters and arrival times, as the acquisition handed them to
  its clock) are replayed against the simulator's truth through the unit tests' checker
  (:func:`tests.unit.test_stream_clock._feed`: causal, strictly increasing, slewed, and
  the upper and lower error bounds (U) and (L) derived there), and the replay's
  timestamps are the published ones to the nanosecond.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import tests.unit.test_stream_clock as tsc
from daq.acquisition.stream import StreamAcquisition
from daq.bus import SampleBus, Tagged
from daq.config import load_rig
from daq.simulators import build_simulator, device_path
from drivers.serial_port import SerialPort
from drivers.stream import FrameCodec
from drivers.stream_clock import StreamClock
from tests.conftest import ROOT

DEVICE = "press01_amp"


class _Frames:
    """The truth hook's frames of one device: counter → true time (host ns)."""

    def __init__(self):
        self.counters: list[np.ndarray] = []
        self.truth: list[np.ndarray] = []

    def __call__(self, kind, device, columns):
        if kind == "frames" and device == DEVICE:
            self.counters.append(columns["counter"])
            self.truth.append(columns["truth_ns"])

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.counters), np.concatenate(self.truth)


class _TruthScenario(tsc.Scenario):
    """The reads the acquisition made, with the simulator's truth (relative to ``tsc.T0``)."""

    def __init__(self, counters: np.ndarray, truth_ns: np.ndarray, t0: int, rate: float):
        super().__init__(ppm=0.0, rate=rate)
        self._c0 = int(counters[0])
        self._rel = (truth_ns - t0).astype(np.float64)
        assert np.all(np.diff(counters) == 1), "the truth covers every counter once"
        # the simulated rig clock is exactly linear in the counter (to the ns rounding)
        self._period = (self._rel[-1] - self._rel[0]) / (len(counters) - 1)

    @property
    def period(self) -> float:
        return self._period

    def tau(self, c) -> np.ndarray:
        return self._rel[np.asarray(c, dtype=np.int64) - self._c0]


class _Recorded(StreamAcquisition):
    """The acquisition as the service builds it; it also keeps what its clock was given."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reads: list[tuple[int, int, int]] = []  # (first counter, last counter, arrival ns)
        observe = self.clock.observe

        def recording_observe(c: int, arrival_ns: int) -> bool:
            # :meth:`process` holds a read's samples, then tells the clock its last counter
            self.reads.append((int(self._held[-1][0][0]), c, arrival_ns))
            return observe(c, arrival_ns)

        self.clock.observe = recording_observe


async def _read_for(acq: StreamAcquisition, seconds: float) -> None:
    task = asyncio.create_task(acq.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.timeout(60)
async def test_first_second_after_a_restart_onto_a_streaming_instrument_is_within_the_bound(
        tmp_path, monkeypatch):
    rig = load_rig(ROOT / "configs" / "rigs" / "screw-press.toml")
    dev = next(d for d in rig.devices if d.name == DEVICE)
    sim = build_simulator(rig, tmp_path, truth_dir=None)
    frames = _Frames()
    sim.set_truth_sink(frames)
    await sim.start()
    try:
        bus = SampleBus()
        sub = bus.subscribe("test", maxsize=100_000)
        link = str(device_path(dev.port, tmp_path))

        def acquisition() -> _Recorded:
            # no calibrated latency here: the truth is the reference, so every read's delay
            # over its last sample's truth is ≥ 0 and the bounds need no calibration term
            return _Recorded(rig.name, DEVICE, SerialPort.at(link, dev.baudrate),
                             FrameCodec(dev.stream_channels()), dev.sample_rate_hz, bus, dev.block_s,
                             dev.silence_timeout_s, dev.reconnect_max_s, dev.stuck_after_s)

        first = acquisition()
        await _read_for(first, 2.0)
        first_blocks = _drain(sub)
        await asyncio.sleep(1.5)  # nobody reads; the instrument keeps streaming
        second = acquisition()
        second.resume_after(first._last_counter)
        assert not second.restore_clock(first.clock_state())  # 2 s is too short a fit to keep
        await _read_for(second, 2.0)
        second_blocks = _drain(sub)
    finally:
        await sim.stop()

    c1 = np.concatenate([b.channels["sample"] for b in first_blocks])
    c2 = np.concatenate([b.channels["sample"] for b in second_blocks])
    ts2 = np.concatenate([b.t_ns for b in second_blocks])
    assert second.status.missing_samples == first.status.missing_samples == 0
    # nothing lost: one count from the first run's first sample to the second run's last
    np.testing.assert_array_equal(np.concatenate([c1, c2]), np.arange(c1[0], c2[-1] + 1))
    sent, truth_ns = frames.arrays()
    assert c2[-1] <= sent[-1]

    # the second run opened onto a backlog: its first read held samples over 1 s old
    r_first, r_last, r_arrival = second.reads[0]
    i = np.searchsorted(sent, [r_first, r_last])
    assert r_first == c1[-1] + 1
    assert r_arrival - truth_ns[i[0]] > 1_000_000_000

    # replay what the second run's clock was given, against the truth, with every bound checked
    t0 = int(truth_ns[0])
    monkeypatch.setattr(tsc, "T0", t0)
    upto = np.searchsorted(sent, c2[-1], side="right")
    sc = _TruthScenario(sent[:upto], truth_ns[:upto], t0, dev.sample_rate_hz)
    sc.reads = [(np.arange(a, b + 1, dtype=np.int64), arrival - t0) for a, b, arrival in second.reads]
    np.testing.assert_array_equal(np.concatenate([r[0] for r in sc.reads]), c2)
    replay = StreamClock(dev.sample_rate_hz)
    res = tsc._feed(replay, sc, latency_ns=0)
    np.testing.assert_array_equal(res.counters, c2)
    np.testing.assert_array_equal((ts2 - t0).astype(np.float64) - sc.tau(c2), res.errors)
    # the backlog was held and back-dated in the anchoring call (its bound is the least delay of
    # all the reads held, live ones included), not stamped as it arrived
    assert res.ready_at > 0


def _drain(sub) -> list:
    out = []
    while (item := sub.get_nowait()) is not None:
        if isinstance(item, Tagged):
            out.append(item.block)
    return out
