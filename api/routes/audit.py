"""The audit trail (qa and admin): who did what and when, with before and after; and its check."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.auth import QA
from api.deps import ServiceDep, catalogue_of
from api.inputs import epoch_ns
from daq.catalogue.audit import AuditTrail
from daq.reports.records import iso

router = APIRouter(prefix="/api/audit", tags=["audit"])


class AuditEntry(BaseModel):
    """One entry of the hash-chained audit trail."""

    id: int
    time: str
    t_ns: int
    actor: str
    action: str
    target: str
    details: dict
    prev_sha256: str
    sha256: str


class AuditPage(BaseModel):
    """One page of entries, in the order asked for (``order``: newest first by default)."""

    total: int
    limit: int
    offset: int
    order: str
    entries: list[AuditEntry]


class AuditCheck(BaseModel):
    """Whether the chain is intact, and the first broken entry if not."""

    ok: bool
    entries: int
    first_broken: int | None
    kind: str | None
    reason: str
    head_sha256: str


@router.get("", summary="The audit trail", response_model=AuditPage)
async def audit(service: ServiceDep, who: QA,
                action: Annotated[str | None, Query(max_length=64, description="e.g. signature, run_start")] = None,
                actor: Annotated[str | None, Query(max_length=200, description="key name, cli:<user>, service")] = None,
                target: Annotated[str | None, Query(max_length=200, description="e.g. 'run 12', 'key 3'")] = None,
                since: Annotated[datetime | None, Query(description="at or after (ISO 8601)")] = None,
                until: Annotated[datetime | None, Query(description="before (ISO 8601)")] = None,
                order: Annotated[Literal["newest", "oldest"], Query(description="newest first (default) or "
                                                                                "in the order recorded")] = "newest",
                limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> AuditPage:
    """Entries filtered by action, actor, target and time; newest first unless ``order=oldest``."""
    cat = catalogue_of(service)
    total, rows = await asyncio.to_thread(AuditTrail(cat).entries, action=action, actor=actor, target=target,
                                          since_ns=epoch_ns(since), until_ns=epoch_ns(until), limit=limit,
                                          offset=offset, newest_first=order == "newest")
    return AuditPage(total=total, limit=limit, offset=offset, order=order,
                     entries=[AuditEntry(**r, time=iso(r["t_ns"])) for r in rows])


@router.get("/verify", summary="Check the audit trail's hash chain", response_model=AuditCheck)
async def verify(service: ServiceDep, who: QA) -> AuditCheck:
    """Walk the chain: intact, or the first entry altered, deleted or inserted."""
    res = await asyncio.to_thread(AuditTrail(catalogue_of(service)).verify)
    return AuditCheck(ok=res.ok, entries=res.entries, first_broken=res.first_broken, kind=res.kind,
                      reason=res.reason, head_sha256=res.head_sha256)
