"""What a rig kind declares, in one place: the base class every kind's module fills in.

A rig kind (a screw press, an SR-motor test rig, a plain logger…) is one module or small
package under :mod:`daq.rigs` holding an instance of a :class:`RigKind` subclass. It says:

* ``name`` (a rig file's ``kind = "…"``) and ``schema``: the pydantic model of its rig
  file (a :class:`daq.config.RigBase` with its parameters), whose ``METRICS`` are the
  metric names its limits may name;
* ``cycle_noun`` and ``master_channel``: what one test cycle is called and which channel
  marks the device whose stream is cut into cycles (None: the kind has no cycles);
* ``csv_columns``: the columns ``daq analyse`` needs in a recording;
* :meth:`tracker` (live segmentation and analysis) and :meth:`analyse` (offline, the same
  analysis on a recording);
* :meth:`simulator`: its simulated equipment, given the faces the transports declared;
* its report content: ``key_metric`` (charted with SPC), ``method`` (how cycles are cut
  and measured), :meth:`report_extras` and :meth:`plot_cycle`;
* :meth:`window`: the part of the stream a cycle's curve covers;
* its operator page (:meth:`operator_layout`): ``key_channels`` and ``key_metrics`` shown
  large, ``state_channels`` as lamps, ``diagnostic_channels`` folded away, ``trends`` with
  ``setpoint_channels`` and ``channel_limits`` drawn in (:meth:`reference_lines`).

The rest of the code asks :mod:`daq.rigs` (the listing) for a rig's kind and never names one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

#: lamp colours on the operator page: ok green, active blue, warn amber, bad red, off grey
TONES = ("ok", "active", "warn", "bad", "off")


@dataclass(frozen=True)
class Lamp:
    """A state channel shown as a lamp: a bit (lit in ``tone`` when set) or an enumeration.

    ``values`` names an enumeration's values: ``(value, label, tone)`` each; a value not
    listed shows as its number with the ``warn`` tone.
    """

    label: str
    tone: str = "active"
    values: tuple[tuple[int, str, str], ...] = ()

    def __post_init__(self) -> None:
        bad = [t for t in (self.tone, *(v[2] for v in self.values)) if t not in TONES]
        if bad:
            raise ValueError(f"lamp {self.label!r}: tone {bad[0]!r} is not one of {', '.join(TONES)}")


@dataclass(frozen=True)
class Line:
    """A horizontal line on a trend: a ``limit``, a ``setpoint`` or a ``reference`` mark.

    Its height is ``value``, or, for a live set-point, the latest value of ``channel``.
    """

    label: str
    kind: str
    value: float | None = None
    channel: str | None = None


def _label(name: str) -> str:
    return name.replace("_", " ")


class RigKind:
    """Base of every rig kind's declaration (see the module docstring)."""

    name: ClassVar[str]
    schema: ClassVar[type]
    cycle_noun: ClassVar[str | None] = None  # "blow", "step"; None: no cycles
    master_channel: ClassVar[str | None] = None
    csv_columns: ClassVar[tuple[str, ...]] = ()
    key_metric: ClassVar[str] = ""
    method: ClassVar[str] = ""
    # -- the operator page (see operator_layout) --
    #: channels shown large (None: every channel that is neither a state nor a diagnostic)
    key_channels: ClassVar[tuple[str, ...] | None] = None
    #: metrics of the last cycle shown large: metric → (label, unit)
    key_metrics: ClassVar[dict[str, tuple[str, str]]] = {}
    #: channels shown as lamps
    state_channels: ClassVar[dict[str, Lamp]] = {}
    #: counters and diagnostics, folded away (with every device's heartbeat and time register)
    diagnostic_channels: ClassVar[tuple[str, ...]] = ("sample",)
    #: trends, each a group of channels on one axis (None: the key channels, one trend per unit, at most 4)
    trends: ClassVar[tuple[tuple[str, ...], ...] | None] = None
    #: how much of the past a trend shows, seconds
    trend_span_s: ClassVar[float] = 20.0
    #: channel → the channel carrying its set-point (drawn on its trend)
    setpoint_channels: ClassVar[dict[str, str]] = {}
    #: channel → the cycle metric whose limits bound it (e.g. force by the peak force's limits)
    channel_limits: ClassVar[dict[str, str]] = {}

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metric names of its cycles (what limits may name)."""
        return tuple(self.schema.METRICS)

    # -- cycles ---------------------------------------------------------------------------
    def tracker_for(self, rig) -> Any:
        """The rig's live tracker, or None (no cycles, or no device carries ``master_channel``).

        A tracker takes every block of the rig and returns what it completed
        (``feed(rig, block) -> list`` of cycle results, run artifacts, events: the
        segmentation stage publishes them), knows the active run (``run``, set by the run
        manager), numbers its cycles from ``cycle_no`` and, when a run stops, returns what
        becomes final then (``close_run(end_ns)``: a cycle result, a run artifact, or None).
        It never touches the bus. By default it runs on the rig's fastest device carrying
        ``master_channel``.
        """
        key = self.master_channel
        if key is None:
            return None
        best, rate = None, 0.0
        for d in rig.devices:
            hz = getattr(d, "sample_rate_hz", None) or getattr(d, "poll_hz", None) or 0.0
            if key in d.channel_units() and hz > rate:
                best, rate = d.name, hz
        return None if best is None else self.tracker(rig, best)

    def tracker(self, rig, device: str) -> Any:
        """The live cycle tracker on ``device`` (see :meth:`tracker_for`)."""
        return None

    def analyse(self, rig, t: np.ndarray, channels: dict[str, np.ndarray]) -> list:
        """Every cycle of a recording, analysed and judged as live."""
        return []

    def describe(self, r) -> tuple[str, dict]:
        """One analysed cycle for ``daq analyse``: (its label, the kind's extra JSON fields)."""
        return f"{self.cycle_noun} {r.index + 1}", {}

    def no_cycles(self, rig, source: str) -> str:
        """Why a recording held no cycle, in the user's terms."""
        return f"no {self.cycle_noun or 'cycle'} in {source}"

    def window(self, rig, row: dict) -> tuple[int, int]:
        """(start, end) ns of a cycle's curve: by default the analysed span."""
        return row["t_ns"], row["end_ns"]

    # -- the operator page ----------------------------------------------------------------
    def reference_lines(self, rig) -> dict[str, list[Line]]:
        """Lines drawn on each channel's trend: live set-points and the limits of ``channel_limits``."""
        out: dict[str, list[Line]] = {}
        for ch, sp in self.setpoint_channels.items():
            out.setdefault(ch, []).append(Line(f"{_label(sp)}", "setpoint", channel=sp))
        for ch, metric in self.channel_limits.items():
            limit = rig.limits.get(metric)
            for bound in ("min", "max"):
                v = getattr(limit, bound, None) if limit is not None else None
                if v is not None:
                    out.setdefault(ch, []).append(Line(f"{metric} {bound}", "limit", value=float(v)))
        return out

    def operator_layout(self, rig) -> dict:
        """What the operator page shows for ``rig``, and how: only channels the rig's devices carry.

        ``key`` (channel, label, unit) and ``metrics`` (metric, label, unit, min, max) shown
        large; ``states`` as lamps; ``diagnostics`` folded away; ``trends`` (channels, unit,
        title, span_s, lines). A channel in none of these is a secondary value.
        """
        units: dict[str, str] = {}
        diagnostics = list(self.diagnostic_channels)
        for d in rig.devices:
            units.update(d.channel_units())
            diagnostics += [c for c in (getattr(d, "heartbeat", None), getattr(d, "time_register", None)) if c]
        diagnostics = [c for c in dict.fromkeys(diagnostics) if c in units]
        states = [dict(channel=c, **asdict(lamp)) for c, lamp in self.state_channels.items() if c in units]
        for st in states:
            st["values"] = [{"value": v, "label": lab, "tone": tone} for v, lab, tone in st["values"]]
        taken = set(diagnostics) | {s["channel"] for s in states}
        key_names = (self.key_channels if self.key_channels is not None
                     else tuple(c for c in units if c not in taken))
        key = [{"channel": c, "label": _label(c), "unit": units[c]} for c in key_names if c in units]
        metrics = []
        for m, (label, unit) in self.key_metrics.items():
            limit = rig.limits.get(m)
            metrics.append({"metric": m, "label": label, "unit": unit,
                            "min": limit.min if limit is not None else None,
                            "max": limit.max if limit is not None else None})
        groups = self.trends
        if groups is None:
            by_unit: dict[str, list[str]] = {}
            for k in key:
                by_unit.setdefault(k["unit"], []).append(k["channel"])
            groups = tuple(tuple(chs) for chs in by_unit.values())[:4]
        lines = self.reference_lines(rig)
        trends = []
        for g in groups:
            chs = [c for c in g if c in units]
            if not chs:
                continue
            drawn = [ln for c in chs for ln in lines.get(c, [])
                     if ln.channel is None or ln.channel in units]
            trends.append({"channels": chs, "unit": units[chs[0]], "span_s": self.trend_span_s,
                           "title": ", ".join(_label(c) for c in chs) if len(chs) <= 3 else
                           f"{_label(chs[0])} … {_label(chs[-1])}",
                           "lines": [asdict(ln) for ln in drawn]})
        return {"kind": self.name, "cycle_noun": self.cycle_noun, "key": key, "metrics": metrics,
                "states": states, "diagnostics": diagnostics, "trends": trends}

    # -- simulation -----------------------------------------------------------------------
    def simulator(self, rig, faces: dict[str, list], data_dir: Path, record: bool, counter_file: Path):
        """Its simulated equipment, showing every device through the face its transport declared."""
        raise NotImplementedError(f"rig kind {self.name} has no simulator")

    # -- reports --------------------------------------------------------------------------
    def report_sections(self, report: dict) -> list[tuple[str, str, object]]:
        """Kind-specific parts of a run's PDF certificate, drawn from the report's content.

        Each is ``("table", title, rows)`` (the first row the header) or ``("note", "", text)``.
        """
        return []

    def sweep(self, cycle_rows: list[dict]) -> list[dict]:
        """A run's cycles as a table across operating points (a motor's torque–speed sweep); [] if none."""
        return []

    def plot_cycle(self, row: dict, rig, t_ns: np.ndarray, chans: dict[str, np.ndarray]):
        """One cycle's curve as a matplotlib ``Figure``: by default every numeric channel over time."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 5))
        ax = fig.add_subplot()
        t = (t_ns - t_ns[0]) / 1e9 if len(t_ns) else t_ns
        for name, v in chans.items():
            if name != "sample" and v.dtype.kind in "fiu":
                ax.plot(t, v, lw=0.8, label=name)
        ax.set_xlabel("time [s]")
        ax.legend(loc="upper right", fontsize=7)
        return fig
