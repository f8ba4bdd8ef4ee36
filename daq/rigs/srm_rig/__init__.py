"""The SR-motor test rig: test steps cut at the controller's step changes, a torque–speed sweep."""

from __future__ import annotations

import math
from typing import ClassVar

from daq.rigs.kind import Lamp, RigKind
from daq.rigs.srm_rig.schema import SrmRig
from daq.rigs.srm_rig.tracker import SrmStepTracker, srm_params, srm_tracker

__all__ = ["KIND", "SrmRig", "SrmStepTracker", "srm_params"]


def srm_motor(p):
    """Rig-file motor parameters → the simulated motor's model parameters (SI, electrical radians)."""
    from drivers.sim.srm import SrmMotor

    return SrmMotor(R=p.phase_resistance_ohm, L_a=p.aligned_inductance_mH / 1e3,
                    L_u=p.unaligned_inductance_mH / 1e3, L_sat=p.saturated_inductance_mH / 1e3,
                    psi_s=p.saturation_flux_Wb, Nr=p.rotor_poles, phases=p.phases, V_dc=p.dc_voltage_V,
                    i_max=p.current_limit_A, band=p.hysteresis_band_A,
                    theta_on=math.radians(p.turn_on_deg), theta_off=math.radians(p.turn_off_deg),
                    friction=p.friction_Nm_per_krpm / (1000 * 2 * math.pi / 60))


def _mh(h) -> str:
    return "—" if h is None else f"{h * 1e3:.6g}"


def srm_sequence(rig):
    """The rig file's test sequence as the simulated controller runs it."""
    from drivers.sim.srm_rig import SeqStep

    return [SeqStep(s.kind, s.speed_rpm, s.torque_Nm, s.hold_s, tuple(s.angles_deg), s.voltage_V,
                    s.pulse_ms / 1e3) for s in rig.sequence]


