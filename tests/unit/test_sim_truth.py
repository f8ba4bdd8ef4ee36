"""The simulators' truth hook records exactly what they sent (no network, no pty)."""

import numpy as np

from daq.config import load_rig
from daq.simulators import build_simulator
from drivers.sim.truth import COLUMNS, load_truth
from drivers.stream import FrameCodec
from tests.conftest import ROOT


class _Capture:
    """Stands in for the pty: keeps what the instrument sent."""

    is_open = True
    queued_bytes = 0
    dropped_bytes = 0

    def __init__(self):
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data


class _Collect:
    def __init__(self):
        self.chunks: dict[tuple[str, str], list[dict]] = {}

    def __call__(self, kind, device, columns):
        assert list(columns) == list(COLUMNS[kind])
        assert all(v.dtype == np.int64 for v in columns.values())
        self.chunks.setdefault((kind, device), []).append(columns)

    def get(self, kind, device, column):
        return np.concatenate([c[column] for c in self.chunks.get((kind, device), [])] or [np.zeros(0, int)])


def _press(tmp_path, sink):
    rig = load_rig(ROOT / "configs" / "rigs" / "screw-press.toml")
    sim = build_simulator(rig, tmp_path, truth_dir=None)  # builds the faces, opens nothing
    sim.set_truth_sink(sink)
    amp = sim.streams["press01_amp"]
    amp.link = _Capture()
    return rig, sim, amp


async def test_every_frame_and_image_sent_is_recorded_once_with_its_true_time(tmp_path):
    got = _Collect()
    rig, sim, amp = _press(tmp_path, got)
    amp.offset = 2**32 - 120  # the counter wraps on the wire within the run
    sim._model_clock_at(0)
    chunks = [3, 1, 7, 2, 5]  # ms of model time per scan, as the real-time loop makes them
    for ms in chunks:
        sim._advance(ms * sim._steps_per_ms)

    sent = FrameCodec(amp.face.channels).feed(bytes(amp.link.data)).seq
    counters = got.get("frames", "press01_amp", "counter")
    truth = got.get("frames", "press01_amp", "truth_ns")
    assert len(sent) == len(counters) == amp.sent == sum(chunks) * 10  # 10 kHz: 10 frames a ms
    np.testing.assert_array_equal(counters % 2**32, sent.astype(np.int64))
    np.testing.assert_array_equal(counters, np.arange(2**32 - 120, 2**32 - 120 + len(sent)))
    # one sample every 100 µs of the rig's clock, which runs 40 ppm fast: 99.996 µs of host time
    step_ns = 1e5 / (1 + rig.simulation.clock_ppm * 1e-6)
    np.testing.assert_allclose(np.diff(truth), step_ns, atol=1)
    assert truth[0] - sim._t0_ns == round(step_ns)  # frame of step 0 = the state after 1 step

    # one scan per published chunk and register face; tick = ms of model time
    ticks = np.cumsum(chunks)
    for name, image in sim.images.items():
        np.testing.assert_array_equal(got.get("scans", name, "tick"), ticks)
        np.testing.assert_array_equal(got.get("scans", name, "truth_ns"),
                                      sim._t0_ns + np.rint(ticks * 10 * step_ns).astype(np.int64))
        assert image.tick == ticks[-1]
    assert len(got.get("link", "press01_amp", "host_ns")) == len(chunks)

    # a Modbus read answered: the image it served, once per read
    server = sim.servers["press01_plc"]
    regs = [0] * 16
    for _ in range(3):
        await server._action(1, 3, 0, 0, 11, regs, None)
    np.testing.assert_array_equal(got.get("reads", "press01_plc", "tick"), [ticks[-1]] * 3)
    assert got.get("reads", "press01_plc", "served_ns").size == 3


def test_a_directory_sink_reads_back_the_same_rows(tmp_path):
    got = _Collect()
    rig, sim, amp = _press(tmp_path / "a", got)
    truth_dir = tmp_path / "truth"
    _, sim2, amp2 = _press(tmp_path / "b", truth_dir)
    for s in (sim, sim2):
        s._model_clock_at(0)
        for ms in (2, 4, 1):
            s._advance(ms * s._steps_per_ms)
    sim2.truth.close()
    back = load_truth(truth_dir)
    assert set(back) == {d.name for d in rig.devices}
    assert back["press01_amp"]["info"]["rate_hz"] == 10_000 and back["press01_amp"]["info"]["frame_bytes"] == 32
    np.testing.assert_array_equal(back["press01_amp"]["frames"]["counter"],
                                  got.get("frames", "press01_amp", "counter"))
    assert len(back["press01_amp"]["frames"]["truth_ns"]) == amp2.sent == amp.sent == 70
    np.testing.assert_array_equal(back["press01_plc"]["scans"]["tick"], [2, 6, 7])
    assert back["press01_dies"]["reads"]["tick"].size == 0
    # no sink: nothing recorded, nothing written
    sim2.set_truth_sink(None)
    sim2._advance(10)
    assert len(load_truth(truth_dir)["press01_amp"]["frames"]["counter"]) == 70
