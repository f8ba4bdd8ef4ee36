"""PLC timestamps from the PLC's own clock, on synthetic polls built from a known truth.

Truth: the PLC's register counts milliseconds of its own clock; the scan showing tick ``c``
was taken at ``τ(c) = a + (c − c_base)·T`` with ``T = 1 ms·(1 + ppm·1e-6)``. A cyclic task
scans every ``SCAN`` ticks (10 ms) and its image is visible from the scan's time on. Poll
``k`` is sent at ``q_k`` (every 9.7 ms, plus up to 2 ms of scheduling jitter), reaches the
PLC after 0.2–1 ms, which answers with the latest scan visible then, and the reply arrives
0.3–1.1 ms later, at ``A_k``. So ``j_k = A_k − τ(c_k) ≥ 0.3 ms`` (the scan's age plus the
reply's way), and the polls sometimes show the same scan twice and sometimes skip one.
The register is a uint16: it wraps every 65.536 s.

Each new scan is one read of one sample for the clock (:class:`drivers.stream_clock.StreamClock`),
so its guarantees (tests/unit/test_stream_clock.py) hold for every stamped poll, with
``e = ts − τ(c)``, ``δ = P − T`` (the clock's period error), σ the slew, B the bucket and R
the offset window in counts, ``c_out``/``e_out`` the previous stamp:

(C) causal: ``ts ≤ A_k``, no slack; the first poll is stamped exactly ``A_0``.
(M) strictly increasing.
(D) one sample per scan: a poll showing the previous poll's scan gets no timestamp; every
    other poll gets one, and its unwrapped counter is the true tick (past 2¹⁶).
(U) ``e ≤ max(Ū, e_out − (c − c_out)·(σ·T − |δ|)) + ½`` with
    ``Ū = min_{i∈S} [j_i + |δ|·(c − c_i + B) + δ_b·B]`` over S, the confirmed polls of the
    last ``R − B`` counts and this one: the timestamp is the scan's time plus the least
    delay seen recently (a fresh scan answered fast).
(L) ``e ≥ min(e_out, −|δ|·H) − ½`` with ``H`` the last ``R + B`` counts (since the start,
    until the first refit): never earlier than the truth but for the period error.

The request/reply midpoint, for comparison, is off by ``(A − q)/2`` either way plus the
scan's age when the request reached the PLC (less than one scan period): exactly what the
README says of devices without a time register.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from daq.acquisition.polling import DeviceAcquisition
from daq.bus import SampleBus, Tagged
from daq.events import Event
from drivers.modbus import ModbusPoller
from drivers.plc_time import PlcClock, TimeRegister
from drivers.registers import RegisterField

T_NOM = 1e6  # ns per count: a millisecond clock
WRAP = 1 << 16
T0 = 1_700_000_000_000_000_000  # host ns at c_base
SCAN = 10  # ticks between scans: a 10 ms cyclic task
POLL_NS = 9_700_000  # polls every 9.7 ms: a little faster than the scan


@dataclass
class Plc:
    """A PLC clock and the polls made of it (host times relative to T0)."""

    ppm: float
    c_base: int = WRAP - 5_000  # the register wraps 5 s in
    polls: list[tuple[int, int, int]] = field(default_factory=list)  # (true tick, sent, arrival)

    @property
    def period(self) -> float:
        return T_NOM * (1 + self.ppm * 1e-6)

    def tau(self, c) -> np.ndarray:
        """True time of the scan showing tick ``c``, ns relative to T0."""
        return (np.asarray(c, dtype=np.int64) - self.c_base).astype(np.float64) * self.period

    def shown(self, at_ns: float) -> int:
        """The tick of the latest scan visible at host time ``at_ns``."""
        return self.c_base + SCAN * int(at_ns // (SCAN * self.period))

    def poll(self, start_ns: float, seconds: float, rng: np.random.Generator) -> None:
        for k in range(round(seconds * 1e9 / POLL_NS)):
            sent = start_ns + k * POLL_NS + rng.uniform(0, 2e6)
            served = sent + rng.uniform(0.2e6, 1e6)
            c = self.shown(served)
            arrival = int(np.ceil(served + 0.1e6 + rng.uniform(0.2e6, 1e6)))
            self.polls.append((c, int(sent), arrival))


@dataclass
class Result:
    ticks: np.ndarray  # true tick of every stamped poll
    errors: np.ndarray  # ts − τ
    j: np.ndarray  # A − τ of every stamped poll
    stamped_at: np.ndarray  # index into plc.polls of every stamped poll
    drift: np.ndarray  # drift_ppm after each stamp


def _feed(clock: PlcClock, plc: Plc) -> Result:
    """Poll as the acquisition does; assert (C), (M), (D), (U), (L) on every poll."""
    sc = clock.clock
    T = plc.period
    B, R, sigma = sc.bucket, sc.offset_window, sc.slew
    polls = plc.polls
    new = np.array([k == 0 or polls[k][0] != polls[k - 1][0] for k in range(len(polls))])
    ends = np.array([p[0] for p, n in zip(polls, new, strict=True) if n], dtype=np.int64)
    arrivals = np.array([p[2] for p, n in zip(polls, new, strict=True) if n], dtype=np.int64)
    j = arrivals - plc.tau(ends)
    # by construction: a reply leaves ≥ 0.2 ms after the scan it shows and travels 0.3–1.1 ms; the scan
    # shown is at most one scan period old when served, served ≤ 1 ms after sending
    assert j.min() >= 0.3e6 and j.max() <= SCAN * plc.period + 1e6 + 1.1e6 + 1
    live = np.zeros(len(ends), dtype=bool)  # confirmed by the next stamped poll, whatever P is
    live[:-1] = np.diff(ends) * T_NOM * (1 + 1e-3) <= np.diff(arrivals) + sc.backlog_tol_ns
    dk = np.empty(len(ends))
    d0 = abs(sc.period_ns - T)
    drift = np.empty(len(ends))
    errors = np.empty(len(ends))
    stamped_at = np.flatnonzero(new)
    out: tuple[int, float] | None = None
    last_ts = None
    k = -1
    for i, (c, _sent, arrival) in enumerate(polls):
        ts = clock.stamp(c % WRAP, T0 + arrival)
        # (D)
        if not new[i]:
            assert ts is None, f"poll {i}: the previous poll's scan stamped again"
            continue
        assert ts is not None, f"poll {i}: a new scan not stamped"
        k += 1
        assert clock.count - (ends[0] % WRAP) == c - ends[0], f"poll {i}: unwrapped counter off"
        delta = sc.period_ns - T
        dk[k] = abs(delta)
        drift[k] = sc.drift_ppm
        e = float(ts - T0) - float(plc.tau(c))
        errors[k] = e
        # (C), (M)
        assert ts <= T0 + arrival, f"poll {i}: stamped after its reply arrived"
        assert last_ts is None or ts > last_ts, f"poll {i}: not increasing"
        last_ts = ts
        if out is None:
            assert ts == T0 + arrival  # anchored on the first reply
        else:
            c_out, e_out = out
            lo = np.searchsorted(ends, c - R + B)
            window = np.arange(lo, k)
            S = np.concatenate([window[live[window]], [k]])
            lo2 = np.searchsorted(ends, c - R - 2 * B)
            d_b = max(dk[max(lo2 - 1, 0) : k + 1].max(), d0 if lo2 == 0 else 0.0)
            U = np.min(j[S] + abs(delta) * (c - ends[S] + B) + d_b * B)
            slewed = e_out - (c - c_out) * (sigma * T - abs(delta))
            bound = max(U, slewed) + 0.5
            assert e <= bound, f"poll {i}: error {e:.1f} ns above the bound {bound:.1f}"
            H = c - (ends[0] if c < ends[0] + 2 * B else c - R - B)
            floor = min(e_out, -abs(delta) * H) - 0.5
            assert e >= floor, f"poll {i}: error {e:.1f} ns below {floor:.1f}"
        out = (c, e)
    return Result(ends, errors, j, stamped_at, drift)


@pytest.mark.parametrize("ppm", [40.0, -25.0])
def test_a_jittered_millisecond_clock_wrapping_its_uint16(ppm):
    """70 s of 103 Hz polls of a 10 ms scan, the uint16 register wrapping 5 s in.

    (C), (M), (D), (U), (L) hold on every poll. Some polls show the previous scan (no
    timestamp), some skip one; the unwrapped tick runs on past 2¹⁶ without a re-anchor.
    From 10 s on, every timestamp is at most the least recent delay late and never early
    but for the period error (0 ± |δ|·(R + B)). The midpoint of the same polls is off by
    up to half the round trip either way plus up to one scan late, bounds it reaches.
    """
    plc = Plc(ppm)
    plc.poll(0.0, 70.0, np.random.default_rng(12))
    clock = PlcClock(unit_s=1e-3, wrap=WRAP, tolerance_s=1.5)
    res = _feed(clock, plc)
    assert clock.restarts == 0 and clock.repeats == len(plc.polls) - len(res.ticks) > 100
    assert np.sum(np.diff(res.ticks) > SCAN) > 100  # skipped scans too
    assert res.ticks[0] < WRAP < res.ticks[-1]
    # the midpoint, for comparison
    c, sent, arrival = (np.array(x, dtype=np.float64) for x in zip(*plc.polls, strict=True))
    mid = np.floor((sent + arrival) / 2) - plc.tau(c)
    half_rtt = (arrival - sent) / 2
    assert np.all(mid >= -half_rtt - 1) and np.all(mid <= half_rtt + SCAN * plc.period)
    steady = res.ticks >= plc.c_base + 10_000
    assert np.abs(mid[res.stamped_at][steady]).max() > 5 * np.abs(res.errors[steady]).max()


def test_drift_of_the_plc_clock_is_found():
    """+40 ppm: the estimate after 60 s is within the bound of the hull fit (as for streams).

    With one reply per 10 ms scan the envelope is coarser than a stream's: the least delay per
    0.1 s bucket is the best of about ten polls. Within 5 ppm of the truth after 60 s.
    """
    plc = Plc(40.0)
    plc.poll(0.0, 70.0, np.random.default_rng(3))
    res = _feed(PlcClock(unit_s=1e-3, wrap=WRAP), plc)
    late = res.ticks >= plc.c_base + 60_000
    assert np.abs(res.drift[late] - 40.0).max() <= 5.0


def test_a_gap_longer_than_half_a_wrap_is_unwrapped_from_the_host_time():
    """The PLC is unreachable for 40 s, then 100 s (uint16 ms: half a wrap is 32.8 s).

    Modulo 2¹⁶ alone the 40 s would read as the tick going back 25.5 s, the 100 s as 34.5 s
    ahead; the whole wraps come from the host time elapsed, so the counter runs on (no
    re-anchor) and every bound holds across both gaps.
    """
    plc = Plc(0.0)
    rng = np.random.default_rng(5)
    plc.poll(0.0, 5.0, rng)
    plc.poll(45e9, 5.0, rng)
    plc.poll(150e9, 5.0, rng)
    clock = PlcClock(unit_s=1e-3, wrap=WRAP, tolerance_s=1.5)
    res = _feed(clock, plc)
    assert clock.restarts == 0
    assert res.ticks[-1] - res.ticks[0] > 150_000


def _stamp_all(clock: PlcClock, polls) -> list[int | None]:
    return [clock.stamp(raw, T0 + arrival) for raw, arrival in polls]


def test_a_restarted_plc_re_anchors_keeping_the_drift():
    """The tick goes back to 0 (power cycle): the clock re-anchors on the first reply after.

    Timestamps go on increasing; the first after the restart is its reply's arrival (or
    1 ns after the last one given); the drift estimate survives the restart.
    """
    plc = Plc(40.0, c_base=30_000)
    plc.poll(0.0, 10.0, np.random.default_rng(7))
    clock = PlcClock(unit_s=1e-3, wrap=WRAP)
    res = _feed(clock, plc)
    drift, before = clock.clock.drift_ppm, clock.raw
    assert before == res.ticks[-1] and drift != 0.0
    last = T0 + round(res.errors[-1] + float(plc.tau(res.ticks[-1])))  # the last timestamp given
    after = [(0, 12_000_000_000), (10, 12_010_400_000), (20, 12_020_300_000)]
    ts = _stamp_all(clock, after)
    assert clock.restarts == 1 and clock.jump[:2] == (before, 0)
    assert ts[0] == T0 + after[0][1] > last and ts[0] < ts[1] < ts[2] <= T0 + after[2][1]
    assert clock.clock.drift_ppm == drift
    assert clock.count == 20


def test_a_plc_stopped_and_started_again_re_anchors():
    """The PLC is stopped for 3 s (a scan counter stands still, then runs on from there).

    While stopped every poll shows the same scan: no timestamp. After, the tick advanced
    10 counts in 3 s: more than tolerance_s (1.5 s) off the host time, so the clock re-anchors
    instead of stamping the new scans 3 s early.
    """
    clock = PlcClock(unit_s=1e-3, wrap=WRAP, tolerance_s=1.5)
    t = 0
    polls = []
    for k in range(200):  # 2 s running
        t = k * 10_000_000 + 400_000
        polls.append((1000 + 10 * k, t))
    frozen = polls[-1][0]
    polls += [(frozen, t + 10_000_000 * i) for i in range(1, 301)]  # stopped: 3 s
    t = polls[-1][1]
    polls += [(frozen + 10 * i, t + 10_000_000 * i) for i in range(1, 4)]  # running again
    ts = _stamp_all(clock, polls)
    assert all(x is None for x in ts[200:500]) and clock.repeats == 300
    assert clock.restarts == 1
    assert ts[500] == T0 + polls[500][1]  # anchored on the first reply after the stop


def test_a_plc_frozen_then_caught_up_is_no_restart():
    """The image freezes for 2.5 s (a hung scan) and resumes where its clock is by then.

    The tick's advance matches the host time: no re-anchor; the frozen polls are repeats.
    """
    clock = PlcClock(unit_s=1e-3, wrap=WRAP, tolerance_s=1.5)
    polls = [(100 + 10 * k, k * 10_000_000 + 500_000) for k in range(100)]
    polls += [(polls[-1][0], polls[-1][1] + 10_000_000 * i) for i in range(1, 251)]
    polls += [(100 + 10 * k, k * 10_000_000 + 500_000) for k in range(350, 360)]
    ts = _stamp_all(clock, polls)
    assert clock.restarts == 0 and clock.repeats == 250
    stamped = [x for x in ts if x is not None]
    assert len(stamped) == 110 and np.all(np.diff(stamped) > 0)
    assert stamped[-1] <= T0 + polls[-1][1]


# -- the acquisition -------------------------------------------------------------------

FIELDS = [
    RegisterField("force", "holding", 0, "int16", scale=0.5),
    RegisterField("tick", "holding", 1, "uint32", "CDAB"),
]


class FakePlc:
    """A transport answering one request (holding 0..2) from a script of (tick, force),
    advancing a fake host clock by the request's and the reply's way."""

    def __init__(self, script, start_ns: int = T0):
        self.script = list(script)
        self.connected = True
        self.now = start_ns
        self.sent: list[int] = []
        self.arrived: list[int] = []

    async def connect(self):
        return True

    def close(self):
        pass

    async def read(self, table, address, count, unit):
        assert (table, address, count) == ("holding", 0, 3)
        tick, force = self.script.pop(0)
        self.sent.append(self.now)
        self.now += 700_000  # round trip 0.7 ms
        self.arrived.append(self.now)
        return [round(force / 0.5) & 0xFFFF, tick & 0xFFFF, tick >> 16]  # CDAB: low word first

    def clock(self) -> int:
        return self.now


def _acq(transport, time_register=None, **kw):
    bus = SampleBus()
    sub = bus.subscribe("t")
    acq = DeviceAcquisition("rig", ModbusPoller("plc", transport, FIELDS), bus, poll_hz=100, block_s=1.0,
                            time_register=time_register, **kw)
    acq._now = transport.clock
    return acq, sub


def _drain(sub):
    blocks, events = [], []
    while (x := sub.get_nowait()) is not None:
        if isinstance(x, Tagged):
            blocks.append(x.block)
        elif isinstance(x, Event):
            events.append(x)
    return blocks, events


@pytest.mark.parametrize("latency_ns", [0, 300_000])
async def test_acquisition_stamps_from_the_tick_and_stores_each_scan_once(latency_ns):
    """A 1 ms tick past 2¹⁶ (uint32, CDAB), a 10 ms scan polled every 10 ms with a constant
    0.7 ms round trip; every third scan comes late, so that poll shows the previous scan
    again and the next one skips ahead.

    Each scan is stored once and repeats count in ``repeated_scans``. Every reply came as
    early after its scan as any, so the line goes through all of them: each timestamp is
    exactly its reply's arrival (less the calibrated latency, if any), and they are spaced
    by tick differences × 1 ms exactly.
    """
    script = []
    for k in range(30):
        script.append((script[-1][0] if k % 3 == 2 else 70_000 + 10 * (k + 1), float(k)))
    plc = FakePlc(script)
    acq, sub = _acq(plc, TimeRegister("tick", 1e-3, 1 << 32, latency_ns=latency_ns))
    for _ in range(30):
        await acq.poll_once()
        plc.now += 9_300_000
    acq.emit()
    [block], events = _drain(sub)
    assert events == []
    kept = [k for k in range(30) if k % 3 != 2]
    np.testing.assert_array_equal(block.channels["force"], np.array(kept, dtype=float))
    ticks = block.channels["tick"]
    assert list(ticks) == [s[0] for k, s in enumerate(script) if k % 3 != 2]
    assert acq.status.samples == 20 and acq.status.repeated_scans == 10 and acq.status.polls == 30
    t = block.t_ns
    np.testing.assert_array_equal(t, [plc.arrived[k] - latency_ns for k in kept])
    np.testing.assert_array_equal(np.diff(t), np.diff(ticks) * 1_000_000)
    assert acq.status.last_sample_ns == t[-1]


async def test_a_frozen_tick_is_the_heartbeat_and_a_jump_back_re_anchors():
    """No heartbeat configured: the time register is it. Frozen 1.5 s (stale_after_s 1): a
    ``device_stale`` event and nothing stored meanwhile; moving again: ``device_recovered``.
    Then the tick goes back (PLC restarted): a ``counter_reset`` event, timestamps go on."""
    script = [(1000 + 10 * k, 1.0) for k in range(50)]
    script += [(script[-1][0], 1.0)] * 150
    script += [(3000 + 10 * k, 2.0) for k in range(1, 30)]
    script += [(5 + 10 * k, 3.0) for k in range(20)]
    plc = FakePlc(script)
    acq, sub = _acq(plc, TimeRegister("tick", 1e-3, 1 << 32, tolerance_s=1.5), stale_after_s=1.0)
    assert acq.heartbeat == "tick"
    for _ in range(len(script)):
        await acq.poll_once()
        plc.now += 9_300_000
        if acq._n >= 10:
            acq.emit()
    acq.emit()
    blocks, events = _drain(sub)
    assert [e.kind for e in events] == ["device_stale", "device_recovered", "counter_reset"]
    assert events[0].message == "tick has not changed for 1 s: device hung?"
    assert events[2].message.startswith("tick went from 3290 to 5 where about ")
    t = np.concatenate([b.t_ns for b in blocks])
    ticks = np.concatenate([b.channels["tick"] for b in blocks])
    expected = [*range(1000, 1500, 10), *range(3010, 3300, 10), *range(5, 200, 10)]
    assert list(ticks) == expected and len(t) == len(expected) and acq.status.repeated_scans == 150
    assert np.all(np.diff(t) > 0)
    assert acq.status.state == "ok"


async def test_without_a_time_register_the_poll_is_stamped_at_its_midpoint():
    plc = FakePlc([(10 * k, 1.0) for k in range(5)] + [(40, 1.0)])
    acq, sub = _acq(plc)
    for _ in range(6):
        await acq.poll_once()
        plc.now += 9_300_000
    acq.emit()
    [block], _ = _drain(sub)
    np.testing.assert_array_equal(block.t_ns, [(s + a) // 2 for s, a in zip(plc.sent, plc.arrived, strict=True)])
    assert acq.status.repeated_scans == 0 and len(block) == 6  # a repeated tick means nothing here


def test_time_register_must_share_the_only_request():
    fields = [*FIELDS, RegisterField("count", "input", 0, "uint16")]
    with pytest.raises(ValueError, match=r"plc: time register 'tick' must be read in the same request as every "
                                         r"other field \(the plan has 2\)"):
        DeviceAcquisition("rig", ModbusPoller("plc", FakePlc([]), fields), SampleBus(), 100,
                          time_register=TimeRegister("tick", 1e-3, 1 << 32))
