"""Plots for the API and reports (matplotlib, object API: safe off the main thread)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def cycle_plot(row: dict, rig, t_ns: np.ndarray, chans: dict[str, np.ndarray]) -> bytes:
    """Press: force over position with the envelope band. Motor: torque and phase currents."""
    title = f"{row['rig']} cycle {row['cycle_no']} (id {row['id']}): {row['verdict'].upper()}"
    if row["kind"] == "screw_press" and "force" in chans:
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
    else:
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
    fig.suptitle(title, fontsize=11)
    for a in fig.axes:
        a.grid(True, alpha=0.3)
    return _png(fig)


def imr_chart(values: list[float], limits: dict, flagged: set[int], metric: str) -> bytes:
    """Individuals and moving-range chart with control limits; Nelson-rule points in red."""
    fig = Figure(figsize=(8, 5))
    x = np.arange(1, len(values) + 1)
    v = np.asarray(values, dtype=float)
    ax = fig.add_subplot(2, 1, 1)
    ax.plot(x, v, "-o", ms=3, lw=0.8, color="tab:blue")
    if flagged:
        idx = np.array(sorted(flagged))
        ax.plot(x[idx], v[idx], "o", ms=6, color="tab:red", label="Nelson rule")
        ax.legend(loc="upper right", fontsize=8)
    for key, style in (("center", "-"), ("ucl", "--"), ("lcl", "--")):
        if limits.get(key) is not None:
            ax.axhline(limits[key], ls=style, color="gray", lw=0.8)
    ax.set_ylabel(metric)
    ax2 = fig.add_subplot(2, 1, 2, sharex=ax)
    mr = np.abs(np.diff(v))
    ax2.plot(x[1:], mr, "-o", ms=3, lw=0.8, color="tab:purple")
    if limits.get("mr_ucl") is not None:
        ax2.axhline(limits["mr_ucl"], ls="--", color="gray", lw=0.8)
    if limits.get("mr_center") is not None:
        ax2.axhline(limits["mr_center"], ls="-", color="gray", lw=0.8)
    ax2.set_ylabel("moving range")
    ax2.set_xlabel("cycle")
    for a in fig.axes:
        a.grid(True, alpha=0.3)
    fig.suptitle(f"I-MR chart: {metric}", fontsize=11)
    return _png(fig)