class SrmTestRig(RigKind):
    """A switched-reluctance motor test rig (``kind = "srm_rig"``)."""

    name = "srm_rig"
    schema = SrmRig
    cycle_noun = "step"
    master_channel = "torque"
    csv_columns = ("speed", "torque")
    key_metric = "efficiency"
    method = ("Test steps cut at step changes after a settle time, steady window of whole revolutions; "
              "metrics per rigdaq analysis.srm: mean torque and ripple, mechanical and electrical power, "
              "efficiency, phase RMS currents, copper loss, ripple frequency (Welch).")
    key_channels = ("speed", "torque", "step", "speed_setpoint", "torque_setpoint")
    key_metrics: ClassVar[dict[str, tuple[str, str]]] = {
        "efficiency": ("last step: efficiency", ""), "mean_torque_Nm": ("last step: mean torque", "N·m")}
    state_channels: ClassVar[dict[str, Lamp]] = {
        "state": Lamp("controller", values=((0, "idle", "off"), (1, "ramp", "active"), (2, "hold", "ok"),
                                            (3, "locked rotor", "active"), (4, "sequence done", "ok"))),
        "sequence_running": Lamp("sequence running")}
    diagnostic_channels = ("sample", "command")
    trends = (("speed",), ("torque",))
    setpoint_channels: ClassVar[dict[str, str]] = {"speed": "speed_setpoint", "torque": "torque_setpoint"}

    def tracker(self, rig, device):
        return srm_tracker(rig, device)

    def analyse(self, rig, t, channels):
        from analysis.srm import analyse, judge

        return [judge(r, rig.limit_dicts()) for r in analyse(t, channels, srm_params(rig))]

    def describe(self, r):
        return f"step {r.step} ({r.revolutions} revolutions)", {"step": r.step, "revolutions": r.revolutions}

    def no_cycles(self, rig, source):
        return (f"no test step in {source} is long enough: each needs "
                f"{rig.segmentation.settle_s:g} s to settle plus {rig.segmentation.min_steady_s:g} s")

    def simulator(self, rig, faces, data_dir, record, counter_file):
        from drivers.sim.srm_rig import RigMechanics
        from drivers.sim.srm_sim import SrmRigSimulator

        p, sim = rig.parameters, rig.simulation
        streams = faces.get("streams", [])
        rate = max((s.rate_hz for s in streams), default=20_000.0)
        mech = RigMechanics(rotor_inertia=p.rotor_inertia_kg_m2, thermal_resistance=p.thermal_resistance_K_W,
                            thermal_time_constant=p.thermal_time_constant_s, ambient_C=p.ambient_C,
                            loop=sim.loop, idle_s=sim.pause_s)
        return SrmRigSimulator(srm_motor(p), srm_sequence(rig), rate, faces.get("plcs", []), streams,
                               faces.get("rtus", []), seed=sim.seed, clock_ppm=sim.clock_ppm, record=record,
                               mech=mech, autostart=sim.autostart, counter_file=counter_file,
                               stream_buffer_s=sim.stream_buffer_s, opcuas=faces.get("opcuas", []))

    def sweep(self, cycle_rows):
        """Test steps as a torque–speed / efficiency table."""
        out = []
        for c in cycle_rows:
            m = c["metrics"]
            out.append({"step": int(c["info"].get("step", 0)), "speed_rpm": m.get("speed_rpm"),
                        "torque_Nm": m.get("mean_torque_Nm"), "mech_power_W": m.get("mech_power_W"),
                        "elec_power_W": m.get("elec_power_W"), "efficiency": m.get("efficiency"),
                        "phase_current_rms_A": m.get("phase_current_rms_A"),
                        "torque_ripple_pct": m.get("torque_ripple_pct"), "verdict": c["verdict"]})
        return out

    def report_sections(self, report):
        """The torque–speed and efficiency table, and the locked-rotor characterisation."""
        out = []
        if report["sweep"]:
            rows = [["Step", "speed rpm", "torque N·m", "P mech W", "P elec W", "efficiency", "I rms A",
                     "ripple %", "verdict"]]
            rows += [[r["step"], r["speed_rpm"], r["torque_Nm"], r["mech_power_W"], r["elec_power_W"],
                      r["efficiency"], r["phase_current_rms_A"], r["torque_ripple_pct"], r["verdict"]]
                     for r in report["sweep"]]
            out.append(("table", "Torque–speed and efficiency table", rows))
        for a in report["artifacts"]:
            d = a["data"]
            if a["name"] == "locked_rotor_characterisation":
                la, lu = d.get("aligned_inductance_H"), d.get("unaligned_inductance_H")
                out.append(("note", "", f"Locked-rotor characterisation ({a['time']}): aligned inductance "
                            f"{_mh(la)} mH, unaligned {_mh(lu)} mH, ψ(i, θ) table at "
                            f"{len(d.get('angles_deg', []))} angles."))
        return out

    def plot_cycle(self, row, rig, t_ns, chans):
        """Torque and the phase currents over a few electrical periods."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 6))
        t = (t_ns - t_ns[0]) / 1e9
        ax = fig.add_subplot(2, 1, 1)
        if "torque" in chans:
            ax.plot(t, chans["torque"], lw=0.6, color="tab:red")
        ax.set_ylabel("torque [N·m]")
        ax2 = fig.add_subplot(2, 1, 2, sharex=ax)
        for x in "abcd":
            if f"phase_{x}_current" in chans:
                ax2.plot(t, chans[f"phase_{x}_current"], lw=0.6, label=f"phase {x}")
        ax2.set_ylabel("current [A]")
        ax2.set_xlabel("time [s]")
        ax2.legend(loc="upper right", ncol=4, fontsize=8)
        span = t[-1] if len(t) else 0
        if span > 0.1:  # show a few electrical periods, not a solid band
            ax.set_xlim(0, min(span, 0.05))
        return fig


KIND = SrmTestRig()
