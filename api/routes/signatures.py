"""QA sign-off: electronic signatures of a run's certificate, metadata edits and run revisions.

Signing (``qa`` or ``admin``) re-authenticates: the request's API key is given again in the body.
Once a run's current revision is approved its metadata and results are locked; a change is a new
revision (engineer or above, with a reason), unsigned until signed again.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, Field, field_validator

from api.auth import QA, Engineer
from api.deps import ServiceDep, catalogue_of
from api.inputs import printable, printable_extra
from api.views import RunOut, run_out
from daq.catalogue.audit import AuditTrail
from daq.catalogue.signatures import SigningError, sign_run
from daq.catalogue.store import RunError

router = APIRouter(prefix="/api/runs", tags=["sign-off"])

RunId = Annotated[int, Path(ge=1, le=2**62, description="run id")]
Text = Annotated[str, Field(max_length=200)]


class SignatureIn(BaseModel):
    """A signature of the run's current revision, with the re-authentication."""

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [{
        "meaning": "approved", "reason": "all cycles within limits; capability adequate",
        "key": "rdq_…", "content_sha256": "the X-Content-SHA256 of the certificate you reviewed"}]}}

    meaning: Literal["approved", "rejected"]
    reason: Annotated[str, Field(min_length=1, max_length=2000, description="why (required)")]
    key: Annotated[str, Field(max_length=200, description="your API key again (re-authentication at signing)")]
    content_sha256: Annotated[str | None, Field(default=None, pattern="^[0-9a-f]{64}$",
                                                description="the certificate content hash you reviewed")] = None

    @field_validator("reason")
    @classmethod
    def _reason(cls, v: str) -> str:
        printable(v)
        if not v.strip():
            raise ValueError("a signature needs a reason (why approved or rejected)")
        return v.strip()


class SignatureOut(BaseModel):
    """A signature as filed."""

    id: int
    run_id: int
    revision: int
    signer: str
    role: str
    key_id: int
    meaning: str
    reason: str
    signed_at: str
    signed_ns: int
    content_sha256: str


class MetadataIn(BaseModel):
    """Metadata to change (only the fields given)."""

    model_config = {"extra": "forbid"}

    operator: Text | None = None
    part_number: Text | None = None
    lot: Text | None = None
    serial: Text | None = None
    notes: Annotated[str | None, Field(max_length=4000)] = None
    extra: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=200)]] | None = Field(
        default=None, max_length=32)

    @field_validator("operator", "part_number", "lot", "serial", "notes")
    @classmethod
    def _plain(cls, v: str | None) -> str | None:
        return printable(v)

    @field_validator("extra")
    @classmethod
    def _plain_extra(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        return printable_extra(v)

    def changes(self) -> dict:
        """The fields given."""
        return {k: v for k, v in self.model_dump().items() if v is not None and k in self.model_fields_set}


class RevisionIn(MetadataIn):
    """A new revision of a stopped run: the changed metadata and why."""

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [{
        "lot": "H23-0918", "reason": "lot number was mistyped at the start (see traveller)"}]}}

    reason: Annotated[str, Field(min_length=1, max_length=2000, description="why the change (required)")]

    @field_validator("reason")
    @classmethod
    def _reason(cls, v: str) -> str:
        printable(v)
        if not v.strip():
            raise ValueError("a revision needs a reason")
        return v.strip()

    def changes(self) -> dict:
        """The metadata fields given (not the reason)."""
        return {k: v for k, v in super().changes().items() if k != "reason"}


class RevisionOut(BaseModel):
    """One revision after the first: what it changed, by whom and why."""

    run_id: int
    revision: int
    supersedes: int
    created: str
    created_ns: int
    created_by: str
    reason: str
    before: dict
    after: dict


@router.post("/{run_id}/signatures", summary="Sign a run's certificate", status_code=201,
             response_model=SignatureOut)
