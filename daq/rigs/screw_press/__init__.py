"""The electric screw press: blows cut from the force stream, forming metrics, force–position plots."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from daq.rigs.kind import Lamp, Line, RigKind
from daq.rigs.screw_press.schema import PressRig
from daq.rigs.screw_press.tracker import PressCycleTracker, press_envelope, press_params, press_tracker

__all__ = ["KIND", "PressCycleTracker", "PressRig", "press_envelope", "press_params"]


def press_model_parameters(p):
    """Rig-file parameters (engineering units) → the simulated press's model parameters (SI)."""
    from drivers.sim.press import PressParameters

    return PressParameters(
        inertia_kg_m2=p.flywheel_inertia_kg_m2,
        lead_m=p.screw_lead_m,
        ram_mass_kg=p.ram_mass_kg,
        stroke_m=p.stroke_mm / 1e3,
        torque_max_Nm=p.motor_torque_max_kNm * 1e3,
        power_max_W=p.motor_power_max_kW * 1e3,
        blow_speed_rad_s=p.blow_speed_rpm * 2 * math.pi / 60,
        frame_stiffness_N_m=p.frame_stiffness_kN_mm * 1e6,
        nominal_force_N=p.nominal_force_kN * 1e3,
        blow_interval_s=p.blow_interval_s,
    )


class ScrewPress(RigKind):
    """An electric screw press (``kind = "screw_press"``)."""

    name = "screw_press"
    schema = PressRig
    cycle_noun = "blow"
    master_channel = "force"
    csv_columns = ("force",)
    key_metric = "peak_force_kN"
    method = ("Blows cut from the force stream (contact threshold with hysteresis); metrics per "
              "rigdaq analysis.press: peak force, forming energy (integral of force over ram travel), "
              "impact velocity (Savitzky–Golay), blow energy ½Jω²+½mv², efficiency, contact time.")
    key_channels = ("force", "position", "flywheel_speed")
    key_metrics: ClassVar[dict[str, tuple[str, str]]] = {"peak_force_kN": ("last blow: peak force", "kN"),
                   "blow_energy_kJ": ("last blow: blow energy", "kJ"),
                   "forming_energy_kJ": ("last blow: forming energy", "kJ")}
    state_channels: ClassVar[dict[str, Lamp]] = {"state_running": Lamp("running"), "state_contact": Lamp("contact"),
                      "state_return": Lamp("return stroke"), "state_fault": Lamp("fault", "bad"),
                      "lube_pump_running": Lamp("lube pump", "ok")}
    diagnostic_channels = ("sample", "plc_tick", "blow_count", "motor_energy")  # counters since power-on
    trends = (("force",), ("position",), ("flywheel_speed",))
    channel_limits: ClassVar[dict[str, str]] = {"force": "peak_force_kN"}

    def reference_lines(self, rig):
        """The peak force's limits on force, the blow speed set-point, the die face on the ram position."""
        out = super().reference_lines(rig)
        p = rig.parameters
        out.setdefault("flywheel_speed", []).append(Line("blow speed", "setpoint", value=p.blow_speed_rpm))
        out.setdefault("position", []).append(Line("die face", "reference", value=p.stroke_mm))
        return out

    def tracker(self, rig, device):
        return press_tracker(rig, device)

    def analyse(self, rig, t, channels):
        from analysis.press import analyse, bounce_reasons, envelope_reasons, judge

        env = press_envelope(rig)  # bounces (a contact within post_s of a blow's end) make it nok, as live
        return [judge(r, rig.limit_dicts(),
                      envelope_reasons(t, channels.get("position"), channels["force"], r, env) + bounce_reasons(r))
                for r in analyse(t, channels, press_params(rig))]

    def describe(self, r):
        return (f"blow {r.index + 1} (part {r.part}, blow {r.blow_in_part})",
                {"part": r.part, "blow_in_part": r.blow_in_part, "bounces": len(r.bounces)})

    def no_cycles(self, rig, source):
        return (f"no blow in {source}: force never rose above the contact threshold "
                f"({rig.parameters.contact_threshold_kN:g} kN)")

    def window(self, rig, row):
        """Blows keep ``pre_s``/``post_s`` around the contact (impact speed, bounces)."""
        return (row["t_ns"] - int(rig.segmentation.pre_s * 1e9),
                row["end_ns"] + int(rig.segmentation.post_s * 1e9))

    def simulator(self, rig, faces, data_dir, record, counter_file):
        from drivers.sim.press_sim import ScrewPressSimulator

        return ScrewPressSimulator(press_model_parameters(rig.parameters), faces.get("plcs", []),
                                   faces.get("streams", []), faces.get("rtus", []), seed=rig.simulation.seed,
                                   clock_ppm=rig.simulation.clock_ppm, record=record, counter_file=counter_file,
                                   stream_buffer_s=rig.simulation.stream_buffer_s, opcuas=faces.get("opcuas", []))

    def plot_cycle(self, row, rig, t_ns, chans):
        """Force over ram position with the envelope band (over time without a position)."""
        from matplotlib.figure import Figure

        if "force" not in chans:
            return super().plot_cycle(row, rig, t_ns, chans)
        fig = Figure(figsize=(8, 5))
        ax = fig.add_subplot()
        if "position" in chans:
            x, f = chans["position"], chans["force"]
            ax.plot(x, f / 1e3, lw=1.0, color="tab:blue", label="force")
            loaded = x[f > 0.01 * np.nanmax(f)] if np.nanmax(f) > 0 else x
            if len(loaded):
                ax.set_xlim(np.nanmin(loaded) - 20, np.nanmax(loaded) + 10)
            ax.set_xlabel("ram position [mm]")
        else:
            ax.plot((t_ns - t_ns[0]) / 1e9, chans["force"] / 1e3, lw=1.0, label="force")
            ax.set_xlabel("time [s]")
        env = getattr(rig, "envelope", None) if rig is not None else None
        if env is not None and "position" in chans:
            x = np.asarray(env.position_mm)
            ax.fill_between(x, np.asarray(env.force_min_kN) / 1e3, np.asarray(env.force_max_kN) / 1e3,
                            color="tab:green", alpha=0.2, label="envelope")
        ax.set_ylabel("force [MN]")
        ax.legend(loc="upper left")
        return fig


KIND = ScrewPress()
