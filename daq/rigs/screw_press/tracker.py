"""Live blow segmentation: cut each press blow out of the stream and analyse it.

The rig's fastest device that carries ``force`` is the master stream (the force
amplifier); other channels the analysis wants (``flywheel_speed`` from the PLC) are
kept as (time, value) series and interpolated onto the master's timestamps. A blow
is analysed once its contact has ended and ``post_s`` more has been seen; its window
starts ``pre_s`` before contact (and never after the first sample the Savitzky–Golay
ram speed looks back to), so the ram speed at impact can be measured and every sample
a metric used is in the window that is hashed and archived.

Contacts shorter than ``min_contact_ms`` are spikes: not blows, and they neither end
the blow before's cycle time nor start a part. A contact that begins within ``post_s``
after a blow's contact ended is a *bounce* of that blow: the blow is analysed as it
was, the bounce is named in its reasons (so it is ``nok``), counted in its ``bounces``
field, logged and published as a ``bounce`` event; it is never a blow of its own.

:meth:`PressCycleTracker.feed` returns what a block completed: :class:`CycleResult` s
(stored in InfluxDB's ``cycles`` measurement) and events; the segmentation stage puts
them on the bus. ``cycle_time_s`` — start of this blow to start of the next accepted one
— is known only when that blow has been analysed, so it is returned then, as an update
of the same point.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np

from analysis.press import (
    Envelope,
    PartCounter,
    PressParams,
    analyse,
    bounce_reasons,
    envelope_reasons,
    judge,
    ram_speed_m_s,
    velocity_lookback,
)
from analysis.result import limit_reasons, samples_hash
from daq.cycles.result import CycleResult, ResultTracker, Series, device_time
from daq.events import Event
from drivers.block import Block

log = logging.getLogger(__name__)


def iso_ns(t_ns: int) -> str:
    """A timestamp in ns since the epoch, as UTC ISO 8601 with microseconds (for messages)."""
    return datetime.fromtimestamp(t_ns // 1000 / 1e6, UTC).isoformat(timespec="microseconds")


class PressCycleTracker(ResultTracker):
    """Finds blows in one press rig's live blocks and analyses them."""

    ANALYSIS_CHANNELS = ("force", "position", "force_1", "force_2", "force_3", "force_4")
    MARGIN_NS = 20_000_000  # more than the stream clock ever corrects: the window is cut by counter
    CARRY_WINDOW_S = 0.05  # the ram speed that carries a stale flywheel speed scan to the contact

    def __init__(self, rig: str, master: str, params: PressParams, limits: dict[str, dict[str, float]],
                 pre_s: float = 0.3, post_s: float = 0.1, keep_s: float = 10.0,
                 envelope: Envelope | None = None, rate_hz: float | None = None, speed_max_age_s: float = 0.1):
        self.rig, self.master = rig, master
        self.speed_max_age_ns = round(speed_max_age_s * 1e9)
        # a contact starting inside a blow's post-contact window is that blow's bounce, live and offline
        self.params = replace(params, bounce_window_s=post_s)
        self.limits, self.envelope = limits, envelope
        self.parts = PartCounter(params.blows_per_part, params.part_gap_s)
        self.rate_hz = rate_hz  # the master stream's sample rate: its counter is the time base
        self.results: list = []  # what the block being fed completed
        self.pre_ns, self.post_ns = int(pre_s * 1e9), int(post_s * 1e9)
        self.min_contact_ns = round(params.min_contact_s * 1e9)
        self.series: dict[str, Series] = {}
        self.keep_s = keep_s
        self.cycle_no = 0
        self.last: CycleResult | None = None
        self._in_contact = False
        self._contact_start = 0
        self._bouncing = False  # the contact in progress began inside a blow's post-contact window
        self._bounce_until: int | None = None  # end of the latest blow's post-contact window
        self._pending: deque[tuple[int, int]] = deque()  # (first, last sample in contact) awaiting post_s
        self._t_prev: int | None = None  # the master's last timestamp before this block
        self._run = ""

    def _new_run(self) -> None:
        """Parts are counted per run."""
        self.parts = PartCounter(self.params.blows_per_part, self.params.part_gap_s)

    def _add(self, block: Block) -> None:
        for name, col in block.channels.items():
            wanted = block.device == self.master or name in ("flywheel_speed", "force")
            if col.dtype.kind in "fiu" and wanted:
                key = name if block.device == self.master else f"{block.device}:{name}"
                self.series.setdefault(key, Series(self.keep_s)).add(block.t_ns, col)

    def _feed(self, rig: str, block: Block) -> None:
        if rig != self.rig:
            return
        self._add(block)
        if block.device != self.master or "force" not in block.channels or not len(block):
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
                self._in_contact, self._contact_start = True, int(t[i])
                self._bouncing = self._bounce_until is not None and self._contact_start <= self._bounce_until
            else:
                ends = np.flatnonzero(f[i:] < p.contact_threshold_kN - p.contact_hysteresis_kN)
                if not len(ends):
                    break
                i += int(ends[0])
                last = int(t[i - 1]) if i > 0 else self._t_prev  # the contact's last sample
                self._in_contact = False
                if self._bouncing or last is None:
                    continue  # a bounce: the analysis of its blow's window reports it
                if last - self._contact_start < self.min_contact_ns:
                    log.debug("%s: a %.2f ms force spike at %d is not a blow", self.rig,
                              (last - self._contact_start) / 1e6, self._contact_start)
                    continue
                self._pending.append((self._contact_start, last))
                self._bounce_until = last + self.post_ns
        self._t_prev = int(t[-1])
        while self._pending and t[-1] >= self._pending[0][1] + self.post_ns + self.MARGIN_NS:
            self._analyse(*self._pending.popleft())

    def close_run(self, end_ns: int) -> CycleResult | None:
        """The run ends: its last blow's cycle time runs to the end of the run, and is final.

        Returns that blow if it changed (the run manager files and publishes it), so a
        stopped run's results never change afterwards.
        """
        last, self.last = self.last, None
        if last is None or last.metrics.get("cycle_time_s") is not None:
            return None
        last.metrics["cycle_time_s"] = (end_ns - last.t_ns) / 1e9
        self._judge_cycle_time(last)
        return last

    def _judge_cycle_time(self, c: CycleResult) -> None:
        """The cycle-time limit can only be checked once the next blow has started."""
        lim = self.limits.get("cycle_time_s")
        if lim:
            c.reasons = [*c.reasons, *limit_reasons({"cycle_time_s": c.metrics["cycle_time_s"]},
                                                    {"cycle_time_s": lim})]
            c.verdict = "nok" if c.reasons else "ok"

    def _speed_scan(self, key: str, contact_ns: int) -> tuple[float, int] | None:
        """The flywheel speed scan a blow's energy starts from: (rpm, its time in ns).

        That device (the PLC) usually reports force too: its last scan before its own
        force crossed the threshold, so the choice does not depend on how its clock and
        the stream's line up. Without force there, its last scan at or before the
        stream's contact (its first scan, if it has none before). None when the device
        has fewer than two scans.
        """
        ts, vs = self.series[key].arrays()
        if len(ts) < 2:
            return None
        device = key.split(":", 1)[0]
        if f"{device}:force" in self.series:
            tf, f = self.series[f"{device}:force"].arrays()
            if len(tf) == len(ts):
                near = np.flatnonzero((tf >= contact_ns - 2 * self.pre_ns) & (f > self.params.contact_threshold_kN))
                if len(near) and near[0] > 0:
                    return float(vs[near[0] - 1]), int(ts[near[0] - 1])
        i = max(int(np.searchsorted(ts, contact_ns, side="right")) - 1, 0)
        return float(vs[i]), int(ts[i])

    def _ram_speed_at(self, at_ns: int) -> float | None:
        """The ram's speed (m/s) at ``at_ns`` from the master stream's position, for carrying a scan.

        Savitzky–Golay (quadratic, exact under constant acceleration) over the
        ``CARRY_WINDOW_S`` before it: ten times the impact velocity's window, so the
        gauge noise moves the difference of two such speeds by about 0.01 % of the ram's
        speed (0.4 % over the impact velocity's 5 ms). None where the history does not
        reach back that far.
        """
        if "position" not in self.series:
            return None
        reach = round(self.CARRY_WINDOW_S * 1e9)
        ts, xs = self.series["position"].between(at_ns - reach, at_ns + 1)
        if len(ts) < 5 or ts[0] > at_ns - reach * 9 // 10:
            return None
        return ram_speed_m_s((ts - ts[0]) / 1e9, xs, len(ts) - 1, self.CARRY_WINDOW_S)

    def _speed_at_contact(self, key: str, contact_ns: int) -> tuple[float | None, str | None]:
        """Flywheel speed (rpm) at contact start, or None and why it is not known.

        The PLC's scan, as it showed it, when it is at most ``speed_max_age_ms`` from the
        contact (one 50 Hz poll and its 5 ms image: the coasting flywheel then up to 0.3 %
        slower). An older scan (the polls stalled before the blow) is carried to the
        contact by what the ram's speed, from the stream's position, changed in between,
        + 60·Δv/lead rpm, since screw and flywheel turn together (ω = 2π·v/lead at every
        instant). Where the stream's position does not reach back to it either, the blow
        energy is not measured: an older, slower flywheel would make it too low.
        """
        scan = self._speed_scan(key, contact_ns)
        if scan is None:
            return None, None
        rpm, scan_ns = scan
        age_ns = abs(contact_ns - scan_ns)
        if age_ns <= self.speed_max_age_ns:
            return rpm, None
        v_scan, v_contact = self._ram_speed_at(scan_ns), self._ram_speed_at(contact_ns)
        if v_scan is not None and v_contact is not None and math.isfinite(v_scan + v_contact):
            return rpm + 60.0 * (v_contact - v_scan) / self.params.screw_lead_m, None
        return None, (f"flywheel_speed: the scan of {key.split(':', 1)[0]} it would come from is "
                      f"{age_ns / 1e6:.0f} ms from the contact (more than speed_max_age_ms = "
                      f"{self.speed_max_age_ns / 1e6:g}) and the ram's position does not reach back "
                      f"to it: blow energy and efficiency not measured")

    def _lookback_ns(self) -> int:
        """How far before contact the ram speed's Savitzky–Golay window reaches (with margin)."""
        if self.rate_hz:
            dt_s = 1.0 / self.rate_hz
        else:
            t = self.series["force"].t[-1]
            dt_s = float(np.median(np.diff(t))) / 1e9 if len(t) > 1 else 0.0
        return int(2 * velocity_lookback(dt_s, self.params.velocity_window_s) * dt_s * 1e9)

    def _analyse(self, contact_ns: int, last_ns: int) -> None:
        """Analyse the blow in contact from ``contact_ns`` to ``last_ns``, with its window around it."""
        # fetched by host time with a margin, cut below by the sample counter where there is one
        end_ns = last_ns + self.post_ns + self.MARGIN_NS
        first_ns = contact_ns - max(self.pre_ns, self._lookback_ns()) - self.MARGIN_NS
        # only the blocks that overlap the window are joined (not the whole history, per channel)
        t_ns, force = self.series["force"].between(first_ns, end_ns + 1)
        at = int(np.searchsorted(t_ns, contact_ns))
        if len(t_ns) < 10 or at >= len(t_ns) or t_ns[at] != contact_ns:
            log.warning("%s: the samples of the blow at %s are not in the %.0f s history: not analysed",
                        self.rig, iso_ns(contact_ns), self.keep_s)
            return
        window = {}
        for name in ("sample", *self.ANALYSIS_CHANNELS[1:]):
            if name in self.series:
                ts, vs = self.series[name].between(first_ns, end_ns + 1)
                if len(ts) == len(t_ns):
                    window[name] = vs
        # the window: pre_s before contact (or further back if the ram speed's look-back needs
        # it) to post_s after its last sample; counted in samples where the stream numbers them,
        # so that the host clock's small corrections never add or drop a sample
        dt_s = float(np.median(np.diff(t_ns))) / 1e9
        lookback = velocity_lookback(dt_s, self.params.velocity_window_s)
        counter = window.get("sample")
        if counter is not None and self.rate_hz:
            last_i = min(len(t_ns) - 1, int(np.searchsorted(t_ns, last_ns)))
            pre_n = max(round(self.pre_ns * self.rate_hz / 1e9), lookback)
            keep = np.flatnonzero((counter >= counter[at] - pre_n)
                                  & (counter <= counter[last_i] + round(self.post_ns * self.rate_hz / 1e9)))
            first, stop = int(keep[0]), int(keep[-1]) + 1
        else:
            first = min(int(np.searchsorted(t_ns, contact_ns - self.pre_ns)), max(0, at - lookback))
            stop = int(np.searchsorted(t_ns, last_ns + self.post_ns, side="right"))
        t_ns, force, at = t_ns[first:stop], force[first:stop], at - first
        window = {k: v[first:stop] for k, v in window.items()}
        if "sample" in window:
            t_ns = device_time(t_ns, window.pop("sample"), self.rate_hz)
        chans = {"force": force, **window}
        speed = next((k for k in self.series if k.endswith(":flywheel_speed")), None)
        omega_rpm, why = self._speed_at_contact(speed, contact_ns) if speed is not None else (None, None)
        if omega_rpm is not None:
            chans["flywheel_speed"] = np.full(len(t_ns), omega_rpm)
        stale = [why] if why else []
        t_s = (t_ns - t_ns[0]) / 1e9
        # the blow that starts at this contact (the window may also hold the tail of an earlier one)
        r = next((b for b in analyse(t_s, chans, self.params) if b.start_s == t_s[at]), None)
        if r is None:  # only at the edges: a spike by the stream's own clock, or a bounce of a bounce
            msg = (f"the contact at {iso_ns(contact_ns)} is not a blow by the analysis of its window "
                   f"(shorter than {self.params.min_contact_s * 1e3:g} ms, or inside an earlier "
                   f"contact's post-contact window): not counted")
            log.warning("%s: %s", self.rig, msg)
            self.results.append(Event("contact_not_analysed", msg, rig=self.rig, device=self.master,
                                   level="warning", t_ns=contact_ns))
            return
        r.metrics["cycle_time_s"] = None  # known when the next accepted blow has been analysed
        bounces = bounce_reasons(r)
        judge(r, {k: v for k, v in self.limits.items() if k != "cycle_time_s"},
              stale + envelope_reasons(t_s, chans.get("position"), chans["force"], r, self.envelope) + bounces)
        r.samples_sha256 = samples_hash(t_s, chans)  # of the window analysed, as archived
        start_ns = int(t_ns[at])  # exact: no float round trip of an epoch in ns
        prev = self.last
        if prev is not None and prev.metrics.get("cycle_time_s") is None:
            prev.metrics["cycle_time_s"] = (start_ns - prev.t_ns) / 1e9
            self._judge_cycle_time(prev)
            self.results.append(prev)  # the same point again, now with its cycle time
        self.cycle_no += 1
        part, blow = self.parts.next(start_ns / 1e9, start_ns / 1e9 + (r.end_s - r.start_s))
        result = CycleResult(self.rig, self.cycle_no, start_ns, r.verdict, dict(r.metrics), r.reasons,
                             r.version, r.samples_sha256, self.run, kind="screw_press",
                             end_ns=int(t_ns[at + int(np.searchsorted(t_s[at:], r.end_s))]),
                             info={"part": part, "blow_in_part": blow, "bounces": len(r.bounces),
                                   "device": self.master},
                             samples=(t_ns, chans))
        self.last = result
        log.info("%s: blow %d %s (peak %.0f kN, forming %.0f kJ)%s", self.rig, self.cycle_no,
                 r.verdict.upper(), r.metrics["peak_force_kN"] or 0, r.metrics["forming_energy_kJ"] or 0,
                 f": {'; '.join(r.reasons)}" if r.reasons else "")
        self.results.append(result)
        for b, text in zip(r.bounces, bounces, strict=True):
            log.warning("%s: blow %d: %s", self.rig, self.cycle_no, text)
            self.results.append(Event("bounce", f"blow {self.cycle_no}: {text}", rig=self.rig, device=self.master,
                                   level="warning", t_ns=int(t_ns[int(np.searchsorted(t_s, b.start_s))]),
                                   fields={"cycle_no": self.cycle_no, "peak_force_kN": b.peak_force_kN,
                                           "after_ms": (b.start_s - r.end_s) * 1e3}))


