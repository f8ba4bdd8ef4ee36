"""``GET /api/health``."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ServiceDep

router = APIRouter(prefix="/api", tags=["health"])


@router.get("/health", summary="Devices, storage, spool depth, version")
def health(service: ServiceDep) -> dict:
    """Service health; ``status`` is ``ok`` or ``degraded``."""
    return service.health()
