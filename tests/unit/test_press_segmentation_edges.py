"""Press blows at the edges of segmentation: spikes, bounces, block boundaries, the hashed window.

Synthetic 10 kHz amplifier blocks with exact integer timestamps and a sample counter, so
every expected value is exact: contact starts at a known sample, cycle times are the
spacing of the accepted blows, the archived window has known first and last samples.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.press import PressParams, analyse, bounce_reasons, velocity_lookback
from analysis.result import samples_hash
from daq.cycles import CycleResult
from daq.events import Event
from daq.rigs.screw_press import PressCycleTracker
from daq.storage.lineproto import cycle_line
from drivers.block import Block
from tests.staged import Staged

FS = 10_000
DT_NS = 1_000_000_000 // FS  # 100 µs
T0 = 1_795_000_000_000_000_000
F_HAT = 80_000.0  # kN
THRESHOLD, HYSTERESIS = 2_000.0, 500.0
L = 600  # samples in contact: 60 ms
V = 0.65  # m/s at impact (= mm/ms)
STROKE = 40.0  # mm formed during the contact
PARAMS = PressParams(contact_threshold_kN=THRESHOLD, contact_hysteresis_kN=HYSTERESIS,
                     flywheel_inertia_kg_m2=52_000.0, ram_mass_kg=95_000.0, screw_lead_m=0.44,
                     min_contact_s=0.005)


class Bus:
    """Collects what the tracker returns (as the segmentation stage would publish it)."""

    def __init__(self):
        self.items = []

    def publish(self, item):
        self.items.append(item)

    def cycles(self) -> dict[int, CycleResult]:
        """The latest version of each cycle, by number."""
        return {c.cycle_no: c for c in self.items if isinstance(c, CycleResult)}

    def events(self, kind: str) -> list[Event]:
        return [e for e in self.items if isinstance(e, Event) and e.kind == kind]


def recording(n: int, blows=(), spikes=(), bounces=()):
    """(t_ns, channels) with blows starting exactly at the given samples.

    A blow is ``L`` samples above the threshold from its first sample on (force 3 000 kN
    at both ends, ``F_HAT`` at the top), the ram approaching at ``V`` before it. Spikes
    and bounces are (first sample, samples, force) plateaus.
    """
    k = np.arange(n)
    t_ns = T0 + k.astype(np.int64) * DT_NS
    force = np.zeros(n)
    pos = np.full(n, 100.0)
    for b in blows:
        lo = max(0, b - 2_000)
        pos[lo:b] = 500.0 - (b - k[lo:b]) * DT_NS / 1e6 * V  # mm: V mm/ms before contact
        force[b:b + L] = 3_000.0 + (F_HAT - 3_000.0) * np.sin(np.pi * np.arange(L) / (L - 1))
        pos[b:b + L] = 500.0 + np.arange(L) * STROKE / L
        pos[b + L:] = 500.0 + STROKE
    for first, length, f in (*spikes, *bounces):
        force[first:first + length] = f
    chans = {"force": force, "position": pos, "force_1": force * 0.25, "force_2": force * 0.25,
             "force_3": force * 0.25, "force_4": force * 0.25}
    return t_ns, chans


def feed(tracker: Staged, t_ns, chans, block: int) -> None:
    for i in range(0, len(t_ns), block):
        sl = slice(i, i + block)
        cols = {k: v[sl] for k, v in chans.items()}
        cols["sample"] = np.arange(len(t_ns))[sl].astype(np.float64)
        tracker.feed("press-01", Block("amp", t_ns[sl], cols, np.zeros(len(t_ns[sl]), np.uint8)))


def tracker(bus, pre_s=0.3, post_s=0.1, limits=None) -> Staged:
    return Staged(PressCycleTracker("press-01", "amp", PARAMS, limits or {}, pre_s=pre_s, post_s=post_s,
                                    rate_hz=FS), bus)


@pytest.mark.parametrize("block", [137, 1_000, 4_096])
def test_cycle_time_runs_to_the_next_accepted_blow_not_to_a_spike(block):
    blows = (2_000, 14_000, 26_000)
    spikes = [(8_000, 20, 50_000.0),  # 2 ms between blows 1 and 2: not a blow
              (20_000, 45, 9_000.0)]  # 4.5 ms between blows 2 and 3
    t_ns, chans = recording(32_000, blows, spikes)
    bus = Bus()
    tr = tracker(bus)
    feed(tr, t_ns, chans, block)
    tr.close_run(int(t_ns[-1]))
    cycles = bus.cycles()
    assert sorted(cycles) == [1, 2, 3]
    assert [c.t_ns for c in cycles.values()] == [int(t_ns[b]) for b in blows]
    assert cycles[1].metrics["cycle_time_s"] == (int(t_ns[14_000]) - int(t_ns[2_000])) / 1e9 == 1.2
    assert cycles[2].metrics["cycle_time_s"] == (int(t_ns[26_000]) - int(t_ns[14_000])) / 1e9
    assert cycles[3].metrics["cycle_time_s"] == (int(t_ns[-1]) - int(t_ns[26_000])) / 1e9
    assert [c.info["blow_in_part"] for c in cycles.values()] == [1, 1, 1]
    assert [c.verdict for c in cycles.values()] == ["ok", "ok", "ok"]
    # each blow is published when analysed and once more with its cycle time: never a spike
    published = [c.cycle_no for c in bus.items if isinstance(c, CycleResult)]
    assert published == [1, 1, 2, 2, 3, 3]

    # offline (`daq analyse`), the same recording gives the same cycle times
    t_s = (t_ns - t_ns[0]) / 1e9
    offline = analyse(t_s, chans, PARAMS)
    assert [r.start_s for r in offline] == [t_s[b] for b in blows]
    assert offline[0].metrics["cycle_time_s"] == t_s[14_000] - t_s[2_000]
    assert offline[1].metrics["cycle_time_s"] == t_s[26_000] - t_s[14_000]


def test_a_cycle_time_limit_is_judged_on_the_accepted_blows_spacing():
    t_ns, chans = recording(20_000, (2_000, 14_000), [(8_000, 20, 50_000.0)])
    bus = Bus()
    tr = tracker(bus, limits={"cycle_time_s": {"min": 1.0}})
    feed(tr, t_ns, chans, 1_000)
    first = bus.cycles()[1]
    assert first.metrics["cycle_time_s"] == 1.2 and first.verdict == "ok" and first.reasons == []


@pytest.mark.parametrize("block", [100, 1_000, 4_096])
def test_a_bounce_is_reported_with_its_blow_and_never_counted_as_one(block):
    end = 2_000 + L - 1  # the first blow's last sample in contact
    bounce = (end + 301, 100, 20_000.0)  # 30.1 ms after the contact, 9.9 ms long: a blow's length
    t_ns, chans = recording(30_000, (2_000, 14_000), bounces=[bounce])
    bus = Bus()
    tr = tracker(bus)
    feed(tr, t_ns, chans, block)
    cycles = bus.cycles()
    assert sorted(cycles) == [1, 2]  # the bounce is not a blow; the first blow is not lost
    first, second = cycles[1], cycles[2]
    assert first.t_ns == int(t_ns[2_000]) and first.end_ns == int(t_ns[end])
    assert second.t_ns == int(t_ns[14_000])
    assert first.metrics["peak_force_kN"] == chans["force"][2_000:end + 1].max()  # the blow's, not the bounce's
    assert first.metrics["contact_time_ms"] == pytest.approx((L - 1) * 0.1, rel=1e-12)
    reason = ("bounce: force above the contact threshold again 30.1 ms after the contact ended, "
              "for 9.9 ms (peak 20000 kN)")
    assert first.verdict == "nok" and first.reasons == [reason]
    assert first.info["bounces"] == 1 and second.info["bounces"] == 0 and second.verdict == "ok"
    assert first.metrics["cycle_time_s"] == 1.2  # to the next blow, not to the bounce
    assert [c.info["blow_in_part"] for c in (first, second)] == [1, 1]
    [event] = bus.events("bounce")
    assert event.level == "warning" and event.t_ns == int(t_ns[bounce[0]])
    assert event.message == f"blow 1: {reason}" and event.fields["cycle_no"] == 1
    assert "bounces=1" in cycle_line(first) and 'verdict="nok"' in cycle_line(first)

    # the archive re-analysed, and `daq analyse` on the whole recording: the same one bounce
    at, chans_a = first.samples
    [again] = analyse((at - at[0]) / 1e9, chans_a, PressParams(**{**PARAMS.__dict__, "bounce_window_s": 0.1}))
    assert bounce_reasons(again) == [reason]
    t_s = (t_ns - t_ns[0]) / 1e9
    offline = analyse(t_s, chans, PressParams(**{**PARAMS.__dict__, "bounce_window_s": 0.1}))
    assert [len(r.bounces) for r in offline] == [1, 0] and bounce_reasons(offline[0]) == [reason]
    assert offline[0].metrics["cycle_time_s"] == t_s[14_000] - t_s[2_000]
    # without a bounce window it would have been a blow of its own (what the test guards against)
    assert len(analyse(t_s, chans, PARAMS)) == 3


def test_a_spike_length_bounce_and_one_still_in_contact_at_the_window_end():
    end = 2_000 + L - 1
    short = (end + 50, 20, 6_000.0)  # 2 ms: a spike's length, but inside the post-contact window
    late = (end + 900, 400, 7_000.0)  # starts 90 ms after the contact, runs past the 100 ms window
    t_ns, chans = recording(20_000, (2_000, 14_000), bounces=[short, late])
    bus = Bus()
    tr = tracker(bus)
    feed(tr, t_ns, chans, 1_000)
    cycles = bus.cycles()
    assert sorted(cycles) == [1, 2]
    assert cycles[1].info["bounces"] == 2 and cycles[1].metrics["cycle_time_s"] == 1.2
    assert cycles[1].reasons == [
        "bounce: force above the contact threshold again 5 ms after the contact ended, for 1.9 ms (peak 6000 kN)",
        "bounce: force above the contact threshold again 90 ms after the contact ended, for ≥ 10 ms (peak 7000 kN)"]
    assert len(bus.events("bounce")) == 2 and bus.events("contact_not_analysed") == []


def test_hashed_window_is_pre_s_before_contact_to_post_s_after():
    b = 5_000
    t_ns, chans = recording(12_000, (b,))
    bus = Bus()
    tr = tracker(bus)
    feed(tr, t_ns, chans, 1_000)
    [c] = bus.cycles().values()
    wt, wc = c.samples
    assert wt[0] == t_ns[b - 3_000] and wt[-1] == t_ns[b + L - 1 + 1_000]  # 0.3 s before, 0.1 s after
    assert c.samples_sha256 == samples_hash((wt - wt[0]) / 1e9, wc)


def test_the_ram_speed_look_back_is_in_the_hashed_window_even_with_a_short_pre_s():
    b = 5_000
    w = velocity_lookback(1 / FS, PARAMS.velocity_window_s)
    assert w == 51  # 5 ms at 10 kHz, odd
    t_ns, chans = recording(12_000, (b,))
    bus = Bus()
    tr = tracker(bus, pre_s=0.001)  # 10 samples: shorter than the Savitzky–Golay look-back
    feed(tr, t_ns, chans, 1_000)
    [c] = bus.cycles().values()
    wt, wc = c.samples
    assert wt[0] == t_ns[b - w]  # the window reaches back to the first sample the derivative uses
    assert np.array_equal(wc["position"][:w + 1], chans["position"][b - w:b + 1])
    assert c.samples_sha256 == samples_hash((wt - wt[0]) / 1e9, wc)
    assert c.metrics["impact_velocity_m_s"] == pytest.approx(V, rel=1e-9)  # a full window on a ramp
    # the archive alone gives the same result, look-back included
    [again] = analyse((wt - wt[0]) / 1e9, wc, PARAMS)
    assert again.metrics["impact_velocity_m_s"] == c.metrics["impact_velocity_m_s"]


def test_offline_hash_covers_the_look_back_and_runs_to_the_next_blow():
    blows = (5_000, 17_000)
    t_ns, chans = recording(25_000, blows)
    chans["flywheel_speed"] = np.full(len(t_ns), 90.0)
    t = (t_ns - t_ns[0]) / 1e9
    first, second = analyse(t, chans, PARAMS)
    w = velocity_lookback(1 / FS, PARAMS.velocity_window_s)
    window = slice(blows[0] - w, blows[1])
    assert first.samples_sha256 == samples_hash(t[window], {k: v[window] for k, v in chans.items()})
    assert second.samples_sha256 == samples_hash(t[blows[1] - w:], {k: v[blows[1] - w:] for k, v in chans.items()})
    # the earliest sample the Savitzky–Golay fit weighs changes the impact velocity, and the hash
    moved = dict(chans, position=chans["position"].copy())
    moved["position"][blows[0] - w + 1] += 1.0
    [again, _] = analyse(t, moved, PARAMS)
    assert again.metrics["impact_velocity_m_s"] != first.metrics["impact_velocity_m_s"]
    assert again.samples_sha256 != first.samples_sha256
    # one sample earlier is not used, and not hashed
    before = dict(chans, position=chans["position"].copy())
    before["position"][blows[0] - w - 1] += 1.0
    assert analyse(t, before, PARAMS)[0].samples_sha256 == first.samples_sha256


def test_cycle_line_has_the_verdict_as_a_field_so_a_rejudged_cycle_is_one_point():
    c = CycleResult("press-01", 7, T0, "ok", {"peak_force_kN": 90_000.0, "cycle_time_s": None}, [],
                    "press-1.1", "ab" * 32, "3", kind="screw_press", info={"part": 7, "blow_in_part": 1})
    first = cycle_line(c)
    assert first == (f'cycles,rig=press-01,run=3 peak_force_kN=90000.0,cycle_no=7i,verdict="ok",'
                     f'version="press-1.1",samples_sha256="{"ab" * 32}",reasons="",part=7.0,'
                     f'blow_in_part=1.0 {T0}')
    c.metrics["cycle_time_s"] = 4.5
    c.reasons, c.verdict = ["cycle_time_s = 4.5 above max 4"], "nok"
    again = cycle_line(c)
    assert again.split(" ")[0] == "cycles,rig=press-01,run=3" and again.endswith(f" {T0}")  # same point
    assert 'verdict="nok"' in again and "cycle_time_s=4.5" in again


def test_daq_analyse_reports_a_bounce_with_its_blow(tmp_path, capsys):
    from daq.cli import main
    from tests.conftest import ROOT

    end = 2_000 + L - 1
    t_ns, chans = recording(24_000, (2_000, 14_000), bounces=[(end + 301, 100, 20_000.0)])
    t = (t_ns - t_ns[0]) / 1e9
    p = tmp_path / "bounce.csv"
    with p.open("w") as fh:  # the shipped rig file: threshold 2000 kN, hysteresis 500 kN, post_s 0.1 s
        fh.write(",".join(["time", *chans]) + "\n")
        for k in range(len(t)):
            fh.write(",".join(repr(float(v)) for v in (t[k], *(c[k] for c in chans.values()))) + "\n")
    assert main(["analyse", str(ROOT / "configs" / "rigs" / "screw-press.toml"), str(p), "--json"]) == 0
    first, second = json.loads(capsys.readouterr().out)["cycles"]  # the bounce is not a third blow
    assert (first["start_s"], second["start_s"]) == (t[2_000], t[14_000])
    assert first["metrics"]["cycle_time_s"] == t[14_000] - t[2_000]
    assert first["bounces"] == 1 and second["bounces"] == 0
    reason = ("bounce: force above the contact threshold again 30.1 ms after the contact ended, "
              "for 9.9 ms (peak 20000 kN)")
    # the same limits judged both blows; the bounced one has the bounce on top (and is nok for it)
    assert first["reasons"] == [*second["reasons"], reason] and first["verdict"] == "nok"



A_RAM = 0.8  # m/s²: the ram (and flywheel) still accelerating before contact, as early in a blow


def _accelerating(n: int, b: int):
    """One blow at sample ``b``; before it the ram accelerates at A_RAM to V at contact (x = 500 mm there)."""
    t_ns, chans = recording(n, (b,))
    tau_ms = (b - np.arange(b)) * DT_NS / 1e6
    chans["position"][:b] = 500.0 - V * tau_ms + 0.5 * A_RAM * 1e-3 * tau_ms**2
    return t_ns, chans


def _plc_blocks(tracker: Staged, scans_ms, contact_ms: float) -> None:
    """A PLC's scans (force and flywheel speed) at the given ms after T0: 80 + 0.1·(ms/20) rpm."""
    for ms in scans_ms:
        f = 50_000.0 if contact_ms <= ms < contact_ms + 60 else 0.0
        tracker.feed("press-01", Block("plc", np.array([T0 + ms * 1_000_000], np.int64),
                                       {"force": np.array([f]), "flywheel_speed": np.array([80.0 + 0.1 * ms / 20])},
                                       np.zeros(1, np.uint8)))


