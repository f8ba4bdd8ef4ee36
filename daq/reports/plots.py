"""Plots for the API and reports (matplotlib, object API: safe off the main thread)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from daq.reports.records import known_kind
from daq.rigs import RigKind

_PLAIN = RigKind()  # the base declaration's plot, for a kind this build does not know


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def cycle_plot(row: dict, rig, t_ns: np.ndarray, chans: dict[str, np.ndarray]) -> bytes:
    """One cycle as a PNG: drawn by its rig kind (:meth:`RigKind.plot_cycle`), titled and gridded here.

    A cycle of a kind this build does not know gets the plain plot (every numeric channel
    over time).
    """
    kind = known_kind(row["kind"]) or _PLAIN
    fig = kind.plot_cycle(row, rig, t_ns, chans)
    fig.suptitle(f"{row['rig']} cycle {row['cycle_no']} (id {row['id']}): {row['verdict'].upper()}", fontsize=11)
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