async def sign(run_id: RunId, body: SignatureIn, service: ServiceDep, who: QA) -> SignatureOut:
    """Approve or reject the certificate of the run's current revision (qa or admin).

    Re-authentication: ``key`` is the request's API key again (401 if wrong, 403 if another key;
    both recorded in the audit trail). 404 no such run; 409 active run, revision already approved,
    or the certificate changed since the ``content_sha256`` you reviewed.
    """
    cat = catalogue_of(service)
    try:
        sig = await asyncio.to_thread(sign_run, cat, service.keys, run_id, key=body.key, meaning=body.meaning,
                                      reason=body.reason, requester=who, reviewed_sha256=body.content_sha256,
                                      rigs=service.rigs)
    except SigningError as e:
        raise HTTPException(e.status, str(e)) from None
    return SignatureOut(**sig)


@router.get("/{run_id}/signatures", summary="A run's signatures", response_model=list[SignatureOut])
async def signatures(run_id: RunId, service: ServiceDep, who: QA) -> list[SignatureOut]:
    """Every signature of the run (all revisions), oldest first."""
    cat = catalogue_of(service)
    if await asyncio.to_thread(cat.run, run_id) is None:
        raise HTTPException(404, f"no run {run_id}")
    return [SignatureOut(**s) for s in await asyncio.to_thread(cat.signatures_of_run, run_id, True)]


@router.patch("/{run_id}", summary="Edit a run's metadata", response_model=RunOut)
async def edit(run_id: RunId, body: MetadataIn, service: ServiceDep, who: Engineer) -> RunOut:
    """Change an active or stopped run's metadata in place (audited with before and after).

    409 once its certificate is approved: then make a new revision (``POST …/revisions``).
    """
    cat = catalogue_of(service)

    def record(conn, before: dict, after: dict, revision: int, supersedes: int | None) -> None:
        AuditTrail(cat).append(who.name, "run_edited", f"run {run_id}", before=before, after=after,
                               details={"revision": revision}, conn=conn)

    try:
        _, _, run = await asyncio.to_thread(cat.edit_run, run_id, body.changes(), record)
    except RunError as e:
        raise HTTPException(e.status, str(e)) from None
    return run_out(run)


@router.post("/{run_id}/revisions", summary="Make a new revision of a run", status_code=201,
             response_model=RunOut)
async def revise(run_id: RunId, body: RevisionIn, service: ServiceDep, who: Engineer) -> RunOut:
    """A new revision of a stopped run with changed metadata and a reason (engineer, qa or admin).

    The revision number goes up, the old values stay recorded (``GET …/revisions``) and the new
    revision is unsigned until signed again. 409 for an active run (edit it with PATCH), 422 when
    nothing changes.
    """
    cat = catalogue_of(service)

    def record(conn, before: dict, after: dict, revision: int, supersedes: int | None) -> None:
        AuditTrail(cat).append(who.name, "run_revised", f"run {run_id}", before=before, after=after,
                               details={"revision": revision, "supersedes": supersedes, "reason": body.reason},
                               conn=conn)

    try:
        _, _, run = await asyncio.to_thread(cat.revise_run, run_id, body.changes(), who.name, body.reason,
                                            time.time_ns(), record)
    except RunError as e:
        raise HTTPException(e.status, str(e)) from None
    return run_out(run)


@router.get("/{run_id}/revisions", summary="A run's revisions", response_model=list[RevisionOut])
async def revisions(run_id: RunId, service: ServiceDep, who: QA) -> list[RevisionOut]:
    """The revisions after the first, oldest first: before and after of each, by whom, why."""
    cat = catalogue_of(service)
    if await asyncio.to_thread(cat.run, run_id) is None:
        raise HTTPException(404, f"no run {run_id}")
    return [RevisionOut(**{k: r[k] for k in RevisionOut.model_fields})
            for r in await asyncio.to_thread(cat.revisions_of_run, run_id)]
