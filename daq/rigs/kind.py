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
* :meth:`window`: the part of the stream a cycle's curve covers.

The rest of the code asks :mod:`daq.rigs` (the listing) for a rig's kind and never names one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np


class RigKind:
    """Base of every rig kind's declaration (see the module docstring)."""

    name: ClassVar[str]
    schema: ClassVar[type]
    cycle_noun: ClassVar[str | None] = None  # "blow", "step"; None: no cycles
    master_channel: ClassVar[str | None] = None
    csv_columns: ClassVar[tuple[str, ...]] = ()
    key_metric: ClassVar[str] = ""
    method: ClassVar[str] = ""

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
