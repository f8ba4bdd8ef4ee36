"""How runs and cycles look in the API: the response models, built from :mod:`daq.reports.records`.

The dicts there are what certificates hold too, so a cycle or run reads the same in the
API and in a report.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from daq.catalogue import RunRow
from daq.reports.records import artifact_dict, cycle_dict, run_dict
from daq.reports.records import sweep as sweep_rows
from daq.rigs import KINDS

_EXAMPLE_METRICS = {"peak_force_kN": 97555.0, "forming_energy_kJ": 2314.0}
#: the kind whose metrics those are (the schema example names no kind itself)
_EXAMPLE_KIND = next((k.name for k in KINDS.values() if set(_EXAMPLE_METRICS) <= set(k.metrics)), "")


class CycleOut(BaseModel):
    """One analysed cycle: a press blow or a motor test step."""

    model_config = {"json_schema_extra": {"examples": [{
        "id": 17, "rig": "press-01", "run": 3, "cycle_no": 17, "kind": _EXAMPLE_KIND,
        "start": "2026-11-27T09:14:03.120+00:00", "end": "2026-11-27T09:14:03.266+00:00",
        "t_ns": 1795770843120000000, "verdict": "nok",
        "reasons": ["max_channel_share = 0.34 above max 0.3"],
        "metrics": _EXAMPLE_METRICS,
        "info": {"part": 17, "blow_in_part": 1, "bounces": 0, "device": "press01_amp"}, "version": "press-1.1",
        "samples_sha256": "9f2c…"}]}}

    id: int
    rig: str
    run: int | None
    cycle_no: int
    kind: str
    start: str
    end: str
    t_ns: int
    verdict: str
    reasons: list[str]
    metrics: dict[str, float | None]
    info: dict[str, float | int | str]
    version: str
    samples_sha256: str


class Artifact(BaseModel):
    """A run-level result, e.g. the locked-rotor ψ(i, θ) characterisation."""

    name: str
    time: str
    data: dict


class SweepRow(BaseModel):
    """One operating point of a motor run: the torque–speed and efficiency table."""

    step: int
    speed_rpm: float | None
    torque_Nm: float | None
    mech_power_W: float | None
    elec_power_W: float | None
    efficiency: float | None
    phase_current_rms_A: float | None
    torque_ripple_pct: float | None
    verdict: str


class RunOut(BaseModel):
    """A test run and what identifies it."""

    model_config = {"json_schema_extra": {"examples": [{
        "id": 3, "rig": "press-01", "active": False, "started": "2026-11-27T09:10:00.000+00:00",
        "stopped": "2026-11-27T10:10:00.000+00:00", "operator": "J. Müller", "part_number": "CRK-4411-B",
        "lot": "H23-0917", "serial": "DIE-A113", "notes": "", "extra": {}, "started_by": "lab-engineer",
        "cycles": 412, "ok": 409, "nok": 3}]}}

    id: int
    rig: str
    active: bool
    started: str
    stopped: str | None
    started_ns: int
    stopped_ns: int | None
    operator: str
    part_number: str
    lot: str
    serial: str
    notes: str
    extra: dict
    started_by: str
    revision: int = Field(default=1, description="the run's revision (1: never revised)")
    supersedes: int | None = Field(default=None, description="the revision this one replaced")
    approved: bool = Field(default=False, description="its revision's certificate is approved: locked")
    cycles: int | None = None
    ok: int | None = None
    nok: int | None = None
    artifacts: list[Artifact] | None = None
    sweep: list[SweepRow] | None = None


def run_out(r: RunRow, counts: dict[str, int] | None = None, artifacts: list[dict] | None = None,
            sweep: list[SweepRow] | None = None) -> RunOut:
    """A run for the API; cycle counts only when given (verdict → count, :meth:`Catalogue.verdict_counts`)."""
    out = RunOut(**run_dict(r))
    out.revision, out.supersedes, out.approved = r.revision, r.supersedes, r.approved
    if counts is not None:
        out.cycles = sum(counts.values())
        out.ok = counts.get("ok", 0)
        out.nok = out.cycles - out.ok
    if artifacts is not None:
        out.artifacts = [Artifact(**artifact_dict(a)) for a in artifacts]
    if sweep:
        out.sweep = sweep
    return out


def cycle_out(c: dict) -> CycleOut:
    """A catalogue cycle row for the API."""
    return CycleOut(**cycle_dict(c))


def sweep_table(cycle_rows: list[dict]) -> list[SweepRow]:
    """A run's cycles as its kind's table across operating points (a motor's torque–speed sweep; else empty)."""
    return [SweepRow(**row) for row in sweep_rows(cycle_rows)]
