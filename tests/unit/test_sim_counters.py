"""Simulated instruments keep counting across restarts, as real ones do (no network, no pty)."""

import json

import numpy as np

from daq.acquisition.stream import StreamAcquisition
from daq.bus import SampleBus, Tagged
from daq.config import load_rig
from daq.events import Event
from daq.simulators import build_simulator, counter_origin_file
from drivers.sim.rig import counter_origins
from drivers.stream import FrameCodec
from tests.conftest import ROOT

T0 = 1_700_000_000_000_000_000  # a wall-clock time, ns


def test_the_origin_is_written_once_and_kept(tmp_path):
    path = tmp_path / "sim" / "rig.json"
    assert counter_origins(path, {"amp": 10_000.0}, T0) == {"amp": T0}
    written = path.read_text()
    assert json.loads(written) == {"streams": {"amp": {"origin_ns": T0, "rate_hz": 10_000.0}}}
    # a later start keeps the origin and leaves the file alone; a new stream gets its own
    assert counter_origins(path, {"amp": 10_000.0}, T0 + 5 * 10**9) == {"amp": T0}
    assert path.read_text() == written
    assert counter_origins(path, {"amp": 10_000.0, "b": 500.0}, T0 + 7 * 10**9) == {
        "amp": T0, "b": T0 + 7 * 10**9}
    assert not list(path.parent.glob("*.tmp"))


def test_a_new_rate_a_future_origin_or_a_damaged_file_start_the_count_afresh(tmp_path):
    path = tmp_path / "rig.json"
    counter_origins(path, {"amp": 10_000.0}, T0)
    assert counter_origins(path, {"amp": 20_000.0}, T0 + 10**9) == {"amp": T0 + 10**9}  # reconfigured
    assert counter_origins(path, {"amp": 20_000.0}, T0) == {"amp": T0}  # host clock set back
    path.write_text('{"streams": {"amp": {"origin_ns": ')
    assert counter_origins(path, {"amp": 20_000.0}, T0 + 3) == {"amp": T0 + 3}
    assert json.loads(path.read_text())["streams"]["amp"]["origin_ns"] == T0 + 3


def _press(tmp_path):
    rig = load_rig(ROOT / "configs" / "rigs" / "screw-press.toml")
    sim = build_simulator(rig, tmp_path)  # builds the faces, opens nothing
    return rig, sim


class _Capture:
    """Stands in for the pty: keeps what the instrument sent."""

    is_open = True

    def __init__(self):
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data


def test_a_restarted_simulator_numbers_samples_by_the_time_since_its_origin(tmp_path):
    rig, sim = _press(tmp_path)
    amp = sim.streams["press01_amp"]
    ppm = rig.simulation.clock_ppm
    assert amp.face.rate_hz == 10_000 and ppm == 40.0
    path = counter_origin_file(rig, tmp_path)
    sim.continue_counters(T0)  # the first start ever: counting from 0
    assert amp.offset == 0 and counter_origins(path, {"press01_amp": 10_000.0}, T0) == {"press01_amp": T0}
    _, again = _press(tmp_path)  # a later process, 1000 s on: the rig clock runs 40 ppm fast
    again.continue_counters(T0 + 1000 * 10**9)
    assert again.streams["press01_amp"].offset == 10_000 * 1000 + 400
    # the model itself is not moved on: same blow timing as any fresh start
    assert again.model.step_count == sim.model.step_count == 0


def test_a_big_offset_wraps_the_32_bit_counter_and_resume_unwraps_it(tmp_path):
    rig, sim = _press(tmp_path)
    amp = sim.streams["press01_amp"]
    amp.link = _Capture()
    # the instrument has been counting for ≈5 days: 3·2³² − 50 samples after its origin it
    # restarts (rate 10 kHz on a clock 40 ppm fast)
    due = 3 * 2**32 - 50
    elapsed_ns = round(due / (10_000 * (1 + 40e-6)) * 1e9)
    counter_origins(counter_origin_file(rig, tmp_path), {"press01_amp": 10_000.0}, T0)
    sim.continue_counters(T0 + elapsed_ns)
    assert amp.offset == due
    for _ in range(10):
        sim._advance(sim._steps_per_ms)  # 10 ms of the model: 100 samples
    codec = FrameCodec(amp.face.channels)
    sent = codec.feed(bytes(amp.link.data)).seq
    expected = np.arange(due, due + 100)
    np.testing.assert_array_equal(sent, expected % 2**32)  # on the wire: uint32, wrapped
    assert sent[0] > sent[-1]

    # the previous service run committed up to 3·2³² − 80 (unwrapped) before it was killed
    bus = SampleBus()
    sub = bus.subscribe("t")
    acq = StreamAcquisition(rig.name, "press01_amp", port=None, codec=FrameCodec(amp.face.channels),
                            rate_hz=10_000, bus=bus)
    saved = due - 30
    acq.resume_after(saved)
    assert acq.process(bytes(amp.link.data), 1_000_000_000) == 100
    acq.emit()
    items = []
    while (x := sub.get_nowait()) is not None:
        items.append(x)
    events = [x for x in items if isinstance(x, Event)]
    assert [e.kind for e in events] == ["data_gap"]
    assert events[0].fields["missing_samples"] == 29 and events[0].fields["first_missing"] == saved + 1
    [block] = [x.block for x in items if isinstance(x, Tagged)]
    np.testing.assert_array_equal(block.channels["sample"], expected)  # unwrapped past 3·2³²
