"""Stream protocol codecs, counter unwrapping and the drift-correcting clock (no I/O)."""

import numpy as np
import pytest
from pymodbus.framer.rtu import FramerRTU

from daq.acquisition.stream import StreamAcquisition
from daq.bus import SampleBus, Tagged
from daq.events import Event
from drivers.stream import FrameCodec, LineCodec, StreamChannel, crc16_modbus_rows
from drivers.stream_clock import CounterUnwrapper, StreamClock

CHANNELS = [StreamChannel("force_1", "float32"), StreamChannel("position", "int32", scale=0.001)]
# seq 1, force_1 = 1.0, position = 12.345 mm (12345 µm): bytes written out by hand
FRAME = bytes.fromhex("A55A" "01000000" "0000803F" "39300000" "9E97")


def test_frame_transcript_encodes_and_decodes():
    codec = FrameCodec(CHANNELS)
    assert codec.frame_len == 16
    assert codec.encode(np.array([1]), {"force_1": np.array([1.0]), "position": np.array([12.345])}) == FRAME
    d = codec.feed(FRAME)
    assert list(d.seq) == [1] and d.channels["force_1"][0] == 1.0
    assert d.channels["position"][0] == pytest.approx(12.345)
    assert d.skipped_bytes == 0 and d.resyncs == 0


def test_crc_matches_pymodbus_for_random_rows_of_odd_and_even_length():
    rng = np.random.default_rng(3)
    for m in (1, 2, 13, 26, 57):
        rows = rng.integers(0, 256, (40, m), dtype=np.uint8)
        ours = crc16_modbus_rows(rows)
        for row, crc in zip(rows, ours, strict=True):
            theirs = FramerRTU.compute_CRC(bytes(row))  # pymodbus returns it byte-swapped
            assert crc == ((theirs >> 8) | (theirs << 8)) & 0xFFFF


def _stream(n, start=0):
    codec = FrameCodec(CHANNELS)
    seq = np.arange(start, start + n)
    return codec.encode(seq, {"force_1": seq * 0.5, "position": seq * 0.001}), seq


def test_decoding_across_arbitrary_chunk_boundaries():
    data, seq = _stream(1000)
    codec = FrameCodec(CHANNELS)
    got = []
    rng = np.random.default_rng(0)
    pos = 0
    while pos < len(data):
        step = int(rng.integers(1, 700))
        got.append(codec.feed(data[pos:pos + step]))
        pos += step
    out = np.concatenate([g.seq for g in got])
    np.testing.assert_array_equal(out, seq)
    np.testing.assert_array_equal(np.concatenate([g.channels["force_1"] for g in got]), seq * 0.5)
    assert sum(g.skipped_bytes for g in got) == 0


def test_resync_after_garbage_and_a_corrupt_frame_costs_only_that_frame():
    data, _ = _stream(50)
    junk = b"\x00\xa5\x5a\xff garbage "
    bad = bytearray(junk + data)
    bad[len(junk) + 16 * 10 + 8] ^= 0x01  # one bit in frame 10's payload
    d = FrameCodec(CHANNELS).feed(bytes(bad))
    assert list(d.seq) == [i for i in range(50) if i != 10]
    assert d.skipped_bytes == len(junk) + 16 and d.resyncs == 2


def test_sync_bytes_inside_payload_do_not_fool_the_decoder():
    codec = FrameCodec([StreamChannel("x", "uint16")])
    seq = np.arange(300)
    data = codec.encode(seq, {"x": np.full(300, 0x5AA5)})  # payload is A5 5A on the wire
    d = codec.feed(data)
    np.testing.assert_array_equal(d.seq, seq)
    assert d.skipped_bytes == 0


def test_partial_frame_is_kept_for_the_next_chunk():
    codec = FrameCodec(CHANNELS)
    assert len(codec.feed(FRAME[:9])) == 0
    assert list(codec.feed(FRAME[9:]).seq) == [1]


def test_line_format():
    codec = LineCodec(CHANNELS)
    d = codec.feed(b"seq=7;force_1=1.5;position=2\r\nseq=8;force_1=oops;position=1\r\nseq=9;for")
    assert list(d.seq) == [7] and d.channels["force_1"][0] == 1.5 and d.channels["position"][0] == 0.002
    assert d.bad_lines == 1 and "oops" in d.notes[0]
    d = codec.feed(b"ce_1=3;position=5\r\n")
    assert list(d.seq) == [9] and d.channels["force_1"][0] == 3.0
    again = LineCodec(CHANNELS).feed(codec.encode(np.array([1, 2]), {"force_1": np.array([1.25, 2.5]),
                                                                   "position": np.array([0.5, 0.75])}))
    assert list(again.seq) == [1, 2]