def press_params(rig) -> PressParams:
    """Analysis parameters from a screw-press rig file."""
    p, seg = rig.parameters, rig.segmentation
    return PressParams(contact_threshold_kN=p.contact_threshold_kN,
                       contact_hysteresis_kN=p.contact_hysteresis_kN,
                       flywheel_inertia_kg_m2=p.flywheel_inertia_kg_m2, ram_mass_kg=p.ram_mass_kg,
                       screw_lead_m=p.screw_lead_m, min_contact_s=seg.min_contact_ms / 1e3,
                       bounce_window_s=seg.post_s,
                       blows_per_part=seg.blows_per_part,
                       part_gap_s=seg.part_gap_s if seg.part_gap_s is not None else math.inf)


def press_envelope(rig) -> Envelope | None:
    """The rig file's force–position band, as the analysis takes it."""
    e = rig.envelope
    if e is None:
        return None
    return Envelope(tuple(e.position_mm), tuple(e.force_min_kN), tuple(e.force_max_kN))


def press_tracker(rig, master: str) -> PressCycleTracker:
    """A blow tracker for a press rig file, on its master stream."""
    seg = rig.segmentation
    rate = next((getattr(d, "sample_rate_hz", None) for d in rig.devices if d.name == master), None)
    return PressCycleTracker(rig.name, master, press_params(rig), rig.limit_dicts(),
                             pre_s=seg.pre_s, post_s=seg.post_s, envelope=press_envelope(rig), rate_hz=rate,
                             speed_max_age_s=seg.speed_max_age_ms / 1e3)