def _blow_energy(rpm: float) -> float:
    w = rpm * 2 * np.pi / 60
    v = w * PARAMS.screw_lead_m / (2 * np.pi)
    return (0.5 * 52_000.0 * w**2 + 0.5 * 95_000.0 * v**2) / 1e3


# (contact sample, PLC scan times in ms after the stream's first sample, the scan used, how it is used)
SPEED_CASES = {
    # every 20 ms: the scan before the PLC's own contact (180 ms, 20 ms old), as the PLC showed it
    "fresh": (2_000, range(0, 600, 20), 180, "as is"),
    # the polls stalled from 80 ms to the contact at 200 ms: the 80 ms scan, carried 120 ms by the ram
    "stalled": (2_000, [*range(0, 100, 20), *range(200, 600, 20)], 80, "carried"),
    # stalled from before the stream's first sample: no ram speed to carry it by; 240 ms old: not measured
    "stalled before the stream": (600, [-200, -180, *range(60, 400, 20)], -180, "not measured"),
}


@pytest.mark.parametrize("case", SPEED_CASES)
def test_a_stale_flywheel_speed_scan_is_carried_to_contact_by_the_ram_or_not_measured(case):
    b, scans, used_ms, how = SPEED_CASES[case]
    t_ns, chans = _accelerating(b + 4_000, b)
    bus = Bus()
    tr = tracker(bus, limits={"efficiency": {"min": 0.1}})
    _plc_blocks(tr, scans, b * DT_NS / 1e6)
    feed(tr, t_ns, chans, 1_000)
    c = bus.cycles()[1]
    rpm = 80.0 + 0.1 * used_ms / 20
    if how == "not measured":
        assert "flywheel_speed" not in c.samples[1]
        assert c.metrics["blow_energy_kJ"] is None and c.metrics["efficiency"] is None
        assert c.verdict == "nok" and c.reasons == [
            "efficiency: no value to check against its limits",
            "flywheel_speed: the scan of plc it would come from is 240 ms from the contact (more than "
            "speed_max_age_ms = 100) and the ram's position does not reach back to it: blow energy and "
            "efficiency not measured"]
        return
    if how == "carried":  # the ram gained A_RAM·Δt between scan and contact; the flywheel 60·Δv/lead rpm
        rpm += 60.0 * A_RAM * (b * DT_NS / 1e6 - used_ms) / 1e3 / PARAMS.screw_lead_m
    assert c.samples[1]["flywheel_speed"] == pytest.approx(np.full(len(c.samples[0]), rpm), rel=1e-9)
    assert c.metrics["blow_energy_kJ"] == pytest.approx(_blow_energy(rpm), rel=1e-9)
    assert c.metrics["impact_velocity_m_s"] == pytest.approx(V, rel=1e-9)
    assert c.verdict == "ok" and c.reasons == []
