"""Live test-step segmentation for an SRM rig: one cycle per step of the test sequence.

The rig controller (polled over Modbus RTU) reports the step number, its state and the
set-points; the power analyser streams the fast channels. A step ends when the
controller's step number changes. Its steady window runs from ``settle_s`` after the
step began to ``end_margin_s`` before it ended (the poll interval blurs the change),
cut to whole revolutions by the analysis. The window is analysed once the stream has
delivered it. A change of the speed or torque set-point within a step starts a new
cycle too (controllers that step set-points without numbering steps). A locked-rotor
step is characterised (ψ(i, θ)) instead.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import asdict

import numpy as np

from analysis.result import samples_hash
from analysis.srm import SrmParams, analyse_step, characterise, judge
from daq.cycles.result import CycleResult, ResultTracker, RunArtifact, Series, device_time
from drivers.block import Block

log = logging.getLogger(__name__)

#: Controller ``state`` values (the rig controller's register map documents them).
STATE_IDLE, STATE_RAMP, STATE_HOLD, STATE_LOCKED, STATE_DONE = 0, 1, 2, 3, 4
#: A locked-rotor window starts this much before the step change was polled (the
#: controller is polled at tens of Hz; the first pulse must be whole, rest included).
LOCKED_LEAD_S = 0.3


class SrmStepTracker(ResultTracker):
    """Cuts test steps out of one SRM rig's live blocks and analyses them."""

    def __init__(self, rig: str, master: str, controller: str, params: SrmParams,
                 limits: dict[str, dict[str, float]], keep_s: float = 30.0,
                 end_margin_s: float = 0.15, rate_hz: float | None = None):
        self.rig, self.master, self.controller = rig, master, controller
        self.params, self.limits = params, limits
        self.results: list = []  # what the block being fed completed
        self.keep_s = keep_s
        self.rate_hz = rate_hz  # the master stream's sample rate: its counter is the time base
        self.counter = Series(keep_s)
        self.end_margin_ns = int(end_margin_s * 1e9)
        self.series: dict[str, Series] = {}
        self.cycle_no = 0
        self.run = ""
        self.last: CycleResult | None = None
        self._step: tuple[int, int, int, dict] | None = None  # (step, state, start_ns, setpoints)
        self._pending: list[tuple[int, int, int, int, dict]] = []

    def _feed(self, rig: str, block: Block) -> None:
        if rig != self.rig:
            return
        if block.device == self.master:
            for name, col in block.channels.items():
                if col.dtype.kind in "fiu" and name != "sample":
                    self.series.setdefault(name, Series(self.keep_s)).add(block.t_ns, col)
            if "sample" in block.channels:
                self.counter.add(block.t_ns, block.channels["sample"])
        elif block.device == self.controller and "step" in block.channels:
            self._follow_controller(block)
        if self._pending and "torque" in self.series:
            arrived = int(self.series["torque"].t[-1][-1])
            while self._pending and self._pending[0][3] <= arrived:
                self._finish(*self._pending.pop(0))

    def close_run(self, end_ns: int) -> CycleResult | None:
        """The run ends: a step still in progress is not part of it (nothing to finalise)."""
        return None

    def _follow_controller(self, block: Block) -> None:
        steps = block.channels["step"]
        states = block.channels.get("state", np.zeros(len(steps)))
        good = block.quality == 0 if block.quality is not None else np.ones(len(steps), bool)
        for k in np.flatnonzero(good):
            step, state, t = int(steps[k]), int(states[k]), int(block.t_ns[k])
            setpoints = {f"{n}": float(block.channels[n][k]) for n in ("speed_setpoint", "torque_setpoint")
                         if n in block.channels}
            moved = self._step is not None and any(
                abs(v - self._step[3].get(n, v)) > 1e-6 * max(1.0, abs(v)) for n, v in setpoints.items())
            if self._step is None or step != self._step[0] or moved:  # a new step or new set-points
                if self._step is not None and self._step[0] > 0:
                    s_step, s_state, s_start, s_sp = self._step
                    if s_state == STATE_LOCKED:  # every pulse, with the rest around it
                        lead = int(LOCKED_LEAD_S * 1e9)
                        self._pending.append((s_step, s_state, s_start - lead, t + lead // 3, s_sp))
                    else:
                        self._pending.append((s_step, s_state, s_start, t - self.end_margin_ns, s_sp))
                self._step = (step, state, t, setpoints)
            elif state == STATE_LOCKED and self._step[1] != STATE_LOCKED:
                self._step = (step, state, self._step[2], self._step[3])

    def _window(self, start_ns: int, end_ns: int) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
        tm, _ = self.series["torque"].between(start_ns, end_ns)
        if len(tm) < 16:
            return None
        tc, counter = self.counter.between(start_ns, end_ns)
        uniform = device_time(tm, counter, self.rate_hz) if len(tc) == len(tm) else tm
        chans = {}
        for name, s in self.series.items():
            ts, vs = s.between(start_ns, end_ns)
            if len(ts) == len(tm):
                chans[name] = vs
        return uniform, chans

    def _finish(self, step: int, state: int, start_ns: int, end_ns: int, setpoints: dict) -> None:
        if state == STATE_LOCKED:
            self._characterise(step, start_ns, end_ns)
            return
        got = self._window(start_ns + int(self.params.settle_s * 1e9), end_ns)
        if got is None:
            log.warning("%s: step %d: no stream samples in its steady window", self.rig, step)
            return
        t_ns, chans = got
        t_s = (t_ns - t_ns[0]) / 1e9
        r = analyse_step(t_s, chans, SrmParams(self.params.phase_resistance_ohm, settle_s=0.0,
                                               min_steady_s=self.params.min_steady_s), step=step)
        if r is None:
            log.warning("%s: step %d: steady window too short to analyse", self.rig, step)
            return
        judge(r, self.limits)
        r.samples_sha256 = samples_hash(t_s, chans)  # of the window analysed, as archived
        self.cycle_no += 1
        info = {"step": step, **setpoints, "revolutions": r.revolutions, "device": self.master}
        result = CycleResult(self.rig, self.cycle_no, int(t_ns[0] + r.start_s * 1e9), r.verdict,
                             dict(r.metrics), r.reasons, r.version, r.samples_sha256, self.run,
                             kind="srm_rig", end_ns=int(t_ns[0] + r.end_s * 1e9), info=info,
                             samples=(t_ns, chans))
        self.last = result
        m = r.metrics
        log.info("%s: step %d %s (%.0f rpm, %.1f N·m, ripple %.0f %%, efficiency %s)", self.rig, step,
                 r.verdict.upper(), m["speed_rpm"] or 0, m["mean_torque_Nm"] or 0,
                 m["torque_ripple_pct"] or 0,
                 f"{m['efficiency']:.3f}" if m["efficiency"] is not None else "—")
        self.results.append(result)

    def _characterise(self, step: int, start_ns: int, end_ns: int) -> None:
        got = self._window(start_ns, end_ns)
        if got is None or not {"rotor_angle", "phase_a_voltage", "phase_a_current"} <= set(got[1]):
            log.warning("%s: locked-rotor step %d: rotor angle or phase A channels missing", self.rig, step)
            return
        t_ns, c = got
        t = (t_ns - t_ns[0]) / 1e9
        angle = np.round(c["rotor_angle"], 1)
        cuts = [0, *(np.flatnonzero(np.diff(angle) != 0) + 1).tolist(), len(t)]
        pulses = [(float(angle[a]), t[a:b], c["phase_a_voltage"][a:b], c["phase_a_current"][a:b])
                  for a, b in itertools.pairwise(cuts)
                  if b - a > 100 and np.max(c["phase_a_current"][a:b]) > 1.0]
        if not pulses:
            log.warning("%s: locked-rotor step %d: no current pulses found", self.rig, step)
            return
        ch = characterise(pulses, self.params.phase_resistance_ohm)
        log.info("%s: locked-rotor characterisation: L aligned %.2f mH, unaligned %.2f mH", self.rig,
                 (ch.aligned_inductance_H or 0) * 1e3, (ch.unaligned_inductance_H or 0) * 1e3)
        self.results.append(RunArtifact(self.rig, self.run, "locked_rotor_characterisation", start_ns,
                                     {"step": step, **asdict(ch)}))


def srm_params(rig) -> SrmParams:
    """Analysis parameters from an SRM rig file."""
    return SrmParams(rig.parameters.phase_resistance_ohm, settle_s=rig.segmentation.settle_s,
                     min_steady_s=rig.segmentation.min_steady_s)


def srm_tracker(rig, master: str) -> SrmStepTracker | None:
    """A step tracker for an SRM rig file, or None without a controller reporting ``step``."""
    controller = next((d.name for d in rig.devices if "step" in d.channel_units()), None)
    if controller is None:
        log.warning("%s: no device reports a `step` channel: test steps cannot be cut live", rig.name)
        return None
    keep = max([s.hold_s for s in rig.sequence] + [10.0]) + 10.0
    rate = next((getattr(d, "sample_rate_hz", None) for d in rig.devices if d.name == master), None)
    return SrmStepTracker(rig.name, master, controller, srm_params(rig), rig.limit_dicts(), keep_s=keep,
                          rate_hz=rate)
