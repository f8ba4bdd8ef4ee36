"""Live blow segmentation: cut each press blow out of the stream and analyse it.

The rig's fastest device that carries ``force`` is the master stream (the force
amplifier); other channels the analysis wants (``flywheel_speed`` from the PLC) are
kept as (time, value) series and interpolated onto the master's timestamps. A blow
is analysed once its contact has ended and ``post_s`` more has been seen; its window
starts ``pre_s`` before contact, so the ram speed at impact can be measured.

Results go on the bus as :class:`CycleResult` (stored in InfluxDB's ``cycles``
measurement). ``cycle_time_s`` — start of this blow to start of the next — is known
only when the next blow begins, so it is sent then, as an update of the same point.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from analysis.press import Envelope, PartCounter, PressParams, analyse, envelope_reasons, judge
from analysis.result import limit_reasons, samples_hash
from daq.bus import SampleBus
from daq.cycles.result import CycleResult, Series, device_time
from drivers.block import Block

log = logging.getLogger(__name__)


class PressCycleTracker:
    """Finds blows in one press rig's live blocks and analyses them."""

    ANALYSIS_CHANNELS = ("force", "position", "force_1", "force_2", "force_3", "force_4")

    def __init__(self, rig: str, master: str, params: PressParams, limits: dict[str, dict[str, float]],
                 bus: SampleBus, pre_s: float = 0.3, post_s: float = 0.1, keep_s: float = 10.0,
                 envelope: Envelope | None = None, rate_hz: float | None = None):
        self.rig, self.master = rig, master
        self.params, self.limits, self.envelope = params, limits, envelope
        self.parts = PartCounter(params.blows_per_part, params.part_gap_s)
        self.rate_hz = rate_hz  # the master stream's sample rate: its counter is the time base
        self.bus = bus
        self.pre_ns, self.post_ns = int(pre_s * 1e9), int(post_s * 1e9)
        self.series: dict[str, Series] = {}
        self.keep_s = keep_s
        self.cycle_no = 0
        self.last: CycleResult | None = None
        self._in_contact = False
        self._contact_start = 0
        self._contact_end: int | None = None
        self._run = ""

    @property
    def run(self) -> str:
        """The active run's id ('' for none); parts are counted per run."""
        return self._run

    @run.setter
    def run(self, value: str) -> None:
        if value != self._run:
            self.parts = PartCounter(self.params.blows_per_part, self.params.part_gap_s)
        self._run = value

    def _add(self, block: Block) -> None:
        for name, col in block.channels.items():
            wanted = block.device == self.master or name in ("flywheel_speed", "force")
            if col.dtype.kind in "fiu" and wanted:
                key = name if block.device == self.master else f"{block.device}:{name}"
                self.series.setdefault(key, Series(self.keep_s)).add(block.t_ns, col)

    def feed(self, rig: str, block: Block) -> None:
        """Take a block of this rig; analyse any blow it completes."""
        if rig != self.rig:
            return
        self._add(block)
        if block.device != self.master or "force" not in block.channels:
            return
        p = self.params
        f, t = block.channels["force"], block.t_ns
        i = 0
        while i < len(f):
            if not self._in_contact:
                hits = np.flatnonzero(f[i:] > p.contact_threshold_kN)
                if not len(hits):
                    break
                i += int(hits[0])
                self._in_contact, self._contact_start, self._contact_end = True, int(t[i]), None
                if self.last is not None and self.last.metrics.get("cycle_time_s") is None:
                    self.last.metrics["cycle_time_s"] = (self._contact_start - self.last.t_ns) / 1e9
                    self._judge_cycle_time(self.last)
                    self.bus.publish(self.last)  # the same point again, now with its cycle time
            else:
                ends = np.flatnonzero(f[i:] < p.contact_threshold_kN - p.contact_hysteresis_kN)
                if not len(ends):
                    break
                i += int(ends[0])
                self._in_contact, self._contact_end = False, int(t[i])
        done = self._contact_end is not None and not self._in_contact
        if done and t[-1] >= self._contact_end + self.post_ns:
            self._analyse(self._contact_start - self.pre_ns, self._contact_end + self.post_ns)
            self._contact_end = None

    def close_run(self, end_ns: int) -> CycleResult | None:
        """The run ends: its last blow's cycle time runs to the end of the run, and is final.

        Returns that blow if it changed (it is also published), so a stopped run's
        results never change afterwards.
        """
        last, self.last = self.last, None
        if last is None or last.metrics.get("cycle_time_s") is not None:
            return None
        last.metrics["cycle_time_s"] = (end_ns - last.t_ns) / 1e9
        self._judge_cycle_time(last)
        self.bus.publish(last)
        return last

    def _judge_cycle_time(self, c: CycleResult) -> None:
        """The cycle-time limit can only be checked once the next blow has started."""
        lim = self.limits.get("cycle_time_s")
        if lim:
            c.reasons = [*c.reasons, *limit_reasons({"cycle_time_s": c.metrics["cycle_time_s"]},
                                                    {"cycle_time_s": lim})]
            c.verdict = "nok" if c.reasons else "ok"

    def _speed_at_contact(self, key: str, start_ns: int) -> float | None:
        """Flywheel speed at contact start, from the device that reports it.

        That device (the PLC) usually reports force too: its last scan before its own
        force crossed the threshold gives the speed at impact from one consistent source,
        whatever the offset between its clock and the stream's. Without force there, the
        speed is interpolated at the stream's contact time.
        """
        ts, vs = self.series[key].arrays()
        if len(ts) < 2:
            return None
        device = key.split(":", 1)[0]
        if f"{device}:force" in self.series:
            tf, f = self.series[f"{device}:force"].arrays()
            if len(tf) == len(ts):
                near = np.flatnonzero((tf >= start_ns - self.pre_ns) & (f > self.params.contact_threshold_kN))
                if len(near) and near[0] > 0:
                    return float(vs[near[0] - 1])
        return float(np.interp(start_ns + self.pre_ns, ts, vs))

    def _analyse(self, start_ns: int, end_ns: int) -> None:
        # only the blocks that overlap the window are joined (not the whole history, per channel)
        t_ns, force = self.series["force"].between(start_ns, end_ns + 1)
        if len(t_ns) < 10:
            return
        window = {}
        for name in ("sample", *self.ANALYSIS_CHANNELS[1:]):
            if name in self.series:
                ts, vs = self.series[name].between(start_ns, end_ns + 1)
                if len(ts) == len(t_ns):
                    window[name] = vs
        if "sample" in window:
            t_ns = device_time(t_ns, window.pop("sample"), self.rate_hz)
        chans = {"force": force, **window}
        speed = next((k for k in self.series if k.endswith(":flywheel_speed")), None)
        if speed is not None:
            omega_rpm = self._speed_at_contact(speed, start_ns)
            if omega_rpm is not None:
                chans["flywheel_speed"] = np.full(len(t_ns), omega_rpm)
        t_s = (t_ns - t_ns[0]) / 1e9
        results = analyse(t_s, chans, self.params)
        if not results:
            return
        r = results[0]
        r.metrics["cycle_time_s"] = None  # known when the next blow starts
        judge(r, {k: v for k, v in self.limits.items() if k != "cycle_time_s"},
              envelope_reasons(t_s, chans.get("position"), chans["force"], r, self.envelope))
        r.samples_sha256 = samples_hash(t_s, chans)  # of the window analysed, as archived
        self.cycle_no += 1
        start_ns = int(t_ns[0] + r.start_s * 1e9)
        part, blow = self.parts.next(start_ns / 1e9, t_ns[0] / 1e9 + r.end_s)
        result = CycleResult(self.rig, self.cycle_no, start_ns, r.verdict, dict(r.metrics), r.reasons,
                             r.version, r.samples_sha256, self.run, kind="screw_press",
                             end_ns=int(t_ns[0] + r.end_s * 1e9),
                             info={"part": part, "blow_in_part": blow, "device": self.master},
                             samples=(t_ns, chans))
        self.last = result
        log.info("%s: blow %d %s (peak %.0f kN, forming %.0f kJ)%s", self.rig, self.cycle_no,
                 r.verdict.upper(), r.metrics["peak_force_kN"] or 0, r.metrics["forming_energy_kJ"] or 0,
                 f": {'; '.join(r.reasons)}" if r.reasons else "")
        self.bus.publish(result)


