"""Alarms: list them, acknowledge one with a comment (audited). Metrics: alarms by state and priority."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import BaseModel, Field, field_validator

from api.auth import Operator
from api.deps import ServiceDep, catalogue_of
from daq.alarms.model import PRIORITIES, STATES, Alarm, AlarmError
from daq.catalogue.audit import AuditTrail

router = APIRouter(prefix="/api/alarms", tags=["alarms"])

AlarmId = Annotated[int, Path(ge=1, le=2**31 - 1, description="alarm id")]
State = Literal["active_unacked", "active_acked", "cleared_unacked", "cleared"]


class AlarmOut(BaseModel):
    """An alarm with its lifecycle: state, and when it was raised, cleared and acknowledged (UTC)."""

    id: int
    rig: str = Field(description="empty for a service-wide alarm (storage, spool)")
    source: str = Field(description="verdict, device, storage, spool or calibration")
    key: str = Field(description="the condition; one open alarm per key")
    priority: str = Field(description="high, medium or low")
    message: str
    state: State
    active: bool
    raised_ns: int
    raised_at: str
    cleared_ns: int | None
    cleared_at: str | None
    acked_ns: int | None
    acked_at: str | None
    acked_by: str
    ack_comment: str


class AlarmPage(BaseModel):
    """One page of alarms, newest first."""

    total: int
    limit: int
    offset: int
    alarms: list[AlarmOut]


class Ack(BaseModel):
    """An acknowledgement: what the operator saw or did."""

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [{"comment": "die changed, press restarted"}]}}

    comment: str = Field(min_length=1, max_length=2000)

    @field_validator("comment")
    @classmethod
    def _text(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty: say what was seen or done")
        bad = [c for c in v if ord(c) < 32 and c not in "\n\t"]
        if bad:
            raise ValueError(f"control character {bad[0]!r} is not allowed")
        return v.strip()


def _iso(t_ns: int | None) -> str | None:
    if t_ns is None:
        return None
    return datetime.fromtimestamp(t_ns // 1000 / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def alarm_out(a: Alarm) -> AlarmOut:
    """The API's view of an alarm."""
    return AlarmOut(id=a.id, rig=a.rig, source=a.source, key=a.key, priority=a.priority, message=a.message,
                    state=a.state, active=a.active, raised_ns=a.raised_ns, raised_at=_iso(a.raised_ns),
                    cleared_ns=a.cleared_ns, cleared_at=_iso(a.cleared_ns), acked_ns=a.acked_ns,
                    acked_at=_iso(a.acked_ns), acked_by=a.acked_by, ack_comment=a.ack_comment)


@router.get("", summary="List alarms", response_model=AlarmPage)
async def list_alarms(service: ServiceDep, who: Operator,
                      state: Annotated[State | None, Query(description="only alarms in this state")] = None,
                      rig: Annotated[str | None, Query(max_length=64, description="only this rig's ('' for "
                                                       "service-wide ones)")] = None,
                      active: Annotated[bool | None, Query(description="true: only active alarms; false: only "
                                                           "cleared ones")] = None,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                      offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> AlarmPage:
    """Alarms, newest first, filtered by state, rig and whether they are active; paginated."""
    cat = catalogue_of(service)
    total, rows = await asyncio.to_thread(cat.list_alarms, state, rig, active, limit, offset)
    return AlarmPage(total=total, limit=limit, offset=offset, alarms=[alarm_out(a) for a in rows])


@router.post("/{alarm_id}/ack", summary="Acknowledge an alarm", response_model=AlarmOut)
async def acknowledge(alarm_id: AlarmId, body: Ack, service: ServiceDep, who: Operator) -> AlarmOut:
    """Acknowledge an alarm with a comment (required); the acknowledgement goes into the audit trail.

    ``active_unacked`` → ``active_acked``, ``cleared_unacked`` → ``cleared``; 409 if it was
    acknowledged already, 404 if there is no such alarm.
    """
    cat = catalogue_of(service)

    def audit(conn, before: Alarm, after: Alarm) -> None:  # in the acknowledgement's transaction
        AuditTrail(cat).append(who.name, "alarm_ack", f"alarm {alarm_id}", before={"state": before.state},
                               after={"state": after.state, "comment": after.ack_comment}, conn=conn)

    def ack() -> Alarm:
        return cat.ack_alarm(alarm_id, who.name, body.comment, time.time_ns(), record=audit)[1]

    try:
        after = await asyncio.to_thread(ack)
    except KeyError:
        raise HTTPException(404, f"no alarm {alarm_id}") from None
    except AlarmError as e:
        raise HTTPException(409, str(e)) from None
    return alarm_out(after)


class AlarmCollector:
    """``/metrics``: alarms by state and priority (as last counted), the webhook's counters."""

    def __init__(self, service):
        self.service = service

    def collect(self):  # noqa: D102
        stage = getattr(self.service, "alarms", None)
        if stage is None:
            return
        g = GaugeMetricFamily("rigdaq_alarms", "Alarms in the catalogue by state and priority",
                              labels=["state", "priority"])
        for state in STATES:
            for prio in PRIORITIES:
                g.add_metric([state, prio], float(stage.counts.get((state, prio), 0)))
        yield g
        yield CounterMetricFamily("rigdaq_alarms_raised", "Alarms this node raised", value=stage.raised)
        yield CounterMetricFamily("rigdaq_alarms_lost", "Alarm changes the catalogue writer had no room for",
                                  value=stage.lost)
        hook = getattr(self.service, "alarm_webhook", None)
        if hook is None:
            return
        yield CounterMetricFamily("rigdaq_alarm_webhook_sent", "Alarms the webhook took", value=hook.sent)
        yield CounterMetricFamily("rigdaq_alarm_webhook_retries", "Webhook POSTs that failed and were retried",
                                  value=hook.retried)
        dropped = CounterMetricFamily("rigdaq_alarm_webhook_dropped", "Alarms never sent: the queue was full, "
                                      "or every retry failed", labels=["reason"])
        for reason, n in hook.dropped.items():
            dropped.add_metric([reason], n)
        yield dropped
        yield GaugeMetricFamily("rigdaq_alarm_webhook_queued", "Alarms waiting for the webhook",
                                value=hook.queue.qsize())