def test_counter_unwrap_across_the_32_bit_wrap_and_restart():
    u = CounterUnwrapper()
    a, r = u.unwrap(np.array([2**32 - 2, 2**32 - 1, 0, 1], dtype=np.uint32))
    assert list(a) == [2**32 - 2, 2**32 - 1, 2**32, 2**32 + 1] and not r
    b, r = u.unwrap(np.array([5], dtype=np.uint32))
    assert list(b) == [2**32 + 5] and not r
    c, r = u.unwrap(np.array([3, 4], dtype=np.uint32))
    assert r and list(c) == [3, 4]


def _simulate_clock(ppm, seconds=120.0, rate=10_000, chunk=50, seed=0):
    rng = np.random.default_rng(seed)
    period = 1e9 / rate * (1 + ppm * 1e-6)
    clock = StreamClock(rate)
    t0 = 1_700_000_000_000_000_000
    c = 0
    errors = []
    held = []  # as the acquisition does: no timestamps until the clock has seen live reads
    for _ in range(int(seconds * rate / chunk)):
        counters = np.arange(c, c + chunk)
        c += chunk
        held.append(counters)
        true_last = t0 + counters[-1] * period
        if not clock.observe(int(counters[-1]), int(true_last + rng.uniform(0.1e6, 3e6))):  # 0.1–3 ms late
            continue
        counters = np.concatenate(held)
        held.clear()
        true = t0 + counters * period
        ts = clock.timestamps(counters)
        assert np.all(ts <= true_last + 3e6)
        errors.append(float((ts - true).mean()))
    return clock, np.array(errors)


@pytest.mark.parametrize("ppm", [-80.0, 0.0, 100.0])
def test_clock_follows_a_drifting_device(ppm):
    clock, errors = _simulate_clock(ppm)
    assert clock.drift_ppm == pytest.approx(ppm, abs=2.0)
    # after the first minute the timestamps stay within 0.5 ms of the truth; a clock
    # running on the nominal rate would be off by |ppm| × 120 s = up to 12 ms
    assert np.abs(errors[len(errors) // 2:]).max() < 0.5e6


def test_timestamps_are_strictly_increasing_across_updates():
    clock = StreamClock(1000)
    # 10 ms reads, 5 ms late: live from the second read on, timestamps once 0.2 s are confirmed
    c = 0
    while not clock.observe(c + 9, (c + 9) * 1_000_000 + 5_000_000):
        c += 10
    a = clock.timestamps(np.arange(0, c + 10))
    c += 10
    clock.observe(c + 9, (c + 9) * 1_000_000 + 1_000_000)  # arrived 4 ms earlier than predicted: the line moves down
    b = clock.timestamps(np.arange(c, c + 10))
    assert np.all(np.diff(np.concatenate([a, b])) > 0)
    assert b[-1] == (c + 9) * 1_000_000 + 1_000_000  # never later than it arrived: spread up to it


def test_gaps_in_the_counter_become_events_with_the_missing_count():
    bus = SampleBus()
    sub = bus.subscribe("t")
    acq = StreamAcquisition("rig", "amp", port=None, codec=FrameCodec(CHANNELS), rate_hz=1000, bus=bus)
    first, _ = _stream(100)
    second, _ = _stream(100, start=130)
    assert acq.process(first, 1_000_000_000) == 100
    assert acq.process(second, 1_200_000_000) == 100
    acq.emit()
    items = []
    while (x := sub.get_nowait()) is not None:
        items.append(x)
    [gap] = [x for x in items if isinstance(x, Event)]
    assert gap.kind == "data_gap"
    assert gap.fields["missing_samples"] == 30 and gap.fields["first_missing"] == 100
    [block] = [x.block for x in items if isinstance(x, Tagged)]
    assert list(block.channels["sample"][98:102]) == [98, 99, 130, 131]
    assert acq.status.missing_samples == 30


def test_stale_watch_marks_samples_after_the_value_stopped():
    from daq.acquisition.polling import StaleWatch

    w = StaleWatch(after_s=1.0)
    t = np.arange(0, 30) * 100_000_000  # 10 Hz for 3 s
    v = np.where(np.arange(30) < 10, np.arange(30), 9)  # moves for 1 s, then frozen
    mask, transition = w.update(t[:15], v[:15])
    assert not mask.any() and transition is None
    mask, transition = w.update(t[15:], v[15:])
    assert transition is True and list(np.flatnonzero(mask) + 15) == list(range(20, 30))
    mask, transition = w.update(np.array([3_100_000_000]), np.array([10]))
    assert transition is False and not mask.any()
