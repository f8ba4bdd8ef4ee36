"""``GET /api/rigs``, ``GET /api/rigs/{rig}/latest`` and ``GET /api/rigs/{rig}/layout``."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from fastapi import APIRouter
from pydantic import BaseModel

from api.auth import Operator
from api.deps import RigDep, ServiceDep
from daq.rigs import kind_of

router = APIRouter(prefix="/api/rigs", tags=["rigs"])


class DeviceState(BaseModel):
    """One device of a rig."""

    name: str
    state: str
    last_error: str | None = None


class RigSummary(BaseModel):
    """A rig as operators see it."""

    name: str
    kind: str
    description: str
    simulated: bool
    state: str
    devices: list[DeviceState]
    active_run: str | None = None
    last_verdict: str | None = None
    last_cycle: int | None = None
    last_reasons: list[str] = []
    last_metrics: dict[str, float | None] = {}


class ChannelReading(BaseModel):
    """The latest value of one channel."""

    value: float | int | bool | str
    unit: str
    t_ns: int
    time: str
    quality: int
    device: str


class LatestReadings(BaseModel):
    """Latest value per channel of one rig."""

    rig: str
    channels: dict[str, ChannelReading]


@router.get("", summary="Rigs with state", response_model=list[RigSummary])
def list_rigs(service: ServiceDep, who: Operator) -> list[RigSummary]:
    """Every configured rig; ``state`` is the worst of its devices' states."""
    out = []
    for rig in service.rigs.values():
        devs = [DeviceState(name=name, state=state, last_error=err)
                for name, state, err in service.device_states(rig.name)]
        states = {d.state for d in devs}
        state = next((s for s in ("down", "degraded", "starting") if s in states), "ok")
        last = service.last_cycle.get(rig.name)
        run = service.runs.active.get(rig.name) if service.runs else None
        out.append(RigSummary(name=rig.name, kind=rig.kind, description=rig.description,
                              simulated=rig.simulate and service.simulate, state=state,
                              devices=devs, active_run=str(run.id) if run else None,
                              last_verdict=last.verdict if last else None,
                              last_cycle=last.cycle_no if last else None,
                              last_reasons=last.reasons if last else [],
                              last_metrics=_finite(last.metrics) if last else {}))
    return out


def _finite(metrics: dict) -> dict[str, float | None]:
    return {k: (float(v) if v is not None and math.isfinite(v) else None) for k, v in metrics.items()}


class KeyValue(BaseModel):
    """A channel shown large."""

    channel: str
    label: str
    unit: str


class KeyMetric(BaseModel):
    """A metric of the last cycle shown large, with its acceptance limits."""

    metric: str
    label: str
    unit: str
    min: float | None = None
    max: float | None = None


class LampValue(BaseModel):
    """One value of an enumerated state: its label and lamp colour."""

    value: int
    label: str
    tone: str


class StateLamp(BaseModel):
    """A state channel shown as a lamp: a bit lit in ``tone``, or an enumeration (``values``)."""

    channel: str
    label: str
    tone: str
    values: list[LampValue]


class TrendLine(BaseModel):
    """A line on a trend: ``limit``, ``setpoint`` or ``reference``; at ``value`` or at the live ``channel``."""

    label: str
    kind: str
    value: float | None = None
    channel: str | None = None


class Trend(BaseModel):
    """Channels plotted over the last ``span_s`` seconds on one axis in ``unit``."""

    channels: list[str]
    unit: str
    span_s: float
    title: str
    lines: list[TrendLine]


class RigLayout(BaseModel):
    """How the operator page shows a rig: declared by its kind, filtered to the rig's channels.

    A channel in none of ``key``, ``states`` and ``diagnostics`` is a secondary value.
    """

    model_config = {"json_schema_extra": {"examples": [{
        "rig": "press-01", "kind": "screw_press", "cycle_noun": "blow",
        "key": [{"channel": "force", "label": "force", "unit": "kN"}],
        "metrics": [{"metric": "peak_force_kN", "label": "last blow: peak force", "unit": "kN",
                     "min": None, "max": 100000.0}],
        "states": [{"channel": "state_fault", "label": "fault", "tone": "bad", "values": []}],
        "diagnostics": ["sample", "plc_tick"],
        "trends": [{"channels": ["force"], "unit": "kN", "span_s": 20.0, "title": "force",
                    "lines": [{"label": "peak_force_kN max", "kind": "limit", "value": 100000.0,
                               "channel": None}]}]}]}}

    rig: str
    kind: str
    cycle_noun: str | None
    key: list[KeyValue]
    metrics: list[KeyMetric]
    states: list[StateLamp]
    diagnostics: list[str]
    trends: list[Trend]


@router.get("/{rig}/layout", summary="How the operator page shows the rig", response_model=RigLayout)
def layout(rig: RigDep, who: Operator) -> RigLayout:
    """Key values, last-cycle metrics with limits, state lamps, diagnostics and trends with their lines."""
    return RigLayout(rig=rig.name, **kind_of(rig).operator_layout(rig))


@router.get("/{rig}/latest", summary="Latest value per channel", response_model=LatestReadings)
def latest(rig: RigDep, service: ServiceDep, who: Operator) -> LatestReadings:
    """Latest value, unit, timestamp and quality (0 good, 1 partial) of every channel."""
    channels = {
        name: ChannelReading(value=r.value, unit=r.unit, t_ns=r.t_ns, quality=r.quality,
                             device=r.device,
                             time=datetime.fromtimestamp(r.t_ns / 1e9, UTC).isoformat())
        for name, r in service.live.latest(rig.name).items()
    }
    return LatestReadings(rig=rig.name, channels=channels)
