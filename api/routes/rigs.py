"""``GET /api/rigs`` and ``GET /api/rigs/{rig}/latest``."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from pydantic import BaseModel

from api.auth import Operator
from api.deps import RigDep, ServiceDep

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
                              last_reasons=last.reasons if last else []))
    return out


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
