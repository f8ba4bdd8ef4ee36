"""Live cycle segmentation: each rig kind's tracker cuts its cycles from the bus and analyses them."""

from __future__ import annotations

from daq.cycles.result import CycleResult, RunArtifact

__all__ = ["CycleResult", "RunArtifact", "tracker_for"]


def tracker_for(rig):
    """The rig kind's live tracker (:meth:`daq.rigs.kind.RigKind.tracker_for`), or None."""
    from daq.rigs import kind_of

    return kind_of(rig).tracker_for(rig)
