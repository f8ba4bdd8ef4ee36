"""Runs, cycles and artifacts as plain dicts: what the API serves and a certificate holds.

The values are normalised exactly as the API's response models (``api.views``) would
coerce them, so a report built from these dicts is the same JSON (and has the same
``content_sha256``) as when it was built from the models: metrics are floats (or None),
a cycle's ``info`` keeps ints, floats and strings and turns anything else numeric into a
float.
"""

from __future__ import annotations

from datetime import UTC, datetime

from daq.catalogue import RunRow
from daq.rigs import RigKind, UnknownKindError, kind_of


def iso(t_ns: int | None) -> str | None:
    """ISO 8601 UTC of a nanosecond timestamp (milliseconds), None for None."""
    if t_ns is None:
        return None
    return datetime.fromtimestamp(t_ns / 1e9, UTC).isoformat(timespec="milliseconds")


def known_kind(name: str | None) -> RigKind | None:
    """The rig kind of that name, or None when this build does not know it (an old or foreign run)."""
    if not name:
        return None
    try:
        return kind_of(name)
    except UnknownKindError:
        return None


def _metric(v):
    return None if v is None else float(v)


def _info(v):
    if type(v) in (int, float, str) or isinstance(v, str):
        return v
    return float(v)  # bools, numpy numbers: as a float, as the API's model makes them


def cycle_dict(c: dict) -> dict:
    """A catalogue cycle row as served: times as ISO text as well as ns, the run's id."""
    return {"id": c["id"], "rig": c["rig"], "run": c["run_id"], "cycle_no": c["cycle_no"], "kind": c["kind"],
            "start": iso(c["t_ns"]), "end": iso(c["end_ns"]), "t_ns": c["t_ns"], "verdict": c["verdict"],
            "reasons": list(c["reasons"]), "metrics": {k: _metric(v) for k, v in c["metrics"].items()},
            "info": {k: _info(v) for k, v in c["info"].items()}, "version": c["version"],
            "samples_sha256": c["samples_sha256"]}


def run_dict(r: RunRow) -> dict:
    """A run and what identifies it (without its cycles)."""
    return {"id": r.id, "rig": r.rig, "active": r.active, "started": iso(r.started_ns), "stopped": iso(r.stopped_ns),
            "started_ns": r.started_ns, "stopped_ns": r.stopped_ns, "operator": r.operator,
            "part_number": r.part_number, "lot": r.lot, "serial": r.serial, "notes": r.notes,
            "extra": r.extra or {}, "started_by": r.started_by,
            **{k: getattr(r, k) for k in ("revision", "supersedes") if hasattr(r, k)}}


def artifact_dict(a: dict) -> dict:
    """A run-level result (e.g. a locked-rotor characterisation) as served."""
    return {"name": a["name"], "time": iso(a["t_ns"]), "data": a["data"]}


def sweep(cycle_rows: list[dict]) -> list[dict]:
    """A run's cycles as its kind's table across operating points (:meth:`RigKind.sweep`).

    The kind is the cycles' own (one run, one rig, one kind); [] without cycles, for kinds
    that have no such table and for a kind this build does not know.
    """
    kind = known_kind(cycle_rows[0]["kind"]) if cycle_rows else None
    return kind.sweep(cycle_rows) if kind is not None else []


def run_sweep(catalogue, run: RunRow) -> list[dict]:
    """A run's sweep table (:func:`sweep`), its cycles read page by page.

    No cycle is read for a kind without such a table (a press run of any length costs one
    small query at most).
    """
    kind = known_kind((run.config or {}).get("kind"))
    if kind is None:
        _, first = catalogue.cycles_of_run(run.id, 1, 0)
        kind = known_kind(first[0]["kind"]) if first else None
    if kind is None or type(kind).sweep is RigKind.sweep:
        return []
    return kind.sweep([cycle_dict(r) for r in catalogue.iter_cycles_of_run(run.id)])
