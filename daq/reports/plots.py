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


def control_chart_png(spc: dict) -> bytes:
    """A certificate's control chart (its ``spc`` section): the location chart over the spread chart.

    Individuals or subgroup means against the first cycle number of each point, with the
    centre line and control limits; points a Nelson rule flags in red. At most a hundred or so
    points whatever the run's length (see :func:`analysis.spc.control_chart`).
    """
    fig = Figure(figsize=(8, 5))
    n = spc["subgroup_size"]
    v = np.asarray(spc["individuals"] if n == 1 else spc["means"], dtype=float)
    x = np.asarray(spc["first_cycle_no"], dtype=float)
    ax = fig.add_subplot(2, 1, 1)
    ax.plot(x, v, "-o", ms=3, lw=0.8, color="tab:blue")
    flagged = sorted({f["point"] for f in spc["flags"]})
    if flagged:
        ax.plot(x[flagged], v[flagged], "o", ms=6, color="tab:red", label="Nelson rule")
        ax.legend(loc="upper right", fontsize=8)
    for key, style in (("center", "-"), ("ucl", "--"), ("lcl", "--")):
        ax.axhline(spc[key], ls=style, color="gray", lw=0.8)
    ax.set_ylabel(spc["metric"] if n == 1 else f"mean of {n}: {spc['metric']}", fontsize=8)
    ax2 = fig.add_subplot(2, 1, 2, sharex=ax)
    sp = spc["spread"]
    xs = x[1:] if n == 1 else x
    ax2.plot(xs, np.asarray(sp["values"], dtype=float), "-o", ms=3, lw=0.8, color="tab:purple")
    for key, style in (("center", "-"), ("ucl", "--"), ("lcl", "--")):
        if sp[key]:
            ax2.axhline(sp[key], ls=style, color="gray", lw=0.8)
    ax2.set_ylabel(sp["name"], fontsize=8)
    ax2.set_xlabel("cycle" if n == 1 else f"first cycle of each subgroup of {n}")
    for a in fig.axes:
        a.grid(True, alpha=0.3)
    title = {"I-MR": "I-MR chart", "Xbar-R": "X̄–R chart", "Xbar-S": "X̄–S chart"}[spc["chart"]]
    fig.suptitle(f"{title}: {spc['metric']}", fontsize=11)
    return _png(fig)
