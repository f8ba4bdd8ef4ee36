"""API keys (admin): create, list, revoke. ``daq keys`` does the same from the shell."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, Field

from api.auth import Admin
from api.deps import ServiceDep
from daq.reports.records import iso

router = APIRouter(prefix="/api/keys", tags=["keys"])


class KeyCreate(BaseModel):
    """A key to create."""

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [{"name": "qa-desk-2", "role": "qa"}]}}

    name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]*[^\x00-\x20][^\x00-\x1f]*$",
                               description="who or what uses the key (not blank)")]
    role: Literal["operator", "engineer", "qa", "admin"]


class KeyOut(BaseModel):
    """A key, without its secret."""

    id: int
    name: str
    role: str
    prefix: str
    created: str
    revoked: str | None = None


class NewKey(KeyOut):
    """A new key: ``key`` is shown this once."""

    key: str


def _store(service):
    if service.keys is None:
        raise HTTPException(503, "the service is still starting")
    return service.keys


@router.get("", summary="List keys", response_model=list[KeyOut])
async def list_keys(service: ServiceDep, who: Admin) -> list[KeyOut]:
    """Every key with its role, and when it was revoked."""
    rows = await asyncio.to_thread(_store(service).list)
    return [KeyOut(id=r["id"], name=r["name"], role=r["role"], prefix=r["prefix"], created=iso(r["created_ns"]),
                   revoked=iso(r["revoked_ns"])) for r in rows]


@router.post("", summary="Create a key", status_code=201, response_model=NewKey)
async def create_key(body: KeyCreate, service: ServiceDep, who: Admin) -> NewKey:
    """A new key; the response is the only place the key itself ever appears."""
    try:
        key, info = await asyncio.to_thread(_store(service).create, body.name, body.role, who.name)
    except ValueError as e:
        raise HTTPException(422, str(e)) from None
    return NewKey(id=info.id, name=info.name, role=info.role, prefix=key.split("_")[1],
                  created=iso(time.time_ns()), key=key)


@router.delete("/{key_id}", summary="Revoke a key", status_code=204)
async def revoke_key(key_id: Annotated[int, Path(ge=1, le=2**62)], service: ServiceDep, who: Admin) -> None:
    """Revoke a key at once (404 if there is no such active key)."""
    if not await asyncio.to_thread(_store(service).revoke, key_id, who.name):
        raise HTTPException(404, f"no active key {key_id}")