def press_params(rig) -> PressParams:
    """Analysis parameters from a screw-press rig file."""
    p, seg = rig.parameters, rig.segmentation
    return PressParams(contact_threshold_kN=p.contact_threshold_kN,
                       contact_hysteresis_kN=p.contact_hysteresis_kN,
                       flywheel_inertia_kg_m2=p.flywheel_inertia_kg_m2, ram_mass_kg=p.ram_mass_kg,
                       screw_lead_m=p.screw_lead_m, min_contact_s=seg.min_contact_ms / 1e3,
                       blows_per_part=seg.blows_per_part,
                       part_gap_s=seg.part_gap_s if seg.part_gap_s is not None else math.inf)


def press_envelope(rig) -> Envelope | None:
    """The rig file's force–position band, as the analysis takes it."""
    e = rig.envelope
    if e is None:
        return None
    return Envelope(tuple(e.position_mm), tuple(e.force_min_kN), tuple(e.force_max_kN))


def press_tracker(rig, master: str, bus: SampleBus) -> PressCycleTracker:
    """A blow tracker for a press rig file, on its master stream."""
    seg = rig.segmentation
    rate = next((getattr(d, "sample_rate_hz", None) for d in rig.devices if d.name == master), None)
    return PressCycleTracker(rig.name, master, press_params(rig), rig.limit_dicts(), bus,
                             pre_s=seg.pre_s, post_s=seg.post_s, envelope=press_envelope(rig), rate_hz=rate)
