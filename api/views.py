"""How runs and cycles look in the API (and in reports): response models and their builders."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from daq.catalogue import RunRow


def iso(t_ns: int | None) -> str | None:
    """ISO 8601 UTC of a nanosecond timestamp."""
    if t_ns is None:
        return None
    return datetime.fromtimestamp(t_ns / 1e9, UTC).isoformat(timespec="milliseconds")


class CycleOut(BaseModel):
    """One analysed cycle: a press blow or a motor test step."""

    model_config = {"json_schema_extra": {"examples": [{
        "id": 17, "rig": "press-01", "run": 3, "cycle_no": 17, "kind": "screw_press",
        "start": "2026-11-27T09:14:03.120+00:00", "end": "2026-11-27T09:14:03.266+00:00",
        "t_ns": 1795770843120000000, "verdict": "nok",
        "reasons": ["max_channel_share = 0.34 above max 0.3"],
        "metrics": {"peak_force_kN": 97555.0, "forming_energy_kJ": 2314.0},
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
    cycles: int | None = None
    ok: int | None = None
    nok: int | None = None
    artifacts: list[Artifact] | None = None
    sweep: list[SweepRow] | None = None


def run_out(r: RunRow, cycle_rows: list[dict] | None = None, artifacts: list[dict] | None = None,
            sweep: list[SweepRow] | None = None) -> RunOut:
    """A run for the API; counts only when its cycles are given."""
    out = RunOut(id=r.id, rig=r.rig, active=r.active, started=iso(r.started_ns), stopped=iso(r.stopped_ns),
                 started_ns=r.started_ns, stopped_ns=r.stopped_ns, operator=r.operator,
                 part_number=r.part_number, lot=r.lot, serial=r.serial, notes=r.notes, extra=r.extra or {},
                 started_by=r.started_by)
    if cycle_rows is not None:
        out.cycles = len(cycle_rows)
        out.ok = sum(1 for c in cycle_rows if c["verdict"] == "ok")
        out.nok = out.cycles - out.ok
    if artifacts is not None:
        out.artifacts = [Artifact(name=a["name"], time=iso(a["t_ns"]), data=a["data"]) for a in artifacts]
    if sweep:
        out.sweep = sweep
    return out


def cycle_out(c: dict) -> CycleOut:
    """A catalogue cycle row for the API."""
    return CycleOut(id=c["id"], rig=c["rig"], run=c["run_id"], cycle_no=c["cycle_no"], kind=c["kind"],
                    start=iso(c["t_ns"]), end=iso(c["end_ns"]), t_ns=c["t_ns"], verdict=c["verdict"],
                    reasons=list(c["reasons"]), metrics=dict(c["metrics"]), info=dict(c["info"]),
                    version=c["version"], samples_sha256=c["samples_sha256"])


def sweep_table(cycle_rows: list[dict]) -> list[SweepRow]:
    """Motor test steps as a torque–speed / efficiency table (empty for presses)."""
    out = []
    for c in cycle_rows:
        if c["kind"] != "srm_rig":
            continue
        m = c["metrics"]
        out.append(SweepRow(step=int(c["info"].get("step", 0)), speed_rpm=m.get("speed_rpm"),
                            torque_Nm=m.get("mean_torque_Nm"), mech_power_W=m.get("mech_power_W"),
                            elec_power_W=m.get("elec_power_W"), efficiency=m.get("efficiency"),
                            phase_current_rms_A=m.get("phase_current_rms_A"),
                            torque_ripple_pct=m.get("torque_ripple_pct"), verdict=c["verdict"]))
    return out
